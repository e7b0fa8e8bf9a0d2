//! The supervisor's run: one task reacting to inputs (an instance ready,
//! failed or done; a timer; the parent's stop; a terminate request) and
//! moving nodes through their states.
//!
//! A node's states and transitions:
//!
//! ```text
//!  Waiting ──deps ready──▶ Starting ──ready──▶ Ready
//!     ▲                      │  │                │
//!     │                      │  └─error/timeout──┤ (stop with the error)
//!     │                      │                   ▼
//!     │     told to stop ────┴──────────────▶ Stopping ──done──▶ handler
//!     │     (dependents down first)              │                 │
//!     └──────────── restart of a dependency ◀───┘      Restart ──▶ Backoff ──timer──▶ Waiting
//!                                                       Stop/... ──▶ Stopped (and the cascade)
//!  Starting/Ready ──done, no error──▶ Completed (or Backoff if permanent)
//! ```
//!
//! Every instance has at most two watcher futures at a time (its start or
//! run, and its stop), each of which ends when the instance is done, so a
//! restart storm does not pile up futures. Inputs carry the node and the
//! instance's attempt number; an input about an instance that is no longer
//! current is stale and ignored.
//!
//! After every input the nodes it may affect are marked dirty and settled
//! in declaration order: a stop request is carried out once the node's
//! dependents are down, and a waiting node starts once its dependencies are
//! ready. Settling only dirty nodes keeps an input's cost proportional to
//! the node's neighbourhood, not to the size of the graph.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::graph::{Graph, Node};
use super::observe::{EventHook, EventKind, NodeState, StatusBoard, StopReason, SupervisorEvent};
use super::{NodeError, NodeFailed, Parts, StartTimedOut, SupervisorEnd, SupervisorOutcome};
use crate::component::Component;
use crate::fatal::{FatalError, FatalHook, FatalSlot};
use crate::latch::{Latch, Signal};
use crate::policy::RestartBudget;
use crate::restart::{Failure, Verdict};
use crate::runtime::{BoxFuture, Instant, SharedRuntime};
use crate::scope::Scope;
use crate::stop::{StopCause, StopSource, StopToken};
use crate::trace;
use crate::wait::wait_error_or_done;

/// Something the supervisor reacts to.
enum Input {
    Ready {
        node: usize,
        attempt: u32,
    },
    Ended {
        node: usize,
        attempt: u32,
        error: Option<FatalError>,
    },
    StartTimedOut {
        node: usize,
        attempt: u32,
    },
    Done {
        node: usize,
        attempt: u32,
    },
    StopTimedOut {
        node: usize,
        attempt: u32,
    },
    BackoffOver {
        node: usize,
        attempt: u32,
    },
    ParentStopped,
    Terminate,
    BudgetSpent,
}

/// What the supervisor as a whole is doing.
enum Mode {
    /// Starting and keeping nodes up.
    Running,
    /// Stopping every node; `run` then returns this end.
    Stopping(SupervisorEnd),
    /// Stopping every node, then waiting for a terminate request only.
    SpinHalt { node: Arc<str>, error: FatalError },
}

struct Instance {
    component: Box<dyn Component>,
    source: StopSource,
    slot: FatalSlot,
}

/// What happens once a stopping instance is done.
enum AfterStop {
    /// It failed with this error: ask the handler.
    Handle(FatalError),
    /// The supervisor stopped it: carry out the node's stop request.
    Settle,
}

enum State {
    Waiting,
    Starting(Instance),
    Ready(Instance),
    Stopping {
        instance: Instance,
        after: AfterStop,
        aborted: bool,
    },
    Backoff,
    Completed,
    Stopped,
}

impl State {
    /// Whether an instance exists (started and not yet done).
    fn is_up(&self) -> bool {
        matches!(
            self,
            State::Starting(_) | State::Ready(_) | State::Stopping { .. }
        )
    }

    /// Whether dependents may start (and keep running) on it.
    fn satisfies_dependents(&self) -> bool {
        matches!(self, State::Ready(_) | State::Completed)
    }

    fn is_final(&self) -> bool {
        matches!(self, State::Completed | State::Stopped)
    }

    fn public(&self) -> NodeState {
        match self {
            State::Waiting => NodeState::Waiting,
            State::Starting(_) => NodeState::Starting,
            State::Ready(_) => NodeState::Ready,
            State::Stopping { .. } => NodeState::Stopping,
            State::Backoff => NodeState::Backoff,
            State::Completed => NodeState::Completed,
            State::Stopped => NodeState::Stopped,
        }
    }
}

