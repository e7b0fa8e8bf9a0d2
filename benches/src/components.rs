//! The component benchmarks' shared code: one executor type for the three
//! executors measured, and each measured round written once, in a managed
//! form (a [`ComponentManager`], [`run_component`]) and in a bare form that
//! does the same work by hand with the executor's own spawn and join, a
//! tokio `oneshot` for ready and a [`CancellationToken`] for stop.
//!
//! The timing benches (`manager_cycle`, `components_10k`,
//! `restart_throughput`) and the allocation counter (`allocations`) all call
//! these functions, so that they measure the same code.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Relaxed;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifecycle::{
    run_component, Component, ComponentManager, ComponentManagerBuilder, FatalError, FatalSlot,
    RestartPolicy, RunOutcome, Scope, SharedRuntime, StopSource, Verdict,
};
use lifecycle_smol::SmolRuntime;
use lifecycle_tokio::TokioRuntime;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// An executor the component benches run on, owned by the bench.
///
/// Every timed round runs inside [`Executor::run`], as a task of the
/// executor (tokio multi-thread) or as the future the bench thread drives
/// (tokio current-thread, smol), and measures itself from inside.
#[derive(Debug)]
pub enum Executor {
    /// A tokio multi-thread runtime, one worker per core; the round runs in
    /// a spawned task, as a supervisor would.
    TokioMultiThread(Runtime),
    /// A tokio current-thread runtime, driven by the bench thread.
    TokioCurrentThread(Runtime),
    /// An owned `smol::Executor`, run by the bench thread
    /// (`smol::block_on(executor.run(..))`).
    Smol(Arc<smol::Executor<'static>>),
}

impl Executor {
    /// A tokio multi-thread runtime with one worker per core, timers on.
    pub fn tokio_multi_thread() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_time()
            .build()
            .expect("building the tokio multi-thread runtime");
        Self::TokioMultiThread(runtime)
    }

    /// A tokio current-thread runtime, timers on.
    pub fn tokio_current_thread() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("building the tokio current-thread runtime");
        Self::TokioCurrentThread(runtime)
    }

    /// A fresh smol executor.
    pub fn smol() -> Self {
        Self::Smol(Arc::new(smol::Executor::new()))
    }

    /// The three executors, in the order the benches report them.
    pub fn all() -> [Self; 3] {
        [
            Self::tokio_multi_thread(),
            Self::tokio_current_thread(),
            Self::smol(),
        ]
    }

    /// A short name for bench ids.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TokioMultiThread(_) => "tokio_multi_thread",
            Self::TokioCurrentThread(_) => "tokio_current_thread",
            Self::Smol(_) => "smol",
        }
    }

    /// The lifecycle binding to this executor (`lifecycle-tokio`,
    /// `lifecycle-smol`).
    pub fn runtime(&self) -> SharedRuntime {
        match self {
            Self::TokioMultiThread(runtime) | Self::TokioCurrentThread(runtime) => {
                Arc::new(TokioRuntime::from_handle(runtime.handle().clone()))
            }
            Self::Smol(executor) => SmolRuntime::on(executor.clone()).shared(),
        }
    }

    /// The executor's own spawner, for the bare rounds.
    pub fn spawner(&self) -> Spawner {
        match self {
            Self::TokioMultiThread(runtime) | Self::TokioCurrentThread(runtime) => {
                Spawner::Tokio(runtime.handle().clone())
            }
            Self::Smol(executor) => Spawner::Smol(executor.clone()),
        }
    }

    /// Runs `round` to completion on this executor and returns its output.
    pub fn run<F>(&self, round: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Self::TokioMultiThread(runtime) => runtime
                .block_on(runtime.spawn(round))
                .expect("the round's task"),
            Self::TokioCurrentThread(runtime) => runtime.block_on(round),
            Self::Smol(executor) => smol::block_on(executor.run(round)),
        }
    }
}

/// Spawns on the executor directly, without lifecycle: the baselines.
#[derive(Clone, Debug)]
pub enum Spawner {
    /// `Handle::spawn`.
    Tokio(tokio::runtime::Handle),
    /// `Executor::spawn`.
    Smol(Arc<smol::Executor<'static>>),
}

impl Spawner {
    /// Spawns `future`; the handle completes with its output.
    pub fn spawn<F>(&self, future: F) -> Join<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Self::Tokio(handle) => Join::Tokio(handle.spawn(future)),
            Self::Smol(executor) => Join::Smol(executor.spawn(future)),
        }
    }
}

/// The executor's own join handle.
#[derive(Debug)]
pub enum Join<T> {
    /// tokio's `JoinHandle`.
    Tokio(tokio::task::JoinHandle<T>),
    /// smol's `Task`.
    Smol(smol::Task<T>),
}

