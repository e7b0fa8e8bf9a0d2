//! The service benchmarks' shared code: a trivial restartable [`Service`] on
//! the [`StartStop`] base, written by hand and with [`service_fn`], and the
//! measured rounds: one service started and stopped again and again, and a
//! group of services through [`start_all`], [`wait_all_started`] and
//! [`stop_all`].
//!
//! Their baselines are the bare rounds of [`components`](crate::components):
//! [`bare_cycles`](crate::components::bare_cycles) for one cycle and
//! [`bare_components_round`](crate::components::bare_components_round) with
//! [`BareStop::ChildTokens`](crate::components::BareStop::ChildTokens) for a
//! group (a generation has a stop scope of its own, as each of those tasks
//! has a child token). The `service` bench runs both, on the same
//! [`Executor`].
//!
//! A service is made once and restarted by every cycle and every round, in
//! one [`Scope`] made once ([`ServiceScope`]): a restart is what a service
//! is for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifecycle::{
    service_fn, start_all, stop_all, wait_all_started, FatalError, FatalSlot, Generation, Scope,
    Service, ServiceFuture, Signal, StartOutcome, StartStop, StartedHandle, StopSource,
};

use crate::components::Executor;

/// How many services [`group_round`] runs at once in the `service` bench.
pub const SERVICES: usize = 1_000;

/// The least a service does: each start begins a generation on its
/// [`StartStop`] base and spawns the work with
/// [`Generation::spawn_detached`] (nobody joins it); the work sets its
/// started handle and awaits its scope's token.
#[derive(Debug, Default)]
pub struct Trivial {
    base: StartStop,
}

impl Trivial {
    /// An idle service.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Service for Trivial {
    fn start<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
        Box::pin(async move {
            let Some(generation) = self.base.begin(scope).await else {
                return Ok(StartOutcome::AlreadyRunning);
            };
            generation.spawn_detached(serve);
            Ok(StartOutcome::Started)
        })
    }

    fn stop(&self) -> ServiceFuture<'_, ()> {
        Box::pin(self.base.stop())
    }

    fn started(&self) -> Signal {
        self.base.started()
    }

    fn stopped(&self) -> Signal {
        self.base.stopped()
    }
}

/// The work of one generation, for both services: started, then serve until
/// the scope stops.
async fn serve(scope: Scope, started: StartedHandle) {
    started.set();
    scope.token().stopped().await;
}

/// [`Trivial`] written with [`service_fn`]: the closure spawns the same work
/// when it is given a new generation.
pub fn trivial_fn() -> impl Service + 'static {
    service_fn(|generation: Option<Generation>| async move {
        if let Some(generation) = generation {
            generation.spawn_detached(serve);
        }
        Ok(())
    })
}

/// The scope every start of a bench runs in: the executor's binding, the
/// token of a root [`StopSource`] that is never stopped, a [`FatalSlot`].
/// Made once per executor.
#[derive(Debug)]
pub struct ServiceScope {
    /// Owns the root the scope's token belongs to; never stopped.
    _root: StopSource,
    /// The scope passed to every start.
    pub scope: Scope,
}

impl ServiceScope {
    /// A scope on `executor` under a fresh root.
    pub fn on(executor: &Executor) -> Self {
        let root = StopSource::new();
        let scope = Scope::new(executor.runtime(), root.token(), FatalSlot::new());
        Self { _root: root, scope }
    }
}

/// One cycle: start `service` in `scope` (it must begin a new generation),
/// wait for its started latch, stop it (which returns once the work has
/// exited).
pub async fn service_cycle<S: Service + ?Sized>(service: &S, scope: &Scope) {
    let outcome = service.start(scope).await.expect("the service starts");
    assert_eq!(outcome, StartOutcome::Started, "the last stop completed");
    service.started().wait().await;
    service.stop().await;
}

/// `iters` cycles of [`service_cycle`] of the same `service` in one round on
/// `executor`; returns the time they took, measured inside the round.
pub fn service_cycles<S: Service + 'static>(
    executor: &Executor,
    service: &Arc<S>,
    scope: &Scope,
    iters: u64,
) -> Duration {
    let service = service.clone();
    let scope = scope.clone();
    executor.run(async move {
        let start = Instant::now();
        for _ in 0..iters {
            service_cycle(&*service, &scope).await;
        }
        start.elapsed()
    })
}

/// One group round: [`start_all`] of `services` in `scope` (one after the
/// other), [`wait_all_started`], [`stop_all`] (concurrently, returning once
/// every work has exited).
pub async fn group<S: Service>(services: &[S], scope: &Scope) {
    start_all(services, scope)
        .await
        .expect("every service starts");
    wait_all_started(services).await;
    stop_all(services).await;
}

/// One round of [`group`] on `executor`; returns its time, measured inside
/// the round.
pub fn group_round<S: Service + 'static>(
    executor: &Executor,
    services: &Arc<[S]>,
    scope: &Scope,
) -> Duration {
    let services = services.clone();
    let scope = scope.clone();
    executor.run(async move {
        let start = Instant::now();
        group(&services, &scope).await;
        start.elapsed()
    })
}

/// `n` idle [`Trivial`] services, to be restarted by every [`group_round`].
pub fn trivial_services(n: usize) -> Arc<[Trivial]> {
    (0..n).map(|_| Trivial::new()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_completes_on_every_executor() {
        for executor in Executor::all() {
            let scope = ServiceScope::on(&executor);
            let trivial = Arc::new(Trivial::new());
            service_cycles(&executor, &trivial, &scope.scope, 3);
            service_cycles(&executor, &trivial, &scope.scope, 3);
            let closure = Arc::new(trivial_fn());
            service_cycles(&executor, &closure, &scope.scope, 3);
            let services = trivial_services(100);
            group_round(&executor, &services, &scope.scope);
            group_round(&executor, &services, &scope.scope);
        }
    }
}
