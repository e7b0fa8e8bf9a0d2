//! Small helpers scenarios share.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lifecycle::{Latch, SharedRuntime};

/// How long [`eventually`] waits for its condition before failing.
pub const EVENTUALLY_TIME_LIMIT: Duration = Duration::from_secs(10);

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
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.set();
    }
}
