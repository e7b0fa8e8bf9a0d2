//! The [`Component`] contract: start once, ready, shutdown signal, done.

use core::fmt;

use crate::fatal::FatalError;
use crate::latch::Signal;
use crate::scope::Scope;

/// Something with a life: started once, then ready, then (after its scope's
/// token stops, or a fatal error, or its work ends) shutting down, then done.
///
/// - The three signals can be obtained before [`start`](Component::start) and
///   are the same afterwards.
/// - `start` never blocks: it launches the work and returns.
/// - A second `start` fails with [`StartError::AlreadyStarted`] and has no
///   other effect, also after done.
/// - After a successful `start`, done is eventually set, also on errors (a
///   task that never yields can delay it; see [`abort`](Component::abort)).
/// - Ready may never be set (startup failed or shutdown began first); if it
///   is set, it is set before done.
/// - Shutdown is requested by stopping the scope's token; fatal errors are
///   reported into the scope's fatal slot.
///
/// [`ComponentManager`](crate::ComponentManager) implements it for a set of
/// async workers; implement it by hand to wrap anything else.
///
/// # Example: a component by hand
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use lifecycle::{Component, FatalSlot, Latch, RuntimeExt, Scope, Signal, StartError, StopSource};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
///
/// /// Ready at once; runs until its scope stops.
/// #[derive(Default)]
/// struct Idle {
///     started: AtomicBool,
///     ready: Latch,
///     shutdown: Latch,
///     done: Latch,
/// }
///
/// impl Component for Idle {
///     fn start(&self, scope: Scope) -> Result<(), StartError> {
///         if self.started.swap(true, Ordering::AcqRel) {
///             return Err(StartError::AlreadyStarted);
///         }
///         let (ready, shutdown, done) = (self.ready.clone(), self.shutdown.clone(), self.done.clone());
///         let token = scope.token().clone();
///         drop(scope.runtime().spawn(async move {
///             ready.set();
///             token.stopped().await;
///             shutdown.set();
///             done.set();
///         }));
///         Ok(())
///     }
///     fn ready(&self) -> Signal { self.ready.signal() }
///     fn shutdown_signal(&self) -> Signal { self.shutdown.signal() }
///     fn done(&self) -> Signal { self.done.signal() }
/// }
///
/// # futures_executor::block_on(async {
/// let idle = Idle::default();
/// let stop = StopSource::new();
/// idle.start(Scope::new(Arc::new(Threads), stop.token(), FatalSlot::new()))?;
/// idle.ready().wait().await;
/// stop.stop();
/// idle.done().wait().await;
/// # Ok::<(), StartError>(())
/// # }).unwrap();
/// ```
pub trait Component: Send + Sync + 'static {
    /// Launches the component's work in `scope` and returns at once.
    ///
    /// # Errors
    ///
    /// [`StartError::AlreadyStarted`] on every call after the first;
    /// [`StartError::Failed`] if the component could not launch.
    fn start(&self, scope: Scope) -> Result<(), StartError>;

    /// Set once initialisation is complete.
    fn ready(&self) -> Signal;

    /// Set once shutdown has begun.
    fn shutdown_signal(&self) -> Signal;

    /// Set once the component has fully stopped.
    fn done(&self) -> Signal;

    /// Drops the component's tasks at their next poll, for a component that
    /// did not stop in time after being told to. Done is set once they are
    /// gone. The default does nothing: not every component owns tasks.
    fn abort(&self) {}
}

/// Why [`Component::start`] failed.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, ComponentManager, FatalSlot, Scope, StartError, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::{sync::Arc, time::Duration};
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// let manager = ComponentManager::builder().build();
/// let stop = StopSource::new();
/// let scope = Scope::new(Arc::new(Nothing), stop.token(), FatalSlot::new());
/// assert!(manager.start(scope.clone()).is_ok());
/// let again = manager.start(scope).unwrap_err();
/// assert!(matches!(again, StartError::AlreadyStarted));
/// assert_eq!(
///     again.to_string(),
///     "component already started: a component starts once; build a fresh instance"
/// );
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The component was started before (components start once; build a
    /// fresh one to run again).
    AlreadyStarted,
    /// The component could not launch.
    Failed(FatalError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AlreadyStarted => f.write_str(
                "component already started: a component starts once; build a fresh instance",
            ),
            StartError::Failed(error) => write!(f, "component failed to start: {error}"),
        }
    }
}

/// For a start made on behalf of an I/O-facing caller (a host adapter's
/// `run`): a component started before is the caller's mistake
/// (`InvalidInput`); a component that could not launch is `Other`. The
/// `StartError` stays the source.
#[cfg(feature = "std")]
impl From<StartError> for std::io::Error {
    fn from(error: StartError) -> Self {
        let kind = match error {
            StartError::AlreadyStarted => std::io::ErrorKind::InvalidInput,
            StartError::Failed(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}

impl core::error::Error for StartError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            StartError::AlreadyStarted => None,
            StartError::Failed(error) => Some(&**error),
        }
    }
}
