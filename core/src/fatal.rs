//! Fatal errors: [`FatalError`], the [`FatalSlot`] that keeps the first one
//! of a scope, and the [`FatalHook`] that receives the rest.
//!
//! A scope (a component, a worker group) can fail several times in a row: the
//! first error usually causes the others (a closed connection, a stopped
//! sibling). Only the first is the scope's verdict and is delivered, exactly
//! once, to whoever supervises the scope. Every later error goes to the slot's
//! hook and is counted, so nothing is ever dropped silently.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::error::Error;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::Ordering::Relaxed;
use core::task::{Context, Poll, Waker};

use crate::flag::{Flag, Guarded, HasFlag, Waiter};
use crate::stop::{StopSource, WithStop};
use crate::sync::AtomicUsize;

/// A type-erased, cheaply cloneable fatal error.
///
/// Components of many types report into one supervisor, so their errors are
/// erased to one type here, the way `anyhow` does it: any `Error` converts
/// with `?` or `.into()`, `Display` and `Debug` are those of the wrapped
/// error, it derefs to the wrapped `dyn Error` (for `source()` chains), and
/// [`downcast_ref`] gets the original back. There is no way to build an
/// "empty" fatal error: every one carries a cause.
///
/// [`downcast_ref`]: FatalError::downcast_ref
///
/// # Example
///
/// ```
/// use lifecycle::FatalError;
///
/// #[derive(Debug)]
/// struct DiskFull;
/// impl std::fmt::Display for DiskFull {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("disk full")
///     }
/// }
/// impl std::error::Error for DiskFull {}
///
/// let err: FatalError = DiskFull.into();
/// assert_eq!(err.to_string(), "disk full");
/// assert!(err.downcast_ref::<DiskFull>().is_some());
///
/// let msg = FatalError::msg("worker lost its lease");
/// assert_eq!(msg.to_string(), "worker lost its lease");
/// ```
#[derive(Clone)]
pub struct FatalError {
    inner: Arc<dyn Error + Send + Sync + 'static>,
}

impl FatalError {
    /// Wraps an error.
    pub fn new<E>(error: E) -> Self
    where
        E: Error + Send + Sync + 'static,
    {
        Self {
            inner: Arc::new(error),
        }
    }

    /// Wraps an already boxed error without boxing it again.
    ///
    /// # Example
    ///
    /// The boxed error keeps its type: it can still be downcast.
    ///
    /// ```
    /// use std::error::Error;
    /// use lifecycle::FatalError;
    ///
    /// let boxed: Box<dyn Error + Send + Sync> = std::io::Error::other("disk full").into();
    /// let error = FatalError::from_boxed(boxed);
    /// assert_eq!(error.to_string(), "disk full");
    /// assert!(error.downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn from_boxed(error: Box<dyn Error + Send + Sync + 'static>) -> Self {
        Self {
            inner: Arc::from(error),
        }
    }

    /// A fatal error that is only a message (a panic payload, an ad-hoc
    /// condition).
    pub fn msg<M>(message: M) -> Self
    where
        M: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        Self::new(Message(message))
    }

    /// The wrapped error, if it is of type `E`.
    ///
    /// # Example
    ///
    /// A handler looks at the kind of an I/O error behind a fatal one:
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use lifecycle::FatalError;
    ///
    /// let denied = Error::new(ErrorKind::PermissionDenied, "no access to /var/lib/app");
    /// let error = FatalError::new(denied);
    /// let io = error.downcast_ref::<Error>().expect("an io::Error");
    /// assert_eq!(io.kind(), ErrorKind::PermissionDenied);
    /// assert!(error.downcast_ref::<std::fmt::Error>().is_none(), "not another type");
    /// ```
    pub fn downcast_ref<E>(&self) -> Option<&E>
    where
        E: Error + 'static,
    {
        self.inner.downcast_ref::<E>()
    }

    /// Whether both values are clones of the same reported error.
    ///
    /// # Example
    ///
    /// Clones are the same report; an equal error made again is not:
    ///
    /// ```
    /// use lifecycle::FatalError;
    ///
    /// let error = FatalError::msg("disk full");
    /// assert!(error.same_as(&error.clone()));
    /// assert!(!error.same_as(&FatalError::msg("disk full")));
    /// ```
    pub fn same_as(&self, other: &FatalError) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Display for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.inner, f)
    }
}

