//! [`ComponentManager`]: a [`Component`] made of async workers.
//!
//! # The manager's life
//!
//! All decisions are made in [`Life`], under one lock, so that the three
//! signals can be set in a fixed order after it is released:
//!
//! ```text
//!             every worker called ready            (and not done yet)
//!   start ─────────────────────────────────▶ ready
//!     │
//!     │  parent token stopped / first fatal error / every worker returned
//!     └──────────────────────────────────────────▶ shutdown signal
//!                                                        │ every worker returned
//!                                                        ▼ (and no throw in flight)
//!                                                       done
//! ```
//!
//! Guarantees, and where they come from:
//! - *Ready before done.* Ready can only be decided while not done; whoever
//!   decides done sets ready first if it was decided (`Latch::set` is
//!   idempotent, so the two racing setters agree).
//! - *Error delivered, then shutdown signal, then done.* A throw counts as a
//!   running worker while it reports, so done cannot be decided between the
//!   report and the stop of the workers' scope, and the done path sets the
//!   shutdown signal before done.
//! - *Done proves the workers are gone.* A worker counts as running until its
//!   future has been dropped (the exit is recorded after the drop).
//! - The shutdown signal *is* the workers' shared stop scope being stopped:
//!   the signal is that node's flag. The node is made with the manager, so
//!   that the signal exists before start, and attached under the start
//!   scope's token at start. The parent's stop, a fatal error and the end of
//!   all workers all stop that scope.
//!
//! # Memory
//!
//! A manager is one allocation: `Inner` (its ready and done signals, its
//! life, the per-worker abort flags) beside the node of its workers' stop
//! scope, plus, once started, one boxed task per worker. The worker list is
//! shared with the builder. Because the node lives in the manager's
//! allocation, a token of the workers' scope kept after the manager is gone
//! keeps the whole (small) manager state alive, not only the node.
//!
//! A finished worker's task is freed with the manager, not when it
//! finishes: each abort flag keeps its task's waker, which on most
//! executors holds the executor's task (the worker's future itself is
//! dropped as it finishes). A joined task is freed the same way, by its
//! joiner. It moves the free from the thread that finished the task to the
//! one that drops the manager, usually its starter, which on a
//! multi-thread executor keeps the two threads out of each other's
//! allocator arenas. A done manager kept around holds one executor task
//! per worker (128 bytes on tokio, 80 on smol) until it is dropped.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::component::{Component, StartError};
use crate::fatal::{FatalError, FatalHook, FatalSlot, Reported};
use crate::flag::{Flag, SOLE_WAITER};
use crate::latch::{FlagOwner, Latch, Signal};
use crate::runtime::{Runtime, SharedRuntime};
use crate::scope::Scope;
use crate::stop::{StopCause, StopToken, Stopped, WithStop};
use crate::sync::Mutex;
use crate::task::{self, JoinError};
use crate::trace;

/// What a worker returns: `Ok(())` when it ends cleanly, or the fatal error
/// that ends the whole component. Any error converts with `?`.
///
/// # Example
///
/// A worker written as a named function, whose parse error ends it:
///
/// ```
/// use lifecycle::{ComponentManager, ReadyHandle, WorkerContext, WorkerResult};
///
/// async fn listen(ctx: WorkerContext, ready: ReadyHandle) -> WorkerResult {
///     let port: u16 = "8080".parse()?; // a `ParseIntError` becomes the fatal error
///     assert_eq!(port, 8080);
///     ready.ready();
///     ctx.stopped().await;
///     Ok(())
/// }
///
/// let manager = ComponentManager::builder().add_worker(listen).build();
/// # drop(manager);
/// ```
pub type WorkerResult = Result<(), FatalError>;

/// Builds [`ComponentManager`]s from an ordered list of workers.
///
/// A worker is an async function of a [`WorkerContext`] and a
/// [`ReadyHandle`]: it calls the handle once initialised, runs until its
/// context's token stops, and returns `Ok(())`, or `Err(e)` to report a fatal
/// error. The builder can build any number of managers; each runs every
/// worker afresh.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, ComponentManager, FatalSlot, Scope, StopSource};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// # let runtime = Arc::new(Threads);
/// let manager = ComponentManager::builder()
///     .add_worker(|ctx, ready| async move {
///         // connect, bind, load...
///         ready.ready();
///         ctx.stopped().await; // serve until told to stop
///         Ok(())
///     })
///     .build();
///
/// let stop = StopSource::new();
/// manager.start(Scope::new(runtime, stop.token(), FatalSlot::new()))?;
/// manager.ready().wait().await;
/// stop.stop();
/// manager.done().wait().await;
/// # Ok::<(), lifecycle::StartError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ComponentManagerBuilder {
    /// Shared by every manager built, so `build` allocates no list.
    workers: Arc<[Arc<dyn Worker>]>,
}

