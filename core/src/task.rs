//! Spawned tasks: the wrapper that gives every executor the same join, abort
//! and panic behaviour, and the [`JoinHandle`] that observes it.
//!
//! A task's shared state is one [`Guarded`] flag holding its outcome (set
//! once the future has been dropped) plus an abort flag, which the task's
//! waker waits on while the task runs. The wrapper drops the future *before*
//! publishing the outcome, so a completed join proves the future and
//! everything it owned are gone.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::flag::{Flag, Guarded, HasFlag, Waiter, SOLE_WAITER};
use crate::runtime::Runtime;

/// Why a task did not produce its output.
///
/// # Example
///
/// ```
/// use lifecycle::{JoinError, RuntimeExt};
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
///
/// /// What a log line says about a task that ended.
/// fn report(outcome: Result<u32, JoinError>) -> String {
///     match outcome {
///         Ok(rows) => format!("imported {rows} rows"),
///         Err(JoinError::Panicked(message)) => format!("import panicked: {message}"),
///         Err(error) => format!("no import: {error}"),
///     }
/// }
///
/// # futures_executor::block_on(async {
/// let rt = Threads; // any runtime: lifecycle_tokio, lifecycle_smol, ...
/// let import = rt.spawn(async { panic!("bad header") });
/// assert_eq!(report(import.await), "import panicked: bad header");
///
/// let import = rt.spawn(std::future::pending());
/// import.abort();
/// assert_eq!(report(import.await), "no import: task was aborted");
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// [`JoinHandle::abort`] stopped it.
    Aborted,
    /// It panicked (only with the `std` feature); carries the panic message.
    Panicked(String),
    /// Its executor dropped it before it finished (e.g. the runtime shut
    /// down).
    Dropped,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Aborted => f.write_str("task was aborted"),
            JoinError::Panicked(message) => write!(f, "task panicked: {message}"),
            JoinError::Dropped => {
                f.write_str("task was dropped by its executor before it finished")
            }
        }
    }
}

impl core::error::Error for JoinError {}

type Outcome<T> = Option<Result<T, JoinError>>;

struct Shared<T> {
    /// Set once the future is gone; holds the outcome until it is joined.
    finished: Guarded<Outcome<T>>,
    /// Set by `abort`. While the task runs its waker waits here (the sole
    /// waiter), so that `abort` gets the task polled.
    abort: Flag,
}

impl<T> HasFlag for Shared<T> {
    fn flag(&self) -> &Flag {
        self.finished.flag()
    }
}

pin_project! {
    /// The future actually handed to the executor.
    struct Task<F: Future> {
        #[pin]
        future: Option<F>,
        shared: Arc<Shared<F::Output>>,
    }

    impl<F: Future> PinnedDrop for Task<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.future.is_some() {
                // The executor gave up on us (runtime shutdown): still drop the
                // future first, then tell the joiner.
                let outcome = drop_future(this.future.as_mut()).and(Err(JoinError::Dropped));
                finish(this.shared, outcome);
            }
        }
    }
}

pub(crate) fn spawn<R, F>(runtime: &R, future: F) -> JoinHandle<F::Output>
where
    R: Runtime + ?Sized,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let shared = Arc::new(Shared {
        finished: Guarded::new(None),
        abort: Flag::new(),
    });
    runtime.spawn_detached(Box::pin(Task {
        future: Some(future),
        shared: shared.clone(),
    }));
    JoinHandle(Waiter::new(shared))
}

impl<F: Future> Future for Task<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        // Reads the abort and registers (or refreshes) the task's waker in
        // one step under the flag's lock: an abort is seen now or wakes us.
        let mut key = SOLE_WAITER;
        let outcome = if this.shared.abort.poll_wait(&mut key, cx).is_ready() {
            Err(JoinError::Aborted)
        } else {
            match poll_catching_panics(future, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => outcome,
            }
        };
        let outcome = drop_future(this.future.as_mut()).and(outcome);
        finish(this.shared, outcome);
        Poll::Ready(())
    }
}

fn finish<T>(shared: &Shared<T>, outcome: Result<T, JoinError>) {
    // The task will not be polled again: free its waker (and with it, on
    // most executors, the task's memory) now rather than at the join.
    let mut key = SOLE_WAITER;
    shared.abort.cancel_wait(&mut key);
    shared.finished.set(|slot| *slot = Some(outcome));
}

/// Runs `f`; with `std`, a panic in it is returned as
/// [`JoinError::Panicked`] instead of unwinding into the caller (the
/// executor).
pub(crate) fn catch_panics<R>(f: impl FnOnce() -> R) -> Result<R, JoinError> {
    #[cfg(feature = "std")]
    {
        // AssertUnwindSafe: after a panic the callers drop whatever `f`
        // touched and never use it again, so no broken invariant of it can
        // be observed.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .map_err(|payload| JoinError::Panicked(panic_message(&*payload)))
    }
    #[cfg(not(feature = "std"))]
    {
        Ok(f())
    }
}