impl fmt::Debug for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

impl core::ops::Deref for FatalError {
    type Target = dyn Error + Send + Sync + 'static;

    /// The wrapped error, for `source()` chains and downcasting.
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl AsRef<dyn Error + Send + Sync + 'static> for FatalError {
    fn as_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }
}

/// Any error converts, so `?` works inside workers. (This is why
/// `FatalError` itself does not implement `Error`: the blanket conversion
/// would then overlap with the reflexive `From<T> for T`. It derefs to the
/// wrapped `dyn Error` instead, as `anyhow::Error` does.)
impl<E> From<E> for FatalError
where
    E: Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl From<FatalError> for Box<dyn Error + Send + Sync + 'static> {
    fn from(error: FatalError) -> Self {
        Box::new(Shared(error.inner))
    }
}

/// A shared error behind a `Box`: forwards everything to it.
struct Shared(Arc<dyn Error + Send + Sync + 'static>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Error for Shared {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// An error that is only a message; `Debug` shows the message as is.
struct Message<M>(M);

impl<M: fmt::Display> fmt::Display for Message<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<M: fmt::Debug> fmt::Debug for Message<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<M: fmt::Display + fmt::Debug> Error for Message<M> {}

/// Where the fatal errors that are not a scope's first one go.
///
/// The default hook writes one line to standard error with the `std` feature
/// and does nothing without it; either way the slot counts the error (see
/// [`FatalSlot::unhandled_count`]). A custom hook is any `Fn(&FatalError)`;
/// it is called outside every lock of this crate, from whichever task
/// reported the error, and should return quickly.
///
/// # Example
///
/// ```
/// use lifecycle::{FatalError, FatalHook, FatalSlot};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let hook = FatalHook::new({
///     let seen = seen.clone();
///     move |err: &FatalError| seen.lock().unwrap().push(err.to_string())
/// });
/// let slot = FatalSlot::with_hook(hook);
/// slot.report(FatalError::msg("first"));
/// slot.report(FatalError::msg("second"));
/// assert_eq!(*seen.lock().unwrap(), ["second"]);
/// ```
#[derive(Clone, Default)]
pub struct FatalHook {
    custom: Option<Arc<HookFn>>,
}

type HookFn = dyn Fn(&FatalError) + Send + Sync + 'static;

impl FatalHook {
    /// A hook that calls `f` for every unhandled fatal error.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&FatalError) + Send + Sync + 'static,
    {
        Self {
            custom: Some(Arc::new(f)),
        }
    }

    /// Hands `error` to the hook.
    ///
    /// # Example
    ///
    /// Calling a slot's hook hands it the error without counting it, as
    /// [`FatalSlot::report_unhandled`] would:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lifecycle::{FatalError, FatalHook, FatalSlot};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let hook = FatalHook::new({
    ///     let seen = seen.clone();
    ///     move |err: &FatalError| seen.lock().unwrap().push(err.to_string())
    /// });
    /// let slot = FatalSlot::with_hook(hook);
    /// slot.hook().call(&FatalError::msg("cache flush failed"));
    /// assert_eq!(*seen.lock().unwrap(), ["cache flush failed"]);
    /// assert_eq!(slot.unhandled_count(), 0);
    /// ```
    pub fn call(&self, error: &FatalError) {
        match &self.custom {
            Some(f) => f(error),
            None => default_hook(error),
        }
    }
}

#[cfg(feature = "std")]
fn default_hook(error: &FatalError) {
    std::eprintln!("lifecycle: unhandled fatal error: {error}");
}

#[cfg(not(feature = "std"))]
fn default_hook(_error: &FatalError) {
    // Nowhere to write on a bare target; the slot's counter still records it.
}

impl fmt::Debug for FatalHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.custom.is_some() {
            "custom"
        } else {
            "default"
        };
        f.debug_tuple("FatalHook").field(&kind).finish()
    }
}

