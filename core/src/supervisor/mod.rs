//! The [`Supervisor`]: a dependency graph of nodes, each started once its
//! dependencies are ready and stopped once its dependents are done.

mod dirty;
mod engine;
mod graph;
mod observe;
mod watch;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::component::{Component, StartError};
use crate::fatal::{FatalError, FatalHook};
use crate::latch::{Latch, Signal};
use crate::runtime::{BoxFuture, RuntimeExt, SharedRuntime};
use crate::scope::Scope;
use crate::stop::StopToken;
use crate::sync::Mutex;
use crate::task::JoinHandle;

use engine::Engine;
pub use graph::{BuildError, Node, SupervisorBuilder};
pub use observe::{EventKind, NodeState, NodeStatus, StatusBoard, StopReason, SupervisorEvent};

/// A source of terminate requests: SIGTERM in the adapters, a latch in
/// tests. [`listen`](TerminateRequests::listen) registers for the next
/// request; dropping the returned future unregisters.
///
/// # Example
///
/// ```
/// use lifecycle::{Latch, Supervisor};
///
/// let terminate = Latch::new(); // set it to send the request
/// let supervisor = Supervisor::builder().terminate_on(terminate.signal()).build();
/// # let _ = supervisor;
/// ```
pub trait TerminateRequests: Send + Sync + 'static {
    /// Completes when a terminate request arrives.
    fn listen(&self) -> BoxFuture;
}

impl TerminateRequests for Signal {
    fn listen(&self) -> BoxFuture {
        Box::pin(self.clone().wait_owned())
    }
}

/// Where a supervisor started as a component leaves its outcome; a
/// supervisor running it as a node reads it there once it is done.
type SharedOutcome = Arc<Mutex<Option<SupervisorOutcome>>>;

/// Requests from either of two sources: the builder's and one added later.
struct EitherRequests(Arc<dyn TerminateRequests>, Arc<dyn TerminateRequests>);

impl TerminateRequests for EitherRequests {
    fn listen(&self) -> BoxFuture {
        let either = futures_util::future::select(self.0.listen(), self.1.listen());
        Box::pin(async move {
            either.await;
        })
    }
}

/// What `build` hands to the run.
struct Parts {
    nodes: Vec<Node>,
    graph: graph::Graph,
    shutdown_budget: Option<Duration>,
    terminate: Option<Arc<dyn TerminateRequests>>,
    events: Option<observe::EventHook>,
    hook: FatalHook,
}