impl Default for ComponentManagerBuilder {
    fn default() -> Self {
        Self {
            workers: Arc::new([]),
        }
    }
}

impl ComponentManagerBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a worker. Workers run concurrently, as tasks of the start
    /// scope's runtime. `start` only spawns those tasks: the worker function
    /// is called in its own task, when the executor first polls it, so a
    /// panic in the function itself (before its future exists) is a
    /// [`WorkerPanic`] like a panic in the future.
    ///
    /// # Example
    ///
    /// A server and its cache warmer: the manager is ready once both are.
    ///
    /// ```
    /// use lifecycle::{Component, ComponentManager, FatalSlot, Latch, Scope, StopSource};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let cache_warm = Latch::new(); // set here, standing in for the warm-up
    /// let manager = ComponentManager::builder()
    ///     .add_worker(|ctx, ready| async move {
    ///         ready.ready(); // listening
    ///         ctx.stopped().await;
    ///         Ok(())
    ///     })
    ///     .add_worker({
    ///         let cache_warm = cache_warm.clone();
    ///         move |ctx, ready| {
    ///             let cache_warm = cache_warm.clone();
    ///             async move {
    ///                 cache_warm.wait().await;
    ///                 ready.ready();
    ///                 ctx.stopped().await;
    ///                 Ok(())
    ///             }
    ///         }
    ///     })
    ///     .build();
    ///
    /// let stop = StopSource::new();
    /// manager.start(Scope::new(Arc::new(Threads), stop.token(), FatalSlot::new()))?;
    /// assert!(!manager.ready().is_set(), "the warmer has not called ready");
    /// cache_warm.set();
    /// manager.ready().wait().await; // both have
    /// stop.stop();
    /// manager.done().wait().await;
    /// # Ok::<(), lifecycle::StartError>(())
    /// # }).unwrap();
    /// ```
    pub fn add_worker<F, Fut>(mut self, worker: F) -> Self
    where
        F: Fn(WorkerContext, ReadyHandle) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WorkerResult> + Send + 'static,
    {
        let mut workers: Vec<Arc<dyn Worker>> = self.workers.to_vec();
        workers.push(Arc::new(worker));
        self.workers = workers.into();
        self
    }

    /// A fresh manager running every worker added so far.
    pub fn build(&self) -> ComponentManager {
        let workers = self.workers.clone();
        let more_aborts = workers.iter().skip(1).map(|_| Flag::new()).collect();
        ComponentManager {
            inner: WithStop::root(Inner {
                life: Mutex::new(Life::new(workers.len())),
                workers,
                ready: Flag::new(),
                done: Flag::new(),
                first_abort: Flag::new(),
                more_aborts,
            }),
        }
    }
}

impl fmt::Debug for ComponentManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentManagerBuilder")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// A [`Component`] that runs a fixed set of async workers.
///
/// - Ready once every worker has called its [`ReadyHandle`] (never, if one
///   returns without calling it), and always before done.
/// - Shutdown signal when the start scope's token stops (also before
///   start), on the first fatal error of any worker, or once every worker has
///   returned. All workers share one stop scope: the first fatal error stops
///   the siblings.
/// - The first fatal error, and only it, is reported into the start scope's
///   fatal slot; later ones go to that slot's hook. A panicking worker (with
///   the `std` feature) is a fatal [`WorkerPanic`].
/// - Done once every worker has returned and its future has been dropped.
///   The order is always: error reported, shutdown signal, done.
/// - With zero workers: ready, shutdown signal and done right at start.
///
/// A finished worker's task is freed with the manager (by whoever drops
/// its last handle), as a joined task is freed by its joiner: a done
/// manager kept around holds one executor task per worker, about a
/// hundred bytes each.
///
/// Clones are handles to the same manager. See [`ComponentManagerBuilder`]
/// for a manager with a worker.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, ComponentManager, FatalSlot, Scope, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::{sync::Arc, time::Duration};
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// let manager = ComponentManager::builder().build(); // no workers
/// let done = manager.done(); // signals exist before start
/// let stop = StopSource::new();
/// manager.start(Scope::new(Arc::new(Nothing), stop.token(), FatalSlot::new())).unwrap();
/// assert!(manager.ready().is_set() && done.is_set()); // nothing to wait for
/// assert!(!stop.is_stopped()); // a component never stops its parent
/// ```
#[derive(Clone)]
pub struct ComponentManager {
    inner: Arc<Shared>,
}

impl ComponentManager {
    /// A builder to add workers to.
    pub fn builder() -> ComponentManagerBuilder {
        ComponentManagerBuilder::new()
    }

    /// How many workers the manager runs.
    pub fn worker_count(&self) -> usize {
        self.inner.workers.len()
    }

    /// Whether `start` has been called successfully.
    pub fn is_started(&self) -> bool {
        self.inner.life.lock().started
    }

