//! What a supervisor tells the world: [`SupervisorEvent`]s for every node
//! transition and a [`NodeStatus`] snapshot of every node.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::time::Duration;

use crate::fatal::FatalError;
use crate::restart::Verdict;
use crate::sync::{AtomicU32, AtomicU8, Mutex};

pub(super) type EventHook = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

/// One transition of one node, with its cause.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, EventKind, FatalError, Node, StopSource, Supervisor};
/// use std::sync::{Arc, Mutex};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// /// A component that is ready, does its work and ends.
/// fn oneshot() -> Result<ComponentManager, FatalError> {
///     Ok(ComponentManager::builder()
///         .add_worker(|_, ready| async move {
///             ready.ready();
///             Ok(())
///         })
///         .build())
/// }
///
/// let started = Arc::new(Mutex::new(Vec::new()));
/// let log = started.clone();
/// let supervisor = Supervisor::builder()
///     .node(Node::new("db", oneshot).depends_on(["config"]))
///     .node(Node::new("config", oneshot))
///     .on_event(move |event| {
///         if let EventKind::Starting { .. } = event.kind {
///             let mut log = log.lock().expect("the hook does not panic");
///             log.push(event.node.to_string());
///         }
///     })
///     .build()?;
/// let stop = StopSource::new();
/// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// // db is declared first but starts only once config is ready.
/// let started = started.lock().expect("the hook does not panic");
/// assert_eq!(*started, ["config", "db"]);
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SupervisorEvent {
    /// The node.
    pub node: Arc<str>,
    /// What happened to it.
    pub kind: EventKind,
}

/// What happened to a node. `attempt` counts the node's instances: 1 for
/// the first, 2 after one restart, ...
///
/// # Example
///
/// ```
/// use lifecycle::{EventKind, Node, StopSource, Supervisor, Verdict};
/// use std::sync::{Arc, Mutex};
/// # use lifecycle::{ComponentManager, FatalError};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
/// # fn failing() -> Result<ComponentManager, FatalError> {
/// #     Ok(ComponentManager::builder()
/// #         .add_worker(|_, _| async { Err(FatalError::msg("the input file is missing")) })
/// #         .build())
/// # }
///
/// // `failing` builds a component that fails as it starts; the verdict stops it.
/// let kinds = Arc::new(Mutex::new(Vec::new()));
/// let log = kinds.clone();
/// let supervisor = Supervisor::builder()
///     .node(Node::new("import", failing).handler(|_| Verdict::Stop))
///     .on_event(move |event| {
///         let mut log = log.lock().expect("the hook does not panic");
///         log.push(event.kind.clone());
///     })
///     .build()?;
/// let stop = StopSource::new();
/// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// let kinds = kinds.lock().expect("the hook does not panic");
/// assert!(matches!(
///     kinds.as_slice(),
///     [
///         EventKind::Starting { attempt: 1 },
///         EventKind::Failed { attempt: 1, .. },
///         EventKind::Verdict {
///             attempt: 1,
///             verdict: Verdict::Stop,
///             acted: true
///         },
///         EventKind::Stopped { attempt: 1 },
///     ]
/// ));
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EventKind {
    /// Its dependencies are ready; the factory is called.
    Starting {
        /// The instance being built.
        attempt: u32,
    },
    /// The instance is ready.
    Ready {
        /// The instance.
        attempt: u32,
    },
    /// The instance (or the factory, or the start) failed.
    Failed {
        /// The instance.
        attempt: u32,
        /// Its first fatal error.
        error: FatalError,
    },
    /// The handler's decision on a failure. `acted` is false when the node
    /// was already being stopped by the supervisor (the verdict is
    /// recorded, not acted on).
    Verdict {
        /// The failed instance.
        attempt: u32,
        /// What the handler decided.
        verdict: Verdict,
        /// Whether the supervisor acted on it.
        acted: bool,
    },
    /// A restart is scheduled after `delay`.
    Restarting {
        /// The instance that will be built.
        attempt: u32,
        /// The backoff before it.
        delay: Duration,
    },
    /// The restart budget is spent; `escalation` is applied instead.
    RestartsExhausted {
        /// The last failed instance.
        attempt: u32,
        /// The node's escalation verdict.
        escalation: Verdict,
    },
    /// The supervisor tells the instance to stop.
    Stopping {
        /// The instance.
        attempt: u32,
        /// Why.
        cause: StopReason,
    },
    /// The instance reported an error while being stopped: recorded in
    /// the outcome; the handler is not called.
    ErrorDuringStop {
        /// The instance.
        attempt: u32,
        /// The error.
        error: FatalError,
    },
    /// The instance did not stop within its stop timeout and was aborted.
    StopTimedOut {
        /// The instance.
        attempt: u32,
        /// The timeout it overran.
        timeout: Duration,
    },
    /// The supervisor's shutdown budget ran out before the instance was
    /// done: its tasks were aborted and the supervisor no longer waits for
    /// it (the outcome names it among those that overran). `Stopped`
    /// follows.
    GivenUp {
        /// The instance.
        attempt: u32,
        /// The shutdown budget that ran out.
        budget: Duration,
    },
    /// The instance ended cleanly on its own.
    Completed {
        /// The instance.
        attempt: u32,
    },
    /// The node is stopped for good (it may still be restarted by nothing).
    Stopped {
        /// The last instance.
        attempt: u32,
    },
    /// The node's instance is done and the node waits to start again (a
    /// restart of a node it depends on).
    Waiting {
        /// The last instance.
        attempt: u32,
    },
}