/// A supervisor: named nodes in a dependency graph, started when
/// their dependencies are ready, stopped in reverse order, restarted or
/// escalated by a verdict per failure.
///
/// A node is a component factory with an error handler and a restart
/// policy ([`Node`]). The supervisor is itself a [`Component`], so
/// supervisors nest as nodes of others.
///
/// ```text
///     config ──▶ db ──▶ api        (api depends on db, db on config)
///                 └───▶ jobs
///     metrics                      (independent)
///
///  start:  config, metrics ─ready─▶ db ─ready─▶ api, jobs     (each once its dependencies are ready)
///  stop:   api, jobs, metrics ─done─▶ db ─done─▶ config        (each once its dependents are done)
/// ```
///
/// - **Start**: a node's factory is called once every node it depends on is
///   ready, or has completed cleanly (like a systemd oneshot). A completed
///   node stands for its own dependencies: it lets dependents start only
///   while what it depends on may be relied on in turn, so a server behind
///   a one-shot migration waits for the database behind it to be ready
///   again after a restart. Independent nodes start concurrently; among
///   nodes that become startable together, declaration order decides.
/// - **Stop**: a node is told to stop only once every node depending on it
///   is done; independent branches stop concurrently. Each node has a stop
///   timeout (then its tasks are aborted and it is named in the outcome);
///   the supervisor may have a global shutdown budget.
/// - **Verdicts** (the node's handler decides, once the failed instance is
///   done): [`Verdict::Restart`](crate::Verdict::Restart) under the node's [`RestartPolicy`](crate::RestartPolicy), with
///   the dependents too if asked, escalating when the budget is spent;
///   [`Verdict::Stop`](crate::Verdict::Stop) the node and its dependents;
///   [`Verdict::StopParents`](crate::Verdict::StopParents) also what it depends on, and what depends on
///   those; [`Verdict::Shutdown`](crate::Verdict::Shutdown) everything, then `run` returns the error;
///   [`Verdict::SpinHalt`](crate::Verdict::SpinHalt) everything, then wait for a terminate request
///   only (the parent's stop is ignored). A failed node whose verdict
///   stops it for good shows `stopping` until its dependents are done,
///   then `stopped`: its instance is down already, but no node is shown
///   stopped for good while one that depends on it is still up. So too a
///   node that is down (waiting, or in its backoff) when a stop for good
///   reaches it: it stays as it is until its dependents are down. And no
///   node starts on one that is waiting to be stopped.
/// - Errors a node reports while the supervisor is stopping it are recorded
///   in the outcome, never handled and never waited on. A verdict for a
///   node the supervisor is already stopping is recorded in the events and
///   not acted on.
/// - A node that ends cleanly is completed; its dependents keep running
///   unless it is [`required_while_running`](Node::required_while_running),
///   and it is restarted only if [`permanent`](Node::permanent) (also when
///   it ends while waiting to be stopped for a dependency's restart).
/// - The [outcome](SupervisorOutcome) records every failure that left a
///   node stopped for good, every error reported while stopping and every
///   node that overran its stop; a run with any of them is not clean, even
///   if it ended because every node ended. A nested supervisor's outcome is
///   folded into the outer one's under `outer/inner` names.
///
/// Every transition is reported to an event hook ([`SupervisorEvent`]),
/// and a [`StatusBoard`] gives a snapshot of every node at any time; the
/// board shows the state a transition leads to before its event goes out
/// (see [`SupervisorBuilder::on_event`]).
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{ComponentManager, FatalError, Node, StopSource, Supervisor, SupervisorEnd};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// /// A component that is ready at once and serves until stopped.
/// fn serving() -> Result<ComponentManager, FatalError> {
///     Ok(ComponentManager::builder()
///         .add_worker(|ctx, ready| async move {
///             ready.ready();
///             ctx.stopped().await;
///             Ok(())
///         })
///         .build())
/// }
///
/// let supervisor = Supervisor::builder()
///     .node(Node::new("config", serving))
///     .node(Node::new("db", serving).depends_on(["config"]))
///     .node(Node::new("api", serving).depends_on(["db"]))
///     .node(Node::new("jobs", serving).depends_on(["db"]))
///     .node(Node::new("metrics", serving))
///     .build()?;
/// let ready = lifecycle::Component::ready(&supervisor);
/// let status = supervisor.status();
///
/// # futures_executor::block_on(async {
/// let stop = StopSource::new();
/// let stopper = stop.clone();
/// let run = supervisor.run(Arc::new(Threads), stop.token());
/// let watch = async move {
///     ready.wait().await; // every node is ready
///     assert!(status.snapshot().iter().all(|node| node.is_ready()));
///     stopper.stop(); // stops api, jobs and metrics, then db, then config
/// };
/// let (outcome, ()) = futures_util::future::join(run, watch).await;
/// assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
/// assert!(outcome.is_clean());
/// # });
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
///
/// # Running
///
/// Run it with [`run`](Supervisor::run), or start it as a [`Component`]
/// (as a node of another supervisor, say): ready once every node is ready
/// (or completed; an empty one at once), shutdown signal once it begins to
/// stop everything, done once `run` would have returned. As a component, a `Shutdown` or
/// `SpinHalt` verdict's error is thrown into the scope, naming the node
/// ([`NodeFailed`]), before the nodes are stopped.
pub struct Supervisor {
    parts: Mutex<Option<Parts>>,
    status: StatusBoard,
    ready: Latch,
    shutdown: Latch,
    done: Latch,
    outcome: SharedOutcome,
    /// The run's task, when started as a component.
    run: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// A builder: add nodes, then [`build`](SupervisorBuilder::build).
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::default()
    }

    fn from_parts(parts: Parts) -> Supervisor {
        Supervisor {
            status: StatusBoard::new(parts.nodes.iter().map(|node| node.name.clone())),
            parts: Mutex::new(Some(parts)),
            ready: Latch::new(),
            shutdown: Latch::new(),
            done: Latch::new(),
            outcome: Arc::new(Mutex::new(None)),
            run: Mutex::new(None),
        }
    }

    /// A supervisor of one node, `name`, built by `factory`: for running a
    /// single component under a supervisor's stop, events and status (and
    /// under a host's signals). The node is not restarted: its failure is a
    /// [`Verdict::Shutdown`](crate::Verdict::Shutdown), and its clean end
    /// completes the supervisor.
    ///
    /// ```
    /// use lifecycle::{ComponentManager, Supervisor};
    ///
    /// let supervisor = Supervisor::of_one("app", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, ready| async move {
    ///             ready.ready();
    ///             Ok(())
    ///         })
    ///         .build())
    /// });
    /// assert_eq!(supervisor.status().summary(), "app=waiting");
    /// ```
    pub fn of_one<F, C>(name: impl AsRef<str>, factory: F) -> Supervisor
    where
        F: FnMut() -> Result<C, FatalError> + Send + 'static,
        C: Component,
    {
        let node = Node::new(name, factory).handler(|_| crate::Verdict::Shutdown);
        match Supervisor::builder().node(node).build() {
            Ok(supervisor) => supervisor,
            // One node has no duplicate, no dependency and no cycle, and
            // its policy is the (valid) default.
            Err(error) => unreachable!("a supervisor of one node is valid: {error}"),
        }
    }

    /// Whether it was started (run, or started as a component) already.
    pub(crate) fn is_started(&self) -> bool {
        self.parts.lock().is_none()
    }

    /// Adds a source of terminate requests to a supervisor not yet run
    /// (beside the builder's, if any). Returns false once it has started.
    pub(crate) fn also_terminate_on(&self, requests: Arc<dyn TerminateRequests>) -> bool {
        let mut parts = self.parts.lock();
        let Some(parts) = parts.as_mut() else {
            return false;
        };
        parts.terminate = Some(match parts.terminate.take() {
            Some(first) => Arc::new(EitherRequests(first, requests)),
            None => requests,
        });
        true
    }

    /// Adds an event hook to a supervisor not yet run, called after the
    /// builder's. Returns false once it has started.
    pub(crate) fn also_on_event(&self, hook: observe::EventHook) -> bool {
        let mut parts = self.parts.lock();
        let Some(parts) = parts.as_mut() else {
            return false;
        };
        parts.events = Some(match parts.events.take() {
            Some(first) => Arc::new(move |event: &SupervisorEvent| {
                first(event);
                hook(event);
            }),
            None => hook,
        });
        true
    }

    /// The status of every node, readable at any time (clone it before
    /// calling [`run`](Supervisor::run)).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalError, Node, StopSource, Supervisor};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # fn serving() -> Result<ComponentManager, FatalError> {
    /// #     Ok(ComponentManager::builder()
    /// #         .add_worker(|ctx, ready| async move {
    /// #             ready.ready();
    /// #             ctx.stopped().await;
    /// #             Ok(())
    /// #         })
    /// #         .build())
    /// # }
    ///
    /// // A one-shot migration (the api starts once it has completed), and
    /// // `serving`, ready at once and serving until stopped.
    /// let migrate = Node::new("migrate", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, _| async { Ok(()) })
    ///         .build())
    /// });
    /// let supervisor = Supervisor::builder()
    ///     .node(migrate)
    ///     .node(Node::new("api", serving).depends_on(["migrate"]))
    ///     .build()?;
    /// let status = supervisor.status(); // `run` takes the supervisor: keep a board
    /// let ready = supervisor.ready();
    /// assert_eq!(status.summary(), "migrate=waiting api=waiting");
    ///
    /// # futures_executor::block_on(async {
    /// let stop = StopSource::new();
    /// let stopper = stop.clone();
    /// let run = supervisor.run(Arc::new(Threads), stop.token());
    /// let stop_when_ready = async move {
    ///     ready.wait().await;
    ///     stopper.stop();
    /// };
    /// futures_util::future::join(run, stop_when_ready).await;
    /// # });
    /// assert_eq!(status.summary(), "migrate=completed api=stopped");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn status(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Runs the supervisor on `runtime` until it ends: stopping `parent`
    /// stops every node in reverse dependency order. If it was started as a
    /// component already, waits for that run and returns its outcome.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalError, Node};
    /// use lifecycle::{StopSource, Supervisor, SupervisorEnd};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # fn serving() -> Result<ComponentManager, FatalError> {
    /// #     Ok(ComponentManager::builder()
    /// #         .add_worker(|ctx, ready| async move {
    /// #             ready.ready();
    /// #             ctx.stopped().await;
    /// #             Ok(())
    /// #         })
    /// #         .build())
    /// # }
    ///
    /// // `serving` is ready at once and serves until stopped.
    /// let supervisor = Supervisor::builder()
    ///     .node(Node::new("db", serving))
    ///     .node(Node::new("api", serving).depends_on(["db"]))
    ///     .build()?;
    /// let ready = supervisor.ready();
    ///
    /// # futures_executor::block_on(async {
    /// let stop = StopSource::new();
    /// let stopper = stop.clone();
    /// let run = supervisor.run(Arc::new(Threads), stop.token());
    /// let stop_when_ready = async move {
    ///     ready.wait().await; // db, then api, are ready
    ///     stopper.stop(); // api stops first, then db
    /// };
    /// let (outcome, ()) = futures_util::future::join(run, stop_when_ready).await;
    /// assert!(matches!(outcome.end, SupervisorEnd::ParentStopped), "{outcome}");
    /// assert!(outcome.is_clean());
    /// # });
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub async fn run(self, runtime: SharedRuntime, parent: StopToken) -> SupervisorOutcome {
        let parts = self.parts.lock().take();
        let Some(parts) = parts else {
            self.done.wait().await;
            let outcome = self.outcome.lock().take();
            return outcome.unwrap_or_else(SupervisorOutcome::aborted);
        };
        let engine = Engine::new(
            parts,
            runtime,
            self.status.clone(),
            self.ready.clone(),
            self.shutdown.clone(),
            None,
        );
        let outcome = engine.run(parent).await;
        self.done.set();
        outcome
    }

    /// The outcome of a run started as a component, once it is done
    /// ([`SupervisorEnd::Aborted`] after an abort).
    ///
    /// # Example
    ///
    /// Started as a component, the supervisor keeps its outcome once done:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalSlot, Scope, StopSource, Supervisor, SupervisorEnd};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// // A one-shot job: it does its work and ends.
    /// let supervisor = Supervisor::of_one("job", || {
    ///     Ok(ComponentManager::builder().add_worker(|_, _| async { Ok(()) }).build())
    /// });
    /// assert!(supervisor.outcome().is_none(), "not started");
    ///
    /// let parent = StopSource::new();
    /// let scope = Scope::new(Arc::new(Threads), parent.token(), FatalSlot::new());
    /// supervisor.start(scope).expect("a fresh supervisor starts");
    /// futures_executor::block_on(supervisor.done().wait());
    /// let outcome = supervisor.outcome().expect("done: the outcome is kept");
    /// assert!(matches!(outcome.end, SupervisorEnd::Completed), "{outcome}");
    /// ```
    pub fn outcome(&self) -> Option<SupervisorOutcome> {
        if let Some(outcome) = self.outcome.lock().clone() {
            return Some(outcome);
        }
        self.done.is_set().then(SupervisorOutcome::aborted)
    }
}