    fn signal(&self, which: u8) -> Signal {
        Signal::from(Latch::in_owner(self.inner.clone(), which))
    }
}

impl Component for ComponentManager {
    fn start(&self, scope: Scope) -> Result<(), StartError> {
        let (runtime, parent_token, parent) = scope.into_parts();
        let no_workers = {
            let mut life = self.inner.life.lock();
            if life.started {
                return Err(StartError::AlreadyStarted);
            }
            life.started = true;
            life.parent = Some(parent);
            // Its events belong to whatever its starter was doing (a
            // supervisor's node, say).
            life.span = trace::Span::current();
            life.start()
        };
        // A parent stopped already stops the workers' scope right here.
        self.inner.attach_to(parent_token);
        if let Some(finish) = no_workers {
            self.inner.finish(finish);
            return Ok(());
        }
        for (index, worker) in self.inner.workers.iter().enumerate() {
            let exit = Exit {
                inner: self.inner.clone(),
                index,
            };
            worker.spawn(&*runtime, runtime.clone(), exit);
        }
        Ok(())
    }

    fn ready(&self) -> Signal {
        self.signal(READY)
    }

    fn shutdown_signal(&self) -> Signal {
        self.signal(SHUTDOWN)
    }

    fn done(&self) -> Signal {
        self.signal(DONE)
    }

    fn abort(&self) {
        // Wakes each worker's task; it sees its flag set at its next poll.
        for index in 0..self.inner.workers.len() {
            self.inner.abort_flag(index).raise();
        }
    }
}

impl fmt::Debug for ComponentManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentManager")
            .field("workers", &self.inner.workers.len())
            .field("started", &self.is_started())
            .field("ready", &self.inner.ready.is_set())
            .field("shutdown", &self.inner.is_stopped())
            .field("done", &self.inner.done.is_set())
            .finish()
    }
}

const READY: u8 = 0;
const SHUTDOWN: u8 = 1;
const DONE: u8 = 2;

/// A manager in one allocation: its state beside the stop node of its
/// workers' scope, whose stop is the manager's shutdown signal. The node is
/// a root until start attaches it under the start scope's token.
type Shared = WithStop<Inner>;

/// Everything a manager is besides its workers' stop node: its ready and
/// done signals, its life, and the per-worker abort flags.
struct Inner {
    workers: Arc<[Arc<dyn Worker>]>,
    life: Mutex<Life>,
    ready: Flag,
    done: Flag,
    /// Each worker's abort: set by `abort`, and where its task's waker is
    /// registered while it runs (the flag's sole waiter). The first inline
    /// (most managers have one worker), the others in a slice.
    first_abort: Flag,
    more_aborts: Box<[Flag]>,
}

impl Shared {
    fn abort_flag(&self, index: usize) -> &Flag {
        match index.checked_sub(1) {
            None => &self.first_abort,
            Some(more) => &self.more_aborts[more],
        }
    }

    /// Reports `error` as the manager's: the first goes to the parent and
    /// stops the workers; later ones, and any after done, go to the hook.
    fn throw(&self, error: FatalError) -> Reported {
        let (right, parent, span) = {
            let mut life = self.life.lock();
            (life.begin_throw(), life.parent.clone(), life.span.clone())
        };
        trace::manager_error(&span, &error, matches!(right, ThrowRight::First));
        let Some(parent) = parent else {
            // Not started: no scope to report into. Unreachable through the
            // public API (handles exist only after start), but never lost.
            FatalHook::default().call(&error);
            return Reported::Unhandled;
        };
        match right {
            ThrowRight::AfterDone => parent.report_unhandled(error),
            ThrowRight::Later => {
                let reported = parent.report_unhandled(error);
                self.exit();
                reported
            }
            ThrowRight::First => {
                // The order the parent relies on: the error is in its slot
                // before the shutdown signal (the scope stopped) is set.
                let reported = parent.report(error.clone());
                self.stop(StopCause::Fatal(error));
                self.exit();
                reported
            }
        }
    }

    /// A worker (or a throw) is finished; the last one finishes the manager.
    fn exit(&self) {
        let finish = self.life.lock().exit();
        if let Some(finish) = finish {
            self.finish(finish);
        }
    }

    /// Sets what is due at done, in order: ready (if decided), shutdown, done.
    fn finish(&self, finish: Finish) {
        trace::manager_done(&finish.span, finish.ready);
        if finish.ready {
            self.ready.raise();
        }
        // The workers' work is over; this is also the shutdown signal, if
        // nothing stopped the scope before.
        self.stop(StopCause::Requested);
        self.done.raise();
    }
}

impl FlagOwner for Shared {
    fn flag(&self, which: u8) -> &Flag {
        match which {
            READY => &self.ready,
            SHUTDOWN => self.stop_flag(),
            _ => &self.done,
        }
    }
}

