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
//!                                   (or Stopping, its instance gone, until its dependents are down)
//!  Starting/Ready ──done, no error──▶ Completed (or Backoff if permanent)
//!  Starting/Ready/Stopping ──shutdown budget spent──▶ given up: as if done
//!      (Stopped once its dependents are down, which are given up with it)
//! ```
//!
//! Instances are watched without a future each: a node's waker queues the
//! node, and the run polls the current instance's signals (see
//! [`watch`](super::watch)). Start and stop timeouts are deadlines kept in
//! the instance, served by one timer for the earliest of them. Other inputs
//! (a backoff's timer, the parent's stop) carry the node and the attempt
//! they are about; one about an instance that is no longer current is
//! stale and ignored.
//!
//! After every input the nodes it may affect are marked dirty and settled
//! in declaration order: a stop request is carried out once the node's
//! dependents are down, and a waiting node starts once its dependencies are
//! ready. Settling only dirty nodes keeps an input's cost proportional to
//! the node's neighbourhood, not to the size of the graph; whether a node's
//! dependents are down is a count kept as nodes go up and down, so it is
//! never a walk of the graph below.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::dirty::Dirty;
use super::graph::{Built, Graph, Node};
use super::observe::{EventHook, EventKind, NodeState, StatusBoard, StopReason, SupervisorEvent};
use super::watch::{InstanceWatch, Seen, Wakeups};
use super::{NodeError, NodeFailed, Parts, StartTimedOut, SupervisorEnd, SupervisorOutcome};
use crate::fatal::{FatalError, FatalHook, FatalSlot};
use crate::latch::Latch;
use crate::policy::RestartBudget;
use crate::restart::{Failure, Verdict};
use crate::runtime::{BoxFuture, Instant, SharedRuntime};
use crate::scope::Scope;
use crate::stop::{StopCause, StopSource, StopToken};
use crate::trace;

/// Something the supervisor reacts to, besides its instances' signals.
enum Input {
    /// The timer armed for this deadline ran out.
    Deadline {
        at: Instant,
    },
    BackoffOver {
        node: usize,
        attempt: u32,
    },
    ParentStopped,
    Terminate,
    /// The shutdown budget, this long, ran out.
    BudgetSpent(Duration),
}

