//! Building a supervisor: [`Node`], [`SupervisorBuilder`], the validation of
//! the dependency graph and [`BuildError`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::time::Duration;

use super::observe::{EventHook, SupervisorEvent};
use super::{SharedOutcome, Supervisor, SupervisorOutcome, TerminateRequests};
use crate::component::Component;
use crate::fatal::{FatalError, FatalHook};
use crate::manager::ComponentManager;
use crate::policy::{PolicyError, RestartPolicy};
use crate::restart::{Failure, Verdict, DEFAULT_STOP_TIMEOUT};

pub(super) type Factory = Box<dyn FnMut() -> Result<Built, FatalError> + Send>;
pub(super) type Handler = Box<dyn FnMut(&Failure) -> Verdict + Send>;

/// A component a node's factory built, as the supervisor keeps it. A
/// manager is one `Arc` already and is kept as it is; anything else is
/// boxed. (The manager is the common case, and its box would be an
/// allocation and a free per instance for nothing.) A nested supervisor
/// is kept with where its outcome will be, which the run folds into its
/// own once the nested one is done.
pub(super) enum Built {
    Manager(ComponentManager),
    Nested(Box<dyn Component>, SharedOutcome),
    Other(Box<dyn Component>),
}

impl Built {
    fn new<C: Component>(component: C) -> Built {
        // Picked out through `Any`, with a clone of the manager's handle
        // (one count up, and one down as `component` goes): stable Rust
        // has no specialisation to do it by type.
        let any = &component as &dyn Any;
        if let Some(manager) = any.downcast_ref::<ComponentManager>() {
            return Built::Manager(manager.clone());
        }
        match any.downcast_ref::<Supervisor>() {
            Some(nested) => {
                let outcome = nested.outcome.clone();
                Built::Nested(Box::new(component), outcome)
            }
            None => Built::Other(Box::new(component)),
        }
    }

    /// The outcome of a nested supervisor's run, once it has ended.
    pub(super) fn nested_outcome(&self) -> Option<SupervisorOutcome> {
        match self {
            Built::Nested(_, outcome) => outcome.lock().clone(),
            _ => None,
        }
    }
}

impl core::ops::Deref for Built {
    type Target = dyn Component;

    fn deref(&self) -> &(dyn Component + 'static) {
        match self {
            Built::Manager(manager) => manager,
            Built::Nested(component, _) | Built::Other(component) => &**component,
        }
    }
}

/// One named node of a supervisor: a component factory and how to treat
/// its failures.
///
/// Defaults: no dependencies; every failure is [`Verdict::Restart`] under
/// [`RestartPolicy::default`]; a spent restart budget escalates to
/// [`Verdict::Shutdown`]; no start timeout; a stop timeout of
/// [`DEFAULT_STOP_TIMEOUT`]; transient (a clean exit is not restarted);
/// dependents keep running when it completes.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use lifecycle::{ComponentManager, FatalError, Node, RestartPolicy, Verdict};
///
/// let api = Node::new("api", || Ok::<_, FatalError>(ComponentManager::builder().build()))
///     .depends_on(["db", "cache"])
///     .handler(|failure| if failure.attempt < 3 { Verdict::Restart } else { Verdict::Stop })
///     .policy(RestartPolicy::default().intensity(10, Duration::from_secs(60)))
///     .start_timeout(Duration::from_secs(30))
///     .restart_dependents();
/// # let _ = api;
/// ```
pub struct Node {
    pub(super) name: Arc<str>,
    pub(super) dependencies: Vec<Arc<str>>,
    pub(super) factory: Factory,
    pub(super) handler: Handler,
    pub(super) policy: RestartPolicy,
    pub(super) on_exhausted: Verdict,
    pub(super) start_timeout: Option<Duration>,
    pub(super) stop_timeout: Option<Duration>,
    pub(super) restart_dependents: bool,
    pub(super) required: bool,
    pub(super) permanent: bool,
}