/// The manager's life: every transition, under the manager's lock.
struct Life {
    /// Whether `start` has been called: checked and set under this lock,
    /// so exactly one start wins.
    started: bool,
    /// Workers that have not called their ready handle yet.
    not_ready: usize,
    /// Which workers have called it.
    called_ready: Bits,
    /// Workers still running, plus throws being reported right now.
    running: usize,
    ready: bool,
    done: bool,
    /// Whether the first fatal error has gone to the parent.
    delivered: bool,
    /// Where fatal errors go: the start scope's slot, set by `start` and
    /// kept after done for late throws.
    parent: Option<FatalSlot>,
    /// Where its events go: the span current at `start`.
    span: trace::Span,
}

/// What a throw may do, decided under the lock.
enum ThrowRight {
    /// Report to the parent: the first error of a live manager.
    First,
    /// Hand to the hook: a later error, while the manager is still live.
    Later,
    /// The manager is done: nobody is listening any more.
    AfterDone,
}

/// What is due once the manager is done.
struct Finish {
    /// Whether ready was decided (and must be set before done).
    ready: bool,
    /// Where the manager's events go.
    span: trace::Span,
}

impl Life {
    fn new(workers: usize) -> Self {
        Self {
            started: false,
            not_ready: workers,
            called_ready: Bits::default(),
            running: workers,
            // Zero workers: every worker (none) has called ready.
            ready: workers == 0,
            done: false,
            delivered: false,
            parent: None,
            span: trace::Span::none(),
        }
    }

    /// `start` has set `parent`. With no workers the manager is done at once.
    fn start(&mut self) -> Option<Finish> {
        if self.running > 0 {
            return None;
        }
        self.done = true;
        Some(self.finish())
    }

    /// Worker `index` called ready. Returns whether this made the manager
    /// ready; repeated calls are ignored, and nothing is ready after done.
    fn worker_ready(&mut self, index: usize) -> bool {
        if !self.called_ready.insert(index) {
            return false;
        }
        self.not_ready -= 1;
        if self.not_ready == 0 && !self.done {
            self.ready = true;
            return true;
        }
        false
    }

    /// A throw begins: while it reports, it counts as running, so done waits
    /// for it. A throw after done only reaches the hook.
    fn begin_throw(&mut self) -> ThrowRight {
        if self.done {
            return ThrowRight::AfterDone;
        }
        self.running += 1;
        if self.delivered {
            ThrowRight::Later
        } else {
            self.delivered = true;
            ThrowRight::First
        }
    }

    /// A worker (or a throw) is finished. Returns what is due if this made
    /// the manager done.
    fn exit(&mut self) -> Option<Finish> {
        self.running -= 1;
        if self.running == 0 && !self.done {
            self.done = true;
            return Some(self.finish());
        }
        None
    }

    fn finish(&self) -> Finish {
        Finish {
            ready: self.ready,
            span: self.span.clone(),
        }
    }
}

/// A set of worker indices: the first 64 inline, more in a vector that is
/// allocated only for managers with more workers.
#[derive(Default)]
struct Bits {
    first: u64,
    more: Vec<u64>,
}

impl Bits {
    /// Adds `index`; returns whether it was new.
    fn insert(&mut self, index: usize) -> bool {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let slot = match word.checked_sub(1) {
            None => &mut self.first,
            Some(more) => {
                if self.more.len() <= more {
                    self.more.resize(more + 1, 0);
                }
                &mut self.more[more]
            }
        };
        let new = *slot & bit == 0;
        *slot |= bit;
        new
    }
}

/// What a worker gets besides its ready handle: the shared stop token, the
/// runtime, and a way to throw from callbacks and sub-tasks.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, FatalError};
///
/// let manager = ComponentManager::builder()
///     .add_worker(|ctx, ready| async move {
///         ready.ready();
///         let throw = ctx.throw_handle(); // for a callback or a sub-task
///         std::thread::spawn(move || throw.throw(FatalError::msg("watcher lost")));
///         ctx.stopped().await;
///         Ok(())
///     })
///     .build();
/// # drop(manager);
/// ```
#[derive(Clone)]
pub struct WorkerContext {
    inner: Arc<Shared>,
    /// A token on `inner`'s node, to lend out.
    token: StopToken,
    runtime: SharedRuntime,
}

impl WorkerContext {
    /// The workers' shared stop token: stopped when the manager shuts down.
    pub fn token(&self) -> &StopToken {
        &self.token
    }