/// Why the supervisor stopped a node.
///
/// # Example
///
/// ```
/// use lifecycle::{EventKind, Node, StopReason, StopSource, Supervisor, Verdict};
/// use std::sync::{Arc, Mutex};
/// # use lifecycle::{ComponentManager, FatalError};
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
/// # fn failing() -> Result<ComponentManager, FatalError> {
/// #     Ok(ComponentManager::builder()
/// #         .add_worker(|_, _| async { Err(FatalError::msg("schema is newer than this build")) })
/// #         .build())
/// # }
///
/// // `serving` is ready at once and serves until stopped; `failing` fails as it starts.
/// let causes = Arc::new(Mutex::new(Vec::new()));
/// let log = causes.clone();
/// let supervisor = Supervisor::builder()
///     .node(Node::new("db", serving))
///     .node(
///         Node::new("migrate", failing)
///             .depends_on(["db"])
///             .handler(|_| Verdict::Shutdown),
///     )
///     .on_event(move |event| {
///         if let EventKind::Stopping { cause, .. } = &event.kind {
///             let mut log = log.lock().expect("the hook does not panic");
///             log.push((event.node.to_string(), cause.clone()));
///         }
///     })
///     .build()?;
/// let stop = StopSource::new();
/// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// // db is stopped because of migrate's failure and its verdict.
/// let cause = StopReason::Verdict {
///     node: "migrate".into(),
///     verdict: Verdict::Shutdown,
/// };
/// assert_eq!(cause.to_string(), "shutdown after migrate failed");
/// let causes = causes.lock().expect("the hook does not panic");
/// assert_eq!(*causes, [("db".to_string(), cause)]);
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StopReason {
    /// The supervisor's parent stopped.
    ParentStopped,
    /// A terminate request arrived.
    Terminated,
    /// A node's failure led to `verdict` (Stop, StopParents, Shutdown or
    /// SpinHalt), which covers this node.
    Verdict {
        /// The node whose failure it was.
        node: Arc<str>,
        /// The verdict.
        verdict: Verdict,
    },
    /// `node` restarts with its dependents, this one among them.
    Restart {
        /// The restarting node.
        node: Arc<str>,
    },
    /// `node`, required while running, completed.
    RequiredNodeCompleted {
        /// The completed node.
        node: Arc<str>,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::ParentStopped => f.write_str("the parent stopped"),
            StopReason::Terminated => f.write_str("terminate requested"),
            StopReason::Verdict { node, verdict } => write!(f, "{verdict} after {node} failed"),
            StopReason::Restart { node } => write!(f, "{node} restarts with its dependents"),
            StopReason::RequiredNodeCompleted { node } => write!(f, "{node} completed"),
        }
    }
}