/// What [`FatalSlot::report`] did with an error.
///
/// # Example
///
/// A callback that reports every error it meets learns which one stops
/// the component:
///
/// ```
/// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported};
///
/// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
/// let mut stopping_on = None;
/// for error in ["connection reset", "timed out"] {
///     match slot.report(FatalError::msg(error)) {
///         Reported::First => stopping_on = Some(error), // the component stops with it
///         Reported::Unhandled => {}                     // the hook has it, and it is counted
///     }
/// }
/// assert_eq!(stopping_on, Some("connection reset"));
/// assert_eq!(slot.unhandled_count(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    /// It was the scope's first fatal error: recorded for delivery.
    First,
    /// The scope had one already: it went to the hook and was counted.
    Unhandled,
}

/// The first fatal error of a scope, delivered exactly once.
///
/// Clones share the slot: workers keep one to [`report`](FatalSlot::report)
/// into, the supervising party keeps one to [`take`](FatalSlot::take) from or
/// to wait on with [`first`](FatalSlot::first).
///
/// # Example
///
/// ```
/// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported};
/// # futures_executor::block_on(async {
/// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
/// let worker = slot.clone();
///
/// assert_eq!(worker.report(FatalError::msg("boom")), Reported::First);
/// assert_eq!(worker.report(FatalError::msg("again")), Reported::Unhandled);
///
/// let first = slot.first().await.expect("delivered once");
/// assert_eq!(first.to_string(), "boom");
/// assert!(slot.take().is_none()); // never twice
/// assert_eq!(slot.unhandled_count(), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct FatalSlot {
    owner: Arc<dyn SlotOwner>,
}

impl Default for FatalSlot {
    fn default() -> Self {
        Self::with_hook(FatalHook::default())
    }
}

/// Whatever holds a slot's state: the slot's own allocation, or a stop
/// node's, so that a supervised instance's scope (its stop source and its
/// slot) is one allocation, not two.
pub(crate) trait SlotOwner: Send + Sync + 'static {
    fn slot(&self) -> &SlotInner;

    /// Called once the first error is recorded: tells whoever watches the
    /// slot, if anyone does.
    fn recorded(&self) {}
}

impl SlotOwner for SlotInner {
    fn slot(&self) -> &SlotInner {
        self
    }
}

/// A slot its maker watches: `watcher` is woken with the first error. The
/// maker (a supervisor's node) gives its waker at creation, so watching
/// takes no registration and no cancel.
pub(crate) struct WatchedSlot {
    slot: SlotInner,
    watcher: Waker,
}

impl SlotOwner for WithStop<WatchedSlot> {
    fn slot(&self) -> &SlotInner {
        &self.slot
    }

    fn recorded(&self) {
        self.watcher.wake_by_ref();
    }
}

pub(crate) struct SlotInner {
    /// Set once the first error is recorded; guards the error itself.
    recorded: Guarded<Option<FatalError>>,
    hook: FatalHook,
    unhandled: AtomicUsize,
}

impl SlotInner {
    fn new(hook: FatalHook) -> Self {
        Self {
            recorded: Guarded::new(None),
            hook,
            unhandled: AtomicUsize::new(0),
        }
    }
}

impl HasFlag for SlotInner {
    fn flag(&self) -> &Flag {
        self.recorded.flag()
    }
}

impl FatalSlot {
    /// An empty slot with the default hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty slot whose later errors go to `hook`.
    ///
    /// # Example
    ///
    /// A slot that counts its later errors in a metric instead of writing
    /// them to standard error:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    /// use std::sync::Arc;
    /// use lifecycle::{FatalError, FatalHook, FatalSlot};
    ///
    /// let unhandled_errors = Arc::new(AtomicUsize::new(0)); // a metric
    /// let slot = FatalSlot::with_hook(FatalHook::new({
    ///     let unhandled_errors = unhandled_errors.clone();
    ///     move |_: &FatalError| {
    ///         unhandled_errors.fetch_add(1, Relaxed);
    ///     }
    /// }));
    ///
    /// slot.report(FatalError::msg("connection reset")); // the first: kept in the slot
    /// assert_eq!(unhandled_errors.load(Relaxed), 0);
    /// slot.report(FatalError::msg("write failed")); // a later one: to the hook
    /// assert_eq!(unhandled_errors.load(Relaxed), 1);
    /// assert_eq!(slot.take().map(|e| e.to_string()).as_deref(), Some("connection reset"));
    /// ```
    pub fn with_hook(hook: FatalHook) -> Self {
        Self {
            owner: Arc::new(SlotInner::new(hook)),
        }
    }