impl<T> Future for Join<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Tokio(handle) => Pin::new(handle)
                .poll(cx)
                .map(|outcome| outcome.expect("a bare task panicked")),
            Self::Smol(task) => Pin::new(task).poll(cx),
        }
    }
}

/// A manager builder with one worker that calls ready at once, then runs
/// until its stop token stops and returns `Ok(())`.
pub fn one_worker() -> ComponentManagerBuilder {
    ComponentManager::builder().add_worker(|ctx, ready| async move {
        ready.ready();
        ctx.stopped().await;
        Ok(())
    })
}

/// One managed cycle: build a manager from `builder`, start it in a scope
/// with a fresh [`StopSource`] and [`FatalSlot`], wait until it is ready,
/// stop it, wait until it is done.
pub async fn manager_cycle(builder: &ComponentManagerBuilder, runtime: &SharedRuntime) {
    let manager = builder.build();
    let stop = StopSource::new();
    manager
        .start(Scope::new(runtime.clone(), stop.token(), FatalSlot::new()))
        .expect("a fresh manager starts");
    manager.ready().wait().await;
    stop.stop();
    manager.done().wait().await;
}

/// One bare cycle, the same work by hand: a fresh [`CancellationToken`] and
/// ready `oneshot`, a task spawned on the executor that sends ready and waits
/// for the token, ready awaited, the token cancelled, the task joined.
pub async fn bare_cycle(spawner: &Spawner) {
    let token = CancellationToken::new();
    let (ready, is_ready) = oneshot::channel::<()>();
    let cancelled = token.clone();
    let task = spawner.spawn(async move {
        let _ = ready.send(());
        cancelled.cancelled().await;
        Ok::<(), FatalError>(())
    });
    is_ready.await.expect("the task sends ready");
    token.cancel();
    task.await.expect("the task ends cleanly");
}

/// `iters` cycles of [`manager_cycle`] in one round on `executor`; returns
/// the time they took, measured inside the round.
pub fn manager_cycles(executor: &Executor, iters: u64) -> Duration {
    let builder = one_worker();
    let runtime = executor.runtime();
    executor.run(async move {
        let start = Instant::now();
        for _ in 0..iters {
            manager_cycle(&builder, &runtime).await;
        }
        start.elapsed()
    })
}

/// `iters` cycles of [`bare_cycle`] in one round on `executor`; returns the
/// time they took, measured inside the round.
pub fn bare_cycles(executor: &Executor, iters: u64) -> Duration {
    let spawner = executor.spawner();
    executor.run(async move {
        let start = Instant::now();
        for _ in 0..iters {
            bare_cycle(&spawner).await;
        }
        start.elapsed()
    })
}

/// How the bare form of [`components`] stops its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareStop {
    /// Every task waits on a clone of one root token: the least work.
    SharedToken,
    /// Every task owns a child token of the root
    /// ([`CancellationToken::child_token`]): a stop scope per task, as each
    /// manager has.
    ChildTokens,
}

/// `n` managers at once, all from `builder`: each built and started in a
/// scope under one root [`StopSource`] with its own [`FatalSlot`]; then
/// every one awaited until ready, the root stopped, and every one awaited
/// until done.
pub async fn components(builder: &ComponentManagerBuilder, runtime: &SharedRuntime, n: usize) {
    components_with(builder, runtime, n, || {}).await;
}

/// [`components`], calling `at_ready` once every manager is ready (before
/// the stop): where the allocation counter reads the live heap.
pub async fn components_with(
    builder: &ComponentManagerBuilder,
    runtime: &SharedRuntime,
    n: usize,
    at_ready: impl FnOnce(),
) {
    let root = StopSource::new();
    let mut managers = Vec::with_capacity(n);
    for _ in 0..n {
        let manager = builder.build();
        manager
            .start(Scope::new(runtime.clone(), root.token(), FatalSlot::new()))
            .expect("a fresh manager starts");
        managers.push(manager);
    }
    for manager in &managers {
        manager.ready().wait().await;
    }
    at_ready();
    root.stop();
    for manager in &managers {
        manager.done().wait().await;
    }
}

/// The bare form of [`components`]: `n` tasks spawned at once, each with a
/// ready `oneshot` and a token of one root [`CancellationToken`]; every ready
/// awaited, the root cancelled, every task joined.
pub async fn bare_components(spawner: &Spawner, n: usize, stop: BareStop) {
    bare_components_with(spawner, n, stop, || {}).await;
}

