//! Groups of services: [`start_all`], [`stop_all`], [`wait_all_started`].

use alloc::vec::Vec;
use core::future::Future;

use futures_util::future::{join_all, JoinAll};
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Service, ServiceFuture, StartOutcome};
use crate::fatal::FatalError;
use crate::scope::Scope;
use crate::wait::wait_all;

/// Starts `services` one after the other in `scope`.
///
/// On the first error, the services this call started (not those that were
/// running already) are stopped, concurrently, and the error is returned
/// unchanged. No services: `Ok(())`.
///
/// # Errors
///
/// The first start error, as the failing service returned it.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, start_all, stop_all, wait_all_started};
/// use lifecycle::{FatalError, FatalSlot, Scope, Service, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
///
/// // Services whose work is done at once; the last one fails to start.
/// let quick = || service_fn(|generation| async move { drop(generation); Ok(()) });
/// let broken = service_fn(|generation| async move {
///     drop(generation);
///     Err(FatalError::msg("no config"))
/// });
/// let services: Vec<Box<dyn Service>> = vec![Box::new(quick()), Box::new(quick()), Box::new(broken)];
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
/// start_all(&services[..2], &scope).await?;
/// wait_all_started(&services[..2]).await;
/// stop_all(&services).await;
///
/// let error = start_all(&services, &scope).await.unwrap_err();
/// assert_eq!(error.to_string(), "no config");
/// # Ok::<(), FatalError>(())
/// # }).unwrap();
/// ```
pub async fn start_all<S: Service>(services: &[S], scope: &Scope) -> Result<(), FatalError> {
    let mut started_here = Vec::with_capacity(services.len());
    for service in services {
        match service.start(scope).await {
            Ok(StartOutcome::Started) => started_here.push(service),
            Ok(StartOutcome::AlreadyRunning) => {}
            Err(error) => {
                stop_all(&started_here).await;
                return Err(error);
            }
        }
    }
    Ok(())
}

/// How many stops [`stop_all`] joins under one waker.
const CHUNK: usize = 30;

/// Stops every service concurrently and returns once all have stopped.
/// Services that never started return at once.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, stop_all, FatalError, FatalSlot, Scope, Service, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// // A cache, a db pool and a queue consumer, each serving until stopped.
/// let serving = || {
///     service_fn(|generation| async move {
///         let Some(generation) = generation else { return Ok(()) };
///         generation.spawn_detached(|scope, started| async move {
///             started.set();
///             scope.token().stopped().await;
///         });
///         Ok(())
///     })
/// };
/// let services = [serving(), serving(), serving()];
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// // The cache and the pool start; the queue consumer is not needed today.
/// services[0].start(&scope).await?;
/// services[1].start(&scope).await?;
/// let stopped: Vec<_> = services.iter().map(Service::stopped).collect();
///
/// stop_all(&services).await;
/// assert!(stopped[0].is_set() && stopped[1].is_set());
/// assert!(!stopped[2].is_set(), "nothing to stop: its coming generation's latch");
/// assert!(services.iter().all(|service| !service.base().is_running()));
/// # Ok::<(), FatalError>(())
/// # }).unwrap();
/// ```
pub async fn stop_all<S: Service>(services: &[S]) {
    if services.len() <= CHUNK {
        stop_chunk(services).await;
        return;
    }
    // One task node per chunk of stops, not one per stop (as a `join_all`
    // of them all would make): a wake re-polls the pending stops of its own
    // chunk only, at most `CHUNK` of them.
    let mut chunks: FuturesUnordered<_> = services.chunks(CHUNK).map(stop_chunk).collect();
    while chunks.next().await.is_some() {}
}

/// The stops of at most [`CHUNK`] services, joined in one boxed slice.
fn stop_chunk<S: Service>(chunk: &[S]) -> JoinAll<ServiceFuture<'_, ()>> {
    join_all(chunk.iter().map(Service::stop))
}

/// Completes once every service's started latch is set; a failed start
/// counts (its started latch is set too). No services: at once.
///
/// The latches are taken when this is called, so services not started yet
/// are waited for in their coming generation. The future owns what it waits
/// on and spawns nothing: race it against a timeout and drop it, and
/// nothing is left behind.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{service_fn, stop_all, wait_all_started};
/// use lifecycle::{FatalError, FatalSlot, Scope, Service, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let server = service_fn(|generation| async move {
///     let Some(generation) = generation else { return Ok(()) };
///     generation.spawn_detached(|scope, started| async move {
///         started.set(); // listening
///         scope.token().stopped().await;
///     });
///     Ok(())
/// });
/// let metrics = service_fn(|generation| async move {
///     drop(generation); // setup fails: the generation ends
///     Err(FatalError::msg("no metrics endpoint"))
/// });
/// let services: Vec<Box<dyn Service>> = vec![Box::new(server), Box::new(metrics)];
///
/// # futures_executor::block_on(async {
/// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
/// // Taken before the starts: it waits for their coming generations.
/// let all_started = wait_all_started(&services);
/// services[0].start(&scope).await?;
/// let error = services[1].start(&scope).await.unwrap_err();
/// assert_eq!(error.to_string(), "no metrics endpoint");
///
/// all_started.await; // the failed start counts
/// assert!(services.iter().all(|service| service.started().is_set()));
/// stop_all(&services).await;
/// # Ok::<(), FatalError>(())
/// # }).unwrap();
/// ```
pub fn wait_all_started<S: Service>(services: &[S]) -> impl Future<Output = ()> + Send + 'static {
    wait_all(services.iter().map(Service::started).collect::<Vec<_>>())
}