impl Node {
    /// A node named `name` whose instances `factory` builds: once at start
    /// and once per restart.
    pub fn new<F, C>(name: impl AsRef<str>, mut factory: F) -> Node
    where
        F: FnMut() -> Result<C, FatalError> + Send + 'static,
        C: Component,
    {
        Node {
            // Copied once into the shared string, whatever `name` is.
            name: Arc::from(name.as_ref()),
            dependencies: Vec::new(),
            factory: Box::new(move || factory().map(Built::new)),
            handler: Box::new(|_| Verdict::Restart),
            policy: RestartPolicy::default(),
            on_exhausted: Verdict::Shutdown,
            start_timeout: None,
            stop_timeout: Some(DEFAULT_STOP_TIMEOUT),
            restart_dependents: false,
            required: false,
            permanent: false,
        }
    }

    /// Adds nodes this one depends on: it starts only once they are all
    /// ready, and they stop only once it is done. Repeated names are fine.
    pub fn depends_on<I, N>(mut self, names: I) -> Node
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        self.dependencies
            .extend(names.into_iter().map(|name| Arc::from(name.as_ref())));
        self
    }

    /// Decides what a failure of this node leads to (default: always
    /// [`Verdict::Restart`]). Called once per failed instance, after it is
    /// done; never for errors the node reports while the supervisor is
    /// stopping it.
    ///
    /// # Example
    ///
    /// A sync job whose first instance meets a refused connection, and the
    /// second bad credentials, which no restart can fix:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Node, RestartPolicy, StopSource, Supervisor, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let mut built = 0;
    /// let sync = Node::new("sync", move || {
    ///     built += 1;
    ///     let error = if built == 1 { "connection refused" } else { "bad credentials" };
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(move |_, _| async move { Err(FatalError::msg(error)) })
    ///         .build())
    /// })
    /// .policy(RestartPolicy::immediate())
    /// .handler(|failure| match failure.error.to_string().as_str() {
    ///     "bad credentials" => Verdict::Shutdown,
    ///     _ if failure.attempt < 5 => Verdict::Restart,
    ///     _ => Verdict::Stop,
    /// });
    /// let supervisor = Supervisor::builder().node(sync).build()?;
    /// let status = supervisor.status();
    ///
    /// let stop = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert_eq!(outcome.to_string(), "shut down after node sync failed: bad credentials");
    /// assert_eq!(status.snapshot()[0].restarts, 1);
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn handler<H>(mut self, handler: H) -> Node
    where
        H: FnMut(&Failure) -> Verdict + Send + 'static,
    {
        self.handler = Box::new(handler);
        self
    }

    /// The restart policy: backoff and intensity (default:
    /// [`RestartPolicy::default`]).
    pub fn policy(mut self, policy: RestartPolicy) -> Node {
        self.policy = policy;
        self
    }

    /// What a restart becomes once the policy's budget is spent (default:
    /// [`Verdict::Shutdown`], as an OTP supervisor gives up). `Restart` is
    /// not allowed here.
    ///
    /// # Example
    ///
    /// Thumbnails are optional: once their budget of one restart is spent,
    /// they stop for good and the rest of the service goes on.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Node, RestartPolicy, StopSource};
    /// use lifecycle::{Supervisor, SupervisorEnd, Verdict};
    /// use std::time::Duration;
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let thumbnails = Node::new("thumbnails", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, _| async { Err(FatalError::msg("no image codec")) })
    ///         .build())
    /// })
    /// .policy(RestartPolicy::immediate().intensity(1, Duration::from_secs(60)))
    /// .on_exhausted(Verdict::Stop); // not the default Shutdown
    /// let uploads = Node::new("uploads", || {
    ///     Ok(ComponentManager::builder().add_worker(|_, _| async { Ok(()) }).build())
    /// });
    /// let supervisor = Supervisor::builder().node(thumbnails).node(uploads).build()?;
    /// let status = supervisor.status();
    ///
    /// let stop = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert!(matches!(outcome.end, SupervisorEnd::Completed), "{outcome}");
    /// assert_eq!(outcome.failures[0].to_string(), "thumbnails: no image codec");
    /// assert_eq!(status.summary(), "thumbnails=stopped(2) uploads=completed");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn on_exhausted(mut self, verdict: Verdict) -> Node {
        self.on_exhausted = verdict;
        self
    }

    /// An instance not ready within `timeout` of its start fails with
    /// [`StartTimedOut`](super::StartTimedOut) (default: no limit).
    pub fn start_timeout(mut self, timeout: Duration) -> Node {
        self.start_timeout = Some(timeout);
        self
    }

    /// An instance not done within `timeout` of being told to stop is
    /// aborted and named in the outcome (default:
    /// [`DEFAULT_STOP_TIMEOUT`]).
    pub fn stop_timeout(mut self, timeout: Duration) -> Node {
        self.stop_timeout = Some(timeout);
        self
    }

    /// Waits for an instance to stop without a limit.
    pub fn no_stop_timeout(mut self) -> Node {
        self.stop_timeout = None;
        self
    }

    /// On a restart of this node, its dependents stop first and start
    /// again once it is ready again. Those stopped early wait for the
    /// rest: no dependent starts on a node that is waiting to be stopped.
    ///
    /// # Example
    ///
    /// The api holds connections into the db: when the db restarts, the api
    /// stops first and starts again after it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Latch, Node, RestartPolicy, StopSource, Supervisor};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let (api_built, failed) = (Latch::new(), Latch::new());
    /// let built = api_built.clone();
    /// let db = Node::new("db", move || {
    ///     let (built, fail) = (built.clone(), failed.set()); // only the first fails
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(move |_, ready| {
    ///             let built = built.clone();
    ///             async move {
    ///                 ready.ready();
    ///                 built.wait().await; // the api is starting
    ///                 if fail { Err(FatalError::msg("disk lost")) } else { Ok(()) }
    ///             }
    ///         })
    ///         .build())
    /// })
    /// .policy(RestartPolicy::immediate())
    /// .restart_dependents();
    /// let api = Node::new("api", move || {
    ///     let first = api_built.set(); // the first serves until stopped, the second completes
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(move |ctx, ready| async move {
    ///             ready.ready();
    ///             if first {
    ///                 ctx.stopped().await;
    ///             }
    ///             Ok(())
    ///         })
    ///         .build())
    /// })
    /// .depends_on(["db"]);
    /// let supervisor = Supervisor::builder().node(db).node(api).build()?;
    /// let status = supervisor.status();
    ///
    /// let stop = StopSource::new();
    /// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// // The db's restart took the api's first instance down with it.
    /// assert_eq!(status.summary(), "db=completed(2) api=completed(2)");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn restart_dependents(mut self) -> Node {
        self.restart_dependents = true;
        self
    }

    /// When this node completes (ends cleanly), its dependents stop too, as
    /// with systemd's `BindsTo=`. By default they keep running.
    ///
    /// # Example
    ///
    /// A sync job runs through a tunnel: when the tunnel ends, the job is
    /// stopped rather than left without it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Latch, Node, StopSource, Supervisor};
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
    /// let sync_built = Latch::new();
    /// let built = sync_built.clone();
    /// let tunnel = Node::new("tunnel", move || {
    ///     let built = built.clone();
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(move |_, ready| {
    ///             let built = built.clone();
    ///             async move {
    ///                 ready.ready();
    ///                 built.wait().await; // the remote side closes it once sync starts
    ///                 Ok(())
    ///             }
    ///         })
    ///         .build())
    /// })
    /// .required_while_running();
    /// let sync = Node::new("sync", move || {
    ///     sync_built.set();
    ///     serving()
    /// })
    /// .depends_on(["tunnel"]);
    /// let supervisor = Supervisor::builder().node(tunnel).node(sync).build()?;
    /// let status = supervisor.status();
    ///
    /// let stop = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert!(outcome.is_clean(), "{outcome}");
    /// assert_eq!(status.summary(), "tunnel=completed sync=stopped");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn required_while_running(mut self) -> Node {
        self.required = true;
        self
    }

    /// A clean exit is restarted too, under the restart policy, as an OTP
    /// `permanent` child. By default (transient) a clean exit is final.
    ///
    /// # Example
    ///
    /// A poller whose instances end cleanly is started again each time, until
    /// its third instance fails:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, FatalError, Node, RestartPolicy, StopSource, Supervisor, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let mut built = 0;
    /// let poller = Node::new("poller", move || {
    ///     built += 1;
    ///     let fail = built == 3;
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(move |_, _| async move {
    ///             if fail { Err(FatalError::msg("feed gone")) } else { Ok(()) }
    ///         })
    ///         .build())
    /// })
    /// .policy(RestartPolicy::immediate())
    /// .handler(|_| Verdict::Stop)
    /// .permanent();
    /// let supervisor = Supervisor::builder().node(poller).build()?;
    /// let status = supervisor.status();
    ///
    /// let stop = StopSource::new();
    /// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert_eq!(status.summary(), "poller=stopped(3)");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn permanent(mut self) -> Node {
        self.permanent = true;
        self
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("dependencies", &self.dependencies)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why [`SupervisorBuilder::build`] refused a graph. The checks run in this
/// order, each over the nodes in declaration order, so the same input gives
/// the same error.
///
/// # Example
///
/// ```
/// use lifecycle::{BuildError, ComponentManager, FatalError, Node, Supervisor};
///
/// fn idle() -> Result<ComponentManager, FatalError> {
///     Ok(ComponentManager::builder().build())
/// }
///
/// // db and api depend on each other: neither could start first.
/// let error = Supervisor::builder()
///     .node(Node::new("db", idle).depends_on(["api"]))
///     .node(Node::new("api", idle).depends_on(["db"]))
///     .build()
///     .expect_err("a cycle is refused");
/// assert_eq!(error, BuildError::Cycle(vec!["db".into(), "api".into()]));
/// assert_eq!(
///     error.to_string(),
///     r#"dependency cycle: "db" -> "api" -> "db""#
/// );
///
/// let error = Supervisor::builder()
///     .node(Node::new("api", idle).depends_on(["cache"]))
///     .build()
///     .expect_err("no node is called cache");
/// match error {
///     BuildError::UnknownDependency { node, dependency } => {
///         assert_eq!((node.as_str(), dependency.as_str()), ("api", "cache"));
///     }
///     other => panic!("expected an unknown dependency, got {other}"),
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// Two nodes have this name.
    DuplicateName(String),
    /// `node` depends on `dependency`, which no node is called.
    UnknownDependency {
        /// The node with the bad dependency.
        node: String,
        /// The missing name.
        dependency: String,
    },
    /// The nodes on a dependency cycle, in dependency order: each depends
    /// on the next, and the last on the first. A node depending on itself
    /// is a cycle of one.
    Cycle(Vec<String>),
    /// A node's restart policy has a bad setting.
    InvalidPolicy {
        /// The node.
        node: String,
        /// What is wrong.
        error: PolicyError,
    },
    /// A node's [`on_exhausted`](Node::on_exhausted) verdict is `Restart`.
    RestartOnExhausted(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::DuplicateName(name) => write!(f, "two nodes are named {name:?}"),
            BuildError::UnknownDependency { node, dependency } => write!(
                f,
                "node {node:?} depends on {dependency:?}, which is not a node"
            ),
            BuildError::Cycle(nodes) => {
                f.write_str("dependency cycle: ")?;
                for name in nodes {
                    write!(f, "{name:?} -> ")?;
                }
                write!(f, "{:?}", nodes.first().map_or("", |name| name.as_str()))
            }
            BuildError::InvalidPolicy { node, error } => {
                write!(f, "node {node:?} has an invalid restart policy: {error}")
            }
            BuildError::RestartOnExhausted(node) => write!(
                f,
                "node {node:?} escalates a spent restart budget to another restart"
            ),
        }
    }
}

impl core::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            BuildError::InvalidPolicy { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Collects the nodes and settings of a [`Supervisor`]; see
/// [`Supervisor::builder`].
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, FatalError, Latch, Node, Supervisor};
/// use std::time::Duration;
///
/// fn idle() -> Result<ComponentManager, FatalError> {
///     Ok(ComponentManager::builder().build())
/// }
///
/// let terminate = Latch::new(); // set it to stop the supervisor gracefully
/// let supervisor = Supervisor::builder()
///     .node(Node::new("db", idle))
///     .node(Node::new("api", idle).depends_on(["db"]))
///     .shutdown_budget(Duration::from_secs(30))
///     .terminate_on(terminate.signal())
///     .on_event(|event| println!("{}: {:?}", event.node, event.kind))
///     .build()?;
/// // Nothing runs before `run`: every node waits, in declaration order.
/// assert_eq!(supervisor.status().summary(), "db=waiting api=waiting");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Default)]
pub struct SupervisorBuilder {
    nodes: Vec<Node>,
    shutdown_budget: Option<Duration>,
    terminate: Option<Arc<dyn TerminateRequests>>,
    events: Option<EventHook>,
    hook: Option<FatalHook>,
}

impl SupervisorBuilder {
    /// Adds a node. Declaration order is the start order among nodes that
    /// become startable at the same moment.
    pub fn node(mut self, node: Node) -> Self {
        self.nodes.push(node);
        self
    }

    /// Bounds the whole stop (after a parent stop, a terminate request,
    /// `Shutdown` or `SpinHalt`): nodes not done when it runs out are
    /// aborted, given up ([`EventKind::GivenUp`](super::EventKind::GivenUp),
    /// then `Stopped`, dependents first as in every stop) and named in the
    /// outcome. It bounds the stop only: a spin-halt's wait for its
    /// terminate request, once every node is down, does not spend it.
    /// Default: none (each node's stop timeout still applies).
    ///
    /// # Example
    ///
    /// A cache that flushes as soon as it is told to stop, well within the
    /// budget:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalError, Node, StopSource, Supervisor};
    /// use std::time::Duration;
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
    ///     .node(Node::new("cache", serving))
    ///     .shutdown_budget(Duration::from_secs(30))
    ///     .build()?;
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
    /// assert!(!outcome.budget_spent && outcome.overran.is_empty());
    /// assert!(outcome.is_clean());
    /// # });
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn shutdown_budget(mut self, budget: Duration) -> Self {
        self.shutdown_budget = Some(budget);
        self
    }

    /// Where terminate requests come from (SIGTERM, in the adapters). A
    /// request stops the supervisor gracefully, and it is the only thing
    /// that releases a spin-halt. Listened to from the start of the run and
    /// released when the run returns.
    ///
    /// # Example
    ///
    /// A terminate request once the server is ready stops it gracefully:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalError, Latch, Node};
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
    /// let terminate = Latch::new();
    /// let supervisor = Supervisor::builder()
    ///     .node(Node::new("server", serving))
    ///     .terminate_on(terminate.signal())
    ///     .build()?;
    /// let ready = supervisor.ready();
    ///
    /// # futures_executor::block_on(async {
    /// let stop = StopSource::new(); // not stopped in this example
    /// let run = supervisor.run(Arc::new(Threads), stop.token());
    /// let request = async {
    ///     ready.wait().await;
    ///     terminate.set(); // SIGTERM, in the adapters
    /// };
    /// let (outcome, ()) = futures_util::future::join(run, request).await;
    /// assert!(matches!(outcome.end, SupervisorEnd::Terminated), "{outcome}");
    /// assert!(outcome.is_clean());
    /// # });
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn terminate_on(mut self, requests: impl TerminateRequests) -> Self {
        self.terminate = Some(Arc::new(requests));
        self
    }

    /// Calls `hook` with every node transition, from the supervisor's task;
    /// keep it quick. The [status board](Supervisor::status) shows the
    /// state a transition leads to by the time its event arrives (for
    /// `Starting`, while the factory runs), so a hook that reads it sees
    /// what it is told.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lifecycle::{Component, ComponentManager, EventKind, FatalError, Node};
    /// use lifecycle::{StopReason, StopSource, Supervisor};
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
    /// let kinds = Arc::new(Mutex::new(Vec::new()));
    /// let log = kinds.clone();
    /// let supervisor = Supervisor::builder()
    ///     .node(Node::new("db", serving))
    ///     .on_event(move |event| {
    ///         let mut log = log.lock().expect("the hook does not panic");
    ///         log.push(event.kind.clone());
    ///     })
    ///     .build()?;
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
    /// futures_util::future::join(run, stop_when_ready).await;
    /// # });
    /// let kinds = kinds.lock().expect("the hook does not panic");
    /// assert!(matches!(
    ///     kinds.as_slice(),
    ///     [
    ///         EventKind::Starting { attempt: 1 },
    ///         EventKind::Ready { attempt: 1 },
    ///         EventKind::Stopping { attempt: 1, cause: StopReason::ParentStopped },
    ///         EventKind::Stopped { attempt: 1 },
    ///     ]
    /// ), "{kinds:?}");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn on_event<H>(mut self, hook: H) -> Self
    where
        H: Fn(&SupervisorEvent) + Send + Sync + 'static,
    {
        self.events = Some(Arc::new(hook));
        self
    }

    /// The hook for fatal errors nobody handles (a node's errors after its
    /// first); default: [`FatalHook::default`].
    ///
    /// # Example
    ///
    /// The node's first error decides; the error its worker returns after it
    /// goes to the hook:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lifecycle::{ComponentManager, FatalError, FatalHook, Node, StopSource, Supervisor, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let late = Arc::new(Mutex::new(Vec::new()));
    /// let hook = FatalHook::new({
    ///     let late = late.clone();
    ///     move |err: &FatalError| late.lock().unwrap().push(err.to_string())
    /// });
    /// let db = Node::new("db", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|ctx, _| async move {
    ///             ctx.throw(FatalError::msg("connection reset"));
    ///             Err(FatalError::msg("write failed"))
    ///         })
    ///         .build())
    /// })
    /// .handler(|_| Verdict::Shutdown);
    /// let supervisor = Supervisor::builder().node(db).fatal_hook(hook).build()?;
    ///
    /// let stop = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert_eq!(outcome.error().map(|e| e.to_string()).as_deref(), Some("connection reset"));
    /// assert_eq!(*late.lock().unwrap(), ["write failed"]);
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn fatal_hook(mut self, hook: FatalHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Validates the graph and builds the supervisor.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the culprit: a duplicate name, an unknown
    /// dependency, a cycle, a bad policy or escalation.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{BuildError, ComponentManager, FatalError, Node, Supervisor};
    ///
    /// fn idle() -> Result<ComponentManager, FatalError> {
    ///     Ok(ComponentManager::builder().build())
    /// }
    ///
    /// // Two nodes named db: `depends_on(["db"])` could not say which.
    /// let error = Supervisor::builder()
    ///     .node(Node::new("db", idle))
    ///     .node(Node::new("api", idle).depends_on(["db"]))
    ///     .node(Node::new("db", idle))
    ///     .build()
    ///     .expect_err("a duplicate name is refused");
    /// assert_eq!(error, BuildError::DuplicateName("db".into()));
    /// assert_eq!(error.to_string(), r#"two nodes are named "db""#);
    /// ```
    pub fn build(mut self) -> Result<Supervisor, BuildError> {
        let graph = Graph::new(&self.nodes)?;
        // The graph has them by index now: the names go here rather than
        // when the run ends.
        for node in &mut self.nodes {
            node.dependencies = Vec::new();
        }
        Ok(Supervisor::from_parts(super::Parts {
            nodes: self.nodes,
            graph,
            shutdown_budget: self.shutdown_budget,
            terminate: self.terminate,
            events: self.events,
            hook: self.hook.unwrap_or_default(),
        }))
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("nodes", &self.nodes)
            .field("shutdown_budget", &self.shutdown_budget)
            .finish_non_exhaustive()
    }
}

/// The validated dependency graph, by node index (declaration order).
pub(super) struct Graph {
    /// What each node depends on, without repeats.
    pub(super) dependencies: Adjacency,
    /// What depends on each node.
    pub(super) dependents: Adjacency,
}

/// Every node's list of neighbours, `adjacency[node]`, packed in one
/// vector: two allocations for the whole graph rather than one per node,
/// which a supervisor of many nodes would otherwise free one by one when
/// its run ends.
pub(super) struct Adjacency {
    /// Node `n`'s neighbours are `edges[starts[n]..starts[n + 1]]`.
    starts: Vec<usize>,
    edges: Vec<usize>,
}

impl Adjacency {
    /// The same edges the other way round: for each node, the nodes whose
    /// lists name it, in node order. Counted first, then filled, so that
    /// no node needs a list of its own.
    fn reversed(&self) -> Adjacency {
        let nodes = self.len();
        let mut starts = vec![0; nodes + 1];
        for &to in &self.edges {
            starts[to + 1] += 1;
        }
        for node in 0..nodes {
            starts[node + 1] += starts[node];
        }
        let mut next = starts.clone();
        let mut edges = vec![0; self.edges.len()];
        for from in 0..nodes {
            for &to in &self[from] {
                edges[next[to]] = from;
                next[to] += 1;
            }
        }
        Adjacency { starts, edges }
    }

    /// How many nodes there are.
    pub(super) fn len(&self) -> usize {
        self.starts.len() - 1
    }
}

impl core::ops::Index<usize> for Adjacency {
    type Output = [usize];

    fn index(&self, node: usize) -> &[usize] {
        &self.edges[self.starts[node]..self.starts[node + 1]]
    }
}

impl Graph {
    fn new(nodes: &[Node]) -> Result<Graph, BuildError> {
        let mut index = BTreeMap::new();
        for (at, node) in nodes.iter().enumerate() {
            if index.insert(node.name.clone(), at).is_some() {
                return Err(BuildError::DuplicateName(String::from(&*node.name)));
            }
        }
        // Each node's dependencies, once each, in the order named.
        let mut dependencies = Adjacency {
            starts: Vec::with_capacity(nodes.len() + 1),
            edges: Vec::with_capacity(nodes.iter().map(|node| node.dependencies.len()).sum()),
        };
        dependencies.starts.push(0);
        for node in nodes {
            let first = dependencies.edges.len();
            for name in &node.dependencies {
                let Some(&on) = index.get(name) else {
                    return Err(BuildError::UnknownDependency {
                        node: String::from(&*node.name),
                        dependency: String::from(&**name),
                    });
                };
                if !dependencies.edges[first..].contains(&on) {
                    dependencies.edges.push(on);
                }
            }
            dependencies.starts.push(dependencies.edges.len());
        }
        let dependents = dependencies.reversed();
        for node in nodes {
            if let Err(error) = node.policy.validate() {
                return Err(BuildError::InvalidPolicy {
                    node: String::from(&*node.name),
                    error,
                });
            }
            if node.on_exhausted == Verdict::Restart {
                return Err(BuildError::RestartOnExhausted(String::from(&*node.name)));
            }
        }
        let graph = Graph {
            dependencies,
            dependents,
        };
        if let Some(cycle) = graph.find_cycle() {
            return Err(BuildError::Cycle(
                cycle
                    .into_iter()
                    .map(|at| String::from(&*nodes[at].name))
                    .collect(),
            ));
        }
        Ok(graph)
    }

    /// The first cycle a depth-first search meets, visiting nodes and
    /// dependencies in declaration order; iterative, so deep graphs do not
    /// exhaust a small stack.
    fn find_cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Finished,
        }
        let mut mark = vec![Mark::New; self.dependencies.len()];
        for root in 0..self.dependencies.len() {
            if mark[root] != Mark::New {
                continue;
            }
            // The current path: a node and how many of its dependencies
            // have been explored.
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                let Some(&on) = self.dependencies[node].get(*next) else {
                    mark[node] = Mark::Finished;
                    path.pop();
                    continue;
                };
                *next += 1;
                match mark[on] {
                    Mark::New => {
                        mark[on] = Mark::OnPath;
                        path.push((on, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(at, _)| at == on).unwrap_or(0);
                        return Some(path[from..].iter().map(|&(at, _)| at).collect());
                    }
                    Mark::Finished => {}
                }
            }
        }
        None
    }

    /// `from` and every node that depends on it, transitively.
    pub(super) fn dependents_of(&self, from: usize) -> Vec<usize> {
        self.closure(from, &self.dependents, |_| true)
    }

    /// `from` and every node it depends on, transitively.
    pub(super) fn dependencies_of(&self, from: usize) -> Vec<usize> {
        self.closure(from, &self.dependencies, |_| true)
    }

    /// `from` and the nodes that depend on it, through nodes for which
    /// `through` holds only: a node is found once a node it depends on
    /// was, but its own dependents are looked at only if `through` it.
    pub(super) fn dependents_through(
        &self,
        from: usize,
        through: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        self.closure(from, &self.dependents, through)
    }

    /// `from` and the nodes it depends on, through nodes for which
    /// `through` holds only (see [`Graph::dependents_through`]).
    pub(super) fn dependencies_through(
        &self,
        from: usize,
        through: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        self.closure(from, &self.dependencies, through)
    }

    /// `from` and what `edges` lead to from it, leaving only `from` and the
    /// nodes `through` holds for; each node found once.
    fn closure(
        &self,
        from: usize,
        edges: &Adjacency,
        through: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut seen = vec![false; edges.len()];
        let mut found = vec![from];
        seen[from] = true;
        let mut next = 0;
        while let Some(&node) = found.get(next) {
            next += 1;
            if node != from && !through(node) {
                continue;
            }
            for &other in &edges[node] {
                if !seen[other] {
                    seen[other] = true;
                    found.push(other);
                }
            }
        }
        found
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::manager::ComponentManager;

    fn node(name: &str, dependencies: &[&str]) -> Node {
        Node::new(name, || Ok(ComponentManager::builder().build()))
            .depends_on(dependencies.iter().copied())
    }

    fn lists(adjacency: &Adjacency) -> Vec<Vec<usize>> {
        (0..adjacency.len())
            .map(|node| adjacency[node].to_vec())
            .collect()
    }

    #[test]
    fn both_directions_list_each_edge_once_in_order() {
        // d depends on b and a (a named twice), b and c on a.
        let nodes = [
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("d", &["b", "a", "a"]),
        ];
        let graph = Graph::new(&nodes).unwrap();
        assert_eq!(
            lists(&graph.dependencies),
            [vec![], vec![0], vec![0], vec![1, 0]]
        );
        assert_eq!(
            lists(&graph.dependents),
            [vec![1, 2, 3], vec![3], vec![], vec![]]
        );
    }
}