/// [`bare_components`], calling `at_ready` once every task has sent ready
/// (before the cancel).
pub async fn bare_components_with(
    spawner: &Spawner,
    n: usize,
    stop: BareStop,
    at_ready: impl FnOnce(),
) {
    let root = CancellationToken::new();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (ready, is_ready) = oneshot::channel::<()>();
        let token = match stop {
            BareStop::SharedToken => root.clone(),
            BareStop::ChildTokens => root.child_token(),
        };
        let task = spawner.spawn(async move {
            let _ = ready.send(());
            token.cancelled().await;
            Ok::<(), FatalError>(())
        });
        tasks.push((is_ready, task));
    }
    for (is_ready, _) in &mut tasks {
        is_ready.await.expect("the task sends ready");
    }
    at_ready();
    root.cancel();
    for (_, task) in tasks {
        task.await.expect("the task ends cleanly");
    }
}

/// How many components [`components`] and [`bare_components`] run at once in
/// the `components_10k` bench and in the allocation count.
pub const COMPONENTS: usize = 10_000;

/// The error every failing worker returns: one value, cloned (an `Arc`
/// clone), so that neither loop measures building an error.
fn worker_error() -> FatalError {
    FatalError::msg("worker failed")
}

/// How [`restart_loop`] waits for a failed instance to be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopWait {
    /// With the default stop timeout ([`lifecycle::DEFAULT_STOP_TIMEOUT`]):
    /// each wait for done is raced against a timer.
    DefaultTimeout,
    /// Without one ([`RestartLoop::no_stop_timeout`]).
    ///
    /// [`RestartLoop::no_stop_timeout`]: lifecycle::RestartLoop::no_stop_timeout
    NoTimeout,
}

/// [`run_component`] with [`RestartPolicy::immediate`] over managers of one
/// worker that calls ready and fails at once; the handler returns
/// [`Verdict::Restart`] `restarts` times, then [`Verdict::Stop`]. Returns how
/// many restarts the handler counted (`restarts`).
pub async fn restart_loop(runtime: SharedRuntime, restarts: u64, stop_wait: StopWait) -> u64 {
    let error = worker_error();
    let builder = ComponentManager::builder().add_worker(move |_ctx, ready| {
        let error = error.clone();
        async move {
            ready.ready();
            Err(error)
        }
    });
    // An atomic only because the loop's future must be `Send`; load and
    // store `Relaxed` are plain moves.
    let counted = AtomicU64::new(0);
    let restart_loop = run_component(
        || Ok(builder.build()),
        |_failure| {
            let so_far = counted.load(Relaxed);
            if so_far < restarts {
                counted.store(so_far + 1, Relaxed);
                Verdict::Restart
            } else {
                Verdict::Stop
            }
        },
    )
    .policy(RestartPolicy::immediate());
    let restart_loop = match stop_wait {
        StopWait::DefaultTimeout => restart_loop,
        StopWait::NoTimeout => restart_loop.no_stop_timeout(),
    };
    let parent = StopSource::new();
    let outcome = restart_loop.run(runtime, parent.token()).await;
    assert!(
        matches!(
            outcome,
            RunOutcome::Failed {
                verdict: Verdict::Stop,
                ..
            }
        ),
        "unexpected outcome: {outcome}"
    );
    counted.load(Relaxed)
}

/// The bare form of [`restart_loop`]: spawn a task that sends ready on a
/// `oneshot` and returns the error, join it, count a restart, and again,
/// until `restarts` restarts (`restarts + 1` tasks). Returns the count.
pub async fn bare_restart_loop(spawner: &Spawner, restarts: u64) -> u64 {
    let error = worker_error();
    let mut counted = 0u64;
    loop {
        let (ready, mut is_ready) = oneshot::channel::<()>();
        let error = error.clone();
        let outcome = spawner
            .spawn(async move {
                let _ = ready.send(());
                Err::<(), FatalError>(error)
            })
            .await;
        assert!(outcome.is_err() && is_ready.try_recv().is_ok());
        if counted == restarts {
            return counted;
        }
        counted += 1;
    }
}

/// One round of [`components`] with `n` managers on `executor`; returns its
/// time, measured inside the round.
pub fn components_round(executor: &Executor, n: usize) -> Duration {
    components_phases(executor, n).total()
}

/// [`components_round`] timed phase by phase: from the first build until
/// every manager is ready, then from the root's stop until every manager
/// is done.
pub fn components_phases(executor: &Executor, n: usize) -> Phases {
    let builder = one_worker();
    let runtime = executor.runtime();
    executor.run(async move {
        let mut clock = PhaseClock::start();
        components_with(&builder, &runtime, n, || clock.ready()).await;
        clock.phases()
    })
}

/// One round of [`bare_components`] with `n` tasks on `executor`; returns its
/// time, measured inside the round.
pub fn bare_components_round(executor: &Executor, n: usize, stop: BareStop) -> Duration {
    bare_components_phases(executor, n, stop).total()
}