/// Polls `future`, catching a panic (see [`catch_panics`]).
pub(crate) fn poll_catching_panics<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, JoinError>> {
    match catch_panics(|| future.poll(cx)) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// Drops the future in `slot`, catching a panicking destructor (see
/// [`catch_panics`]).
pub(crate) fn drop_future<F>(mut slot: Pin<&mut Option<F>>) -> Result<(), JoinError> {
    catch_panics(|| slot.set(None))
}

/// The message of a panic payload: the `&str` or `String` given to `panic!`.
#[cfg(feature = "std")]
pub(crate) fn panic_message(payload: &(dyn core::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        String::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        String::from("panic with a non-string payload")
    }
}

/// A handle to a task spawned with [`RuntimeExt::spawn`](crate::RuntimeExt::spawn).
///
/// Awaiting it yields the task's output, or a [`JoinError`] saying why there
/// is none. It completes only after the task's future has been dropped.
/// Dropping the handle detaches the task: it keeps running.
///
/// Awaiting the handle again after it completed stays pending: the outcome is
/// delivered once.
///
/// # Example
///
/// ```
/// use lifecycle::{BoxFuture, Instant, JoinError, Runtime, RuntimeExt};
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// let rt = Threads; // any runtime: lifecycle_tokio, lifecycle_smol, ...
/// let forever = rt.spawn(std::future::pending::<()>());
/// forever.abort();
/// assert_eq!(forever.await, Err(JoinError::Aborted));
///
/// let panics = rt.spawn(async { panic!("oops") });
/// assert_eq!(panics.await, Err::<(), _>(JoinError::Panicked("oops".into())));
/// # });
/// ```
pub struct JoinHandle<T>(Waiter<Arc<Shared<T>>>);

impl<T> JoinHandle<T> {
    /// Asks the task to stop: its future is dropped at its next poll (which
    /// this call triggers) and the join reports [`JoinError::Aborted`]. A task
    /// that finished already keeps its outcome. A task stuck in a blocking
    /// call cannot be interrupted; it is dropped once it yields.
    ///
    /// # Example
    ///
    /// The future, and what it owns, is dropped before the join completes:
    ///
    /// ```
    /// use lifecycle::{JoinError, Latch, RuntimeExt};
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// /// Sets its latch when dropped, as a connection would close.
    /// struct Connection(Latch);
    /// impl Drop for Connection {
    ///     fn drop(&mut self) {
    ///         self.0.set();
    ///     }
    /// }
    ///
    /// # futures_executor::block_on(async {
    /// let closed = Latch::new();
    /// let connection = Connection(closed.clone());
    /// let task = Threads.spawn(async move {
    ///     let _connection = connection;
    ///     std::future::pending::<()>().await
    /// });
    /// task.abort();
    /// assert_eq!(task.await, Err(JoinError::Aborted));
    /// assert!(closed.is_set());
    /// # });
    /// ```
    pub fn abort(&self) {
        self.0.holder().abort.raise();
    }

    /// Whether the task's future is gone (finished, aborted, panicked or
    /// dropped): one atomic load.
    ///
    /// # Example
    ///
    /// A task waiting on a latch is not finished; once its join completed,
    /// it is:
    ///
    /// ```
    /// use lifecycle::{Latch, RuntimeExt};
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let go = Latch::new();
    /// let mut task = Threads.spawn(go.clone().wait_owned());
    /// assert!(!task.is_finished(), "it waits for the latch");
    /// go.set();
    /// assert_eq!((&mut task).await, Ok(()));
    /// assert!(task.is_finished(), "the join completes after the future is gone");
    /// # });
    /// ```
    pub fn is_finished(&self) -> bool {
        self.0.holder().finished.is_set()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let waiter = &mut self.get_mut().0;
        match waiter.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => match waiter.holder().finished.with_state(|_, slot| slot.take()) {
                Some(outcome) => Poll::Ready(outcome),
                None => Poll::Pending,
            },
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("is_finished", &self.is_finished())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::{Dropper, Threads};
    use crate::{Latch, RuntimeExt};
    use alloc::string::ToString;
    use futures_executor::block_on;

    /// Sets its latch when dropped.
    struct SetOnDrop(Latch);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set();
        }
    }

    #[test]
    fn join_returns_the_output() {
        assert_eq!(block_on(Threads::new().spawn(async { 7 })), Ok(7));
    }

    #[test]
    fn abort_drops_the_future_before_the_join_completes() {
        let rt = Threads::new();
        let (started, dropped) = (Latch::new(), Latch::new());
        let task = rt.spawn({
            let started = started.clone();
            let guard = SetOnDrop(dropped.clone());
            async move {
                let _guard = guard;
                started.set();
                core::future::pending::<()>().await;
            }
        });
        block_on(started.wait());
        assert!(!task.is_finished());
        task.abort();
        let joined = block_on(task);
        assert_eq!(joined, Err(JoinError::Aborted));
        assert!(dropped.is_set(), "the join completes after the drop");
    }

    #[test]
    fn abort_after_completion_keeps_the_output() {
        let rt = Threads::new();
        let mut task = rt.spawn(async { "done" });
        while !task.is_finished() {
            std::thread::yield_now();
        }
        task.abort();
        assert_eq!(block_on(&mut task), Ok("done"));
    }

    #[test]
    fn a_panic_becomes_a_join_error_with_its_message() {
        let rt = Threads::new();
        let task = rt.spawn(async {
            if true {
                panic!("worker {} failed", 3);
            }
        });
        assert_eq!(
            block_on(task),
            Err(JoinError::Panicked("worker 3 failed".into()))
        );
    }

    #[test]
    fn a_task_dropped_by_its_executor_reports_dropped() {
        let dropped = Latch::new();
        let guard = SetOnDrop(dropped.clone());
        let task = Dropper.spawn(async move {
            let _guard = guard;
        });
        assert_eq!(block_on(task), Err(JoinError::Dropped));
        assert!(dropped.is_set());
    }

    #[test]
    fn timeout_prefers_the_output_and_reports_the_limit() {
        use core::time::Duration;
        let rt = Threads::new();
        let ready = block_on(rt.timeout(Duration::ZERO, async { 1 }));
        assert_eq!(ready, Ok(1));
        let late = block_on(rt.timeout(Duration::from_millis(1), core::future::pending::<()>()));
        let elapsed = late.unwrap_err();
        assert_eq!(elapsed.duration(), Duration::from_millis(1));
        assert_eq!(elapsed.to_string(), "did not complete within 1ms");
    }
}