impl Component for Supervisor {
    fn start(&self, scope: Scope) -> Result<(), StartError> {
        let parts = self.parts.lock().take().ok_or(StartError::AlreadyStarted)?;
        let (runtime, token, fatal) = scope.into_parts();
        let engine = Engine::new(
            parts,
            runtime.clone(),
            self.status.clone(),
            self.ready.clone(),
            self.shutdown.clone(),
            Some(fatal),
        );
        let done = SetOnDrop(self.done.clone());
        let outcome = self.outcome.clone();
        let run = runtime.spawn(async move {
            let ended = engine.run(token).await;
            *outcome.lock() = Some(ended);
            drop(done);
        });
        *self.run.lock() = Some(run);
        Ok(())
    }

    /// Drops the run at its next poll: every node's scope is stopped and
    /// every live instance aborted, and done is set once the run is gone
    /// (its outcome is then [`SupervisorEnd::Aborted`]).
    fn abort(&self) {
        if let Some(run) = self.run.lock().as_ref() {
            run.abort();
        }
    }

    fn ready(&self) -> Signal {
        self.ready.signal()
    }

    fn shutdown_signal(&self) -> Signal {
        self.shutdown.signal()
    }

    fn done(&self) -> Signal {
        self.done.signal()
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Sets its latch when dropped: done is set even if the run's task is
/// dropped by its executor.
struct SetOnDrop(Latch);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Why a supervisor's run ended.
///
/// # Example
///
/// ```
/// use lifecycle::{
///     ComponentManager, FatalError, Node, StopSource, Supervisor, SupervisorEnd, Verdict,
/// };
/// use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// // A migration that finds the schema too new: its failure shuts everything down.
/// let migrate = Node::new("migrate", || {
///     Ok(ComponentManager::builder()
///         .add_worker(|_, _| async { Err(FatalError::msg("schema is newer than this build")) })
///         .build())
/// })
/// .handler(|_| Verdict::Shutdown);
/// let supervisor = Supervisor::builder().node(migrate).build()?;
///
/// let stop = StopSource::new();
/// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// match outcome.end {
///     SupervisorEnd::Shutdown { node, error } => {
///         assert_eq!(&*node, "migrate");
///         assert_eq!(error.to_string(), "schema is newer than this build");
///     }
///     other => panic!("expected a shutdown, got {other:?}"),
/// }
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SupervisorEnd {
    /// Every node ended for good on its own (completed, or stopped by
    /// verdicts that did not stop the supervisor). An empty supervisor ends
    /// so at once. Nodes stopped by their failures are in
    /// [`SupervisorOutcome::failures`], and the run is then not clean.
    Completed,
    /// The parent token stopped; every node was stopped in order.
    ParentStopped,
    /// A terminate request arrived; every node was stopped in order.
    Terminated,
    /// `node` failed with `error` and its verdict (or its escalation) was
    /// [`Verdict::Shutdown`](crate::Verdict::Shutdown).
    Shutdown {
        /// The deciding node.
        node: Arc<str>,
        /// Its error.
        error: FatalError,
    },
    /// `node` failed with `error` and its verdict was
    /// [`Verdict::SpinHalt`](crate::Verdict::SpinHalt); a terminate request
    /// released it.
    SpinHaltReleased {
        /// The deciding node.
        node: Arc<str>,
        /// Its error.
        error: FatalError,
    },
    /// The run's task was dropped before it ended (an abort).
    Aborted,
}

/// A node's error, as an outcome records it: one that left the node
/// stopped for good ([`SupervisorOutcome::failures`]) or one it reported
/// while the supervisor was stopping it
/// ([`SupervisorOutcome::shutdown_errors`]). A nested supervisor's are
/// recorded in the outer one's under `outer/inner` names.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, ComponentManager, FatalError, NodeError, StopSource, Supervisor};
/// use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// // A cache that fails to flush when it is told to stop.
/// let supervisor = Supervisor::of_one("cache", || {
///     Ok(ComponentManager::builder()
///         .add_worker(|ctx, ready| async move {
///             ready.ready();
///             ctx.stopped().await;
///             Err(FatalError::msg("could not flush to disk"))
///         })
///         .build())
/// });
/// let ready = supervisor.ready();
///
/// # futures_executor::block_on(async {
/// let stop = StopSource::new();
/// let stopper = stop.clone();
/// let run = supervisor.run(Arc::new(Threads), stop.token());
/// let stop_when_ready = async move {
///     ready.wait().await;
///     stopper.stop();
/// };
/// let (outcome, ()) = futures_util::future::join(run, stop_when_ready).await;
/// let errors: Vec<String> = outcome
///     .shutdown_errors
///     .iter()
///     .map(|NodeError { node, error, .. }| format!("{node}: {error}"))
///     .collect();
/// assert_eq!(errors, ["cache: could not flush to disk"]);
/// assert_eq!(outcome.shutdown_errors[0].to_string(), "cache: could not flush to disk");
/// # });
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeError {
    /// The node.
    pub node: Arc<str>,
    /// The error.
    pub error: FatalError,
}

/// `node: error`.
impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

/// What a supervisor's run ended with.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, ComponentManager, StopSource, Supervisor, SupervisorEnd};
/// use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let supervisor = Supervisor::of_one("app", || {
///     Ok(ComponentManager::builder()
///         .add_worker(|ctx, ready| async move {
///             ready.ready();
///             ctx.stopped().await;
///             Ok(())
///         })
///         .build())
/// });
/// let ready = supervisor.ready();
///
/// # futures_executor::block_on(async {
/// let stop = StopSource::new();
/// let stopper = stop.clone();
/// let run = supervisor.run(Arc::new(Threads), stop.token());
/// let stop_when_ready = async move {
///     ready.wait().await;
///     stopper.stop();
/// };
/// let (outcome, ()) = futures_util::future::join(run, stop_when_ready).await;
/// assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
/// assert!(outcome.is_clean() && outcome.error().is_none());
/// assert!(outcome.shutdown_errors.is_empty() && outcome.overran.is_empty());
/// assert_eq!(outcome.to_string(), "stopped by the parent");
/// # });
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SupervisorOutcome {
    /// Why it ended.
    pub end: SupervisorEnd,
    /// Failures that left a node stopped for good while the run went on,
    /// in the order they came: a [`Stop`](crate::Verdict::Stop) or
    /// [`StopParents`](crate::Verdict::StopParents) verdict (or a spent
    /// restart budget escalating to one), or a verdict not acted on
    /// because the supervisor was stopping the node anyway. The deciding
    /// failure of a Shutdown or a spin-halt is in `end`, not here.
    pub failures: Vec<NodeError>,
    /// Errors nodes reported while being stopped, in the order they came.
    pub shutdown_errors: Vec<NodeError>,
    /// Nodes that were not done within their stop timeout (or the shutdown
    /// budget) and were aborted.
    pub overran: Vec<Arc<str>>,
    /// Whether the shutdown budget ran out before every node was down (the
    /// nodes still up were then given up, and are in `overran`). A
    /// spin-halt's wait for its terminate request, after its stop, is not
    /// bounded by the budget.
    pub budget_spent: bool,
}

impl SupervisorOutcome {
    fn aborted() -> Self {
        SupervisorOutcome {
            end: SupervisorEnd::Aborted,
            failures: Vec::new(),
            shutdown_errors: Vec::new(),
            overran: Vec::new(),
            budget_spent: false,
        }
    }

    /// Whether the run ended without a failure: completed, or stopped by the
    /// parent or a terminate request, with no node stopped for good by a
    /// failure, no error while stopping and no node overrunning its stop.
    /// (A host exits with 0 exactly then.)
    pub fn is_clean(&self) -> bool {
        matches!(
            self.end,
            SupervisorEnd::Completed | SupervisorEnd::ParentStopped | SupervisorEnd::Terminated
        ) && self.failures.is_empty()
            && self.shutdown_errors.is_empty()
            && self.overran.is_empty()
            && !self.budget_spent
    }

    /// The deciding error, for a Shutdown or a released SpinHalt.
    ///
    /// # Example
    ///
    /// A `Stop` verdict leaves its node stopped for good without ending the
    /// run: the run is not clean, but there is no deciding error.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Node, StopSource, Supervisor, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// fn failing() -> Result<ComponentManager, FatalError> {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, _| async { Err(FatalError::msg("no image codec")) })
    ///         .build())
    /// }
    ///
    /// let supervisor = Supervisor::builder()
    ///     .node(Node::new("thumbnails", failing).handler(|_| Verdict::Stop))
    ///     .build()?;
    /// let stop = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert!(outcome.error().is_none() && !outcome.is_clean());
    /// assert_eq!(outcome.failures[0].to_string(), "thumbnails: no image codec");
    ///
    /// // A Shutdown verdict ends the run: its error is the deciding one.
    /// let supervisor = Supervisor::of_one("thumbnails", failing);
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert_eq!(outcome.error().map(|e| e.to_string()).as_deref(), Some("no image codec"));
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn error(&self) -> Option<&FatalError> {
        match &self.end {
            SupervisorEnd::Shutdown { error, .. }
            | SupervisorEnd::SpinHaltReleased { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for SupervisorOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f, None)
    }
}

impl SupervisorOutcome {
    /// The outcome in words. `stopped_by`, if given, names what stopped the
    /// run in place of "the parent" or "a terminate request": a host run
    /// knows which of its signals that was.
    pub(crate) fn describe(
        &self,
        f: &mut fmt::Formatter<'_>,
        stopped_by: Option<&dyn fmt::Display>,
    ) -> fmt::Result {
        match (&self.end, stopped_by) {
            (SupervisorEnd::ParentStopped | SupervisorEnd::Terminated, Some(by)) => {
                write!(f, "stopped by {by}")?
            }
            (SupervisorEnd::Completed, _) if self.failures.is_empty() => {
                f.write_str("every node completed")?
            }
            (SupervisorEnd::Completed, _) => f.write_str("every node ended")?,
            (SupervisorEnd::ParentStopped, None) => f.write_str("stopped by the parent")?,
            (SupervisorEnd::Terminated, None) => f.write_str("stopped by a terminate request")?,
            (SupervisorEnd::Shutdown { node, error }, _) => {
                write!(f, "shut down after node {node} failed: {error}")?
            }
            (SupervisorEnd::SpinHaltReleased { node, error }, _) => write!(
                f,
                "spin-halt after node {node} failed ({error}), released by a terminate request"
            )?,
            (SupervisorEnd::Aborted, _) => f.write_str("aborted")?,
        }
        for failure in &self.failures {
            write!(f, "; {} failed: {}", failure.node, failure.error)?;
        }
        if !self.overran.is_empty() {
            f.write_str("; overran their stop: ")?;
            for (at, node) in self.overran.iter().enumerate() {
                let gap = if at == 0 { "" } else { ", " };
                write!(f, "{gap}{node}")?;
            }
        }
        Ok(())
    }
}

/// A node's instance was not ready within its start timeout.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, Node, StartTimedOut, StopSource, Supervisor, Verdict};
/// use std::sync::Arc;
/// use std::time::Duration;
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # // Timers fire at once here: the start timeout runs out without a wait.
/// # struct Threads;
/// # impl Runtime for Threads {
/// #     fn spawn_detached(&self, task: BoxFuture) {
/// #         std::thread::spawn(move || futures_executor::block_on(task));
/// #     }
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
///
/// // A node that never reports ready.
/// let db = Node::new("db", || {
///     Ok(ComponentManager::builder()
///         .add_worker(|ctx, _ready| async move {
///             ctx.stopped().await;
///             Ok(())
///         })
///         .build())
/// })
/// .start_timeout(Duration::from_secs(5))
/// .handler(|_| Verdict::Shutdown);
/// let supervisor = Supervisor::builder().node(db).build()?;
///
/// let stop = StopSource::new();
/// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// let error = outcome.error().expect("the timeout shuts it down");
/// let timed_out = StartTimedOut {
///     node: "db".into(),
///     timeout: Duration::from_secs(5),
/// };
/// assert_eq!(error.downcast_ref::<StartTimedOut>(), Some(&timed_out));
/// assert_eq!(
///     error.to_string(),
///     "node db was not ready within 5s of its start"
/// );
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartTimedOut {
    /// The node.
    pub node: Arc<str>,
    /// Its start timeout.
    pub timeout: Duration,
}

impl fmt::Display for StartTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} was not ready within {:?} of its start",
            self.node, self.timeout
        )
    }
}