    /// Whether the manager is shutting down: one atomic load.
    pub fn is_stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    /// Completes once the manager is shutting down.
    pub fn stopped(&self) -> Stopped<'_> {
        self.token.stopped()
    }

    /// The runtime the manager was started on.
    pub fn runtime(&self) -> &SharedRuntime {
        &self.runtime
    }

    /// Reports a fatal error: the manager's first goes to the fatal slot of
    /// the scope it was started in and stops every worker; later ones, and
    /// any after the manager is done, go to that slot's hook. Returning `Err`
    /// from the worker does the same. The [`Reported`] says which it was.
    ///
    /// # Example
    ///
    /// A worker that finds a corrupt file throws, and still closes the file;
    /// its sibling is stopped by the throw:
    ///
    /// ```
    /// use lifecycle::{Component, ComponentManager, FatalError, FatalHook, FatalSlot, Reported};
    /// use lifecycle::{Scope, StopSource};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let manager = ComponentManager::builder()
    ///     .add_worker(|ctx, ready| async move {
    ///         ready.ready();
    ///         assert_eq!(ctx.throw(FatalError::msg("checksum mismatch")), Reported::First);
    ///         assert!(ctx.is_stopped(), "the throw stops every worker, this one too");
    ///         // Closing the file fails as well: a later error, for the hook.
    ///         assert_eq!(ctx.throw(FatalError::msg("close failed")), Reported::Unhandled);
    ///         Ok(())
    ///     })
    ///     .add_worker(|ctx, ready| async move {
    ///         ready.ready();
    ///         ctx.stopped().await; // stopped by its sibling's throw
    ///         Ok(())
    ///     })
    ///     .build();
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// let parent = StopSource::new();
    /// manager.start(Scope::new(Arc::new(Threads), parent.token(), slot.clone()))?;
    /// manager.done().wait().await;
    /// assert_eq!(slot.take().map(|e| e.to_string()).as_deref(), Some("checksum mismatch"));
    /// assert_eq!(slot.unhandled_count(), 1);
    /// # Ok::<(), lifecycle::StartError>(())
    /// # }).unwrap();
    /// ```
    pub fn throw(&self, error: impl Into<FatalError>) -> Reported {
        self.inner.throw(error.into())
    }

    /// A handle to throw from elsewhere (a callback, a sub-task).
    ///
    /// # Example
    ///
    /// A config watcher's callback reports each reload that fails; the
    /// first stops the manager, the second only reaches the hook:
    ///
    /// ```
    /// use lifecycle::{Component, ComponentManager, FatalError, FatalHook, FatalSlot};
    /// use lifecycle::{Scope, StopSource};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let manager = ComponentManager::builder()
    ///     .add_worker(|ctx, ready| async move {
    ///         let throw = ctx.throw_handle();
    ///         let on_reload = move |result: Result<(), &'static str>| {
    ///             if let Err(why) = result {
    ///                 throw.throw(FatalError::msg(why));
    ///             }
    ///         };
    ///         ready.ready();
    ///         on_reload(Err("config: bad port"));
    ///         on_reload(Err("config: bad host"));
    ///         ctx.stopped().await; // the first throw stopped it
    ///         Ok(())
    ///     })
    ///     .build();
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// let parent = StopSource::new();
    /// manager.start(Scope::new(Arc::new(Threads), parent.token(), slot.clone()))?;
    /// manager.done().wait().await;
    /// assert_eq!(slot.take().map(|e| e.to_string()).as_deref(), Some("config: bad port"));
    /// assert_eq!(slot.unhandled_count(), 1);
    /// # Ok::<(), lifecycle::StartError>(())
    /// # }).unwrap();
    /// ```
    pub fn throw_handle(&self) -> ThrowHandle {
        ThrowHandle {
            inner: self.inner.clone(),
        }
    }
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerContext")
            .field("is_stopped", &self.is_stopped())
            .finish()
    }
}

/// Reports fatal errors into a running manager from anywhere: a callback, a
/// sub-task, another thread. A throw after the manager is done goes to the
/// hook.
///
/// # Example
///
/// A watcher thread reports that it lost its connection; the manager
/// delivers the error to its scope's fatal slot, stops its workers and is
/// done:
///
/// ```
/// use lifecycle::{Component, ComponentManager, FatalError, FatalSlot, Scope, StopSource};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// let manager = ComponentManager::builder()
///     .add_worker(|ctx, ready| async move {
///         let throw = ctx.throw_handle();
///         std::thread::spawn(move || throw.throw(FatalError::msg("watcher lost")));
///         ready.ready();
///         ctx.stopped().await; // the throw stops it
///         Ok(())
///     })
///     .build();
///
/// let slot = FatalSlot::new();
/// let parent = StopSource::new();
/// manager.start(Scope::new(Arc::new(Threads), parent.token(), slot.clone()))?;
/// let error = slot.first().await.expect("the throw is the first error");
/// assert_eq!(error.to_string(), "watcher lost");
/// manager.done().wait().await;
/// assert!(!parent.is_stopped()); // it went to the slot, not to the parent
/// # Ok::<(), lifecycle::StartError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct ThrowHandle {
    inner: Arc<Shared>,
}