/// A stop the supervisor wants for a node, carried out once its dependents
/// are down.
#[derive(Clone)]
enum StopRequest {
    /// The node stays stopped.
    ForGood(StopReason),
    /// The node waits to start again (a dependency restarts).
    ForRestart(StopReason),
}

impl StopRequest {
    fn reason(&self) -> &StopReason {
        match self {
            StopRequest::ForGood(reason) | StopRequest::ForRestart(reason) => reason,
        }
    }
}

struct NodeRun {
    spec: Node,
    state: State,
    /// `state` as last set through `Engine::set_state`, which keeps the
    /// counts; `state` itself is briefly a placeholder while an instance
    /// moves between states.
    public: NodeState,
    attempt: u32,
    restarts: u32,
    budget: RestartBudget,
    started_at: Instant,
    stop: Option<StopRequest>,
    /// Restarting with its dependents: start only once they are down.
    hold_for_dependents: bool,
}

pub(super) struct Engine {
    runtime: SharedRuntime,
    graph: Graph,
    nodes: Vec<NodeRun>,
    mode: Mode,
    inputs: FuturesUnordered<BoxFuture<Input>>,
    dirty: BTreeSet<usize>,
    /// The root of every node's scope. Not a child of the parent token:
    /// the parent's stop must reach the nodes in dependency order, not all
    /// at once through the stop tree.
    root: StopSource,
    hook: FatalHook,
    events: Option<EventHook>,
    status: StatusBoard,
    ready: Latch,
    shutdown: Latch,
    shutdown_budget: Option<Duration>,
    terminated: bool,
    budget_spent: bool,
    shutdown_errors: Vec<NodeError>,
    overran: Vec<Arc<str>>,
    /// How many nodes have an instance (starting, ready or stopping).
    up: usize,
    /// How many nodes dependents may rely on (ready or completed).
    satisfied: usize,
    /// How many nodes are done for good (completed or stopped).
    finals: usize,
    /// How many nodes wait for their dependents before a restart.
    holding: usize,
    /// Where a Shutdown or SpinHalt error goes when the supervisor runs as
    /// a component.
    report: Option<FatalSlot>,
}

fn is_up(state: NodeState) -> bool {
    matches!(
        state,
        NodeState::Starting | NodeState::Ready | NodeState::Stopping
    )
}

fn is_satisfied(state: NodeState) -> bool {
    matches!(state, NodeState::Ready | NodeState::Completed)
}

fn is_final(state: NodeState) -> bool {
    matches!(state, NodeState::Completed | NodeState::Stopped)
}

impl Engine {
    pub(super) fn new(
        parts: Parts,
        runtime: SharedRuntime,
        status: StatusBoard,
        ready: Latch,
        shutdown: Latch,
        report: Option<FatalSlot>,
    ) -> Engine {
        let seed = runtime.now().since_origin().as_nanos() as u64;
        let nodes = parts
            .nodes
            .into_iter()
            .enumerate()
            .map(|(at, spec)| NodeRun {
                budget: RestartBudget::new(spec.policy.clone(), seed.wrapping_add(at as u64)),
                spec,
                state: State::Waiting,
                public: NodeState::Waiting,
                attempt: 0,
                restarts: 0,
                started_at: Instant::default(),
                stop: None,
                hold_for_dependents: false,
            })
            .collect::<Vec<_>>();
        let terminate = parts.terminate.map(|requests| requests.listen());
        let engine = Engine {
            dirty: (0..nodes.len()).collect(),
            runtime,
            graph: parts.graph,
            nodes,
            mode: Mode::Running,
            inputs: FuturesUnordered::new(),
            root: StopSource::new(),
            hook: parts.hook,
            events: parts.events,
            status,
            ready,
            shutdown,
            shutdown_budget: parts.shutdown_budget,
            terminated: false,
            budget_spent: false,
            shutdown_errors: Vec::new(),
            overran: Vec::new(),
            up: 0,
            satisfied: 0,
            finals: 0,
            holding: 0,
            report,
        };
        // Registered before any node starts, so no request is missed, and
        // released when the engine (and its inputs) is dropped.
        if let Some(terminate) = terminate {
            engine.push(async move {
                terminate.await;
                Input::Terminate
            });
        }
        engine
    }

