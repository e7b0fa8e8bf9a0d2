//! [`Latch`]: a one-shot broadcast signal.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::flag::{Flag, Waiter};

/// A one-shot broadcast signal: unset until [`set`](Latch::set) is called
/// once, set forever after. The Rust form of Go's "closed channel".
///
/// - [`is_set`](Latch::is_set) is a single atomic load (behind one call that
///   finds the flag in whichever allocation holds it), never a lock.
/// - [`wait`](Latch::wait) is a future that completes once the latch is set (at
///   once if it already is), for any number of waiters. It is cancel-safe: a
///   waiter dropped before completion removes itself.
/// - Whatever a task wrote before `set()` is visible to any task that observed
///   the latch set, through `is_set` or a completed `wait`.
///
/// A `Latch` is a handle: clones share the same signal, so one clone can be
/// set while others are waited on from other tasks.
///
/// # Example
///
/// ```
/// use lifecycle::Latch;
/// # futures_executor::block_on(async {
/// let ready = Latch::new();
/// let waiter = ready.clone().wait_owned();
///
/// assert!(ready.set()); // this call set it
/// assert!(!ready.set()); // already set: sticky
/// waiter.await; // completes: the latch is set
/// assert!(ready.is_set());
/// # });
/// ```
#[derive(Clone)]
pub struct Latch {
    flag: FlagRef,
}

impl Default for Latch {
    fn default() -> Self {
        Self::in_owner(Arc::new(Flag::new()), 0)
    }
}

/// Whatever holds a latch's flag: a standalone latch's own allocation, or a
/// component's shared state holding its ready, shutdown and done flags side
/// by side, so that one allocation serves all three. `which` picks the flag.
pub(crate) trait FlagOwner: Send + Sync + 'static {
    fn flag(&self, which: u8) -> &Flag;
}

impl FlagOwner for Flag {
    fn flag(&self, _which: u8) -> &Flag {
        self
    }
}

/// A counted handle on one flag of a [`FlagOwner`].
#[derive(Clone)]
pub(crate) struct FlagRef {
    owner: Arc<dyn FlagOwner>,
    which: u8,
}

impl core::ops::Deref for FlagRef {
    type Target = Flag;

    #[inline]
    fn deref(&self) -> &Flag {
        self.owner.flag(self.which)
    }
}

impl Latch {
    /// Creates an unset latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the latch and wakes every waiter. Returns `true` if this call set
    /// it, `false` if it was set already.
    pub fn set(&self) -> bool {
        self.flag.raise()
    }

    /// Whether the latch is set: one atomic load with `Acquire` ordering.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.flag.is_set()
    }

    /// Waits until the latch is set, borrowing it.
    pub fn wait(&self) -> Wait<'_> {
        Wait(Waiter::new(&*self.flag))
    }

    /// Waits until the latch is set, owning a handle: the future is `'static`
    /// and can be moved into a spawned task.
    ///
    /// # Example
    ///
    /// The future borrows nothing, so another thread can wait on it:
    ///
    /// ```
    /// use lifecycle::Latch;
    ///
    /// let ready = Latch::new();
    /// let wait = ready.clone().wait_owned();
    /// let waiter = std::thread::spawn(move || futures_executor::block_on(wait));
    /// ready.set();
    /// waiter.join().expect("the waiter returns once the latch is set");
    /// ```
    pub fn wait_owned(self) -> WaitOwned {
        WaitOwned(Waiter::new(self.flag))
    }

    /// Whether both handles refer to the same latch.
    pub fn same_as(&self, other: &Latch) -> bool {
        core::ptr::eq::<Flag>(&*self.flag, &*other.flag)
    }

    /// The latch `which` of `owner` (one of the flags it holds).
    pub(crate) fn in_owner(owner: Arc<dyn FlagOwner>, which: u8) -> Latch {
        Latch {
            flag: FlagRef { owner, which },
        }
    }

    /// A read-only view of this latch: it can be waited on, never set.
    pub fn signal(&self) -> Signal {
        Signal(self.clone())
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiter_count(&self) -> usize {
        self.flag.waiter_count()
    }
}

impl fmt::Debug for Latch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latch")
            .field("is_set", &self.is_set())
            .finish()
    }
}

/// A read-only view of a [`Latch`]: wait for it or check it, never set it.
///
/// Components hand out their ready, shutdown and done latches as signals, so
/// that only the component itself can set them (a Go `<-chan struct{}`).
///
/// # Example
///
/// ```
/// use lifecycle::Latch;
/// # futures_executor::block_on(async {
/// let done = Latch::new();
/// let signal = done.signal();
/// assert!(!signal.is_set());
/// done.set();
/// signal.wait().await;
/// # });
/// ```
#[derive(Clone)]
pub struct Signal(Latch);