impl ThrowHandle {
    /// Reports `error`; see [`WorkerContext::throw`].
    ///
    /// # Example
    ///
    /// A handle kept past the manager's end (by a library that holds on to
    /// its callbacks, say) still reports, but only to the hook:
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use lifecycle::{Component, ComponentManager, FatalError, FatalHook, FatalSlot, Reported};
    /// use lifecycle::{Scope, StopSource};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let (keep, kept) = mpsc::channel();
    /// let manager = ComponentManager::builder()
    ///     .add_worker(move |ctx, ready| {
    ///         let _ = keep.send(ctx.throw_handle()); // registered as a callback
    ///         async move {
    ///             ready.ready();
    ///             Ok(()) // a one-shot job: the manager is done when it returns
    ///         }
    ///     })
    ///     .build();
    ///
    /// let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// let parent = StopSource::new();
    /// manager.start(Scope::new(Arc::new(Threads), parent.token(), slot.clone()))?;
    /// manager.done().wait().await;
    /// let late = kept.recv().expect("the worker kept a handle");
    /// assert_eq!(late.throw(FatalError::msg("callback failed")), Reported::Unhandled);
    /// assert!(slot.take().is_none(), "never delivered: nobody is listening any more");
    /// assert_eq!(slot.unhandled_count(), 1);
    /// # Ok::<(), lifecycle::StartError>(())
    /// # }).unwrap();
    /// ```
    pub fn throw(&self, error: impl Into<FatalError>) -> Reported {
        self.inner.throw(error.into())
    }
}

impl fmt::Debug for ThrowHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrowHandle").finish_non_exhaustive()
    }
}

/// A worker's way to say "initialised". The first call counts; later calls,
/// and calls on clones, are ignored. A handle kept and called after its
/// worker returned still counts, unless the manager is done by then (ready
/// is never set after done).
///
/// # Example: ready once a sub-task has connected
///
/// ```
/// use lifecycle::{ComponentManager, RuntimeExt};
///
/// let manager = ComponentManager::builder()
///     .add_worker(|ctx, ready| async move {
///         let connector = ctx.runtime().spawn(async move {
///             // ...connect...
///             ready.ready(); // the handle moves to whoever knows
///         });
///         let _ = connector.await;
///         ctx.stopped().await;
///         Ok(())
///     })
///     .build();
/// # drop(manager);
/// ```
#[derive(Clone)]
pub struct ReadyHandle {
    inner: Arc<Shared>,
    index: usize,
}

impl ReadyHandle {
    /// Marks this worker as ready.
    pub fn ready(&self) {
        let became_ready = {
            let mut life = self.inner.life.lock();
            life.worker_ready(self.index).then(|| life.span.clone())
        };
        if let Some(span) = became_ready {
            trace::manager_ready(&span);
            self.inner.ready.raise();
        }
    }
}

impl fmt::Debug for ReadyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyHandle")
            .field("worker", &self.index)
            .finish()
    }
}

/// A worker that panicked (with the `std` feature): a fatal error of its
/// manager, carrying the panic message.
///
/// # Example
///
/// ```
/// use lifecycle::{FatalError, WorkerPanic};
///
/// let error = FatalError::new(WorkerPanic { worker: 1, message: "index out of bounds".into() });
/// assert_eq!(error.to_string(), "worker 1 panicked: index out of bounds");
/// let panic = error.downcast_ref::<WorkerPanic>().unwrap();
/// assert_eq!(panic.worker, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPanic {
    /// The worker's position in the builder, from 0.
    pub worker: usize,
    /// The panic message.
    pub message: String,
}

impl fmt::Display for WorkerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} panicked: {}", self.worker, self.message)
    }
}

impl core::error::Error for WorkerPanic {}

/// A worker function, type-erased so one manager holds workers of any type.
trait Worker: Send + Sync + 'static {
    /// Spawns the worker's task on `on`; `runtime` is for its context.
    fn spawn(&self, on: &dyn Runtime, runtime: SharedRuntime, exit: Exit);

    /// The worker function itself, for its task to call.
    fn as_any(&self) -> &dyn Any;
}

