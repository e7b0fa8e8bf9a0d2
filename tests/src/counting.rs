//! [`CountingRuntime`]: a [`Runtime`] wrapper that knows how many of its tasks
//! are still alive.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lifecycle::{BoxFuture, Instant, Runtime, SharedRuntime};

/// Wraps any [`SharedRuntime`] and counts the tasks spawned through it.
///
/// A task counts as live from the moment it is handed to
/// [`spawn_detached`](Runtime::spawn_detached) until the executor drops its
/// future, whatever the reason: it finished, it was aborted, it panicked, or
/// the executor shut down with it still pending. The decrement sits in a
/// guard inside the future given to the executor, so a zero count proves that
/// the executor holds nothing of ours any more.
///
/// Sleeps and the clock are those of the wrapped runtime.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{RuntimeExt, SharedRuntime};
/// use lifecycle_conformance::CountingRuntime;
///
/// let executor = Arc::new(smol::Executor::new());
/// let counting = Arc::new(CountingRuntime::new(
///     lifecycle_smol::SmolRuntime::on(executor.clone()).shared(),
/// ));
/// let rt: SharedRuntime = counting.clone();
///
/// smol::block_on(executor.run(async {
///     let task = rt.spawn(async { 1 + 1 });
///     assert_eq!(counting.live_tasks(), 1);
///     assert_eq!(task.await, Ok(2));
/// }));
/// // One thread ran everything: the finished task was dropped before the
/// // join returned to the scenario.
/// assert_eq!(counting.live_tasks(), 0);
/// assert_eq!(counting.spawned_total(), 1);
/// ```
pub struct CountingRuntime {
    inner: SharedRuntime,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    live: AtomicUsize,
    spawned: AtomicUsize,
}

impl CountingRuntime {
    /// Wraps `inner`; both counts start at zero.
    pub fn new(inner: SharedRuntime) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// Tasks spawned through this runtime whose future the executor has not
    /// dropped yet.
    pub fn live_tasks(&self) -> usize {
        // Acquire pairs with the AcqRel decrement: seeing a task gone means
        // seeing everything its future did before it was dropped.
        self.counts.live.load(Acquire)
    }

    /// Tasks ever spawned through this runtime.
    pub fn spawned_total(&self) -> usize {
        self.counts.spawned.load(Relaxed)
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &SharedRuntime {
        &self.inner
    }
}

impl Runtime for CountingRuntime {
    fn spawn_detached(&self, task: BoxFuture) {
        self.counts.spawned.fetch_add(1, Relaxed);
        // Counted before the executor can run (and drop) the task, so the
        // count never goes below zero.
        self.counts.live.fetch_add(1, AcqRel);
        let counted = Counted {
            task,
            _live: LiveGuard(self.counts.clone()),
        };
        self.inner.spawn_detached(Box::pin(counted));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        self.inner.sleep(duration)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }
}

impl fmt::Debug for CountingRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingRuntime")
            .field("live_tasks", &self.live_tasks())
            .field("spawned_total", &self.spawned_total())
            .finish_non_exhaustive()
    }
}

/// The future handed to the wrapped executor. Fields drop in declaration
/// order: the task first, then the guard, so a task counts as live until its
/// own future (and everything it owns) is gone.
struct Counted {
    task: BoxFuture,
    _live: LiveGuard,
}

impl Future for Counted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.task.as_mut().poll(cx)
    }
}

struct LiveGuard(Arc<Counts>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, AcqRel);
    }
}
