//! What a supervisor tells the world: [`SupervisorEvent`]s for every node
//! transition and a [`NodeStatus`] snapshot of every node.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::fatal::FatalError;
use crate::restart::Verdict;
use crate::sync::Mutex;

pub(super) type EventHook = Arc<dyn Fn(&SupervisorEvent) + Send + Sync>;

/// One transition of one node, with its cause.
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

    /// Whether dependents may start (and keep running) on it.
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
/// and read by anyone through a short lock that the supervisor never holds
/// across an await.
#[derive(Clone)]
pub struct StatusBoard {
    board: Arc<Mutex<Board>>,
}

struct Board {
    nodes: Vec<NodeStatus>,
    /// The node whose failure put the supervisor in a spin-halt.
    spin_halt: Option<Arc<str>>,
}

impl StatusBoard {
    pub(super) fn new(names: impl Iterator<Item = Arc<str>>) -> Self {
        let nodes = names
            .map(|name| NodeStatus {
                name,
                state: NodeState::Waiting,
                generation: 0,
                restarts: 0,
                last_error: None,
            })
            .collect();
        Self {
            board: Arc::new(Mutex::new(Board {
                nodes,
                spin_halt: None,
            })),
        }
    }

    pub(super) fn update(&self, node: usize, change: impl FnOnce(&mut NodeStatus)) {
        if let Some(status) = self.board.lock().nodes.get_mut(node) {
            change(status);
        }
    }

    pub(super) fn enter_spin_halt(&self, node: Arc<str>) {
        self.board.lock().spin_halt = Some(node);
    }

    /// A copy of every node's status, in declaration order.
    pub fn snapshot(&self) -> Vec<NodeStatus> {
        self.board.lock().nodes.clone()
    }

    /// The node whose failure put the supervisor in a spin-halt (every
    /// node stopped, waiting for a terminate request), if it is in one.
    pub fn spin_halted_by(&self) -> Option<Arc<str>> {
        self.board.lock().spin_halt.clone()
    }

    /// One line: each node's name and state, e.g.
    /// `db=ready api=starting(2)`; the instance is shown after a restart,
    /// and a spin-halt is named at the end (`spin-halt after db`).
    pub fn summary(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut line = alloc::string::String::new();
        let board = self.board.lock();
        for (at, node) in board.nodes.iter().enumerate() {
            let gap = if at == 0 { "" } else { " " };
            let _ = write!(line, "{gap}{}={}", node.name, node.state);
            if node.generation > 1 {
                let _ = write!(line, "({})", node.generation);
            }
        }
        if let Some(node) = &board.spin_halt {
            let gap = if line.is_empty() { "" } else { " " };
            let _ = write!(line, "{gap}spin-halt after {node}");
        }
        line
    }
}

impl fmt::Debug for StatusBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.board.lock().nodes.iter())
            .finish()
    }
}
