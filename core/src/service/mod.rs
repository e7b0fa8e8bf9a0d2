//! The restartable start/stop [`Service`]: a contract, the [`StartStop`]
//! base that implements its hard parts, closure services and group helpers.
//!
//! A component ([`Component`](crate::Component)) lives once; a service can
//! be started, stopped and started again. One start..stop cycle is a
//! **generation**: it has its own stop scope (a child of the scope passed to
//! `start`), its own started latch and its own stopped latch.
//!
//! - [`Service`]: start, stop, started, stopped. Object safe, so
//!   heterogeneous services fit in one `Vec<Box<dyn Service>>`.
//! - [`StartStop`]: the base a service author embeds. The author writes only
//!   the start body: [`begin`](StartStop::begin) a generation (or learn that
//!   one is running), spawn the work in the generation's scope, call
//!   [`started`](StartedHandle::set) once running and
//!   [`stopped`](StoppedHandle::set) on the way out. Stopping, the latches
//!   and the edge cases (stop without start, concurrent stops, start during a
//!   stop, restart after a failed start) are the base's.
//! - [`service_fn`]: a service from one async closure.
//! - [`start_all`], [`stop_all`], [`wait_all_started`]: a group of services
//!   started in order with rollback, stopped concurrently, waited for.

mod base;
mod closure;
mod group;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::time::Duration;

use crate::fatal::FatalError;
use crate::latch::Signal;
use crate::runtime::{Elapsed, Runtime, RuntimeExt};
use crate::scope::Scope;

pub use base::{Generation, StartStop, StartedHandle, StopGuard, StoppedHandle};
pub use closure::{service_fn, ServiceFn};
pub use group::{start_all, stop_all, wait_all_started};