    /// Runs until the supervisor ends: every node done for good, or a stop
    /// (parent, terminate, Shutdown) complete, or a spin-halt released.
    pub(super) async fn run(mut self, parent: StopToken) -> SupervisorOutcome {
        self.push(async move {
            parent.stopped_owned().await;
            Input::ParentStopped
        });
        // Every node of an empty supervisor is ready: it is ready at once,
        // like a manager without workers.
        self.check_ready();
        let mut handled: u32 = 0;
        loop {
            self.settle();
            if let Some(end) = self.finished() {
                self.root.stop();
                self.shutdown.set();
                return SupervisorOutcome {
                    end,
                    shutdown_errors: core::mem::take(&mut self.shutdown_errors),
                    overran: core::mem::take(&mut self.overran),
                    budget_spent: self.budget_spent,
                };
            }
            // Inputs that are ready at once (a node whose factory fails
            // at once, restarted without a backoff) would otherwise keep
            // this task from ever returning to its executor: yield now and
            // then, so that timers and other tasks run.
            handled += 1;
            if handled % YIELD_EVERY == 0 {
                YieldOnce(false).await;
            }
            match self.inputs.next().await {
                Some(input) => self.handle(input),
                // Nothing left that could happen: only a spin-halt without
                // a terminate source gets here, and it waits for good, as
                // documented.
                None => core::future::pending::<()>().await,
            }
        }
    }