impl core::error::Error for StartTimedOut {}

/// A nested supervisor's deciding failure, as its parent sees it: which of
/// its nodes failed, and the error (the [`source`](core::error::Error::source)).
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, FatalError, Node, NodeFailed, StopSource, Supervisor, Verdict};
/// use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// // An inner supervisor whose ledger fails at once and shuts it down.
/// let payments = || {
///     let ledger = Node::new("ledger", || {
///         Ok(ComponentManager::builder()
///             .add_worker(|_, _| async { Err(FatalError::msg("ledger is corrupt")) })
///             .build())
///     });
///     let inner = Supervisor::builder().node(ledger.handler(|_| Verdict::Shutdown));
///     inner.build().map_err(FatalError::new)
/// };
/// let supervisor = Supervisor::builder()
///     .node(Node::new("payments", payments).handler(|_| Verdict::Shutdown))
///     .build()?;
///
/// let stop = StopSource::new();
/// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// // The outer supervisor sees its node payments fail, naming the inner node.
/// let failed = outcome
///     .error()
///     .and_then(|error| error.downcast_ref::<NodeFailed>())
///     .expect("payments failed with the inner supervisor's error");
/// assert_eq!(&*failed.node, "ledger");
/// assert_eq!(failed.to_string(), "node ledger failed: ledger is corrupt");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Debug)]
pub struct NodeFailed {
    /// The node.
    pub node: Arc<str>,
    /// Its error.
    pub error: FatalError,
}

impl fmt::Display for NodeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} failed: {}", self.node, self.error)
    }
}

impl core::error::Error for NodeFailed {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&*self.error)
    }
}