/// Where a node is in its life.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, NodeState, StopSource, Supervisor};
/// use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// // A one-shot node: ready, then done with its work.
/// let supervisor = Supervisor::of_one("migrate", || {
///     Ok(ComponentManager::builder()
///         .add_worker(|_, ready| async move {
///             ready.ready();
///             Ok(())
///         })
///         .build())
/// });
/// let status = supervisor.status();
/// assert_eq!(status.snapshot()[0].state, NodeState::Waiting);
///
/// let stop = StopSource::new();
/// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// let state = status.snapshot()[0].state;
/// assert_eq!(state, NodeState::Completed);
/// assert_eq!(state.to_string(), "completed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Not started: waiting for its dependencies.
    Waiting,
    /// Started, not ready yet.
    Starting,
    /// Ready.
    Ready,
    /// Told to stop (or failed); waiting until it is done.
    Stopping,
    /// Failed; waiting out the backoff before a restart.
    Backoff,
    /// Ended cleanly on its own.
    Completed,
    /// Stopped for good, by the supervisor or by a failure.
    Stopped,
}

impl NodeState {
    /// Whether an instance exists (started and not yet done).
    pub(super) fn is_up(self) -> bool {
        matches!(
            self,
            NodeState::Starting | NodeState::Ready | NodeState::Stopping
        )
    }

    /// Whether it is ready or completed: it counts toward the supervisor's
    /// readiness, and dependents may start on it (on a completed one only
    /// while what it depends on may be relied on too: see the engine's
    /// `may_rely_on`).
    pub(super) fn satisfies_dependents(self) -> bool {
        matches!(self, NodeState::Ready | NodeState::Completed)
    }

    /// Whether the node is done for good.
    pub(super) fn is_final(self) -> bool {
        matches!(self, NodeState::Completed | NodeState::Stopped)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Waiting => "waiting",
            NodeState::Starting => "starting",
            NodeState::Ready => "ready",
            NodeState::Stopping => "stopping",
            NodeState::Backoff => "backoff",
            NodeState::Completed => "completed",
            NodeState::Stopped => "stopped",
        })
    }
}

/// A node as the status snapshot shows it.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, FatalError, Node, NodeState, StopSource, Supervisor, Verdict};
/// use std::sync::Arc;
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # // Timers fire at once here: the restart backoff takes no time.
/// # struct Threads;
/// # impl Runtime for Threads {
/// #     fn spawn_detached(&self, task: BoxFuture) {
/// #         std::thread::spawn(move || futures_executor::block_on(task));
/// #     }
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
///
/// /// A component that fails as it starts.
/// fn failing() -> Result<ComponentManager, FatalError> {
///     Ok(ComponentManager::builder()
///         .add_worker(|_, _| async { Err(FatalError::msg("the input file is missing")) })
///         .build())
/// }
///
/// // Restarted after its first failure, stopped after its second.
/// let import = Node::new("import", failing).handler(|failure| {
///     if failure.attempt < 2 {
///         Verdict::Restart
///     } else {
///         Verdict::Stop
///     }
/// });
/// let supervisor = Supervisor::builder().node(import).build()?;
/// let status = supervisor.status();
///
/// let stop = StopSource::new();
/// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
/// let import = &status.snapshot()[0];
/// assert_eq!(&*import.name, "import");
/// assert_eq!(import.state, NodeState::Stopped);
/// assert!(import.is_done() && !import.is_ready());
/// assert_eq!((import.generation, import.restarts), (2, 1));
/// let error = import.last_error.as_ref().expect("a failure is kept");
/// assert_eq!(error.to_string(), "the input file is missing");
/// // As the status summary shows it: the generation after the first.
/// assert_eq!(import.to_string(), "import=stopped(2)");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's name.
    pub name: Arc<str>,
    /// Where it is.
    pub state: NodeState,
    /// Its current or last instance: 0 before the first.
    pub generation: u32,
    /// How many restarts it had.
    pub restarts: u32,
    /// Its last failure.
    pub last_error: Option<FatalError>,
}

/// `name=state`, with the generation after the first in brackets
/// (`api=ready(2)`): one node of [`StatusBoard::summary`].
impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.state)?;
        if self.generation > 1 {
            write!(f, "({})", self.generation)?;
        }
        Ok(())
    }
}

impl NodeStatus {
    /// Whether its current instance is ready.
    pub fn is_ready(&self) -> bool {
        self.state == NodeState::Ready
    }

    /// Whether it is done for good (completed or stopped).
    pub fn is_done(&self) -> bool {
        matches!(self.state, NodeState::Completed | NodeState::Stopped)
    }
}