impl<F, Fut> Worker for F
where
    F: Fn(WorkerContext, ReadyHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = WorkerResult> + Send + 'static,
{
    fn spawn(&self, on: &dyn Runtime, runtime: SharedRuntime, exit: Exit) {
        // One allocation per worker: the future will live inside its task.
        on.spawn_detached(Box::pin(WorkerTask::<F, Fut> {
            stage: Stage::Unstarted {
                runtime: Some(runtime),
            },
            exit: Some(exit),
            worker: PhantomData,
        }));
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A worker task's link back to its manager.
struct Exit {
    inner: Arc<Shared>,
    index: usize,
}

impl Exit {
    /// Calls the worker function: what a worker task does at its first poll.
    /// `None` only if `F` is not this worker's type, which the task that
    /// calls this was made with.
    fn call<F, Fut>(&self, runtime: SharedRuntime) -> Option<Fut>
    where
        F: Fn(WorkerContext, ReadyHandle) -> Fut + 'static,
    {
        let worker = self.inner.workers[self.index]
            .as_any()
            .downcast_ref::<F>()?;
        let context = WorkerContext {
            token: self.inner.token(),
            inner: self.inner.clone(),
            runtime,
        };
        let ready = ReadyHandle {
            inner: self.inner.clone(),
            index: self.index,
        };
        Some(worker(context, ready))
    }

    /// Records how the worker ended, after its future was dropped.
    fn record(self, outcome: Result<WorkerResult, JoinError>) {
        // The task's waker stays in its abort flag until the manager is
        // dropped. On most executors it keeps the task's memory, which is
        // then freed by whoever drops the manager (usually the thread that
        // started it, as a joined task is freed by its joiner) instead of
        // by the thread that finished the task: there, with glibc's
        // allocator on two threads, every such free took the lock of the
        // starter's arena while the starter was allocating from it
        // (`benches/README.md`, "How much is the allocator's").
        let error = match outcome {
            Ok(Ok(())) | Err(JoinError::Aborted | JoinError::Dropped) => None,
            Ok(Err(error)) => Some(error),
            Err(JoinError::Panicked(message)) => Some(FatalError::new(WorkerPanic {
                worker: self.index,
                message,
            })),
        };
        if let Some(error) = error {
            self.inner.throw(error);
        }
        self.inner.exit();
    }
}

pin_project! {
    /// The future handed to the executor for one worker.
    ///
    /// The worker function is called at the task's first poll, not by
    /// `start`: `start` only spawns (on a multi-thread executor, making the
    /// worker's context and future is then off the starter's thread), and a
    /// worker function that panics before it returns its future is a worker
    /// panic like any other.
    struct WorkerTask<F, Fut> {
        #[pin]
        stage: Stage<Fut>,
        exit: Option<Exit>,
        worker: PhantomData<fn() -> F>,
    }

    impl<F, Fut> PinnedDrop for WorkerTask<F, Fut> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(exit) = this.exit.take() {
                // The executor dropped us unfinished (runtime shutdown).
                let outcome = Stage::finish(this.stage).and(Err(JoinError::Dropped));
                exit.record(outcome);
            }
        }
    }
}

pin_project! {
    /// Where a worker task is: before its first poll it holds the runtime
    /// for the worker's context, then the worker's future, then nothing.
    ///
    /// One enum rather than two options, so that the runtime and the
    /// future share their bytes: with the common worker (ready, wait for
    /// the stop) the whole task stays within 120 bytes, the largest block
    /// glibc frees without its arena's lock. A worker task is freed on the
    /// thread that finished it, usually not the one that allocated it.
    #[project = StageProj]
    enum Stage<Fut> {
        Unstarted { runtime: Option<SharedRuntime> },
        Running { #[pin] future: Fut },
        Finished,
    }
}

impl<Fut> Stage<Fut> {
    /// Drops whatever the stage holds, catching a panic of the future's
    /// drop.
    fn finish(mut self: Pin<&mut Self>) -> Result<(), JoinError> {
        task::catch_panics(|| self.set(Stage::Finished))
    }
}

impl<Fut: Future<Output = WorkerResult>> Stage<Fut> {
    /// Polls the worker, calling the worker function first if this is the
    /// task's first poll.
    fn poll_worker<F>(
        mut self: Pin<&mut Self>,
        exit: &Exit,
        cx: &mut Context<'_>,
    ) -> Poll<WorkerResult>
    where
        F: Fn(WorkerContext, ReadyHandle) -> Fut + 'static,
    {
        if let StageProj::Unstarted { runtime } = self.as_mut().project() {
            let called = runtime
                .take()
                .and_then(|runtime| exit.call::<F, Fut>(runtime));
            match called {
                Some(future) => self.set(Stage::Running { future }),
                None => self.set(Stage::Finished),
            }
        }
        match self.project() {
            StageProj::Running { future } => future.poll(cx),
            _ => Poll::Ready(Err(FatalError::msg(
                "a worker task found a worker function of another type (a bug of lifecycle)",
            ))),
        }
    }
}

impl<F, Fut> Future for WorkerTask<F, Fut>
where
    F: Fn(WorkerContext, ReadyHandle) -> Fut + 'static,
    Fut: Future<Output = WorkerResult>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(exit) = this.exit.as_ref() else {
            return Poll::Ready(());
        };
        // Reads the abort and registers (or refreshes) the task's waker in
        // one step under the flag's lock: an abort is seen now or wakes us.
        let abort = exit.inner.abort_flag(exit.index);
        let mut key = SOLE_WAITER;
        let outcome = if abort.poll_wait(&mut key, cx).is_ready() {
            Err(JoinError::Aborted)
        } else {
            let stage = this.stage.as_mut();
            match task::catch_panics(|| stage.poll_worker::<F>(exit, cx)) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(result)) => Ok(result),
                Err(panic) => Err(panic),
            }
        };
        let outcome = Stage::finish(this.stage.as_mut()).and(outcome);
        if let Some(exit) = this.exit.take() {
            exit.record(outcome);
        }
        Poll::Ready(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::Threads;
    use crate::{FatalHook, StopSource};
    use alloc::string::ToString;
    use futures_executor::block_on;

    fn scope(stop: &StopSource, fatal: &FatalSlot) -> Scope {
        Scope::new(Arc::new(Threads::new()), stop.token(), fatal.clone())
    }

    fn quiet_slot() -> FatalSlot {
        FatalSlot::with_hook(FatalHook::new(|_| {}))
    }

    #[test]
    fn zero_workers_are_ready_shut_down_and_done_at_start() {
        let manager = ComponentManager::builder().build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        assert!(manager.ready().is_set());
        assert!(manager.shutdown_signal().is_set());
        assert!(manager.done().is_set());
        assert!(!stop.is_stopped());
    }

    #[test]
    fn a_second_start_is_an_error_also_after_done() {
        let manager = ComponentManager::builder().build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        assert!(matches!(
            manager.start(scope(&stop, &fatal)),
            Err(StartError::AlreadyStarted)
        ));
    }

    #[test]
    fn the_first_error_wins_and_is_delivered_before_shutdown_and_done() {
        let manager = ComponentManager::builder()
            .add_worker(|_ctx, _ready| async { Err(FatalError::msg("first")) })
            .add_worker(|ctx: WorkerContext, _ready| async move {
                ctx.stopped().await;
                Err(FatalError::msg("during shutdown"))
            })
            .build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.shutdown_signal().wait());
        assert!(fatal.is_recorded());
        block_on(manager.done().wait());
        assert_eq!(fatal.take().map(|e| e.to_string()), Some("first".into()));
        assert_eq!(fatal.unhandled_count(), 1);
        assert!(!manager.ready().is_set());
        assert!(
            !stop.is_stopped(),
            "the parent is never stopped by its child"
        );
    }

    #[test]
    fn a_panicking_worker_is_a_fatal_error_with_its_message() {
        let manager = ComponentManager::builder()
            .add_worker(|_ctx, _ready| async {
                if true {
                    panic!("bad state");
                }
                Ok(())
            })
            .build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.done().wait());
        let error = fatal.take().unwrap();
        assert_eq!(
            error.downcast_ref::<WorkerPanic>(),
            Some(&WorkerPanic {
                worker: 0,
                message: "bad state".into()
            })
        );
    }

    #[test]
    fn abort_drops_a_worker_that_ignores_its_stop() {
        let manager = ComponentManager::builder()
            .add_worker(|_ctx, ready: ReadyHandle| async move {
                ready.ready();
                core::future::pending::<()>().await;
                Ok(())
            })
            .build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.ready().wait());
        stop.stop();
        block_on(manager.shutdown_signal().wait());
        assert!(!manager.done().is_set(), "the worker ignores the stop");
        manager.abort();
        block_on(manager.done().wait());
        assert!(!fatal.is_recorded(), "an abort is not an error");
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_common_worker_task_fits_what_glibc_frees_without_a_lock() {
        fn task_size<F, Fut>(_: &F) -> usize
        where
            F: Fn(WorkerContext, ReadyHandle) -> Fut + 'static,
        {
            core::mem::size_of::<WorkerTask<F, Fut>>()
        }
        let worker = |ctx: WorkerContext, ready: ReadyHandle| async move {
            ready.ready();
            ctx.stopped().await;
            Ok::<(), FatalError>(())
        };
        // See `Stage`: a byte more, and on two threads most worker tasks
        // take their starter's arena lock to be freed.
        assert!(task_size(&worker) <= 120, "{} bytes", task_size(&worker));
    }

    #[test]
    fn a_throw_after_done_goes_to_the_hook() {
        let kept = Arc::new(crate::sync::Mutex::new(None));
        let manager = ComponentManager::builder()
            .add_worker({
                let kept = kept.clone();
                move |ctx: WorkerContext, ready: ReadyHandle| {
                    let kept = kept.clone();
                    async move {
                        *kept.lock() = Some(ctx.throw_handle());
                        ready.ready();
                        Ok(())
                    }
                }
            })
            .build();
        let (stop, fatal) = (StopSource::new(), quiet_slot());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.done().wait());
        let handle = kept.lock().take().unwrap();
        assert_eq!(handle.throw(FatalError::msg("late")), Reported::Unhandled);
        assert!(!fatal.is_recorded());
        assert_eq!(fatal.unhandled_count(), 1);
    }
}
