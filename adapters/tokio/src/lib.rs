//! Runs the `lifecycle` core on tokio.
//!
//! [`TokioRuntime`] implements [`lifecycle::Runtime`] on a tokio runtime
//! handle: tasks go to [`Handle::spawn`], sleeps are [`tokio::time::sleep`],
//! and the clock is [`tokio::time::Instant`]. It works on current-thread and
//! multi-thread runtimes, and with tokio's paused test time
//! (`#[tokio::test(start_paused = true)]`): sleeps and the clock follow the
//! paused clock.
//!
//! The runtime must have its time driver enabled (`#[tokio::main]` and
//! `#[tokio::test]` do that; a hand-built runtime needs `enable_time()`).
//!
//! # Example
//!
//! ```
//! use lifecycle::{RuntimeExt, StopSource};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let rt = lifecycle_tokio::runtime();
//!     let stop = StopSource::new();
//!     let token = stop.token();
//!     let worker = rt.spawn(async move { token.stopped().await; "clean" });
//!     stop.stop();
//!     assert_eq!(worker.await.unwrap(), "clean");
//! }
//! ```
//!
//! # A supervisor as the process's main job
//!
//! [`run`] runs a [`lifecycle::Supervisor`] on the current tokio runtime
//! under SIGINT and SIGTERM (a graceful stop; a second SIGINT forces the
//! exit; SIGTERM releases a spin-halt) and returns a [`lifecycle::HostExit`]
//! whose code (the table is [`lifecycle::ExitReason`]'s) `main` returns as
//! `ExitCode::from(exit.code())`. [`signals`] is the stream of those
//! signals it listens to, for building a [`lifecycle::HostRun`] by hand.
//! Both need tokio's I/O driver (`#[tokio::main]` has it) and a unix
//! target; elsewhere they return an `Unsupported` error.
//!
//! # Features
//!
//! - `signals` (default): [`signals`] and [`run`], with tokio's `signal`
//!   feature and the core's `os-signals` (which gives the signals back to
//!   their usual effect when the stream is dropped, something tokio alone
//!   never does). Without it the crate is only the runtime binding.
//! - `systemd` (default, implies `signals`): [`run`] notifies systemd
//!   through [`lifecycle::Systemd`] when `NOTIFY_SOCKET` is set (`READY=1`
//!   once every node is ready, `STATUS=` lines, `STOPPING=1`, and
//!   `WATCHDOG=1` when `WatchdogSec=` is set); without `NOTIFY_SOCKET`
//!   nothing is sent.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "signals")]
mod host;

#[cfg(feature = "signals")]
pub use host::{run, signals, HostSignals};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::{BoxFuture, Instant, Runtime, SharedRuntime};
use tokio::runtime::Handle;

/// The lifecycle runtime binding for a tokio runtime.
///
/// Any flavor works: current-thread, multi-thread, and paused time
/// (`tokio::time::pause`, whose virtual clock [`now`](Runtime::now) and
/// sleeps follow).
///
/// # Example
///
/// Bound from outside the runtime through its handle, then used to spawn
/// and join a task:
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{RuntimeExt, SharedRuntime};
/// use lifecycle_tokio::TokioRuntime;
///
/// let tokio = tokio::runtime::Builder::new_multi_thread()
///     .worker_threads(2)
///     .enable_time()
///     .build()?;
/// let runtime: SharedRuntime = Arc::new(TokioRuntime::from_handle(tokio.handle().clone()));
/// let task = runtime.spawn(async { 6 * 7 });
/// assert_eq!(tokio.block_on(task), Ok(42));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct TokioRuntime {
    handle: Handle,
    origin: tokio::time::Instant,
}

impl TokioRuntime {
    /// Binds to the tokio runtime this code runs in.
    ///
    /// # Errors
    ///
    /// [`NoTokioRuntime`] when called outside a tokio runtime context.
    pub fn current() -> Result<Self, NoTokioRuntime> {
        let handle = Handle::try_current().map_err(|_| NoTokioRuntime)?;
        Ok(Self::from_handle(handle))
    }