    fn finished(&mut self) -> Option<SupervisorEnd> {
        match &self.mode {
            Mode::Running => {
                if self.finals == self.nodes.len() {
                    Some(SupervisorEnd::Completed)
                } else {
                    None
                }
            }
            Mode::Stopping(end) => {
                if self.up == 0 {
                    Some(end.clone())
                } else {
                    None
                }
            }
            Mode::SpinHalt { node, error } => {
                if self.terminated && self.up == 0 {
                    Some(SupervisorEnd::SpinHaltReleased {
                        node: node.clone(),
                        error: error.clone(),
                    })
                } else {
                    None
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Ready { node, attempt } => self.on_ready(node, attempt),
            Input::Ended {
                node,
                attempt,
                error,
            } => self.on_ended(node, attempt, error),
            Input::StartTimedOut { node, attempt } => {
                if self.is_current(node, attempt)
                    && matches!(self.nodes[node].state, State::Starting(_))
                {
                    let timeout = self.nodes[node].spec.start_timeout.unwrap_or_default();
                    let error = FatalError::new(StartTimedOut {
                        node: self.nodes[node].spec.name.clone(),
                        timeout,
                    });
                    self.stop_failed(node, error);
                }
            }
            Input::Done { node, attempt } => self.on_done(node, attempt),
            Input::StopTimedOut { node, attempt } => self.on_stop_timeout(node, attempt),
            Input::BackoffOver { node, attempt } => {
                if self.is_current(node, attempt)
                    && matches!(self.nodes[node].state, State::Backoff)
                {
                    self.set_state(node, State::Waiting);
                    // Only dirty nodes are settled: without this, the node
                    // would wait for good.
                    self.dirty.insert(node);
                }
            }
            Input::ParentStopped => {
                if matches!(self.mode, Mode::Running) {
                    self.stop_everything(SupervisorEnd::ParentStopped, StopReason::ParentStopped);
                }
            }
            Input::Terminate => {
                self.terminated = true;
                if matches!(self.mode, Mode::Running) {
                    self.stop_everything(SupervisorEnd::Terminated, StopReason::Terminated);
                }
            }
            Input::BudgetSpent => self.on_budget_spent(),
        }
    }

    fn is_current(&self, node: usize, attempt: u32) -> bool {
        self.nodes[node].attempt == attempt
    }

    fn on_ready(&mut self, node: usize, attempt: u32) {
        if !self.is_current(node, attempt) {
            return;
        }
        match core::mem::replace(&mut self.nodes[node].state, State::Waiting) {
            State::Starting(instance) => {
                self.watch_run(node, &instance);
                self.set_state(node, State::Ready(instance));
                self.emit(node, EventKind::Ready { attempt });
                self.mark_dependents(node);
                self.check_ready();
            }
            other => {
                // Ready after the supervisor told it to stop: keep watching
                // for errors it reports while stopping.
                if let State::Stopping { instance, .. } = &other {
                    self.watch_run(node, instance);
                }
                self.nodes[node].state = other;
            }
        }
    }

    fn on_ended(&mut self, node: usize, attempt: u32, error: Option<FatalError>) {
        if !self.is_current(node, attempt) {
            return;
        }
        match (&self.nodes[node].state, error) {
            (State::Starting(_) | State::Ready(_), Some(error)) => self.stop_failed(node, error),
            (State::Starting(_) | State::Ready(_), None) => self.on_completed(node),
            (
                State::Stopping {
                    after: AfterStop::Settle,
                    ..
                },
                Some(error),
            ) => self.record_stop_error(node, error),
            // Done while stopping: the stop watcher reports it.
            _ => {}
        }
    }

    /// Shows a failure in the status and the events.
    fn record_failure(&self, node: usize, error: &FatalError) {
        let attempt = self.nodes[node].attempt;
        self.status
            .update(node, |status| status.last_error = Some(error.clone()));
        self.emit(
            node,
            EventKind::Failed {
                attempt,
                error: error.clone(),
            },
        );
    }

    /// The instance failed with `error`: stop it, and hand the error to the
    /// handler once it is done.
    fn stop_failed(&mut self, node: usize, error: FatalError) {
        self.record_failure(node, &error);
        let Some(instance) = self.take_live_instance(node) else {
            return;
        };
        instance.source.stop_with(StopCause::Fatal(error.clone()));
        self.watch_stop(node, &instance);
        self.set_state(
            node,
            State::Stopping {
                instance,
                after: AfterStop::Handle(error),
                aborted: false,
            },
        );
    }

    /// The instance ended cleanly on its own.
    fn on_completed(&mut self, node: usize) {
        let attempt = self.nodes[node].attempt;
        if let State::Starting(instance) | State::Ready(instance) = &self.nodes[node].state {
            instance.source.stop();
        }
        self.emit(node, EventKind::Completed { attempt });
        let spec = &self.nodes[node].spec;
        if spec.permanent && matches!(self.mode, Mode::Running) && self.nodes[node].stop.is_none() {
            let error = FatalError::msg(format!(
                "node {} exited and is permanent, but its restart budget is spent",
                spec.name
            ));
            self.set_state(node, State::Backoff);
            self.restart(node, error);
            // As after a failure: the node may start again at once, and
            // what waited for it to be down may go on.
            self.mark_neighbours(node);
            return;
        }
        let required = spec.required;
        self.set_state(node, State::Completed);
        if required {
            let reason = StopReason::RequiredNodeCompleted {
                node: self.nodes[node].spec.name.clone(),
            };
            self.request_for_good(self.graph.dependents_of(node).into_iter().skip(1), &reason);
        }
        self.mark_neighbours(node);
        self.check_ready();
    }

    fn on_done(&mut self, node: usize, attempt: u32) {
        if !self.is_current(node, attempt) {
            return;
        }
        if !matches!(self.nodes[node].state, State::Stopping { .. }) {
            return;
        }
        let State::Stopping {
            after, instance, ..
        } = core::mem::replace(&mut self.nodes[node].state, State::Waiting)
        else {
            return;
        };
        match after {
            AfterStop::Handle(error) => self.on_failure(node, error),
            AfterStop::Settle => {
                // An error reported just before done may not have reached
                // the run watcher's input yet: the stop watcher, pushed when
                // the stop began, can be polled first and see done. The
                // error is then still in the slot: record it, not lose it.
                if let Some(error) = instance.slot.take() {
                    self.record_stop_error(node, error);
                }
                self.settle_stopped(node);
            }
        }
        self.mark_neighbours(node);
    }

    /// An error the instance reported while the supervisor was stopping
    /// it: fallout of a stop the supervisor asked for, recorded, never
    /// handled, never waited on.
    fn record_stop_error(&mut self, node: usize, error: FatalError) {
        let attempt = self.nodes[node].attempt;
        self.emit(
            node,
            EventKind::ErrorDuringStop {
                attempt,
                error: error.clone(),
            },
        );
        let name = self.nodes[node].spec.name.clone();
        self.shutdown_errors.push(NodeError { node: name, error });
    }

    /// A stopped instance is done: carry out the node's stop request.
    fn settle_stopped(&mut self, node: usize) {
        let attempt = self.nodes[node].attempt;
        match self.nodes[node].stop.take() {
            Some(StopRequest::ForRestart(_)) if matches!(self.mode, Mode::Running) => {
                self.set_state(node, State::Waiting);
                self.emit(node, EventKind::Waiting { attempt });
            }
            _ => {
                self.set_state(node, State::Stopped);
                self.emit(node, EventKind::Stopped { attempt });
            }
        }
    }

    /// A failed instance is done (or never existed: a factory or start
    /// error): ask the handler, unless the supervisor is stopping the node
    /// anyway.
    fn on_failure(&mut self, node: usize, error: FatalError) {
        let attempt = self.nodes[node].attempt;
        let failure = Failure {
            error: error.clone(),
            attempt,
        };
        let verdict = (self.nodes[node].spec.handler)(&failure);
        let acted = matches!(self.mode, Mode::Running)
            && !matches!(self.nodes[node].stop, Some(StopRequest::ForGood(_)));
        self.emit(
            node,
            EventKind::Verdict {
                attempt,
                verdict,
                acted,
            },
        );
        if !acted {
            self.nodes[node].stop = None;
            self.set_state(node, State::Stopped);
            self.emit(node, EventKind::Stopped { attempt });
            return;
        }
        // A restart of this node ends any plan to restart it for a
        // dependency's sake; other verdicts override it.
        self.nodes[node].stop = None;
        self.apply(node, verdict, error);
    }

    fn apply(&mut self, node: usize, verdict: Verdict, error: FatalError) {
        let name = self.nodes[node].spec.name.clone();
        let reason = StopReason::Verdict {
            node: name.clone(),
            verdict,
        };
        match verdict {
            Verdict::Restart => {
                self.set_state(node, State::Backoff);
                self.restart(node, error);
            }
            Verdict::Stop => {
                self.stop_for_good(node);
                self.request_for_good(self.graph.dependents_of(node).into_iter().skip(1), &reason);
            }
            Verdict::StopParents => {
                self.stop_for_good(node);
                let mut covered = BTreeSet::new();
                for ancestor in self.graph.dependencies_of(node) {
                    covered.extend(self.graph.dependents_of(ancestor));
                }
                covered.remove(&node);
                self.request_for_good(covered.into_iter(), &reason);
            }
            Verdict::Shutdown => {
                self.report(&name, &error);
                self.stop_for_good(node);
                self.stop_everything(SupervisorEnd::Shutdown { node: name, error }, reason);
            }
            Verdict::SpinHalt => {
                self.report(&name, &error);
                self.stop_for_good(node);
                self.status.enter_spin_halt(name.clone());
                self.mode = Mode::SpinHalt { node: name, error };
                self.ready_never_again();
                self.request_for_good(0..self.nodes.len(), &reason);
                self.start_budget();
            }
        }
    }

    /// Schedules a restart under the node's policy, or escalates.
    fn restart(&mut self, node: usize, error: FatalError) {
        let now = self.nodes[node].budget.now(&self.runtime);
        let started_at = self.nodes[node].started_at;
        let attempt = self.nodes[node].attempt;
        match self.nodes[node].budget.restart(started_at, now) {
            Some(delay) => {
                self.nodes[node].restarts += 1;
                let restarts = self.nodes[node].restarts;
                self.status
                    .update(node, |status| status.restarts = restarts);
                self.emit(
                    node,
                    EventKind::Restarting {
                        attempt: attempt + 1,
                        delay,
                    },
                );
                if self.nodes[node].spec.restart_dependents {
                    let reason = StopReason::Restart {
                        node: self.nodes[node].spec.name.clone(),
                    };
                    for dependent in self.graph.dependents_of(node).into_iter().skip(1) {
                        if self.nodes[dependent].stop.is_none()
                            && !self.nodes[dependent].state.is_final()
                        {
                            self.nodes[dependent].stop =
                                Some(StopRequest::ForRestart(reason.clone()));
                            self.dirty.insert(dependent);
                        }
                    }
                    if !self.nodes[node].hold_for_dependents {
                        self.nodes[node].hold_for_dependents = true;
                        self.holding += 1;
                    }
                }
                if delay.is_zero() {
                    // Through the input queue, so that inputs already
                    // waiting (a parent stop) come first.
                    self.push(core::future::ready(Input::BackoffOver { node, attempt }));
                } else {
                    let sleep = self.runtime.sleep(delay);
                    self.push(async move {
                        sleep.await;
                        Input::BackoffOver { node, attempt }
                    });
                }
            }
            None => {
                let escalation = self.nodes[node].spec.on_exhausted;
                self.emit(
                    node,
                    EventKind::RestartsExhausted {
                        attempt,
                        escalation,
                    },
                );
                self.apply(node, escalation, error);
            }
        }
    }

    /// The node itself is down already: it stays stopped.
    fn stop_for_good(&mut self, node: usize) {
        let attempt = self.nodes[node].attempt;
        self.set_state(node, State::Stopped);
        self.emit(node, EventKind::Stopped { attempt });
        self.mark_neighbours(node);
    }

    fn stop_everything(&mut self, end: SupervisorEnd, reason: StopReason) {
        self.mode = Mode::Stopping(end);
        self.ready_never_again();
        self.request_for_good(0..self.nodes.len(), &reason);
        self.start_budget();
    }

    /// The supervisor is going down: its shutdown signal is set, and ready
    /// is never set after this.
    fn ready_never_again(&mut self) {
        self.shutdown.set();
    }

    fn start_budget(&mut self) {
        if let Some(budget) = self.shutdown_budget.take() {
            let sleep = self.runtime.sleep(budget);
            self.push(async move {
                sleep.await;
                Input::BudgetSpent
            });
        }
    }

    fn request_for_good(&mut self, nodes: impl Iterator<Item = usize>, reason: &StopReason) {
        for node in nodes {
            if self.nodes[node].state.is_final() {
                continue;
            }
            if !matches!(self.nodes[node].stop, Some(StopRequest::ForGood(_))) {
                self.nodes[node].stop = Some(StopRequest::ForGood(reason.clone()));
            }
            self.dirty.insert(node);
        }
    }

    /// Carries out stop requests and starts what can start, for every dirty
    /// node, in declaration order, until nothing changes.
    fn settle(&mut self) {
        while let Some(node) = self.dirty.pop_first() {
            if self.nodes[node].stop.is_some() {
                self.settle_stop_request(node);
            } else if matches!(self.mode, Mode::Running)
                && matches!(self.nodes[node].state, State::Waiting)
                && self.may_start(node)
            {
                self.start(node);
            }
        }
    }

    fn settle_stop_request(&mut self, node: usize) {
        match &self.nodes[node].state {
            State::Waiting | State::Backoff => {
                let attempt = self.nodes[node].attempt;
                match self.nodes[node].stop.take() {
                    Some(StopRequest::ForRestart(_)) if matches!(self.mode, Mode::Running) => {}
                    _ => {
                        self.set_state(node, State::Stopped);
                        self.emit(node, EventKind::Stopped { attempt });
                        self.mark_neighbours(node);
                    }
                }
            }
            State::Starting(_) | State::Ready(_) => {
                if self.dependents_down(node) {
                    self.begin_stop(node);
                }
            }
            State::Completed | State::Stopped => self.nodes[node].stop = None,
            State::Stopping { .. } => {}
        }
    }

    /// Whether nothing that depends on `node`, directly or through nodes
    /// that are down already (a dependent that failed first), is still up:
    /// only then may `node` be told to stop.
    fn dependents_down(&self, node: usize) -> bool {
        let direct = &self.graph.dependents[node];
        if direct
            .iter()
            .any(|&dependent| is_up(self.nodes[dependent].public))
        {
            return false;
        }
        let mut seen = BTreeSet::new();
        let mut below = direct.clone();
        while let Some(dependent) = below.pop() {
            if !seen.insert(dependent) {
                continue;
            }
            if is_up(self.nodes[dependent].public) {
                return false;
            }
            below.extend(self.graph.dependents[dependent].iter().copied());
        }
        true
    }

    fn begin_stop(&mut self, node: usize) {
        let Some(request) = self.nodes[node].stop.clone() else {
            return;
        };
        let Some(instance) = self.take_live_instance(node) else {
            return;
        };
        let attempt = self.nodes[node].attempt;
        instance.source.stop();
        self.watch_stop(node, &instance);
        self.set_state(
            node,
            State::Stopping {
                instance,
                after: AfterStop::Settle,
                aborted: false,
            },
        );
        self.emit(
            node,
            EventKind::Stopping {
                attempt,
                cause: request.reason().clone(),
            },
        );
    }

    fn may_start(&self, node: usize) -> bool {
        let dependencies_ready = self.graph.dependencies[node]
            .iter()
            .all(|&on| self.nodes[on].state.satisfies_dependents());
        if !dependencies_ready {
            return false;
        }
        if self.nodes[node].hold_for_dependents {
            return self
                .graph
                .dependents_of(node)
                .into_iter()
                .skip(1)
                .all(|dependent| !self.nodes[dependent].state.is_up());
        }
        true
    }

    fn start(&mut self, node: usize) {
        if core::mem::take(&mut self.nodes[node].hold_for_dependents) {
            self.holding -= 1;
        }
        let run = &mut self.nodes[node];
        run.attempt += 1;
        let attempt = run.attempt;
        run.started_at = run.budget.now(&self.runtime);
        self.status
            .update(node, |status| status.generation = attempt);
        self.emit(node, EventKind::Starting { attempt });
        // The factory and the start run in the node's span, which what
        // they start (a manager, a nested supervisor) keeps as its own.
        let span = trace::node_span(&self.nodes[node].spec.name, attempt);
        let component = match span.in_scope(|| (self.nodes[node].spec.factory)()) {
            Ok(component) => component,
            Err(error) => return self.fail_before_start(node, error),
        };
        let source = self.root.child();
        let slot = FatalSlot::with_hook(self.hook.clone());
        let scope = Scope::new(self.runtime.clone(), source.token(), slot.clone());
        if let Err(error) = span.in_scope(|| component.start(scope)) {
            source.stop();
            return self.fail_before_start(node, FatalError::new(error));
        }
        let instance = Instance {
            component,
            source,
            slot,
        };
        self.watch_start(node, &instance);
        self.set_state(node, State::Starting(instance));
    }

    /// A factory or start error: a failure of the node, with no instance to
    /// stop.
    fn fail_before_start(&mut self, node: usize, error: FatalError) {
        self.record_failure(node, &error);
        self.set_state(node, State::Waiting);
        self.on_failure(node, error);
        self.mark_neighbours(node);
    }

    fn on_stop_timeout(&mut self, node: usize, attempt: u32) {
        if !self.is_current(node, attempt) {
            return;
        }
        let timeout = self.nodes[node].spec.stop_timeout.unwrap_or_default();
        let name = self.nodes[node].spec.name.clone();
        let State::Stopping {
            instance, aborted, ..
        } = &mut self.nodes[node].state
        else {
            return;
        };
        if *aborted {
            // Aborted and still not done: a task that never yields. Give
            // it up rather than hang the supervisor.
            self.on_done(node, attempt);
            return;
        }
        *aborted = true;
        instance.component.abort();
        let done = instance.component.done();
        if !self.overran.contains(&name) {
            self.overran.push(name);
        }
        self.emit(node, EventKind::StopTimedOut { attempt, timeout });
        self.watch_done(node, attempt, done, Some(timeout));
    }

    fn on_budget_spent(&mut self) {
        self.budget_spent = true;
        for node in 0..self.nodes.len() {
            if !self.nodes[node].state.is_up() {
                continue;
            }
            let name = self.nodes[node].spec.name.clone();
            if let State::Starting(instance)
            | State::Ready(instance)
            | State::Stopping { instance, .. } = &self.nodes[node].state
            {
                instance.source.stop();
                instance.component.abort();
            }
            if !self.overran.contains(&name) {
                self.overran.push(name);
            }
            let attempt = self.nodes[node].attempt;
            self.nodes[node].stop = None;
            self.set_state(node, State::Stopped);
            self.emit(node, EventKind::Stopped { attempt });
        }
    }

    // Watchers: each ends when its instance is done, at the latest.

    fn watch_start(&self, node: usize, instance: &Instance) {
        let attempt = self.nodes[node].attempt;
        let slot = instance.slot.clone();
        let ready = instance.component.ready();
        let done = instance.component.done();
        let timeout = self.nodes[node]
            .spec
            .start_timeout
            .map(|timeout| self.runtime.sleep(timeout));
        self.push(async move {
            let mut ended = pin!(wait_error_or_done(&slot, &done));
            let mut ready = pin!(ready.wait());
            let mut timeout = timeout;
            poll_fn(|cx| {
                if let Poll::Ready(error) = ended.as_mut().poll(cx) {
                    return Poll::Ready(Input::Ended {
                        node,
                        attempt,
                        error,
                    });
                }
                if ready.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Input::Ready { node, attempt });
                }
                if let Some(timer) = timeout.as_mut() {
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Input::StartTimedOut { node, attempt });
                    }
                }
                Poll::Pending
            })
            .await
        });
    }

    fn watch_run(&self, node: usize, instance: &Instance) {
        let attempt = self.nodes[node].attempt;
        let done = instance.component.done();
        let slot = instance.slot.clone();
        self.push(async move {
            let error = wait_error_or_done(&slot, &done).await;
            Input::Ended {
                node,
                attempt,
                error,
            }
        });
    }

    fn watch_stop(&self, node: usize, instance: &Instance) {
        let attempt = self.nodes[node].attempt;
        let timeout = self.nodes[node].spec.stop_timeout;
        self.watch_done(node, attempt, instance.component.done(), timeout);
    }

    fn watch_done(&self, node: usize, attempt: u32, done: Signal, timeout: Option<Duration>) {
        if done.is_set() {
            // The common case: no timer needed.
            self.push(core::future::ready(Input::Done { node, attempt }));
            return;
        }
        let timer = timeout.map(|timeout| self.runtime.sleep(timeout));
        self.push(async move {
            match timer {
                None => {
                    done.wait().await;
                    Input::Done { node, attempt }
                }
                Some(timer) => {
                    let mut done = pin!(done.wait());
                    let mut timer = timer;
                    poll_fn(|cx| {
                        if done.as_mut().poll(cx).is_ready() {
                            Poll::Ready(Input::Done { node, attempt })
                        } else if timer.as_mut().poll(cx).is_ready() {
                            Poll::Ready(Input::StopTimedOut { node, attempt })
                        } else {
                            Poll::Pending
                        }
                    })
                    .await
                }
            }
        });
    }

    fn push(&self, input: impl Future<Output = Input> + Send + 'static) {
        self.inputs.push(Box::pin(input));
    }

    fn set_state(&mut self, node: usize, state: State) {
        let after = state.public();
        let before = core::mem::replace(&mut self.nodes[node].public, after);
        self.nodes[node].state = state;
        self.up = self.up + usize::from(is_up(after)) - usize::from(is_up(before));
        self.satisfied =
            self.satisfied + usize::from(is_satisfied(after)) - usize::from(is_satisfied(before));
        self.finals = self.finals + usize::from(is_final(after)) - usize::from(is_final(before));
        self.status.update(node, |status| status.state = after);
    }

    /// Ready once every node is ready or completed, while running only.
    fn check_ready(&self) {
        if matches!(self.mode, Mode::Running) && self.satisfied == self.nodes.len() {
            self.ready.set();
        }
    }

    /// Takes the instance of a starting or ready node, leaving a
    /// placeholder state that the caller replaces.
    fn take_live_instance(&mut self, node: usize) -> Option<Instance> {
        if !matches!(self.nodes[node].state, State::Starting(_) | State::Ready(_)) {
            return None;
        }
        match core::mem::replace(&mut self.nodes[node].state, State::Waiting) {
            State::Starting(instance) | State::Ready(instance) => Some(instance),
            _ => None,
        }
    }

    fn mark_dependents(&mut self, node: usize) {
        self.dirty
            .extend(self.graph.dependents[node].iter().copied());
    }

    /// A node went down or up: its dependencies may now be stoppable, its
    /// dependents startable, and itself startable again.
    fn mark_neighbours(&mut self, node: usize) {
        self.dirty.insert(node);
        self.dirty
            .extend(self.graph.dependents[node].iter().copied());
        // Its dependencies may now be stoppable, and so may theirs if they
        // are down already (a failed node between them): up to the first up
        // node on each path, which marks its own when it goes down.
        let mut seen = BTreeSet::new();
        let mut above = self.graph.dependencies[node].clone();
        while let Some(on) = above.pop() {
            if !seen.insert(on) {
                continue;
            }
            self.dirty.insert(on);
            if !is_up(self.nodes[on].public) {
                above.extend(self.graph.dependencies[on].iter().copied());
            }
        }
        // A node restarting with its dependents waits for all of them.
        if self.holding == 0 {
            return;
        }
        for ancestor in self.graph.dependencies_of(node).into_iter().skip(1) {
            if self.nodes[ancestor].hold_for_dependents {
                self.dirty.insert(ancestor);
            }
        }
    }

    /// Hands a deciding error to the supervisor's own supervisor, before
    /// the nodes are stopped: error, then shutdown signal, then done.
    fn report(&self, node: &Arc<str>, error: &FatalError) {
        if let Some(slot) = &self.report {
            slot.report(FatalError::new(NodeFailed {
                node: node.clone(),
                error: error.clone(),
            }));
        }
    }

    fn emit(&self, node: usize, kind: EventKind) {
        if self.events.is_none() && !cfg!(feature = "tracing") {
            return;
        }
        let event = SupervisorEvent {
            node: self.nodes[node].spec.name.clone(),
            kind,
        };
        trace::supervisor_event(&event);
        if let Some(hook) = &self.events {
            hook(&event);
        }
    }
}

impl Drop for Engine {
    /// A run dropped before its end (its task aborted) takes its nodes
    /// down with it: every scope is stopped and every live instance aborted.
    fn drop(&mut self) {
        self.root.stop();
        for node in &self.nodes {
            if let State::Starting(instance)
            | State::Ready(instance)
            | State::Stopping { instance, .. } = &node.state
            {
                instance.component.abort();
            }
        }
    }
}

/// How many inputs the run handles between two yields to its executor.
const YIELD_EVERY: u32 = 64;

/// Pending once, waking itself: lets the executor run other tasks.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