/// [`bare_components_round`] timed phase by phase, split at the moment
/// every task has sent ready (before the root is cancelled).
pub fn bare_components_phases(executor: &Executor, n: usize, stop: BareStop) -> Phases {
    let spawner = executor.spawner();
    executor.run(async move {
        let mut clock = PhaseClock::start();
        bare_components_with(&spawner, n, stop, || clock.ready()).await;
        clock.phases()
    })
}

/// The two timed phases of one round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// From the start (the first build or spawn, or a supervisor's run
    /// begun) until every component, task or node is ready.
    pub start_to_ready: Duration,
    /// From the stop (the root stopped or cancelled, or a supervisor's
    /// parent) until every one is done (and a supervisor's run returned).
    pub stop_to_done: Duration,
}

impl Phases {
    /// Both phases together: the whole round.
    pub fn total(&self) -> Duration {
        self.start_to_ready + self.stop_to_done
    }

    /// The time of `phase`.
    pub fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::StartToReady => self.start_to_ready,
            Phase::StopToDone => self.stop_to_done,
        }
    }
}

/// Times a round's two phases: started with the round, told when
/// everything is ready, read once everything is done.
#[derive(Debug)]
pub struct PhaseClock {
    start: Instant,
    /// When [`ready`](PhaseClock::ready) was called.
    ready_at: Option<Instant>,
}

impl PhaseClock {
    /// A clock whose round starts now.
    pub fn start() -> PhaseClock {
        PhaseClock {
            start: Instant::now(),
            ready_at: None,
        }
    }

    /// Everything is ready now: the first phase ends, the second begins.
    pub fn ready(&mut self) {
        self.ready_at = Some(Instant::now());
    }

    /// Everything is done now: both phases.
    ///
    /// # Panics
    ///
    /// If [`ready`](PhaseClock::ready) was not called: a round that never
    /// got ready has no phases to split, and a zero would pass for a time.
    pub fn phases(&self) -> Phases {
        let ready_at = self.ready_at.expect("the round got ready before it ended");
        Phases {
            start_to_ready: ready_at - self.start,
            stop_to_done: ready_at.elapsed(),
        }
    }
}

/// One of the two timed phases of a round ([`Phases`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// [`Phases::start_to_ready`].
    StartToReady,
    /// [`Phases::stop_to_done`].
    StopToDone,
}

impl Phase {
    /// Both phases, in the order of a round.
    pub const BOTH: [Phase; 2] = [Phase::StartToReady, Phase::StopToDone];

    /// A short name for bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Phase::StartToReady => "start_to_ready",
            Phase::StopToDone => "stop_to_done",
        }
    }
}

impl core::ops::Add for Phases {
    type Output = Phases;

    fn add(self, other: Phases) -> Phases {
        Phases {
            start_to_ready: self.start_to_ready + other.start_to_ready,
            stop_to_done: self.stop_to_done + other.stop_to_done,
        }
    }
}

impl core::iter::Sum for Phases {
    fn sum<I: Iterator<Item = Phases>>(phases: I) -> Phases {
        phases.fold(Phases::default(), |sum, one| sum + one)
    }
}

/// [`restart_loop`] with `restarts` restarts on `executor`; returns its
/// time, measured inside the round.
pub fn restarts_round(executor: &Executor, restarts: u64, stop_wait: StopWait) -> Duration {
    let runtime = executor.runtime();
    executor.run(async move {
        let start = Instant::now();
        let counted = restart_loop(runtime, restarts, stop_wait).await;
        let elapsed = start.elapsed();
        assert_eq!(counted, restarts);
        elapsed
    })
}

/// [`bare_restart_loop`] with `restarts` restarts on `executor`; returns its
/// time, measured inside the round.
pub fn bare_restarts_round(executor: &Executor, restarts: u64) -> Duration {
    let spawner = executor.spawner();
    executor.run(async move {
        let start = Instant::now();
        let counted = bare_restart_loop(&spawner, restarts).await;
        let elapsed = start.elapsed();
        assert_eq!(counted, restarts);
        elapsed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_completes_on_every_executor() {
        for executor in Executor::all() {
            manager_cycles(&executor, 3);
            bare_cycles(&executor, 3);
            components_round(&executor, 100);
            bare_components_round(&executor, 100, BareStop::SharedToken);
            bare_components_round(&executor, 100, BareStop::ChildTokens);
            components_phases(&executor, 100);
            bare_components_phases(&executor, 100, BareStop::ChildTokens);
            restarts_round(&executor, 10, StopWait::DefaultTimeout);
            restarts_round(&executor, 10, StopWait::NoTimeout);
            bare_restarts_round(&executor, 10);
        }
    }
}