/// What the run reacts to next.
enum Next {
    /// A node was woken: its instance may have changed.
    Node(usize),
    Input(Input),
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

/// Where a nested supervisor's failures and errors while stopping go
/// when its outcome is folded into this run's (`fold_in_nested`).
enum NestedErrors {
    /// Into this run's outcome: this run stopped the nested supervisor,
    /// or it completed.
    Recorded,
    /// To the hook: this run is handling the nested supervisor's own
    /// failure (a Shutdown or spin-halt inside, whose error reached this
    /// run as the node's), so they are later errors of a failed instance,
    /// as a component's are.
    ToHook,
}

struct Instance {
    component: Built,
    source: StopSource,
    slot: FatalSlot,
    watch: InstanceWatch,
    /// When starting, or stopping, takes too long.
    deadline: Option<Instant>,
}

impl Instance {
    /// Gives the instance up: its scope stopped and its tasks aborted, with
    /// no wait for done (the shutdown budget is spent, or the run is gone).
    fn give_up(&self) {
        self.source.stop();
        self.component.abort();
    }
}

/// What happens once a stopping instance is done.
enum AfterStop {
    /// It failed with this error: ask the handler.
    Handle(FatalError),
    /// The supervisor stopped it: carry out the node's stop request.
    Settle,
}

/// A node's state; the node has an instance while it is starting, ready
/// or stopping (see `NodeRun::instance`), but for a failed node stopped
/// for good that waits, stopping, for its dependents (`stop_for_good`).
enum State {
    Waiting,
    Starting,
    Ready,
    Stopping { after: AfterStop, aborted: bool },
    Backoff,
    Completed,
    Stopped,
}

impl State {
    fn public(&self) -> NodeState {
        match self {
            State::Waiting => NodeState::Waiting,
            State::Starting => NodeState::Starting,
            State::Ready => NodeState::Ready,
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

/// A node's run state: what the run touches on every transition, kept
/// apart from the node's spec and restart budget (see `Engine::specs`).
struct NodeRun {
    /// Changed only through `Engine::set_state`, which keeps the counts.
    state: State,
    /// The current instance: there while `state` is starting, ready or
    /// stopping (but for a failed node waiting for its dependents, see
    /// `stop_for_good`), and dropped by the `set_state` that leaves those. It
    /// stays in place through its transitions rather than moving with
    /// the state.
    instance: Option<Instance>,
    attempt: u32,
    restarts: u32,
    started_at: Instant,
    stop: Option<StopRequest>,
    /// Restarting with its dependents: start only once they are down.
    hold_for_dependents: bool,
    /// How many of its direct dependents are up or have something up
    /// below them: it may be told to stop only at zero.
    blocked_by: u32,
}

impl NodeRun {
    /// Whether something stops its dependencies from being stopped: it is
    /// up, or something below it is.
    fn blocks(&self) -> bool {
        self.state.public().is_up() || self.blocked_by > 0
    }
}

pub(super) struct Engine {
    runtime: SharedRuntime,
    graph: Graph,
    /// Each node's spec, by node, apart from `nodes`: a transition reads a
    /// timeout at most, and a stop cascade touches fewer cache lines per
    /// node when the factory, the handler and the policy are elsewhere.
    specs: Vec<Node>,
    /// The restart budgets of the nodes that restarted so far, made at
    /// their first restart: most nodes of a large graph never restart,
    /// and a table of budgets for all would be made, and freed, with every
    /// run.
    budgets: BTreeMap<usize, RestartBudget>,
    /// Where each budget's jitter starts from (offset by the node).
    seed: u64,
    nodes: Vec<NodeRun>,
    mode: Mode,
    inputs: FuturesUnordered<BoxFuture<Input>>,
    /// Inputs due at once (a restart without backoff), after those waiting.
    immediate: VecDeque<Input>,
    wakeups: Wakeups,
    /// The deadline the earliest armed timer is for.
    timer_at: Option<Instant>,
    /// The clock, read once since the run last woke (see `now`).
    clock: Option<Instant>,
    dirty: Dirty,
    /// Scratch space for walks up the graph, kept to spare allocations.
    walk: Vec<usize>,
    /// Instances that are done, until the run has settled what their end
    /// lets go on.
    retired: Vec<Instance>,
    hook: FatalHook,
    events: Option<EventHook>,
    status: StatusBoard,
    ready: Latch,
    shutdown: Latch,
    shutdown_budget: Option<Duration>,
    terminated: bool,
    budget_spent: bool,
    failures: Vec<NodeError>,
    shutdown_errors: Vec<NodeError>,
    overran: Vec<Arc<str>>,
    /// How many nodes have an instance (starting, ready or stopping).
    up: usize,
    /// How many nodes dependents may rely on (ready or completed).
    satisfied: usize,
    /// How many nodes are done for good (completed or stopped).
    finals: usize,
    /// Where a Shutdown or SpinHalt error goes when the supervisor runs as
    /// a component.
    report: Option<FatalSlot>,
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
        let specs = parts.nodes;
        let nodes = (0..specs.len())
            .map(|_| NodeRun {
                state: State::Waiting,
                instance: None,
                attempt: 0,
                restarts: 0,
                started_at: Instant::default(),
                stop: None,
                hold_for_dependents: false,
                blocked_by: 0,
            })
            .collect::<Vec<_>>();
        let terminate = parts.terminate.map(|requests| requests.listen());
        let engine = Engine {
            dirty: Dirty::all(nodes.len()),
            wakeups: Wakeups::new(nodes.len()),
            immediate: VecDeque::new(),
            timer_at: None,
            clock: None,
            walk: Vec::new(),
            retired: Vec::new(),
            runtime,
            graph: parts.graph,
            specs,
            budgets: BTreeMap::new(),
            seed,
            nodes,
            mode: Mode::Running,
            inputs: FuturesUnordered::new(),
            hook: parts.hook,
            events: parts.events,
            status,
            ready,
            shutdown,
            shutdown_budget: parts.shutdown_budget,
            terminated: false,
            budget_spent: false,
            failures: Vec::new(),
            shutdown_errors: Vec::new(),
            overran: Vec::new(),
            up: 0,
            satisfied: 0,
            finals: 0,
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
        // Inputs handled since the run last waited.
        let mut in_a_row: u32 = 0;
        loop {
            self.settle();
            // Dropped once what their end lets go on has been told to:
            // freeing a component and its tasks is work nobody waits for,
            // and a stop cascade's next nodes do wait for the settle.
            self.retired.clear();
            if let Some(end) = self.finished() {
                self.shutdown.set();
                return SupervisorOutcome {
                    end,
                    failures: core::mem::take(&mut self.failures),
                    shutdown_errors: core::mem::take(&mut self.shutdown_errors),
                    overran: core::mem::take(&mut self.overran),
                    budget_spent: self.budget_spent,
                };
            }
            // Inputs that are ready at once (a node whose factory fails
            // at once, restarted without a backoff) would otherwise keep
            // this task from ever returning to its executor: after so many
            // in a row, yield, so that timers and other tasks run. Only in
            // a row: a run that waited has been back to its executor, and
            // each yield wakes a parked thread of a multi-thread executor
            // to look for work.
            if in_a_row >= YIELD_EVERY {
                in_a_row = 0;
                self.clock = None;
                YieldOnce(false).await;
            }
            let reacted = poll_fn(|cx| {
                let reacted = self.react(cx, YIELD_EVERY - in_a_row);
                if reacted.is_pending() {
                    in_a_row = 0;
                }
                reacted
            })
            .await;
            in_a_row += reacted;
        }
    }

    /// Reacts to everything that has happened, `most` inputs at most
    /// (at least one), before the run settles: how many, or pending (the
    /// run's waker registered) if nothing has.
    ///
    /// All at once rather than one input and a settle each: a layer's
    /// nodes are then started, or told to stop, in one burst. On a
    /// multi-thread executor a burst of spawns or wakes rouses a parked
    /// thread once, where one node at a time roused it again and again
    /// (`benches/README.md`, the supervisor's figures).
    fn react(&mut self, cx: &mut Context<'_>, most: u32) -> Poll<u32> {
        // At 0 it would be pending without having registered the waker.
        debug_assert!(most > 0, "the run reacts to one input at least");
        let mut reacted = 0;
        while reacted < most {
            match self.poll_next(cx) {
                Poll::Ready(Next::Node(node)) => self.look_at(node),
                Poll::Ready(Next::Input(input)) => self.handle(input),
                Poll::Pending => break,
            }
            reacted += 1;
        }
        if reacted == 0 {
            Poll::Pending
        } else {
            Poll::Ready(reacted)
        }
    }

    /// The next thing to react to: a node whose instance may have changed,
    /// an input that is ready, or one due at once, in that order. When
    /// nothing can come any more (only a spin-halt without a terminate
    /// source gets there), this waits for good, as documented.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Poll::Ready(node) = self.wakeups.poll_next(cx) {
            return Poll::Ready(Next::Node(node));
        }
        if let Poll::Ready(Some(input)) = self.inputs.poll_next_unpin(cx) {
            return Poll::Ready(Next::Input(input));
        }
        match self.immediate.pop_front() {
            Some(input) => Poll::Ready(Next::Input(input)),
            None => {
                // Asleep until woken: a later moment.
                self.clock = None;
                Poll::Pending
            }
        }
    }

    /// The time, read once per wake of the run rather than for every node
    /// a wake touches: a stop cascade starts a deadline for every node it
    /// reaches, and a clock read costs as much as the rest of a node's
    /// step. Everything the run does in one wake is one moment to it, a
    /// few inputs' handling at most (it yields after `YIELD_EVERY` in a row).
    fn now(&mut self) -> Instant {
        let runtime = &self.runtime;
        *self.clock.get_or_insert_with(|| runtime.now())
    }

    /// The time for the node's restart budget; a budget that needs none
    /// gets a constant, and the clock is not read.
    fn budget_now(&mut self, node: usize) -> Instant {
        if self.specs[node].policy.reads_clock() {
            self.now()
        } else {
            Instant::default()
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
            Input::Deadline { at } => self.on_deadline(at),
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
            Input::BudgetSpent(budget) => self.on_budget_spent(budget),
        }
    }

    fn is_current(&self, node: usize, attempt: u32) -> bool {
        self.nodes[node].attempt == attempt
    }

    /// The node was woken: looks at its current instance until nothing
    /// more is new, reacting to what it finds.
    fn look_at(&mut self, node: usize) {
        loop {
            let run = &mut self.nodes[node];
            let starting = matches!(run.state, State::Starting);
            // None: a wake about an instance that is gone.
            let Some(instance) = &mut run.instance else {
                return;
            };
            let polled = self.wakeups.with_waker(node, |waker| {
                let mut cx = Context::from_waker(waker);
                instance.watch.poll(&instance.slot, starting, &mut cx)
            });
            let Poll::Ready(seen) = polled else {
                return;
            };
            match seen {
                // After an error taken with done, the next look finds done.
                Seen::Error(error) | Seen::Done(Some(error)) => self.on_ended(node, Some(error)),
                Seen::Done(None) => self.on_ended(node, None),
                Seen::Ready => self.on_ready(node),
            }
        }
    }

    fn on_ready(&mut self, node: usize) {
        let run = &mut self.nodes[node];
        let (State::Starting, Some(instance)) = (&run.state, &mut run.instance) else {
            return;
        };
        // Started in time: no start deadline any more.
        instance.deadline = None;
        let attempt = run.attempt;
        self.set_state(node, State::Ready);
        self.emit(node, EventKind::Ready { attempt });
        self.mark_dependents(node);
        self.check_ready();
    }

    /// The instance reported an error (`Some`) or is done (`None`).
    fn on_ended(&mut self, node: usize, error: Option<FatalError>) {
        match (&self.nodes[node].state, error) {
            (State::Starting | State::Ready, Some(error)) => self.stop_failed(node, error),
            (State::Starting | State::Ready, None) => self.on_completed(node),
            (
                State::Stopping {
                    after: AfterStop::Settle,
                    ..
                },
                Some(error),
            ) => self.record_stop_error(node, error),
            (State::Stopping { .. }, None) => self.on_done(node),
            // An error once the instance failed already: its first error
            // is being handled; later ones went to the hook.
            _ => {}
        }
    }

    /// Shows a failure in the status and the events.
    fn record_failure(&self, node: usize, error: &FatalError) {
        let attempt = self.nodes[node].attempt;
        self.status.set_last_error(node, error.clone());
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
        let cause = StopCause::Fatal(error.clone());
        let live = self.enter_stopping(node, AfterStop::Handle(error.clone()));
        // Recorded once the state shows it stopping; the instance is told
        // after, so what it reports while stopping comes later.
        self.record_failure(node, &error);
        if !live {
            return;
        }
        if let Some(instance) = &self.nodes[node].instance {
            instance.source.stop_with(cause);
        }
    }

    /// A live (starting or ready) node begins stopping, with its stop
    /// deadline; the caller tells its instance. False, and nothing done, if
    /// the node is not live.
    fn enter_stopping(&mut self, node: usize, after: AfterStop) -> bool {
        if !matches!(self.nodes[node].state, State::Starting | State::Ready) {
            return false;
        }
        let deadline = self.deadline_after(self.specs[node].stop_timeout);
        if let Some(instance) = &mut self.nodes[node].instance {
            instance.deadline = deadline;
        }
        let after = State::Stopping {
            after,
            aborted: false,
        };
        self.set_state(node, after);
        true
    }

    /// The instance ended cleanly on its own.
    fn on_completed(&mut self, node: usize) {
        self.fold_in_nested(node, NestedErrors::Recorded);
        let attempt = self.nodes[node].attempt;
        if let Some(instance) = &self.nodes[node].instance {
            instance.source.stop();
        }
        let spec = &self.specs[node];
        // A permanent node comes back unless it is to stay stopped: one
        // waiting to be stopped for a dependency's restart is restarted,
        // and starts once that dependency is ready again.
        let for_good = matches!(self.nodes[node].stop, Some(StopRequest::ForGood(_)));
        if spec.permanent && matches!(self.mode, Mode::Running) && !for_good {
            let error = FatalError::msg(format!(
                "node {} exited and is permanent, but its restart budget is spent",
                spec.name
            ));
            self.set_state(node, State::Backoff);
            self.emit(node, EventKind::Completed { attempt });
            self.restart(node, error);
            // As after a failure: the node may start again at once, and
            // what waited for it to be down may go on.
            self.mark_neighbours(node);
            return;
        }
        let required = spec.required;
        self.set_state(node, State::Completed);
        self.emit(node, EventKind::Completed { attempt });
        if required {
            let reason = StopReason::RequiredNodeCompleted {
                node: self.specs[node].name.clone(),
            };
            self.request_for_good(self.graph.dependents_of(node).into_iter().skip(1), &reason);
        }
        self.mark_neighbours(node);
        self.check_ready();
    }

    /// The stopping instance is done. It goes with the node's next state,
    /// which every path below sets.
    fn on_done(&mut self, node: usize) {
        let run = &mut self.nodes[node];
        let State::Stopping { after, .. } = &mut run.state else {
            return;
        };
        match core::mem::replace(after, AfterStop::Settle) {
            AfterStop::Handle(error) => {
                self.fold_in_nested(node, NestedErrors::ToHook);
                self.on_failure(node, error);
            }
            AfterStop::Settle => {
                // An error reported just before done is taken with done;
                // should one still be in the slot, record it, not lose it.
                // (Taken without the lock when nothing was reported; the
                // instance's retirement below closes the slot.)
                if let Some(error) = run.instance.as_ref().and_then(|it| it.slot.take()) {
                    self.record_stop_error(node, error);
                }
                self.fold_in_nested(node, NestedErrors::Recorded);
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
        let name = self.specs[node].name.clone();
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
            // Done while something depending on it is still up: a node the
            // shutdown budget gave up with the rest. Stopped for good once
            // they are down, as a failed node is (`stop_for_good`).
            Some(request) if self.nodes[node].blocked_by > 0 => {
                self.stop_for_good(node, &request.reason().clone());
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
        let verdict = (self.specs[node].handler)(&failure);
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
            // Stopped for good by the stop that covers it: still a failure,
            // and the outcome says so. Its dependents, covered too, go
            // first (`stop_for_good`).
            self.record_failure_for_good(node, error);
            match self.nodes[node].stop.take() {
                Some(request) => self.stop_for_good(node, &request.reason().clone()),
                None => {
                    self.set_state(node, State::Stopped);
                    self.emit(node, EventKind::Stopped { attempt });
                }
            }
            return;
        }
        // A restart of this node ends any plan to restart it for a
        // dependency's sake; other verdicts override it.
        self.nodes[node].stop = None;
        self.apply(node, verdict, error);
    }

    fn apply(&mut self, node: usize, verdict: Verdict, error: FatalError) {
        let name = self.specs[node].name.clone();
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
                self.record_failure_for_good(node, error);
                self.stop_for_good(node, &reason);
                self.request_for_good(self.graph.dependents_of(node).into_iter().skip(1), &reason);
            }
            Verdict::StopParents => {
                self.record_failure_for_good(node, error);
                self.stop_for_good(node, &reason);
                let mut covered = Vec::new();
                for ancestor in self.graph.dependencies_of(node) {
                    covered.extend(self.graph.dependents_of(ancestor));
                }
                covered.sort_unstable();
                covered.dedup();
                covered.retain(|&other| other != node);
                self.request_for_good(covered.into_iter(), &reason);
            }
            Verdict::Shutdown => {
                self.report(&name, &error);
                self.stop_for_good(node, &reason);
                self.stop_everything(SupervisorEnd::Shutdown { node: name, error }, reason);
            }
            Verdict::SpinHalt => {
                self.report(&name, &error);
                self.stop_for_good(node, &reason);
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
        let now = self.budget_now(node);
        let started_at = self.nodes[node].started_at;
        let attempt = self.nodes[node].attempt;
        let spec = &self.specs[node];
        let budget = self.budgets.entry(node).or_insert_with(|| {
            RestartBudget::new(spec.policy.clone(), self.seed.wrapping_add(node as u64))
        });
        match budget.restart(started_at, now) {
            Some(delay) => {
                self.nodes[node].restarts += 1;
                let restarts = self.nodes[node].restarts;
                self.status.set_restarts(node, restarts);
                self.emit(
                    node,
                    EventKind::Restarting {
                        attempt: attempt + 1,
                        delay,
                    },
                );
                if self.specs[node].restart_dependents {
                    let reason = StopReason::Restart {
                        node: self.specs[node].name.clone(),
                    };
                    for dependent in self.graph.dependents_of(node).into_iter().skip(1) {
                        if self.nodes[dependent].stop.is_none()
                            && !self.nodes[dependent].state.public().is_final()
                        {
                            self.nodes[dependent].stop =
                                Some(StopRequest::ForRestart(reason.clone()));
                            self.dirty.insert(dependent);
                        }
                    }
                    self.nodes[node].hold_for_dependents = true;
                }
                if delay.is_zero() {
                    // Queued, so that inputs already waiting (a parent
                    // stop) come first.
                    self.immediate
                        .push_back(Input::BackoffOver { node, attempt });
                } else {
                    let sleep = self.runtime.sleep(delay);
                    self.push(async move {
                        sleep.await;
                        Input::BackoffOver { node, attempt }
                    });
                }
            }
            None => {
                let escalation = self.specs[node].on_exhausted;
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

    /// Records in the outcome a failure that leaves the node stopped for
    /// good: a run whose nodes all end so is not a clean one.
    fn record_failure_for_good(&mut self, node: usize, error: FatalError) {
        let name = self.specs[node].name.clone();
        self.failures.push(NodeError { node: name, error });
    }

    /// The node itself is down already: it stays stopped.
    /// The failed `node` is down for good: stopped once nothing that
    /// depends on it is up, at once if nothing is. Until then (the cascade
    /// its verdict begins stops them) it shows stopping, its instance
    /// gone: dependents before their dependencies, as every stop goes, and
    /// never a node up on one stopped for good.
    fn stop_for_good(&mut self, node: usize, reason: &StopReason) {
        let run = &mut self.nodes[node];
        run.stop = Some(StopRequest::ForGood(reason.clone()));
        // Done already: nothing to wait for but the dependents.
        if let Some(instance) = run.instance.take() {
            self.retire(instance);
        }
        let going = State::Stopping {
            after: AfterStop::Settle,
            aborted: false,
        };
        self.set_state(node, going);
        self.settle_stop_request(node);
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
                Input::BudgetSpent(budget)
            });
        }
    }

    fn request_for_good(&mut self, nodes: impl Iterator<Item = usize>, reason: &StopReason) {
        for node in nodes {
            if self.nodes[node].state.public().is_final() {
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
        let run = &self.nodes[node];
        match run.state {
            State::Completed | State::Stopped => self.nodes[node].stop = None,
            State::Starting | State::Ready => {
                // Nothing below it is up, even through nodes that are down
                // already (a dependent that failed first).
                if run.blocked_by == 0 {
                    self.begin_stop(node);
                }
            }
            // Its instance's done settles it.
            State::Stopping { .. } if run.instance.is_some() => {}
            // Down: waiting, in its backoff, or failed and stopping for
            // good with its instance gone (`stop_for_good`).
            State::Waiting | State::Backoff | State::Stopping { .. } => {
                let for_restart = matches!(run.stop, Some(StopRequest::ForRestart(_)));
                if for_restart && matches!(self.mode, Mode::Running) {
                    // It starts again once its dependencies are ready.
                    self.nodes[node].stop = None;
                } else if run.blocked_by == 0 {
                    // Stopped for good once nothing that depends on it is
                    // up: dependents first, as for a node that is up.
                    self.settle_stopped(node);
                    self.mark_neighbours(node);
                }
            }
        }
    }

    fn begin_stop(&mut self, node: usize) {
        let Some(request) = self.nodes[node].stop.clone() else {
            return;
        };
        if !self.enter_stopping(node, AfterStop::Settle) {
            return;
        }
        let attempt = self.nodes[node].attempt;
        // Told before the instance is, so that what it reports while
        // stopping comes after.
        self.emit(
            node,
            EventKind::Stopping {
                attempt,
                cause: request.reason().clone(),
            },
        );
        if let Some(instance) = &self.nodes[node].instance {
            instance.source.stop();
        }
    }

    fn may_start(&self, node: usize) -> bool {
        let dependencies_ready = self.graph.dependencies[node]
            .iter()
            .all(|&on| self.may_rely_on(on));
        if !dependencies_ready {
            return false;
        }
        // Restarting with its dependents: not before all of them, and all
        // below them, are down.
        !self.nodes[node].hold_for_dependents || self.nodes[node].blocked_by == 0
    }

    /// Whether dependents may start on `node`: it is ready, or it completed
    /// and everything it depends on may be relied on in turn. A completed
    /// node stands for its own dependencies: a one-shot step (a migration)
    /// between a database and a server does not let the server start while
    /// the database is restarting.
    ///
    /// Not while a stop of it is pending (it waits for its dependents to
    /// go down): a dependent started on it now would be in the way of that
    /// stop, and one stopped for its restart would come back before the
    /// restart, so the stop would wait for ever.
    fn may_rely_on(&self, node: usize) -> bool {
        let steady = |at: usize| {
            self.nodes[at].stop.is_none() && self.nodes[at].state.public().satisfies_dependents()
        };
        match self.nodes[node].state {
            State::Ready => return steady(node),
            State::Completed => {}
            _ => return false,
        }
        let completed = |at: usize| matches!(self.nodes[at].state, State::Completed);
        self.graph
            .dependencies_through(node, completed)
            .into_iter()
            .all(steady)
    }

    fn start(&mut self, node: usize) {
        self.nodes[node].hold_for_dependents = false;
        let started_at = self.budget_now(node);
        let run = &mut self.nodes[node];
        run.attempt += 1;
        let attempt = run.attempt;
        run.started_at = started_at;
        self.status.set_generation(node, attempt);
        // Shown starting while the factory and the start run, and before
        // the event: a subscriber reading the status sees what it is told.
        self.status.set_state(node, NodeState::Starting);
        self.emit(node, EventKind::Starting { attempt });
        // The factory and the start run in the node's span, which what
        // they start (a manager, a nested supervisor) keeps as its own.
        let span = trace::node_span(&self.specs[node].name, attempt);
        let component = match span.in_scope(|| (self.specs[node].factory)()) {
            Ok(component) => component,
            Err(error) => return self.fail_before_start(node, error),
        };
        // A root of its own, not a child of the parent token: the parent's
        // stop must reach the nodes in dependency order, not all at once
        // through the stop tree; and not a child of a root of the run's
        // either, which every start and stop would lock to join and leave
        // (the run stops what is left itself when dropped).
        let watcher = self.wakeups.with_waker(node, Waker::clone);
        let (source, slot) = FatalSlot::with_stop_source(self.hook.clone(), watcher);
        let scope = Scope::new(self.runtime.clone(), source.token(), slot.clone());
        if let Err(error) = span.in_scope(|| component.start(scope)) {
            source.stop();
            return self.fail_before_start(node, FatalError::new(error));
        }
        let deadline = self.deadline_after(self.specs[node].start_timeout);
        self.nodes[node].instance = Some(Instance {
            watch: InstanceWatch::new(&*component),
            deadline,
            component,
            source,
            slot,
        });
        self.set_state(node, State::Starting);
        // Polled once to register the node's waker.
        self.wakeups.schedule(node);
    }

    /// A factory or start error: a failure of the node, with no instance to
    /// stop.
    fn fail_before_start(&mut self, node: usize, error: FatalError) {
        self.set_state(node, State::Waiting);
        self.record_failure(node, &error);
        self.on_failure(node, error);
        self.mark_neighbours(node);
    }

    /// A deadline `timeout` from now, with a timer armed for it; none
    /// without a timeout.
    fn deadline_after(&mut self, timeout: Option<Duration>) -> Option<Instant> {
        let timeout = timeout?;
        let deadline = self.now() + timeout;
        // One timer serves every deadline after the one it is armed for:
        // when it runs out, the next is armed.
        if self.timer_at.is_none_or(|armed| deadline < armed) {
            self.arm(deadline, timeout);
        }
        Some(deadline)
    }

    fn arm(&mut self, at: Instant, after: Duration) {
        self.timer_at = Some(at);
        let sleep = self.runtime.sleep(after);
        self.push(async move {
            sleep.await;
            Input::Deadline { at }
        });
    }

    /// A timer ran out: every instance whose deadline has come is late
    /// starting or stopping, and the timer is armed again for the next.
    fn on_deadline(&mut self, at: Instant) {
        if self.timer_at == Some(at) {
            self.timer_at = None;
        }
        // What the timer was armed for has come, whatever the clock says.
        let now = self.now().max(at);
        // Only starting and stopping instances have a deadline.
        for node in 0..self.nodes.len() {
            let deadline = self.nodes[node]
                .instance
                .as_ref()
                .and_then(|it| it.deadline);
            if deadline.is_some_and(|deadline| deadline <= now) {
                self.on_late(node);
            }
        }
        let next = self
            .nodes
            .iter()
            .filter_map(|run| run.instance.as_ref()?.deadline)
            .min();
        if let Some(next) = next {
            if self.timer_at.is_none_or(|armed| next < armed) {
                self.arm(next, next.saturating_duration_since(now));
            }
        }
    }

    /// The node's instance is past its deadline.
    fn on_late(&mut self, node: usize) {
        let attempt = self.nodes[node].attempt;
        match &self.nodes[node].state {
            State::Starting => {
                let timeout = self.specs[node].start_timeout.unwrap_or_default();
                let error = FatalError::new(StartTimedOut {
                    node: self.specs[node].name.clone(),
                    timeout,
                });
                // The timeout is the instance's first error, recorded where
                // its own would be, and taken up from there as those are:
                // what the instance reports while it stops is then a later
                // error, and goes to the hook. (An error of its own that
                // came first wins, and the timeout goes to the hook.)
                if let Some(instance) = &self.nodes[node].instance {
                    instance.slot.report(error);
                }
                self.look_at(node);
            }
            // Aborted and still not done: a task that never yields. Give it
            // up rather than hang the supervisor.
            State::Stopping { aborted: true, .. } => self.on_done(node),
            State::Stopping { .. } => {
                let timeout = self.specs[node].stop_timeout.unwrap_or_default();
                // As long again for the abort to end it.
                let deadline = self.deadline_after(Some(timeout));
                let run = &mut self.nodes[node];
                if let (State::Stopping { aborted, .. }, Some(instance)) =
                    (&mut run.state, &mut run.instance)
                {
                    *aborted = true;
                    instance.deadline = deadline;
                    instance.component.abort();
                }
                self.note_overran(node);
                self.emit(node, EventKind::StopTimedOut { attempt, timeout });
            }
            _ => {}
        }
    }

    /// Names the node in the outcome as one that overran its stop, once.
    fn note_overran(&mut self, node: usize) {
        let name = &self.specs[node].name;
        if !self.overran.contains(name) {
            self.overran.push(name.clone());
        }
    }

    fn on_budget_spent(&mut self, budget: Duration) {
        // Every node down: the stop ended within the budget, and what the
        // run still waits for is a spin-halt's terminate request, which the
        // budget does not bound.
        if self.up == 0 {
            return;
        }
        self.budget_spent = true;
        for node in 0..self.nodes.len() {
            if !self.nodes[node].state.public().is_up() {
                continue;
            }
            // A failed node waiting for its dependents has no instance:
            // nothing of it overran, and it is settled once they are down,
            // which they are about to be.
            let Some(instance) = &self.nodes[node].instance else {
                continue;
            };
            instance.give_up();
            self.note_overran(node);
            // Given up is as good as done, as for an instance its abort did
            // not end (`on_late`): one not yet told to stop was stopped by
            // the supervisor, and `on_done` settles either kind, a failure
            // still waiting for its handler included. Shown stopping when
            // the event says why, as a stop timeout's is.
            if matches!(self.nodes[node].state, State::Starting | State::Ready) {
                let given_up = State::Stopping {
                    after: AfterStop::Settle,
                    aborted: true,
                };
                self.set_state(node, given_up);
            }
            let attempt = self.nodes[node].attempt;
            self.emit(node, EventKind::GivenUp { attempt, budget });
            self.on_done(node);
        }
    }

    fn push(&self, input: impl Future<Output = Input> + Send + 'static) {
        self.inputs.push(Box::pin(input));
    }

    /// Lets go of a done instance, dropped once the run has settled what its
    /// end lets go on (see `retired`). Its slot is closed first: nothing
    /// here reads it any more, so what the instance reports from now on (a
    /// callback it left behind) goes to the hook, as a later error does,
    /// and so does anything still in it.
    fn retire(&mut self, instance: Instance) {
        instance.slot.close_to_hook();
        self.retired.push(instance);
    }

    fn set_state(&mut self, node: usize, state: State) {
        let after = state.public();
        let run = &mut self.nodes[node];
        let blocked = run.blocks();
        let before = core::mem::replace(&mut run.state, state).public();
        if !after.is_up() {
            // Done, or never started: no instance any more.
            if let Some(instance) = run.instance.take() {
                self.retire(instance);
            }
        }
        let run = &self.nodes[node];
        if run.blocks() != blocked {
            self.propagate_blocking(node, !blocked);
        }
        self.up = self.up + usize::from(after.is_up()) - usize::from(before.is_up());
        self.satisfied = self.satisfied + usize::from(after.satisfies_dependents())
            - usize::from(before.satisfies_dependents());
        self.finals = self.finals + usize::from(after.is_final()) - usize::from(before.is_final());
        self.status.set_state(node, after);
    }

    /// If the node's instance is a nested supervisor, its run over, its
    /// outcome becomes part of this one's, its nodes named `node/inner`:
    /// the nodes that overran their stop are named as this run's own, and
    /// its failures and errors while stopping go where `errors` says.
    fn fold_in_nested(&mut self, node: usize, errors: NestedErrors) {
        let instance = self.nodes[node].instance.as_ref();
        let Some(nested) = instance.and_then(|it| it.component.nested_outcome()) else {
            return;
        };
        let outer = self.specs[node].name.clone();
        let name = move |inner: &str| Arc::<str>::from(format!("{outer}/{inner}"));
        let named = |errors: Vec<NodeError>| {
            errors
                .into_iter()
                .map(|NodeError { node, error }| NodeError {
                    node: name(&node),
                    error,
                })
        };
        for inner in &nested.overran {
            let inner = name(inner);
            if !self.overran.contains(&inner) {
                self.overran.push(inner);
            }
        }
        match errors {
            NestedErrors::Recorded => {
                self.failures.extend(named(nested.failures));
                self.shutdown_errors.extend(named(nested.shutdown_errors));
            }
            NestedErrors::ToHook => {
                let Some(instance) = &self.nodes[node].instance else {
                    return;
                };
                let errors = named(nested.failures).chain(named(nested.shutdown_errors));
                for NodeError { node, error } in errors {
                    let error = FatalError::new(NodeFailed { node, error });
                    instance.slot.report_unhandled(error);
                }
            }
        }
    }

    /// Ready once every node is ready or completed, while running only.
    fn check_ready(&self) {
        if matches!(self.mode, Mode::Running) && self.satisfied == self.nodes.len() {
            self.ready.set();
        }
    }

    /// `node` began (`blocks`) or ceased to keep its dependencies from
    /// stopping: counts it in or out of theirs, and on up through every
    /// dependency that changes with it. A dependency that no longer waits
    /// for anything below is marked: it may be stopped now.
    fn propagate_blocking(&mut self, node: usize, blocks: bool) {
        let mut walk = core::mem::take(&mut self.walk);
        walk.push(node);
        while let Some(below) = walk.pop() {
            for &on in &self.graph.dependencies[below] {
                let run = &mut self.nodes[on];
                let changed = if blocks {
                    run.blocked_by += 1;
                    run.blocked_by == 1
                } else {
                    run.blocked_by -= 1;
                    run.blocked_by == 0
                };
                if changed {
                    if !blocks {
                        self.dirty.insert(on);
                    }
                    // Up or not, an up node blocks by itself: its own
                    // dependencies see no change.
                    if !run.state.public().is_up() {
                        walk.push(on);
                    }
                }
            }
        }
        self.walk = walk;
    }

    /// `node` became ready, or went down: its dependents may now start,
    /// and so may what depends on it through completed nodes, which stand
    /// for it (see `may_rely_on`).
    fn mark_dependents(&mut self, node: usize) {
        let mut through_completed = false;
        for &dependent in &self.graph.dependents[node] {
            self.dirty.insert(dependent);
            through_completed |= matches!(self.nodes[dependent].state, State::Completed);
        }
        // Rare: the walk is taken only past a completed node.
        if through_completed {
            let completed = |at: usize| matches!(self.nodes[at].state, State::Completed);
            let reached = self.graph.dependents_through(node, completed);
            self.dirty.extend(reached);
        }
    }

    /// A node went down or up: its dependents may now start, and so may
    /// itself again. (Dependencies that may now stop, or start again after
    /// waiting for their dependents, are marked as the counts change: see
    /// `propagate_blocking`.)
    fn mark_neighbours(&mut self, node: usize) {
        // While everything stops, nothing starts: what is left to carry
        // out are stop requests, marked as they are made and as the counts
        // free them.
        if !matches!(self.mode, Mode::Running) {
            return;
        }
        self.dirty.insert(node);
        self.mark_dependents(node);
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

    /// Tells the subscribers of a transition, once the status board shows
    /// the state it leads to: every caller sets the state first.
    fn emit(&self, node: usize, kind: EventKind) {
        if self.events.is_none() && !cfg!(feature = "tracing") {
            return;
        }
        let event = SupervisorEvent {
            node: self.specs[node].name.clone(),
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
    /// down with it: every live instance's scope is stopped and the
    /// instance aborted. Nothing watches their slots any more: each is
    /// closed, an error waiting in it and any reported later going to the
    /// hook.
    fn drop(&mut self) {
        for instance in self.nodes.iter().filter_map(|run| run.instance.as_ref()) {
            instance.give_up();
            instance.slot.close_to_hook();
        }
    }
}

/// How many inputs the run handles in a row, without waiting, before it
/// yields to its executor.
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
