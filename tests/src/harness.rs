//! One entry point per executor: build the runtime, run a scenario on it under
//! a time limit, then check that the scenario left no task behind.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use lifecycle::{RuntimeExt, SharedRuntime};
use lifecycle_smol::SmolRuntime;
use lifecycle_tokio::TokioRuntime;

use crate::{CountingRuntime, VirtualTimeExecutor};

/// How long a scenario may run, on the runtime's own clock, before it fails.
///
/// Scenarios take milliseconds; the limit is generous so that a loaded
/// machine never fails a correct one. It exists so that a lost wakeup fails
/// the test with a message instead of hanging it.
pub const SCENARIO_TIME_LIMIT: Duration = Duration::from_secs(30);

/// How long the tasks of a finished scenario get to be dropped by their
/// executor.
///
/// A join completes once the task's future is gone, but the executor drops
/// its own wrapper a moment later, possibly on another thread. Scenarios join
/// what they spawn, so this is normally a few microseconds.
pub const SETTLE_TIME_LIMIT: Duration = Duration::from_secs(5);

/// How long a whole test may take, wall clock, before the process is ended.
///
/// The last resort for a hang that [`SCENARIO_TIME_LIMIT`] cannot catch
/// because it blocks the thread that would notice it (a deadlock on a lock,
/// a runtime that never shuts down).
pub const WATCHDOG_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Runs `scenario` on a tokio current-thread runtime.
///
/// The scenario and every task it spawns share the one thread. See
/// [`run_scenario`] for what is checked.
///
/// # Panics
///
/// If the scenario panics, does not finish in time, or leaves a task alive.
pub fn tokio_current_thread<F, Fut>(scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let watchdog = Watchdog::arm("tokio current-thread");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("cannot build a tokio current-thread runtime");
    let counting =
        CountingRuntime::new(Arc::new(TokioRuntime::from_handle(tokio.handle().clone())));
    tokio.block_on(run_scenario("tokio current-thread", counting, scenario));
    drop(tokio);
    watchdog.disarm();
}

/// Runs `scenario` on a tokio multi-thread runtime with two workers.
///
/// The scenario itself runs on the test thread (`block_on`); the tasks it
/// spawns run on the workers. See [`run_scenario`] for what is checked.
///
/// # Panics
///
/// If the scenario panics, does not finish in time, or leaves a task alive.
pub fn tokio_multi_thread<F, Fut>(scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let watchdog = Watchdog::arm("tokio multi-thread");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("cannot build a tokio multi-thread runtime");
    let counting =
        CountingRuntime::new(Arc::new(TokioRuntime::from_handle(tokio.handle().clone())));
    tokio.block_on(run_scenario("tokio multi-thread", counting, scenario));
    drop(tokio);
    watchdog.disarm();
}

/// Runs `scenario` on async-std's global executor.
///
/// The scenario runs on the test thread (`async_std::task::block_on`); the
/// tasks it spawns run on the global executor's threads, shared with every
/// other test of the process. Live tasks are counted per scenario, so that
/// sharing does not blur the leak check. See [`run_scenario`].
///
/// # Panics
///
/// If the scenario panics, does not finish in time, or leaves a task alive.
pub fn async_std<F, Fut>(scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let watchdog = Watchdog::arm("async-std");
    let counting = CountingRuntime::new(lifecycle_async_std::runtime());
    async_std::task::block_on(run_scenario("async-std", counting, scenario));
    watchdog.disarm();
}

/// Runs `scenario` on a smol executor owned by the test.
///
/// The executor is an `Arc<smol::Executor>` bound with [`SmolRuntime::on`]
/// and run by the test thread alone (`smol::block_on(executor.run(..))`):
/// the scenario and its tasks share that thread. See [`run_scenario`].
///
/// # Panics
///
/// If the scenario panics, does not finish in time, or leaves a task alive.
pub fn smol<F, Fut>(scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let watchdog = Watchdog::arm("smol");
    let executor = Arc::new(smol::Executor::new());
    let counting = CountingRuntime::new(SmolRuntime::on(executor.clone()).shared());
    smol::block_on(executor.run(run_scenario("smol", counting, scenario)));
    drop(executor);
    watchdog.disarm();
}

