//! Runs the `lifecycle` core on smol.
//!
//! [`SmolRuntime`] implements [`lifecycle::Runtime`] either on an executor you
//! own ([`SmolRuntime::on`], an `Arc<async_executor::Executor>`, re-exported by
//! smol as [`smol::Executor`]) or on smol's global spawner
//! ([`SmolRuntime::global`], i.e. [`smol::spawn`]). Timers are
//! [`async_io::Timer`](smol::Timer)s, driven by async-io's reactor whatever
//! executor polls them; the clock is [`std::time::Instant`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use lifecycle::{Latch, RuntimeExt};
//! use lifecycle_smol::SmolRuntime;
//!
//! let executor = Arc::new(smol::Executor::new());
//! let rt = SmolRuntime::on(executor.clone());
//! let ready = Latch::new();
//! let task = rt.spawn({
//!     let ready = ready.clone();
//!     async move { ready.set() }
//! });
//! smol::block_on(executor.run(async {
//!     ready.wait().await;
//!     assert_eq!(task.await, Ok(true));
//! }));
//! ```
//!
//! # A supervisor as the process's main job
//!
//! [`run`] runs a [`lifecycle::Supervisor`] on smol's global executor
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::{BoxFuture, Instant, Runtime, SharedRuntime};
use smol::Executor;

/// The lifecycle runtime binding for smol.
///
/// # Example
///
/// On an executor of the program's own, which runs while the program
/// waits for the task:
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::RuntimeExt;
/// use lifecycle_smol::SmolRuntime;
///
/// let executor = Arc::new(smol::Executor::new());
/// let runtime = SmolRuntime::on(executor.clone()).shared();
/// let task = runtime.spawn(async { 6 * 7 });
/// assert_eq!(smol::block_on(executor.run(task)), Ok(42));
/// ```
#[derive(Clone)]
pub struct SmolRuntime {
    /// `None`: smol's global executor.
    executor: Option<Arc<Executor<'static>>>,
    origin: std::time::Instant,
}

impl SmolRuntime {
    /// Spawns on smol's global executor ([`smol::spawn`]), which runs on its
    /// own threads (`SMOL_THREADS`, default one).
    pub fn global() -> Self {
        Self {
            executor: None,
            origin: std::time::Instant::now(),
        }
    }

    /// Spawns on `executor`. Tasks make progress only while something runs
    /// the executor (`executor.run(..)`, `executor.tick()`).
    ///
    /// # Example
    ///
    /// Nothing runs until the executor is ticked:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::RuntimeExt;
    /// use lifecycle_smol::SmolRuntime;
    ///
    /// let executor = Arc::new(smol::Executor::new());
    /// let runtime = SmolRuntime::on(executor.clone());
    /// let mut task = runtime.spawn(async { "ran" });
    /// assert!(!task.is_finished(), "nothing ran the executor yet");
    /// while executor.try_tick() {}
    /// assert!(task.is_finished());
    /// assert_eq!(smol::block_on(&mut task), Ok("ran"));
    /// ```
    pub fn on(executor: Arc<Executor<'static>>) -> Self {
        Self {
            executor: Some(executor),
            origin: std::time::Instant::now(),
        }
    }

    /// The executor tasks are spawned on; `None` for the global one.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle_smol::SmolRuntime;
    ///
    /// let executor = Arc::new(smol::Executor::new());
    /// let owned = SmolRuntime::on(executor.clone());
    /// assert!(owned.executor().is_some_and(|ex| Arc::ptr_eq(ex, &executor)));
    /// assert!(SmolRuntime::global().executor().is_none());
    /// ```
    pub fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        self.executor.as_ref()
    }

    /// This runtime as a [`SharedRuntime`].
    pub fn shared(self) -> SharedRuntime {
        Arc::new(self)
    }
}

/// smol's global executor as a [`SharedRuntime`].
pub fn runtime() -> SharedRuntime {
    SmolRuntime::global().shared()
}

impl Runtime for SmolRuntime {
    fn spawn_detached(&self, task: BoxFuture) {
        let task = match &self.executor {
            Some(executor) => executor.spawn(task),
            None => smol::spawn(task),
        };
        task.detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        // `Timer::after` saturates: a duration past the clock's range never fires.
        let timer = smol::Timer::after(duration);
        Box::pin(async move {
            timer.await;
        })
    }

    fn now(&self) -> Instant {
        Instant::from_origin(self.origin.elapsed())
    }
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let executor = if self.executor.is_some() {
            "owned"
        } else {
            "global"
        };
        f.debug_struct("SmolRuntime")
            .field("executor", &executor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::RuntimeExt;

    #[test]
    fn global_spawner_runs_tasks() {
        let rt = runtime();
        let task = rt.spawn(async { 5 });
        assert_eq!(smol::block_on(task), Ok(5));
    }

    #[test]
    fn sleep_waits_at_least_its_duration() {
        let rt = runtime();
        let before = rt.now();
        smol::block_on(rt.sleep(Duration::from_millis(20)));
        assert!(rt.now().saturating_duration_since(before) >= Duration::from_millis(20));
    }
}
