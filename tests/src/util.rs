//! Small helpers scenarios share.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lifecycle::{
    FatalSlot, Latch, ReadyHandle, Scope, SharedRuntime, StopSource, WorkerContext, WorkerResult,
};

/// How long [`eventually`] waits for its condition before failing.
pub const EVENTUALLY_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The plainest worker: ready at once, then serves until told to stop,
/// then returns cleanly.
///
/// # Example
///
/// ```
/// use lifecycle::ComponentManager;
///
/// let manager = ComponentManager::builder()
///     .add_worker(lifecycle_conformance::serve_until_stopped)
///     .build();
/// # drop(manager);
/// ```
pub async fn serve_until_stopped(ctx: WorkerContext, ready: ReadyHandle) -> WorkerResult {
    ready.ready();
    ctx.stopped().await;
    Ok(())
}

/// Yields to the executor once: the current task is rescheduled at once, so
/// other ready tasks get to run first.
///
/// # Example
///
/// ```
/// # futures_executor::block_on(async {
/// lifecycle_conformance::yield_now().await;
/// # });
/// ```
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future returned by [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Waits until `condition` holds, checking it every millisecond on `rt`'s
/// clock; for conditions that other tasks make true and that no future
/// signals (a counter reaching a value, a task being finished).
///
/// # Panics
///
/// If `condition` still does not hold after [`EVENTUALLY_TIME_LIMIT`]; the
/// message says `what` was expected.
pub async fn eventually(rt: &SharedRuntime, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = rt.now() + EVENTUALLY_TIME_LIMIT;
    while !condition() {
        assert!(
            rt.now() < deadline,
            "still not true after {EVENTUALLY_TIME_LIMIT:?}: {what}"
        );
        rt.sleep(Duration::from_millis(1)).await;
    }
}

/// Gives tasks that should not make progress every chance to make it
/// wrongly: a short sleep on the runtime, then a few yields. For negative
/// checks only ("still not ready"); a positive check waits for its signal.
pub async fn let_others_run(rt: &SharedRuntime) {
    rt.sleep(Duration::from_millis(20)).await;
    for _ in 0..10 {
        yield_now().await;
    }
}

/// The scope a scenario starts a component in: `rt`, stopped by `stop`,
/// reporting into `slot`.
pub fn scope(rt: &SharedRuntime, stop: &StopSource, slot: &FatalSlot) -> Scope {
    Scope::new(rt.clone(), stop.token(), slot.clone())
}

/// Counts calls, shared between a closure (a factory, a handler) and the
/// scenario that checks them.
///
/// # Example
///
/// ```
/// use lifecycle_conformance::Counter;
///
/// let built = Counter::default();
/// let factory = {
///     let built = built.clone();
///     move || built.next()
/// };
/// assert_eq!((factory(), factory()), (1, 2));
/// assert_eq!(built.get(), 2);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU32>);

impl Counter {
    /// Counts a call and returns its number, from 1.
    pub fn next(&self) -> u32 {
        self.0.fetch_add(1, SeqCst) + 1
    }

    /// How many calls were counted.
    pub fn get(&self) -> u32 {
        self.0.load(SeqCst)
    }
}

/// A value that sets a [`Latch`] when it is dropped: move it into a task to
/// learn when the task's future (and everything it owned) is gone.
///
/// # Example
///
/// ```
/// use lifecycle_conformance::DropProbe;
///
/// let (probe, dropped) = DropProbe::new();
/// let future = async move {
///     let _probe = probe;
///     std::future::pending::<()>().await;
/// };
/// assert!(!dropped.is_set());
/// drop(future);
/// assert!(dropped.is_set());
/// ```
#[derive(Debug)]
pub struct DropProbe(Latch);

impl DropProbe {
    /// A probe and the latch it sets when dropped.
    pub fn new() -> (DropProbe, Latch) {
        let dropped = Latch::new();
        (DropProbe(dropped.clone()), dropped)
    }

    /// A probe that sets `latch` when dropped: for a future made many times
    /// (a worker run by several managers) whose probe latch exists first.
    ///
    /// ```
    /// use lifecycle::Latch;
    /// use lifecycle_conformance::DropProbe;
    ///
    /// let returned = Latch::new();
    /// drop(DropProbe::on(&returned));
    /// assert!(returned.is_set());
    /// ```
    pub fn on(latch: &Latch) -> DropProbe {
        DropProbe(latch.clone())
    }

    /// Wraps `future` so that the probe is dropped with the wrapper, not
    /// when the future completes: an `async` block drops its own values as
    /// soon as it returns, while this tells when whoever polled the future
    /// has let go of it.
    ///
    /// ```
    /// use futures_util::FutureExt;
    /// use lifecycle_conformance::DropProbe;
    ///
    /// let (probe, dropped) = DropProbe::new();
    /// let mut future = probe.hold(async { 42 });
    /// assert_eq!((&mut future).now_or_never(), Some(42));
    /// assert!(!dropped.is_set(), "completed, but not dropped yet");
    /// drop(future);
    /// assert!(dropped.is_set());
    /// ```
    pub fn hold<F: Future>(self, future: F) -> Held<F> {
        Held {
            future: Box::pin(future),
            _probe: self,
        }
    }
}

/// Future returned by [`DropProbe::hold`].
#[must_use = "futures do nothing unless awaited"]
pub struct Held<F> {
    future: Pin<Box<F>>,
    _probe: DropProbe,
}

impl<F: Future> Future for Held<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<F> std::fmt::Debug for Held<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.set();
    }
}