/// Runs `scenario` on a [`VirtualTimeExecutor`]: one thread, virtual time.
///
/// The scenario and every task it spawns share the test thread; the clock
/// moves only when nothing is ready, straight to the next timer, so sleeps
/// take no real time and the run is the same on every execution.
/// [`SCENARIO_TIME_LIMIT`] and [`SETTLE_TIME_LIMIT`] are measured on the
/// virtual clock. See [`run_scenario`] for what is checked.
///
/// # Panics
///
/// If the scenario panics, does not finish in time, leaves a task alive, or
/// can make no progress at all (see [`VirtualTimeExecutor::block_on`]).
pub fn virtual_time<F, Fut>(scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let watchdog = Watchdog::arm("virtual time");
    let executor = VirtualTimeExecutor::new();
    let counting = CountingRuntime::new(executor.runtime());
    executor.block_on(run_scenario("virtual time", counting, scenario));
    drop(executor);
    watchdog.disarm();
}

/// Runs `scenario` on `counting` and checks how it ended; every harness
/// function of this crate is this, inside one executor's `block_on`.
///
/// 1. The scenario gets `counting` as its [`SharedRuntime`] and must finish
///    within [`SCENARIO_TIME_LIMIT`], measured with the runtime's own sleep;
///    otherwise this panics, naming the executor and the live task count.
/// 2. Then every task spawned through `counting` must be gone (its future
///    dropped) within [`SETTLE_TIME_LIMIT`]; otherwise this panics with the
///    number still alive.
///
/// Use it directly to run scenarios on a runtime this crate has no harness
/// for (a virtual-time runtime, another executor).
///
/// # Panics
///
/// As described above, and if the scenario itself panics.
pub async fn run_scenario<F, Fut>(executor: &str, counting: CountingRuntime, scenario: F)
where
    F: FnOnce(SharedRuntime) -> Fut,
    Fut: Future<Output = ()>,
{
    let counting = Arc::new(counting);
    let rt: SharedRuntime = counting.clone();
    if rt
        .timeout(SCENARIO_TIME_LIMIT, scenario(rt.clone()))
        .await
        .is_err()
    {
        panic!(
            "the scenario did not finish within {SCENARIO_TIME_LIMIT:?} on {executor} \
             ({} of its {} tasks still alive): a lost wakeup or a deadlock",
            counting.live_tasks(),
            counting.spawned_total(),
        );
    }
    let deadline = rt.now() + SETTLE_TIME_LIMIT;
    while counting.live_tasks() > 0 {
        assert!(
            rt.now() < deadline,
            "the scenario finished on {executor} but {} of its {} tasks are still alive \
             {SETTLE_TIME_LIMIT:?} later: a task leaked (spawned and never joined, or never dropped)",
            counting.live_tasks(),
            counting.spawned_total(),
        );
        rt.sleep(Duration::from_millis(1)).await;
    }
}

/// Ends the process if a test outlives [`WATCHDOG_TIME_LIMIT`].
struct Watchdog {
    /// Dropping the sender wakes the watchdog thread, which then exits.
    disarm: mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(executor: &'static str) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let test = thread::current()
            .name()
            .unwrap_or("an unnamed test")
            .to_owned();
        thread::Builder::new()
            .name(format!("watchdog of {test}"))
            .spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = disarmed.recv_timeout(WATCHDOG_TIME_LIMIT) {
                    eprintln!(
                        "{test} on {executor} is still running after {WATCHDOG_TIME_LIMIT:?}: \
                         a thread is blocked (deadlock?); ending the test process"
                    );
                    std::process::exit(101);
                }
            })
            .expect("cannot start the watchdog thread");
        Self { disarm }
    }

    fn disarm(self) {
        drop(self.disarm);
    }
}