/// The future a [`Service`] method returns: boxed, so that the trait is
/// object safe, and `Send`, so that it can run in a spawned task.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{
///     service_fn, FatalError, FatalSlot, Scope, Service, ServiceFuture, StartOutcome, StopSource,
/// };
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// /// Stops whatever generation runs, then starts a new one.
/// fn restart<'a>(
///     service: &'a dyn Service,
///     scope: &'a Scope,
/// ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
///     Box::pin(async move {
///         service.stop().await;
///         service.start(scope).await
///     })
/// }
///
/// let service = service_fn(|generation| async move {
///     let Some(generation) = generation else { return Ok(()) };
///     generation.spawn_detached(|scope, started| async move {
///         started.set();
///         scope.token().stopped().await;
///     });
///     Ok(())
/// });
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// service.start(&scope).await?;
/// // A plain second start would be `AlreadyRunning`; a restart begins anew.
/// assert_eq!(restart(&service, &scope).await?, StartOutcome::Started);
/// service.stop().await;
/// # Ok::<(), FatalError>(())
/// # })?;
/// # Ok::<(), FatalError>(())
/// ```
pub type ServiceFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a successful [`Service::start`] did.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, FatalError, FatalSlot, Scope, Service, StartOutcome, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let service = service_fn(|generation| async move {
///     if let Some(generation) = generation {
///         generation.spawn_detached(|scope, started| async move {
///             started.set();
///             scope.token().stopped().await;
///         });
///     }
///     Ok(())
/// });
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// assert_eq!(service.start(&scope).await?, StartOutcome::Started);
/// // Starting a running service is harmless: it says so and changes nothing.
/// match service.start(&scope).await? {
///     StartOutcome::Started => panic!("a second generation beside the first"),
///     StartOutcome::AlreadyRunning => {}
/// }
/// service.stop().await;
/// assert_eq!(service.start(&scope).await?, StartOutcome::Started, "a new generation");
/// service.stop().await;
/// # Ok::<(), FatalError>(())
/// # })?;
/// # Ok::<(), FatalError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartOutcome {
    /// A new generation began.
    Started,
    /// A generation was running already; nothing changed.
    AlreadyRunning,
}

/// A service that can be started, stopped and started again.
///
/// The contract (the [`StartStop`] base keeps all of it for you):
/// - [`start`](Service::start) does its setup, backgrounds its work in a
///   generation scope below the given one, and returns; it may fail with a
///   startup error. Started while running, it does nothing and returns
///   [`StartOutcome::AlreadyRunning`]. Started while a stop is in progress,
///   it waits for that stop, then starts.
/// - [`stop`](Service::stop) returns once the generation has fully stopped.
///   It is a no-op without a start and after a stop, and every concurrent
///   caller returns only once the generation has stopped.
/// - [`started`](Service::started) is set once startup finished, or failed
///   and the generation stopped (so a set started latch does not mean
///   success); [`stopped`](Service::stopped) is set once the generation
///   ended. Asked for before a start, they belong to the coming generation.
///
/// # Example: a service by hand
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use lifecycle::{
///     FatalError, FatalSlot, Scope, Service, ServiceFuture, Signal,
///     StartOutcome, StartStop, StopSource,
/// };
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// /// Counts its generations; each one serves until stopped.
/// #[derive(Default)]
/// struct Counter {
///     base: StartStop,
///     generations: Arc<AtomicU64>,
/// }
///
/// impl Service for Counter {
///     fn start<'a>(&'a self, scope: &'a Scope) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
///         Box::pin(async move {
///             let Some(generation) = self.base.begin(scope).await else {
///                 return Ok(StartOutcome::AlreadyRunning);
///             };
///             let generations = self.generations.clone();
///             // The work runs in its own task; the generation ends when it returns.
///             generation.spawn_detached(|scope, started| async move {
///                 generations.fetch_add(1, Ordering::Relaxed);
///                 started.set();
///                 scope.token().stopped().await;
///             });
///             Ok(StartOutcome::Started)
///         })
///     }
///     fn stop(&self) -> ServiceFuture<'_, ()> { Box::pin(self.base.stop()) }
///     fn started(&self) -> Signal { self.base.started() }
///     fn stopped(&self) -> Signal { self.base.stopped() }
/// }
///
/// # futures_executor::block_on(async {
/// let counter = Counter::default();
/// let parent = StopSource::new();
/// let scope = Scope::new(Arc::new(Threads), parent.token(), FatalSlot::new());
/// for _ in 0..3 {
///     assert_eq!(counter.start(&scope).await?, StartOutcome::Started);
///     assert_eq!(counter.start(&scope).await?, StartOutcome::AlreadyRunning);
///     counter.started().wait().await;
///     counter.stop().await;
/// }
/// assert_eq!(counter.generations.load(Ordering::Relaxed), 3);
/// # Ok::<(), FatalError>(())
/// # }).unwrap();
/// ```
pub trait Service: Send + Sync {
    /// Starts a generation in a child scope of `scope`, or does nothing if
    /// one is running. Waits for a stop in progress first.
    ///
    /// # Errors
    ///
    /// The service's own startup error; the generation is then stopped and
    /// a later start begins a new one.
    fn start<'a>(&'a self, scope: &'a Scope)
        -> ServiceFuture<'a, Result<StartOutcome, FatalError>>;

    /// Stops the running generation and returns once it has fully stopped;
    /// returns at once if there is none.
    fn stop(&self) -> ServiceFuture<'_, ()>;

    /// Set once the coming or current generation finished starting, or
    /// failed and stopped.
    fn started(&self) -> Signal;

    /// Set once the coming or current generation has ended. Take it before
    /// calling [`stop`](Service::stop): asked for after a completed stop, it
    /// belongs to the next generation.
    fn stopped(&self) -> Signal;

    /// [`stop`](Service::stop) with a deadline on `runtime`'s clock.
    ///
    /// The stop future is dropped when the time runs out. For services on
    /// the [`StartStop`] base that abandons the stop as
    /// [`StopGuard::finalize`]`(false)` does: the generation's scope stays
    /// stopped, and a later stop completes it. Override this for a service
    /// whose stop must not be dropped half-way.
    ///
    /// # Errors
    ///
    /// [`Elapsed`] if the generation was not stopped within `timeout`.
    fn stop_within<'a>(
        &'a self,
        runtime: &'a dyn Runtime,
        timeout: Duration,
    ) -> ServiceFuture<'a, Result<(), Elapsed>> {
        Box::pin(runtime.timeout(timeout, self.stop()))
    }
}

/// Forwards every method, so `&S`, `Box<S>` and `Arc<S>` (including
/// `dyn Service`) work wherever a service is expected.
macro_rules! forward_service {
    ($($pointer:ty),+) => {$(
        impl<S: Service + ?Sized> Service for $pointer {
            fn start<'a>(
                &'a self,
                scope: &'a Scope,
            ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
                (**self).start(scope)
            }
            fn stop(&self) -> ServiceFuture<'_, ()> {
                (**self).stop()
            }
            fn started(&self) -> Signal {
                (**self).started()
            }
            fn stopped(&self) -> Signal {
                (**self).stopped()
            }
            fn stop_within<'a>(
                &'a self,
                runtime: &'a dyn Runtime,
                timeout: Duration,
            ) -> ServiceFuture<'a, Result<(), Elapsed>> {
                (**self).stop_within(runtime, timeout)
            }
        }
    )+};
}

forward_service!(&S, Box<S>, Arc<S>);
