//! Runs the `lifecycle` core on async-std.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052) and gets no more
//! fixes; new code should use `lifecycle-smol`, the executor async-std was
//! built on. This adapter keeps working so that existing async-std services
//! can adopt lifecycle and switch executors later by changing one line.
//!
//! [`AsyncStdRuntime`] spawns on async-std's global executor
//! ([`async_std::task::spawn`]), sleeps with [`async_std::task::sleep`] and
//! reads [`std::time::Instant`].
//!
//! # Example
//!
//! ```
//! use lifecycle::{RuntimeExt, StopSource};
//!
//! async_std::task::block_on(async {
//!     let rt = lifecycle_async_std::runtime();
//!     let stop = StopSource::new();
//!     let token = stop.token();
//!     let worker = rt.spawn(async move { token.stopped().await });
//!     stop.stop();
//!     assert!(worker.await.is_ok());
//! });
//! ```
//!
//! # A supervisor as the process's main job
//!
//! [`run`] runs a [`lifecycle::Supervisor`] on async-std's global executor
//! under SIGINT and SIGTERM (a graceful stop; a second SIGINT forces the
//! exit; SIGTERM releases a spin-halt) and returns a [`lifecycle::HostExit`]
//! whose code (the table is [`lifecycle::ExitReason`]'s) `main` returns as
//! `ExitCode::from(exit.code())`. [`signals`] is the stream of those
//! signals it listens to, the core's [`lifecycle::HostSignals`] (through
//! `async-signal`, on any executor), for building a [`lifecycle::HostRun`]
//! by hand. Both need a unix target; elsewhere they return an
//! `Unsupported` error.
//!
//! # Features
//!
//! - `signals` (default): [`signals`] and [`run`], with the core's
//!   `host-signals` (its `HostSignals` stream, which gives the signals back
//!   to their usual effect when it is dropped). Without it the crate is
//!   only the runtime binding.
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

use std::sync::Arc;
use std::time::Duration;

use lifecycle::{BoxFuture, Instant, Runtime, SharedRuntime};

/// The lifecycle runtime binding for async-std's global executor.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{RuntimeExt, SharedRuntime};
/// use lifecycle_async_std::AsyncStdRuntime;
///
/// let runtime: SharedRuntime = Arc::new(AsyncStdRuntime::new());
/// let task = runtime.spawn(async { 6 * 7 });
/// assert_eq!(async_std::task::block_on(task), Ok(42));
/// ```
#[derive(Clone, Debug)]
pub struct AsyncStdRuntime {
    origin: std::time::Instant,
}

impl AsyncStdRuntime {
    /// Binds to async-std's global executor, starting it on first use.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for AsyncStdRuntime {
    fn default() -> Self {
        Self::new()
    }
}

/// async-std's global executor as a [`SharedRuntime`].
pub fn runtime() -> SharedRuntime {
    Arc::new(AsyncStdRuntime::new())
}

impl Runtime for AsyncStdRuntime {
    fn spawn_detached(&self, task: BoxFuture) {
        // Dropping async-std's JoinHandle detaches the task.
        drop(async_std::task::spawn(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        Box::pin(async_std::task::sleep(duration))
    }

    fn now(&self) -> Instant {
        Instant::from_origin(self.origin.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::RuntimeExt;

    #[test]
    fn spawns_and_sleeps() {
        let rt = runtime();
        let before = rt.now();
        let task = rt.spawn({
            let rt = rt.clone();
            async move {
                rt.sleep(Duration::from_millis(10)).await;
                3
            }
        });
        assert_eq!(async_std::task::block_on(task), Ok(3));
        assert!(rt.now().saturating_duration_since(before) >= Duration::from_millis(10));
    }
}