    /// Binds to the runtime behind `handle`; usable from any thread.
    ///
    /// # Example
    ///
    /// The clock is read inside the runtime, so a runtime with paused time
    /// gives its virtual clock, even to a binding made outside it:
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle::{Runtime, RuntimeExt};
    /// use lifecycle_tokio::TokioRuntime;
    ///
    /// let tokio = tokio::runtime::Builder::new_current_thread()
    ///     .enable_time()
    ///     .start_paused(true)
    ///     .build()?;
    /// let runtime = TokioRuntime::from_handle(tokio.handle().clone());
    /// let before = runtime.now();
    /// // Paused time jumps to the next timer: an hour passes at once.
    /// tokio.block_on(runtime.sleep(Duration::from_secs(3600)));
    /// assert!(runtime.now().saturating_duration_since(before) >= Duration::from_secs(3600));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_handle(handle: Handle) -> Self {
        // The clock must be read inside the runtime for paused time to apply.
        let origin = {
            let _context = handle.enter();
            tokio::time::Instant::now()
        };
        Self { handle, origin }
    }

    /// The tokio handle tasks are spawned on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// The runtime of the current tokio context as a [`SharedRuntime`].
///
/// # Panics
///
/// Outside a tokio runtime, like [`tokio::spawn`]. Use
/// [`TokioRuntime::current`] to get an error instead.
pub fn runtime() -> SharedRuntime {
    match TokioRuntime::current() {
        Ok(runtime) => Arc::new(runtime),
        Err(error) => panic!("{error}"),
    }
}

impl Runtime for TokioRuntime {
    fn spawn_detached(&self, task: BoxFuture) {
        // Dropping tokio's JoinHandle detaches the task; the core's wrapper
        // does the joining.
        drop(self.handle.spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        // A tokio sleep binds to the timer of the context it is created in;
        // enter ours so that callers outside the runtime get a working timer.
        let _context = self.handle.enter();
        Box::pin(tokio::time::sleep(duration))
    }

    fn now(&self) -> Instant {
        let _context = self.handle.enter();
        Instant::from_origin(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

impl fmt::Debug for TokioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioRuntime")
            .field("flavor", &self.handle.runtime_flavor())
            .finish_non_exhaustive()
    }
}

/// [`TokioRuntime::current`] was called outside a tokio runtime.
///
/// # Example
///
/// ```
/// use lifecycle_tokio::{NoTokioRuntime, TokioRuntime};
///
/// // Plain `main`, no runtime yet.
/// assert_eq!(TokioRuntime::current().unwrap_err(), NoTokioRuntime);
///
/// let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
/// let _inside = tokio.enter();
/// assert!(TokioRuntime::current().is_ok());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoTokioRuntime;

impl fmt::Display for NoTokioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no tokio runtime in this context: call from inside a runtime or use TokioRuntime::from_handle",
        )
    }
}

impl std::error::Error for NoTokioRuntime {}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::RuntimeExt;

    #[tokio::test(start_paused = true)]
    async fn paused_time_drives_sleep_and_clock() {
        let rt = runtime();
        let before = rt.now();
        rt.sleep(Duration::from_secs(3600)).await;
        let slept = rt.now().saturating_duration_since(before);
        assert!(slept >= Duration::from_secs(3600), "slept {slept:?}");
        assert!(slept < Duration::from_secs(3601), "slept {slept:?}");
    }

    #[test]
    fn current_outside_a_runtime_is_an_error() {
        assert_eq!(TokioRuntime::current().err(), Some(NoTokioRuntime));
    }

    #[test]
    fn from_handle_works_from_outside_the_runtime() {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let rt = TokioRuntime::from_handle(tokio.handle().clone());
        let sleep = rt.sleep(Duration::from_millis(1));
        let task = rt.spawn(async move {
            sleep.await;
            7
        });
        assert_eq!(tokio.block_on(task), Ok(7));
    }
}
