//! The runtime binding: the only place where the core meets an executor.
//!
//! The core never names an executor. Everything that needs one takes a
//! [`Runtime`]: spawn a future, sleep for a [`Duration`], read a monotonic
//! clock. Adapter crates implement it in a few dozen lines (`lifecycle-tokio`,
//! `lifecycle-smol`, `lifecycle-async-std`); a test kit can implement it with
//! virtual time.
//!
//! # Why `dyn Runtime` and not a generic parameter
//!
//! The trait is object safe and the core passes `Arc<dyn Runtime>` around
//! (alias [`SharedRuntime`]). A supervisor holds many components of different
//! types, each spawning workers and timers; a generic `R: Runtime` would have
//! to appear on every one of those types and every function that touches
//! them, and nesting supervisors would multiply it. What the dynamic call
//! costs is one virtual call and one boxed future per spawn or sleep. Spawning
//! already allocates a task, and lifecycle work is spawn-once-run-long, so the
//! box is noise next to the executor's own cost (see `benches/README.md`).
//!
//! # What the core adds on top
//!
//! Adapters only spawn *detached* futures. [`RuntimeExt::spawn`] wraps the
//! future so that join and abort behave identically on every executor:
//! - the [`JoinHandle`] completes only after the task's future has been
//!   dropped, so a completed join proves the task holds nothing any more;
//! - [`JoinHandle::abort`] drops the future at its next poll and the join
//!   reports [`JoinError::Aborted`];
//! - with the `std` feature a panic inside the task is caught and reported as
//!   [`JoinError::Panicked`] with its message, whatever the executor would
//!   have done with it (smol's would have unwound through its run loop);
//! - a task its executor drops unfinished (runtime shutdown) reports
//!   [`JoinError::Dropped`].

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::ops::Add;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use pin_project_lite::pin_project;

#[cfg(doc)]
use crate::task::JoinError;
use crate::task::{self, JoinHandle};

/// A boxed, sendable future: what crosses the [`Runtime`] boundary.
///
/// The output defaults to `()`, the tasks a runtime spawns and the timers it
/// returns; futures of different types fit in one list once boxed.
///
/// # Example
///
/// ```
/// use lifecycle::BoxFuture;
///
/// /// Halves an even number later, or computes an odd one's successor now.
/// fn step(n: u32) -> BoxFuture<u32> {
///     if n % 2 == 0 {
///         Box::pin(async move { n / 2 })
///     } else {
///         Box::pin(std::future::ready(3 * n + 1))
///     }
/// }
///
/// let steps: Vec<BoxFuture<u32>> = vec![step(6), step(3)];
/// let results = futures_executor::block_on(futures_util::future::join_all(steps));
/// assert_eq!(results, [3, 10]);
///
/// let task: BoxFuture = Box::pin(async {}); // `BoxFuture<()>`: what a runtime spawns
/// futures_executor::block_on(task);
/// ```
pub type BoxFuture<T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A runtime shared by everything that runs on it.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{JoinHandle, RuntimeExt, SharedRuntime};
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
///
/// /// A cache that refreshes itself on whatever runtime it is given.
/// struct Cache {
///     runtime: SharedRuntime,
/// }
///
/// impl Cache {
///     fn refresh(&self) -> JoinHandle<usize> {
///         self.runtime.spawn(async { 3 }) // entries loaded
///     }
/// }
///
/// let runtime: SharedRuntime = Arc::new(Threads); // any runtime: lifecycle_tokio, ...
/// let cache = Cache { runtime: runtime.clone() }; // clones share one runtime
/// assert_eq!(futures_executor::block_on(cache.refresh()), Ok(3));
/// assert_eq!(Arc::strong_count(&runtime), 2);
/// ```
pub type SharedRuntime = Arc<dyn Runtime>;