/// The status of every node, written by the supervisor on each transition
/// and read by anyone without waiting: a node's state, generation and
/// restart count are atomics of their own, so the run writes a transition
/// with one store and a reader never holds it up.
///
/// Each field is read atomically. A node's new generation is written
/// before the state that goes with it (release) and a snapshot reads the
/// state first (acquire), so a node shown starting shows the instance it
/// starts. Otherwise a snapshot taken while nodes change may show a
/// node's fields from either side of a transition, and the tree as no
/// single instant saw it; a snapshot of nodes at rest is exact.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, Node, NodeStatus, StopSource, Supervisor};
/// use std::sync::Arc;
/// # use lifecycle::{ComponentManager, FatalError};
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
///     .node(Node::new("config", serving))
///     .node(Node::new("db", serving).depends_on(["config"]))
///     .build()?;
/// let status = supervisor.status(); // a handle to read while it runs
/// let ready = supervisor.ready();
///
/// # futures_executor::block_on(async {
/// let stop = StopSource::new();
/// let stopper = stop.clone();
/// let run = supervisor.run(Arc::new(Threads), stop.token());
/// let watch = async {
///     ready.wait().await;
///     assert!(status.snapshot().iter().all(NodeStatus::is_ready));
///     assert_eq!(status.summary(), "config=ready db=ready");
///     stopper.stop();
/// };
/// futures_util::future::join(run, watch).await;
/// # });
/// assert_eq!(status.summary(), "config=stopped db=stopped");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone)]
pub struct StatusBoard {
    board: Arc<Board>,
}

struct Board {
    nodes: Box<[Entry]>,
    /// The node whose failure put the supervisor in a spin-halt.
    spin_halt: Mutex<Option<Arc<str>>>,
}

/// One node's status, written by the run alone.
struct Entry {
    name: Arc<str>,
    /// A `NodeState` as its index in `STATES`.
    state: AtomicU8,
    generation: AtomicU32,
    restarts: AtomicU32,
    /// Written on a failure only: a lock is cheap enough there.
    last_error: Mutex<Option<FatalError>>,
}

/// Every `NodeState`, at the index its entry stores: its discriminant.
const STATES: [NodeState; 7] = [
    NodeState::Waiting,
    NodeState::Starting,
    NodeState::Ready,
    NodeState::Stopping,
    NodeState::Backoff,
    NodeState::Completed,
    NodeState::Stopped,
];

