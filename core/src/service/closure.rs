//! [`service_fn`]: a service from one async closure.

use core::fmt;
use core::future::Future;

use super::{Generation, Service, ServiceFuture, StartOutcome, StartStop};
use crate::fatal::FatalError;
use crate::latch::Signal;
use crate::scope::Scope;

/// A [`Service`] made from one async closure on a [`StartStop`] base; see
/// [`service_fn`].
///
/// Besides the [`Service`] methods, [`base`](ServiceFn::base) reaches the
/// base itself: whether a generation runs, and the two-phase stop.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, FatalError, FatalSlot, Scope, Service, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let worker = service_fn(|generation| async move {
///     let Some(generation) = generation else { return Ok(()) };
///     generation.spawn_detached(|scope, started| async move {
///         started.set();
///         scope.token().stopped().await;
///     });
///     Ok(())
/// });
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// assert!(!worker.base().is_running());
/// worker.start(&scope).await?;
/// worker.started().wait().await;
/// assert!(worker.base().is_running());
///
/// // A two-phase stop through the base: stop the scope, wait, then close.
/// let guard = worker.base().stop_init().await.expect("a generation to stop");
/// guard.stopped().wait().await;
/// guard.finalize(true);
/// assert!(!worker.base().is_running());
/// # Ok::<(), FatalError>(())
/// # })?;
/// # Ok::<(), FatalError>(())
/// ```
pub struct ServiceFn<F> {
    base: StartStop,
    start: F,
}

/// Makes a [`Service`] from an async closure, called on every start.
///
/// The closure receives `Some(generation)` when the start begins a new
/// generation (the generation's scope, its started and its stopped handle),
/// and `None` when one is running already. With `Some`, it spawns the work
/// and returns; an `Err` is the start's error (the generation then ends
/// when its handles are dropped). With `None` it normally returns `Ok(())`.
///
/// Stop, the latches and the edge cases are the base's: see [`StartStop`].
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, FatalSlot, Scope, Service, StartOutcome, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let ticker = service_fn(|generation| async move {
///     let Some(generation) = generation else { return Ok(()) }; // running already
///     generation.spawn_detached(|scope, started| async move {
///         started.set();
///         scope.token().stopped().await;
///     });
///     Ok(())
/// });
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// assert_eq!(ticker.start(&scope).await.unwrap(), StartOutcome::Started);
/// ticker.started().wait().await;
/// let stopped = ticker.stopped(); // before stop: this generation's
/// ticker.stop().await;
/// assert!(stopped.is_set());
/// # });
/// ```
pub fn service_fn<F, Fut>(start: F) -> ServiceFn<F>
where
    F: Fn(Option<Generation>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), FatalError>> + Send,
{
    ServiceFn {
        base: StartStop::new(),
        start,
    }
}

impl<F> ServiceFn<F> {
    /// The base, for the two-phase stop, `is_running` and the other calls
    /// the [`Service`] trait does not have.
    pub fn base(&self) -> &StartStop {
        &self.base
    }
}

impl<F, Fut> Service for ServiceFn<F>
where
    F: Fn(Option<Generation>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), FatalError>> + Send,
{
    fn start<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
        alloc::boxed::Box::pin(async move {
            let generation = self.base.begin(scope).await;
            let outcome = match generation {
                Some(_) => StartOutcome::Started,
                None => StartOutcome::AlreadyRunning,
            };
            (self.start)(generation).await.map(|()| outcome)
        })
    }

    fn stop(&self) -> ServiceFuture<'_, ()> {
        alloc::boxed::Box::pin(self.base.stop())
    }

    fn started(&self) -> Signal {
        self.base.started()
    }

    fn stopped(&self) -> Signal {
        self.base.stopped()
    }
}

impl<F> fmt::Debug for ServiceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFn")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}
