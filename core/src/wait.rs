//! Small waits over several signals, tokens and fatal slots.

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use crate::fatal::{FatalError, FatalSlot};
use crate::latch::Signal;
use crate::stop::StopToken;

/// Completes once every signal is set; at once for none.
///
/// # Example
///
/// ```
/// use lifecycle::{wait_all, Latch};
/// # futures_executor::block_on(async {
/// let (a, b) = (Latch::new(), Latch::new());
/// a.set();
/// b.set();
/// wait_all([a.signal(), b.signal()]).await;
/// wait_all([]).await; // nothing to wait for
/// # });
/// ```
pub async fn wait_all<I>(signals: I)
where
    I: IntoIterator<Item = Signal>,
{
    // Sequential is enough: all must be set, and a set signal completes its
    // wait at once.
    for signal in signals {
        signal.wait_owned().await;
    }
}

/// How [`wait_signal_or_stop`] ended.
///
/// # Example
///
/// ```
/// use lifecycle::{wait_signal_or_stop, Latch, SignalOrStop, Signal, StopSource, StopToken};
///
/// /// Waits for a dependency to be ready, unless told to stop first.
/// async fn await_dependency(ready: &Signal, token: &StopToken) -> &'static str {
///     match wait_signal_or_stop(ready, token).await {
///         SignalOrStop::Signal => "starting",
///         SignalOrStop::Stopped => "stopped before the dependency was ready",
///     }
/// }
///
/// # futures_executor::block_on(async {
/// let (ready, stop) = (Latch::new(), StopSource::new());
/// stop.stop();
/// let outcome = await_dependency(&ready.signal(), &stop.token()).await;
/// assert_eq!(outcome, "stopped before the dependency was ready");
///
/// ready.set(); // both now: the signal wins
/// assert_eq!(await_dependency(&ready.signal(), &stop.token()).await, "starting");
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalOrStop {
    /// The signal was set (preferred when both happened).
    Signal,
    /// The token stopped first.
    Stopped,
}

/// Waits until `signal` is set or `token` stops; when both are, the signal
/// wins.
///
/// # Example
///
/// ```
/// use lifecycle::{wait_signal_or_stop, Latch, SignalOrStop, StopSource};
/// # futures_executor::block_on(async {
/// let ready = Latch::new();
/// let stop = StopSource::new();
/// stop.stop();
/// let outcome = wait_signal_or_stop(&ready.signal(), &stop.token()).await;
/// assert_eq!(outcome, SignalOrStop::Stopped);
/// # });
/// ```
pub async fn wait_signal_or_stop(signal: &Signal, token: &StopToken) -> SignalOrStop {
    let mut set = pin!(signal.wait());
    let mut stopped = pin!(token.stopped());
    poll_fn(|cx| {
        if set.as_mut().poll(cx).is_ready() {
            return Poll::Ready(SignalOrStop::Signal);
        }
        if stopped.as_mut().poll(cx).is_ready() {
            // Prefer the signal if it was set meanwhile.
            return Poll::Ready(if signal.is_set() {
                SignalOrStop::Signal
            } else {
                SignalOrStop::Stopped
            });
        }
        Poll::Pending
    })
    .await
}

/// Waits for the first fatal error in `slot` or for `done`; the error wins
/// when both are there. Returns the error (taking it from the slot) or `None`
/// for done without error.
///
/// # Example
///
/// ```
/// use lifecycle::{wait_error_or_done, FatalError, FatalSlot, Latch};
/// # futures_executor::block_on(async {
/// let slot = FatalSlot::new();
/// let done = Latch::new();
/// slot.report(FatalError::msg("boom"));
/// done.set();
/// let error = wait_error_or_done(&slot, &done.signal()).await;
/// assert_eq!(error.unwrap().to_string(), "boom");
/// # });
/// ```
pub async fn wait_error_or_done(slot: &FatalSlot, done: &Signal) -> Option<FatalError> {
    let mut first = pin!(slot.first());
    let mut finished = pin!(done.wait());
    // Someone else may take the error; then only `done` is left to wait for.
    let mut taken_elsewhere = false;
    poll_fn(|cx| {
        if !taken_elsewhere {
            match first.as_mut().poll(cx) {
                Poll::Ready(Some(error)) => return Poll::Ready(Some(error)),
                Poll::Ready(None) => taken_elsewhere = true,
                Poll::Pending => {}
            }
        }
        if finished.as_mut().poll(cx).is_ready() {
            return Poll::Ready(slot.take());
        }
        Poll::Pending
    })
    .await
}