    /// A new root stop source and an empty slot whose later errors go to
    /// `hook`, in one allocation: the scope a supervisor gives each
    /// instance it starts. `watcher` is woken once the first error is
    /// recorded.
    pub(crate) fn with_stop_source(hook: FatalHook, watcher: Waker) -> (StopSource, FatalSlot) {
        let (source, shared) = StopSource::root_with(WatchedSlot {
            slot: SlotInner::new(hook),
            watcher,
        });
        (source, FatalSlot { owner: shared })
    }

    fn inner(&self) -> &SlotInner {
        self.owner.slot()
    }

    /// Reports a fatal error. The first one is recorded for delivery; every
    /// later one goes to the hook and is counted.
    ///
    /// # Example
    ///
    /// Two workers on threads of their own fail at the same time: exactly
    /// one report is the first, and its error is the one delivered.
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported};
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// let workers: Vec<_> = ["disk full", "lease lost"]
    ///     .into_iter()
    ///     .map(|why| {
    ///         let slot = slot.clone();
    ///         std::thread::spawn(move || (why, slot.report(FatalError::msg(why))))
    ///     })
    ///     .collect();
    /// let reports: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    ///
    /// let firsts: Vec<_> = reports.iter().filter(|(_, r)| *r == Reported::First).collect();
    /// assert_eq!(firsts.len(), 1, "{reports:?}");
    /// assert_eq!(slot.take().map(|e| e.to_string()).as_deref(), Some(firsts[0].0));
    /// assert_eq!(slot.unhandled_count(), 1, "the other one went to the hook");
    /// ```
    pub fn report(&self, error: FatalError) -> Reported {
        // The closure runs, and moves the error, only if this is the first.
        let mut pending = Some(error);
        self.inner().recorded.set(|slot| *slot = pending.take());
        match pending {
            None => {
                self.owner.recorded();
                Reported::First
            }
            Some(late) => self.report_unhandled(late),
        }
    }

    /// Hands `error` straight to the hook and counts it, without competing
    /// for the first place: for errors a scope already knows are not its
    /// first (a component reporting a second failure).
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let hook = FatalHook::new({
    ///     let seen = seen.clone();
    ///     move |err: &FatalError| seen.lock().unwrap().push(err.to_string())
    /// });
    /// let slot = FatalSlot::with_hook(hook);
    ///
    /// // A retry that failed after the first error was handled elsewhere.
    /// let reported = slot.report_unhandled(FatalError::msg("retry failed too"));
    /// assert_eq!(reported, Reported::Unhandled);
    /// assert!(!slot.is_recorded(), "the first place stays free");
    /// assert_eq!(*seen.lock().unwrap(), ["retry failed too"]);
    /// assert_eq!(slot.unhandled_count(), 1);
    /// ```
    pub fn report_unhandled(&self, error: FatalError) -> Reported {
        // Relaxed: a statistic, read on its own; no data hangs off it.
        self.inner().unhandled.fetch_add(1, Relaxed);
        self.inner().hook.call(&error);
        Reported::Unhandled
    }

    /// Whether a first error has been recorded (delivered or not): one call
    /// that finds the slot in whichever allocation holds it, and one atomic
    /// load.
    ///
    /// It is also `true`, with nothing to take, once the restart loop or
    /// supervisor that made the slot for an instance has let go of that
    /// instance: from then on every report goes to the hook.
    ///
    /// # Example
    ///
    /// Once an error is recorded the slot stays so, also after the error
    /// was taken: a later report can never be the first.
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported};
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// assert!(!slot.is_recorded(), "nothing reported yet");
    ///
    /// slot.report(FatalError::msg("lease lost"));
    /// assert!(slot.is_recorded());
    /// assert!(slot.take().is_some()); // delivered...
    /// assert!(slot.is_recorded(), "...and still recorded");
    /// assert_eq!(slot.report(FatalError::msg("lease lost again")), Reported::Unhandled);
    /// ```
    pub fn is_recorded(&self) -> bool {
        self.inner().recorded.is_set()
    }

    /// Takes the first error if it is recorded and not yet delivered. Returns
    /// `Some` at most once over the slot's whole life.
    ///
    /// # Example
    ///
    /// A supervising side that checks, without waiting, once its worker is
    /// done:
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot};
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// assert!(slot.take().is_none(), "nothing reported yet");
    ///
    /// slot.report(FatalError::msg("lease lost"));
    /// let error = slot.take().expect("the first error, once");
    /// assert_eq!(error.to_string(), "lease lost");
    /// assert!(slot.take().is_none());
    ///
    /// slot.report(FatalError::msg("lease lost again")); // to the hook
    /// assert!(slot.take().is_none(), "a later error is never delivered");
    /// ```
    pub fn take(&self) -> Option<FatalError> {
        let recorded = &self.inner().recorded;
        // The error is written before the flag shows set (both under the
        // flag's lock): while it shows unset there is nothing to take, and
        // one load says so without the lock.
        if !recorded.is_set() {
            return None;
        }
        recorded.with_state(|_, slot| slot.take())
    }

    /// Closes the slot for a reader that is going away: takes the first
    /// error if one is recorded and not yet delivered, and from then on
    /// every report goes to the hook, as a later error does, rather than
    /// waiting in the slot for a reader that will never come.
    pub(crate) fn close(&self) -> Option<FatalError> {
        let recorded = &self.inner().recorded;
        // Marked recorded, with nothing in it, unless a report was there
        // first; either way no report can be first after this. Only in the
        // second case can an error wait in it, so only then is the lock
        // taken again (a supervisor closes a slot at every instance's end).
        match recorded.set(|_| ()) {
            Some(()) => None,
            None => recorded.with_state(|_, slot| slot.take()),
        }
    }

    /// Closes the slot for a reader that is going away and has no use for
    /// what is in it: an error waiting there, and every one reported from
    /// now on, goes to the hook.
    pub(crate) fn close_to_hook(&self) {
        if let Some(error) = self.close() {
            self.report_unhandled(error);
        }
    }

    /// Waits until a first error is recorded, then takes it. Resolves to
    /// `None` if someone else took it first. Cancel-safe: dropping the future
    /// before it completes takes nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use futures_util::FutureExt;
    /// use lifecycle::{FatalError, FatalSlot};
    /// # futures_executor::block_on(async {
    /// let slot = FatalSlot::new();
    /// // A wait dropped before any report takes nothing.
    /// assert!(slot.first().now_or_never().is_none());
    ///
    /// slot.report(FatalError::msg("disk full"));
    /// let error = slot.first().await.expect("recorded and not taken");
    /// assert_eq!(error.to_string(), "disk full");
    /// assert!(slot.first().await.is_none(), "taken already: `None`, not a wait");
    /// # });
    /// ```
    pub fn first(&self) -> First<'_> {
        First(Waiter::new(self.inner()))
    }

    /// How many errors went to the hook rather than into the slot: those
    /// reported after the first, and every one handed to
    /// [`report_unhandled`](FatalSlot::report_unhandled).
    ///
    /// # Example
    ///
    /// The first error is delivered, not counted; every later one is counted,
    /// whichever way it was reported:
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot};
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// slot.report(FatalError::msg("connection reset"));
    /// assert_eq!(slot.unhandled_count(), 0);
    /// slot.report(FatalError::msg("write failed"));
    /// slot.report_unhandled(FatalError::msg("retry failed"));
    /// assert_eq!(slot.unhandled_count(), 2);
    /// ```
    pub fn unhandled_count(&self) -> usize {
        self.inner().unhandled.load(Relaxed)
    }

    /// The hook this slot hands later errors to.
    pub fn hook(&self) -> &FatalHook {
        &self.inner().hook
    }
}