impl Entry {
    fn status(&self) -> NodeStatus {
        // Acquire, first: the generation and restarts stored before this
        // state (release) are seen with it.
        let state = STATES[usize::from(self.state.load(Acquire))];
        NodeStatus {
            name: self.name.clone(),
            state,
            // Relaxed: ordered by the acquire load above.
            generation: self.generation.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

impl StatusBoard {
    pub(super) fn new(names: impl Iterator<Item = Arc<str>>) -> Self {
        let nodes = names
            .map(|name| Entry {
                name,
                state: AtomicU8::new(0),
                generation: AtomicU32::new(0),
                restarts: AtomicU32::new(0),
                last_error: Mutex::new(None),
            })
            .collect();
        Self {
            board: Arc::new(Board {
                nodes,
                spin_halt: Mutex::new(None),
            }),
        }
    }

    pub(super) fn set_state(&self, node: usize, state: NodeState) {
        // Release: publishes the generation and restarts written before.
        self.board.nodes[node].state.store(state as u8, Release);
    }

    pub(super) fn set_generation(&self, node: usize, generation: u32) {
        // Relaxed: published by the state stored after it.
        self.board.nodes[node].generation.store(generation, Relaxed);
    }

    pub(super) fn set_restarts(&self, node: usize, restarts: u32) {
        // Relaxed: as the generation.
        self.board.nodes[node].restarts.store(restarts, Relaxed);
    }

    pub(super) fn set_last_error(&self, node: usize, error: FatalError) {
        *self.board.nodes[node].last_error.lock() = Some(error);
    }

    pub(super) fn enter_spin_halt(&self, node: Arc<str>) {
        *self.board.spin_halt.lock() = Some(node);
    }

    /// A copy of every node's status, in declaration order.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{ComponentManager, FatalError, Node, NodeState, StopSource, Supervisor};
    /// use std::sync::Arc;
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// /// A one-shot job: it does its work and ends.
    /// fn oneshot() -> Result<ComponentManager, FatalError> {
    ///     Ok(ComponentManager::builder().add_worker(|_, _| async { Ok(()) }).build())
    /// }
    ///
    /// // Declared before the migration it waits for.
    /// let supervisor = Supervisor::builder()
    ///     .node(Node::new("seed", oneshot).depends_on(["migrate"]))
    ///     .node(Node::new("migrate", oneshot))
    ///     .build()?;
    /// let status = supervisor.status();
    /// assert!(status.snapshot().iter().all(|node| node.generation == 0), "none started");
    ///
    /// let stop = StopSource::new();
    /// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// let after = status.snapshot();
    /// let names: Vec<&str> = after.iter().map(|node| &*node.name).collect();
    /// assert_eq!(names, ["seed", "migrate"], "declaration order, not start order");
    /// assert!(after.iter().all(|node| node.state == NodeState::Completed));
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn snapshot(&self) -> Vec<NodeStatus> {
        self.board.nodes.iter().map(Entry::status).collect()
    }

    /// The node whose failure put the supervisor in a spin-halt (every
    /// node stopped, waiting for a terminate request), if it is in one.
    ///
    /// # Example
    ///
    /// A node's `SpinHalt` verdict stops every node and names the node until a
    /// terminate request releases the supervisor:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{Component, ComponentManager, FatalError, Latch, Node};
    /// use lifecycle::{StopSource, Supervisor, SupervisorEnd, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let db = Node::new("db", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, _| async { Err(FatalError::msg("disk full")) })
    ///         .build())
    /// })
    /// .handler(|_| Verdict::SpinHalt);
    /// let terminate = Latch::new();
    /// let supervisor = Supervisor::builder().node(db).terminate_on(terminate.signal()).build()?;
    /// let status = supervisor.status();
    /// let halting = supervisor.shutdown_signal();
    /// assert_eq!(status.spin_halted_by(), None);
    ///
    /// # futures_executor::block_on(async {
    /// let stop = StopSource::new();
    /// let run = supervisor.run(Arc::new(Threads), stop.token());
    /// let release = async {
    ///     halting.wait().await;
    ///     assert_eq!(status.spin_halted_by().as_deref(), Some("db"));
    ///     terminate.set(); // only a terminate request releases it
    /// };
    /// let (outcome, ()) = futures_util::future::join(run, release).await;
    /// assert!(matches!(outcome.end, SupervisorEnd::SpinHaltReleased { .. }), "{outcome}");
    /// # });
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn spin_halted_by(&self) -> Option<Arc<str>> {
        self.board.spin_halt.lock().clone()
    }

    /// One line: each node's name and state, e.g.
    /// `db=ready api=starting(2)`; the instance is shown after a restart,
    /// and a spin-halt is named at the end (`spin-halt after db`).
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{ComponentManager, FatalError, Node, RestartPolicy, StopSource, Supervisor};
    /// use std::sync::Arc;
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// // An import whose first instance fails and whose second completes.
    /// let mut built = 0;
    /// let import = Node::new("import", move || {
    ///     built += 1;
    ///     let fail = built == 1;
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(move |_, _| async move {
    ///                 if fail { Err(FatalError::msg("file locked")) } else { Ok(()) }
    ///             })
    ///             .build(),
    ///     )
    /// })
    /// .policy(RestartPolicy::immediate());
    /// let supervisor = Supervisor::builder().node(import).build()?;
    /// let status = supervisor.status();
    /// assert_eq!(status.summary(), "import=waiting");
    ///
    /// let stop = StopSource::new();
    /// futures_executor::block_on(supervisor.run(Arc::new(Threads), stop.token()));
    /// assert_eq!(status.summary(), "import=completed(2)", "the second instance");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn summary(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut line = alloc::string::String::new();
        for (at, node) in self.snapshot().iter().enumerate() {
            let gap = if at == 0 { "" } else { " " };
            let _ = write!(line, "{gap}{node}");
        }
        if let Some(node) = self.spin_halted_by() {
            let gap = if line.is_empty() { "" } else { " " };
            let _ = write!(line, "{gap}spin-halt after {node}");
        }
        line
    }
}

impl fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_written() {
        let board = StatusBoard::new(["a"].into_iter().map(Arc::from));
        for state in STATES {
            board.set_generation(0, 7);
            board.set_state(0, state);
            let status = &board.snapshot()[0];
            assert_eq!((status.state, status.generation), (state, 7));
        }
    }
}