/// What the core needs from an executor. Implemented by the adapter crates.
///
/// Implementations must be cheap to call from any thread and from inside
/// tasks of the runtime. Most users never call these methods directly: they
/// use [`RuntimeExt`], which every `Runtime` (and `dyn Runtime`) has.
///
/// # Example: a runtime on top of a thread per task
///
/// ```
/// use lifecycle::{BoxFuture, Instant, Latch, Runtime, RuntimeExt};
/// use std::time::Duration;
///
/// struct Threads {
///     origin: std::time::Instant,
/// }
///
/// impl Runtime for Threads {
///     fn spawn_detached(&self, task: BoxFuture) {
///         std::thread::spawn(move || futures_executor::block_on(task));
///     }
///     fn sleep(&self, duration: Duration) -> BoxFuture {
///         // A timer thread sets a latch; the future waits on it.
///         let timer = Latch::new();
///         let fire = timer.clone();
///         std::thread::spawn(move || {
///             std::thread::sleep(duration);
///             fire.set();
///         });
///         Box::pin(timer.wait_owned())
///     }
///     fn now(&self) -> Instant {
///         Instant::from_origin(self.origin.elapsed())
///     }
/// }
///
/// let rt = Threads { origin: std::time::Instant::now() };
/// let answer = futures_executor::block_on(rt.spawn(async { 6 * 7 }));
/// assert_eq!(answer.unwrap(), 42);
/// ```
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` to completion on the executor without a handle. The core
    /// wraps every task it spawns, so the executor's own join handle is not
    /// needed and can be detached.
    fn spawn_detached(&self, task: BoxFuture);

    /// A future that completes after `duration` (on the runtime's clock).
    fn sleep(&self, duration: Duration) -> BoxFuture;

    /// The current time on the runtime's monotonic clock.
    fn now(&self) -> Instant;
}

impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn spawn_detached(&self, task: BoxFuture) {
        (**self).spawn_detached(task);
    }
    fn sleep(&self, duration: Duration) -> BoxFuture {
        (**self).sleep(duration)
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// Typed spawning, deadlines and timeouts on any [`Runtime`].
///
/// Implemented for every `Runtime`, `dyn Runtime` and [`SharedRuntime`]
/// included: import it and call its methods on the runtime.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{RuntimeExt, SharedRuntime};
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// let rt: SharedRuntime = Arc::new(Threads); // what a `Scope` hands out
/// let squares: Vec<_> = (1..=3u64).map(|n| rt.spawn(async move { n * n })).collect();
///
/// let mut total = 0;
/// for square in squares {
///     total += square.await?; // a `JoinError` if the task had failed
/// }
/// assert_eq!(total, 1 + 4 + 9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait RuntimeExt: Runtime {
    /// Spawns `future` and returns a handle to await its output or abort it.
    /// Dropping the handle detaches the task.
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        task::spawn(self, future)
    }

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        self.sleep(deadline.saturating_duration_since(self.now()))
    }

    /// Runs `future` for at most `duration`. If both are ready at once, the
    /// future's output wins.
    fn timeout<F: Future>(&self, duration: Duration, future: F) -> Timeout<F> {
        Timeout {
            future,
            sleep: self.sleep(duration),
            duration,
        }
    }
}

impl<R: Runtime + ?Sized> RuntimeExt for R {}

/// A point on a runtime's monotonic clock: the time since the runtime's
/// origin (its creation, typically).
///
/// Instants of different runtimes are not comparable.
///
/// # Example
///
/// ```
/// use lifecycle::Instant;
/// use std::time::Duration;
///
/// let start = Instant::from_origin(Duration::from_millis(5));
/// let later = start + Duration::from_millis(10);
/// assert_eq!(later.saturating_duration_since(start), Duration::from_millis(10));
/// assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    since_origin: Duration,
}

impl Instant {
    /// The instant `since_origin` after the clock's origin.
    pub const fn from_origin(since_origin: Duration) -> Self {
        Self { since_origin }
    }

    /// The time since the clock's origin.
    pub const fn since_origin(self) -> Duration {
        self.since_origin
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.since_origin.saturating_sub(earlier.since_origin)
    }

    /// `self + duration`, or `None` on overflow.
    pub fn checked_add(self, duration: Duration) -> Option<Instant> {
        self.since_origin
            .checked_add(duration)
            .map(Instant::from_origin)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the largest representable instant instead of panicking.
    fn add(self, duration: Duration) -> Instant {
        Instant::from_origin(self.since_origin.saturating_add(duration))
    }
}

pin_project! {
    /// Future returned by [`RuntimeExt::timeout`].
    ///
    /// It yields `Ok` with the future's output if the future completes
    /// first (or at the same poll as the timer), else `Err(`[`Elapsed`]`)`,
    /// dropping neither until the `Timeout` itself is dropped.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{Elapsed, RuntimeExt};
    /// use std::time::Duration;
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # struct Immediate;
    /// # impl Runtime for Immediate {
    /// #     fn spawn_detached(&self, task: BoxFuture) {
    /// #         std::thread::spawn(move || futures_executor::block_on(task));
    /// #     }
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// use futures_executor::block_on;
    ///
    /// let rt = Immediate; // a test runtime: every timer fires at once
    /// let limit = Duration::from_secs(5);
    ///
    /// // The time is up at the first poll, but a ready future still wins.
    /// let answer = block_on(rt.timeout(limit, async { 42 }));
    /// assert_eq!(answer, Ok(42));
    ///
    /// let stuck = block_on(rt.timeout(limit, std::future::pending::<u32>()));
    /// assert!(matches!(stuck, Err(Elapsed { .. })));
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: BoxFuture,
        duration: Duration,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed {
                duration: *this.duration,
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// The error of a [`Timeout`] whose time ran out.
///
/// # Example
///
/// ```
/// use lifecycle::{Elapsed, Runtime, RuntimeExt};
/// use std::error::Error;
/// use std::time::Duration;
/// # use lifecycle::{BoxFuture, Instant};
/// # struct Immediate;
/// # impl Runtime for Immediate {
/// #     fn spawn_detached(&self, task: BoxFuture) {
/// #         std::thread::spawn(move || futures_executor::block_on(task));
/// #     }
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
///
/// /// Asks a peer that never answers, for at most 250 ms.
/// async fn ask(rt: &dyn Runtime) -> Result<u32, Box<dyn Error + Send + Sync>> {
///     let answer = rt
///         .timeout(Duration::from_millis(250), std::future::pending::<u32>())
///         .await?;
///     Ok(answer)
/// }
///
/// let rt = Immediate; // a test runtime: every timer fires at once
/// let error = futures_executor::block_on(ask(&rt)).expect_err("the peer never answers");
/// let elapsed = error.downcast_ref::<Elapsed>().expect("the error is the timeout's");
/// assert_eq!(elapsed.duration(), Duration::from_millis(250));
/// assert_eq!(error.to_string(), "did not complete within 250ms");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    duration: Duration,
}

impl Elapsed {
    /// The time limit that passed.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "did not complete within {:?}", self.duration)
    }
}

impl core::error::Error for Elapsed {}