impl fmt::Debug for FatalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FatalSlot")
            .field("is_recorded", &self.is_recorded())
            .field("unhandled", &self.unhandled_count())
            .finish()
    }
}

/// Future returned by [`FatalSlot::first`].
///
/// # Example
///
/// The supervising side waits for the first error a worker thread reports:
///
/// ```
/// use lifecycle::{FatalError, FatalSlot};
///
/// let slot = FatalSlot::new();
/// let worker = slot.clone();
/// let thread = std::thread::spawn(move || worker.report(FatalError::msg("lease lost")));
/// let first = futures_executor::block_on(slot.first());
/// assert_eq!(first.map(|error| error.to_string()).as_deref(), Some("lease lost"));
/// # thread.join().expect("the reporting thread does not panic");
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct First<'a>(Waiter<&'a SlotInner>);

impl Future for First<'_> {
    type Output = Option<FatalError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FatalError>> {
        let waiter = &mut self.get_mut().0;
        match waiter.poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(waiter.holder().recorded.with_state(|_, slot| slot.take()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for First<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("First")
            .field("is_recorded", &self.0.holder().recorded.is_set())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::CountingWaker;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use futures_util::FutureExt;
    use std::sync::Mutex;

    fn recording_slot() -> (FatalSlot, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = FatalHook::new({
            let seen = seen.clone();
            move |error: &FatalError| seen.lock().unwrap().push(error.to_string())
        });
        (FatalSlot::with_hook(hook), seen)
    }

    #[test]
    fn the_first_error_is_delivered_once_and_the_rest_reach_the_hook() {
        let (slot, seen) = recording_slot();
        assert!(!slot.is_recorded());
        assert_eq!(slot.report(FatalError::msg("one")), Reported::First);
        assert_eq!(slot.report(FatalError::msg("two")), Reported::Unhandled);
        assert_eq!(slot.report(FatalError::msg("three")), Reported::Unhandled);
        assert!(slot.is_recorded());
        assert_eq!(slot.take().map(|e| e.to_string()), Some("one".into()));
        assert!(slot.take().is_none());
        assert!(matches!(slot.first().now_or_never(), Some(None)));
        assert_eq!(*seen.lock().unwrap(), ["two", "three"]);
        assert_eq!(slot.unhandled_count(), 2);
    }

    #[test]
    fn first_waits_for_a_report_and_is_cancel_safe() {
        let (slot, _) = recording_slot();
        let (counter, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut cancelled = alloc::boxed::Box::pin(slot.first());
        assert!(cancelled.as_mut().poll(&mut cx).is_pending());
        drop(cancelled);
        let mut first = alloc::boxed::Box::pin(slot.first());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        slot.clone().report(FatalError::msg("late"));
        assert_eq!(counter.wakes(), 1);
        match first.as_mut().poll(&mut cx) {
            Poll::Ready(Some(error)) => assert_eq!(error.to_string(), "late"),
            other => panic!("expected the error, got {other:?}"),
        }
    }

    #[test]
    fn a_watched_slot_wakes_its_watcher_with_the_first_error_only() {
        let (counter, waker) = CountingWaker::new();
        let (source, slot) = FatalSlot::with_stop_source(FatalHook::new(|_| {}), waker);
        assert_eq!(counter.wakes(), 0);
        slot.report(FatalError::msg("first"));
        assert_eq!(counter.wakes(), 1);
        slot.report(FatalError::msg("second"));
        assert_eq!(counter.wakes(), 1);
        assert_eq!(slot.take().map(|e| e.to_string()), Some("first".into()));
        // The source beside it is an ordinary root.
        assert!(!source.is_stopped());
        assert!(source.stop());
    }

    #[test]
    fn concurrent_reports_deliver_exactly_one() {
        let (slot, seen) = recording_slot();
        let reporters: Vec<_> = (0..4)
            .map(|i| {
                let slot = slot.clone();
                std::thread::spawn(move || slot.report(FatalError::msg(i)))
            })
            .collect();
        let firsts = reporters
            .into_iter()
            .filter_map(|r| r.join().ok())
            .filter(|r| *r == Reported::First)
            .count();
        assert_eq!(firsts, 1);
        assert!(slot.take().is_some());
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert_eq!(slot.unhandled_count(), 3);
    }

    #[test]
    fn fatal_errors_are_transparent_wrappers() {
        #[derive(Debug)]
        struct Inner;
        impl fmt::Display for Inner {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("inner")
            }
        }
        impl Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = FatalError::new(Outer(Inner));
        assert_eq!(error.to_string(), "outer");
        assert_eq!(error.source().map(|s| s.to_string()), Some("inner".into()));
        assert!(error.downcast_ref::<Outer>().is_some());
        assert!(error.same_as(&error.clone()));
        assert!(!error.same_as(&FatalError::new(Outer(Inner))));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(Inner);
        assert_eq!(FatalError::from_boxed(boxed).to_string(), "inner");
        let back: Box<dyn Error + Send + Sync> = error.clone().into();
        assert_eq!(back.source().map(|s| s.to_string()), Some("inner".into()));
    }
}