impl Signal {
    /// Whether the latch is set: one atomic load with `Acquire` ordering.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.is_set()
    }

    /// Waits until the latch is set, borrowing the signal.
    pub fn wait(&self) -> Wait<'_> {
        self.0.wait()
    }

    /// Waits until the latch is set; the future is `'static`.
    ///
    /// # Example
    ///
    /// A watcher thread gets the read-only view and waits on it:
    ///
    /// ```
    /// use lifecycle::Latch;
    ///
    /// let done = Latch::new();
    /// let signal = done.signal();
    /// let watcher = std::thread::spawn(move || futures_executor::block_on(signal.wait_owned()));
    /// done.set();
    /// watcher.join().expect("the watcher returns once the latch is set");
    /// ```
    pub fn wait_owned(self) -> WaitOwned {
        self.0.wait_owned()
    }

    /// Whether both views show the same latch (for a latch, compare with
    /// its [`signal`](Latch::signal)).
    pub fn same_as(&self, other: &Signal) -> bool {
        self.0.same_as(&other.0)
    }
}

impl From<Latch> for Signal {
    fn from(latch: Latch) -> Self {
        Signal(latch)
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("is_set", &self.is_set())
            .finish()
    }
}

/// Future returned by [`Latch::wait`] (and [`Signal::wait`]).
///
/// It borrows the latch; any number of them may wait on one latch. It is
/// cancel-safe: dropping it before completion unregisters it.
///
/// # Example
///
/// ```
/// use futures_util::FutureExt;
/// use lifecycle::Latch;
///
/// let ready = Latch::new();
/// let mut wait = ready.wait(); // borrows the latch
/// assert!((&mut wait).now_or_never().is_none(), "unset: still pending");
///
/// ready.set();
/// assert_eq!(wait.now_or_never(), Some(()), "set: completes");
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct Wait<'a>(Waiter<&'a Flag>);

/// Future returned by [`Latch::wait_owned`] (and [`Signal::wait_owned`]).
///
/// It owns a handle on the latch, so it is `'static` and `Send`: it can
/// move into a spawned task or another thread. Whatever was written before
/// the latch was set is visible once it completes.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
/// use std::sync::Arc;
/// use lifecycle::Latch;
///
/// let port = Arc::new(AtomicU16::new(0));
/// let bound = Latch::new();
/// let wait = bound.signal().wait_owned(); // 'static: moves into the thread
/// let client = {
///     let port = port.clone();
///     std::thread::spawn(move || {
///         futures_executor::block_on(wait);
///         port.load(Relaxed) // the latch orders this after the store
///     })
/// };
///
/// port.store(8080, Relaxed);
/// bound.set();
/// assert_eq!(client.join().expect("the client does not panic"), 8080);
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct WaitOwned(Waiter<FlagRef>);

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.poll(cx)
    }
}

impl WaitOwned {
    /// See [`Waiter::poll_same_waker`].
    pub(crate) fn poll_same_waker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_same_waker(cx)
    }
}

impl Future for WaitOwned {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.poll(cx)
    }
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_set = self.0.holder().is_set();
        f.debug_struct("Wait").field("is_set", &is_set).finish()
    }
}

impl fmt::Debug for WaitOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_set = self.0.holder().is_set();
        f.debug_struct("WaitOwned")
            .field("is_set", &is_set)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::CountingWaker;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use futures_util::FutureExt;

    #[test]
    fn set_is_sticky_and_reports_the_first_call() {
        let latch = Latch::new();
        assert!(!latch.is_set());
        assert!(latch.set());
        assert!(!latch.set());
        assert!(latch.is_set());
        assert!(latch.clone().is_set(), "clones share the signal");
    }

    #[test]
    fn wait_completes_at_once_when_already_set() {
        let latch = Latch::new();
        latch.set();
        assert_eq!(latch.wait().now_or_never(), Some(()));
        assert_eq!(latch.clone().wait_owned().now_or_never(), Some(()));
    }

    #[test]
    fn set_wakes_every_registered_waiter_once() {
        let latch = Latch::new();
        let (counter, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(latch.wait())).collect();
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(latch.waiter_count(), 3);
        latch.set();
        assert_eq!(counter.wakes(), 3);
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
        assert_eq!(latch.waiter_count(), 0);
    }

    #[test]
    fn a_dropped_waiter_unregisters() {
        let latch = Latch::new();
        let (counter, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut kept = Box::pin(latch.wait());
        let mut dropped = Box::pin(latch.clone().wait_owned());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        assert!(dropped.as_mut().poll(&mut cx).is_pending());
        drop(dropped);
        assert_eq!(latch.waiter_count(), 1);
        latch.set();
        assert_eq!(counter.wakes(), 1, "only the live waiter is woken");
    }

    #[test]
    fn repolling_with_another_waker_replaces_it() {
        let latch = Latch::new();
        let (first, first_waker) = CountingWaker::new();
        let (second, second_waker) = CountingWaker::new();
        let mut wait = Box::pin(latch.wait());
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending());
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending());
        assert_eq!(latch.waiter_count(), 1);
        latch.set();
        assert_eq!((first.wakes(), second.wakes()), (0, 1));
    }

    #[test]
    fn waiters_on_other_threads_see_writes_made_before_set() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let data = Arc::new(AtomicUsize::new(0));
        let latch = Latch::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (latch, data) = (latch.clone(), data.clone());
                std::thread::spawn(move || {
                    futures_executor::block_on(latch.wait());
                    // Relaxed on purpose: the latch must provide the ordering.
                    data.load(Relaxed)
                })
            })
            .collect();
        data.store(42, Relaxed);
        latch.set();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), 42);
        }
    }
}
