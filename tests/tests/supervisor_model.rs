//! A randomized property test of the `Supervisor`: random dependency graphs
//! whose nodes are made to fail or finish at random, checked against the
//! supervisor's invariants at every event it reports and at the end of the
//! run.
//!
//! A case is a graph and a list of steps:
//! - a DAG of 1 to 7 nodes, `n0` to `n6`, in which node `i` depends on any
//!   subset of the nodes before it. Each node has a handler that always
//!   gives the same verdict (mostly `Restart`, else `Stop` or
//!   `StopParents`, rarely `Shutdown` or `SpinHalt`), a restart policy
//!   allowing 1 to 3 restarts within an hour (so that budgets get spent),
//!   each at once or after a short backoff, an escalation for a spent
//!   budget (`Stop` or `StopParents`, rarely `Shutdown` or `SpinHalt`),
//!   and, sometimes, `restart_dependents`, `permanent` and
//!   `required_while_running`. Its
//!   instances, told to stop, mostly return at once; some return an error
//!   instead, and some hang until aborted at the node's stop timeout
//!   (`HANG_TIMEOUT`). Some nodes' first instance is never ready, and
//!   fails at the node's start timeout (`HANG_TIMEOUT` too);
//! - some nodes are nested: their instance is a supervisor of one node,
//!   `inner`, which runs the instance the node would have had, stops as
//!   the node's would (with the stop timeout, if it hangs) and decides
//!   `Shutdown` (mostly) or `Stop` on a failure. A step's failure then
//!   ends the nested supervisor, either with a `NodeFailed` naming `inner`
//!   thrown to the outer node, which fails (its own verdict applies), or
//!   as a completion with a failure in its outcome, and a step's finish
//!   completes it; either completion completes the outer node. Told to
//!   stop, it stops its node. The outer outcome folds in the nested one
//!   (its entries named `n<i>/inner`). Its events are recorded with the
//!   outer ones, under `n<i>/inner`;
//! - sometimes a shutdown budget, shorter or longer than that stop timeout;
//! - 0 to 8 steps, each picking one of the nodes ready at the time (none
//!   ready: the step is skipped) and making its current instance fail
//!   (return an error) or finish (return `Ok`) on its own, or, rarely,
//!   sending the supervisor a terminate request. After a step the test
//!   waits until the supervisor settles (the commanded instance is no
//!   longer the ready one, and every node is ready, completed or stopped),
//!   unless the step is a "rush": then the next step (or the parent's
//!   stop, after the last one) follows at once, racing the supervisor's
//!   reaction.
//!
//! Every node's instance (a nested node's inner one) is a one-worker
//! `ComponentManager`, ready at once, that waits for its stop token or a
//! command from the test (two latches per instance, which the factory
//! building it hands over to the test). After the steps the parent is
//! stopped and the run must end within a bounded wait, unless a spin-halt
//! holds it: then every node must be down, the run must still be going a
//! while later, and a terminate request must end it.
//!
//! The event hook records every event with a status snapshot taken inside
//! the hook, which shows the state the event leads to (the board is written
//! before the event goes out, and only by the supervisor's task). The
//! events so far are checked while the test waits for the supervisor to
//! settle, and all of them once the run has ended:
//! 1. start gating: at every `Starting` of a node, every node it depends on
//!    may be relied on: ready, or completed with everything it stands for
//!    ready or completed (a completed node stands for its own
//!    dependencies, through other completed ones);
//! 2. stop order: at every `Stopping` of a node (the supervisor telling it
//!    to stop), no node that depends on it, directly or not, is up
//!    (`starting`, `ready` or `stopping`): stronger than "no direct
//!    dependent is starting or ready", as the supervisor's model says;
//! 3. at every event, no node that is up depends directly on a node that
//!    is `stopped`;
//! 4. the supervisor settles after every step that waits for it (a node
//!    left waiting for good is a hang); the run ends after the parent's
//!    stop, or after the terminate request that releases a spin-halt,
//!    every node then `stopped` or `completed`; it ended by the parent's
//!    stop, by the case's terminate request, by a completion (every node
//!    done before either), or by the first `Shutdown` or `SpinHalt` acted
//!    on, with that node and its error (a spin-halt released by a
//!    terminate request);
//! 5. every `Failed` event of a node is followed by exactly one `Verdict`
//!    event for the same attempt before the node fails again. A verdict is
//!    acted on if and only if no stop covers the node: a `Stop`,
//!    `StopParents` or `Shutdown` acted on (or escalated to) before it and
//!    reaching the node, or the completion of a required node it depends
//!    on; or the parent's stop or a terminate request, which the test
//!    cannot place exactly among the events: after either, an unacted
//!    verdict is always allowed, and an acted one if nothing else covers
//!    the node;
//! 6. the outcome's `failures` are exactly, in order, the failures whose
//!    verdict was not acted on and those whose verdict (or escalation) was
//!    `Stop` or `StopParents`, each with the failed instance's error (a
//!    permanent node's spent budget after a clean exit has the supervisor's
//!    own error); its errors during a stop are exactly the
//!    `ErrorDuringStop` events, in order; the nodes named as overrunning
//!    their stop are exactly those with a `StopTimedOut` or `GivenUp`
//!    event, in the order of the first; the budget is spent exactly when a
//!    node was given up; the run is clean exactly when it ended by a
//!    completion, the parent or a terminate request with none of these.
//!    A nested node's instance adds, once done, what its supervisor's
//!    events say its own outcome holds, derived the same way and named
//!    `n<i>/inner`, where the outer supervisor folds it in: before the
//!    node's `Completed`, `Waiting` or `Stopped` event, or, if the
//!    instance failed, only its overruns, before the node's `Verdict` (its
//!    errors go to the fatal hook, as a failed instance's later errors
//!    do). Every nested outcome is folded in by the end, but for a nested
//!    node the budget gives up: its run may be ending as it is aborted, so
//!    its entries may be folded in or not (the outcome's one loose check);
//! 7. at every event, the board shows the event's node in the state the
//!    event leads to (as `status_shows_what_each_event_tells` in
//!    `supervisor.rs` checks by hand);
//! 8. restart with dependents: from a node's `Restarting` event, if it
//!    restarts with its dependents, until it is ready again (or stopped),
//!    no node depending on it, directly or not, starts, and when it starts
//!    again none of them is up ("its dependents stop first and start again
//!    once it is ready again");
//! 9. no node starts after a `Shutdown` or `SpinHalt` acted on, or once
//!    the parent's stop or a terminate request has reached a node;
//! 10. only a node that hangs when told to stop overruns its stop timeout
//!     (a nested node's inner node does: the outer node keeps the default
//!     timeout, never reached), and only a case with a shutdown budget has
//!     nodes given up (never inside a nested supervisor, which has none);
//! 11. only a node's first instance that is never ready fails at its
//!     start timeout;
//! 12. every restart waits the delay of its node's policy;
//! 13. each node follows its spec: every verdict is its handler's; its
//!     budget grants exactly its restarts (permanent ones included), then
//!     its escalation comes; the board counts the restarts the events
//!     tell; a permanent node that completes under a stop for good (a
//!     verdict's, a required node's completion, a global stop) shows
//!     `completed` and never restarts; and a nested node whose inner node's
//!     `Shutdown` was acted on fails, never completes.
//!
//! These checks need no full reference model of the supervisor: the
//! expected failures, the verdicts' coverage and the end are derived from
//! the events and the graph, so a wrong verdict or a node started or
//! stopped at the wrong time shows, but a wrong choice between two legal
//! reactions (which node a cascade reaches) only shows through the
//! invariants above.
//!
//! Every run picks a random seed and prints it on standard error (shown
//! with a failure, with the minimal case and its events). To reproduce a
//! failure:
//!
//! ```text
//! LIFECYCLE_PROPTEST_SEED=<seed> cargo test -p lifecycle-conformance \
//!     --test supervisor_model -- --exact <test>
//! ```
//!
//! where `<test>` is the failing test (`tokio_current_thread`,
//! `tokio_multi_thread`, `async_std`, `smol` or `virtual_time`); the exact
//! command is printed too. A failure on a multi-threaded executor may
//! depend on timing and need a few runs to show again.
//!
//! `LIFECYCLE_PROPTEST_CASES=<n>` changes the number of cases (256 by
//! default) per executor.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use lifecycle::{
    ComponentManager, EventKind, FatalError, Latch, Node, NodeState, NodeStatus, RestartPolicy,
    RuntimeExt, SharedRuntime, StartTimedOut, StatusBoard, StopReason, StopSource, Supervisor,
    SupervisorEnd, SupervisorEvent, SupervisorOutcome, Verdict,
};
use lifecycle_conformance::{describe, eventually, let_others_run, lock, shown_with, ModelRun};
use proptest::prelude::*;

/// The most nodes a case has.
const MAX_NODES: usize = 7;

/// The most steps a case has.
const MAX_STEPS: usize = 8;

/// How long the supervisor may take to settle after a step, or to end
/// after the parent's stop: it takes milliseconds, so this only turns a
/// hang into a failure (with the events so far). Shorter than
/// `eventually`'s own limit, so that a settle that never comes fails here,
/// showing the events; short enough for a hanging case to shrink.
const LIMIT: Duration = Duration::from_secs(3);

/// The window of every node's restart intensity: longer than any case, so
/// that only the count of restarts matters.
const WINDOW: Duration = Duration::from_secs(3600);

/// The stop timeout of a node whose instances hang when told to stop. A
/// shutdown budget, when a case has one, is half of it (it runs out
/// first) or three times it (a chain of hanging nodes overruns it).
const HANG_TIMEOUT: Duration = Duration::from_millis(10);

/// The backoff before each restart of a node that has one: long enough for
/// a stop to reach the node while it waits.
const BACKOFF: Duration = Duration::from_millis(20);

lifecycle_conformance::model_conformance!(run_model, run_case);

// ---------------------------------------------------------------------------
// Cases

/// One node: what it depends on and how its failures are treated.
#[derive(Clone)]
struct Spec {
    /// Nodes before it, by index.
    dependencies: Vec<usize>,
    /// What its handler always decides.
    verdict: Verdict,
    /// What a spent restart budget escalates to.
    escalation: Verdict,
    /// How many restarts its budget allows.
    restarts: u32,
    /// Its restarts wait `BACKOFF` (else none).
    backoff: bool,
    restart_dependents: bool,
    permanent: bool,
    required: bool,
    /// What its instances do when told to stop.
    on_stop: OnStop,
    /// Its first instance is never ready: the node has a start timeout of
    /// `HANG_TIMEOUT`, which fails it.
    late_start: bool,
    /// Its instance is a nested supervisor, whose one node runs what the
    /// node's instance would be, with this verdict on its failures
    /// (`Shutdown` or `Stop`).
    nested: Option<Verdict>,
}

/// What a node's instance does when the supervisor tells it to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnStop {
    /// Return `Ok` at once.
    Return,
    /// Return an error at once ("n<i> failed <attempt> while stopping").
    Fail,
    /// Go on until aborted: the node has a stop timeout of `HANG_TIMEOUT`.
    Hang,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "on {:?}, {} (then {} after {} restarts{})",
            self.dependencies,
            self.verdict,
            self.escalation,
            self.restarts,
            if self.backoff {
                ", each after a backoff"
            } else {
                ""
            }
        )?;
        for (set, flag) in [
            (self.restart_dependents, "restart_dependents"),
            (self.permanent, "permanent"),
            (self.required, "required_while_running"),
        ] {
            if set {
                write!(f, ", {flag}")?;
            }
        }
        match self.on_stop {
            OnStop::Return => {}
            OnStop::Fail => write!(f, ", fails when stopped")?,
            OnStop::Hang => write!(f, ", hangs when stopped")?,
        }
        if self.late_start {
            write!(f, ", first instance never ready")?;
        }
        match self.nested {
            Some(verdict) => write!(f, ", nested ({verdict} inside)"),
            None => Ok(()),
        }
    }
}

/// What a step makes a node's current instance do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Return an error.
    Fail,
    /// Return `Ok` on its own.
    Finish,
    /// Not a node's: the test sends the supervisor a terminate request.
    Terminate,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    /// Picks the node among those ready at the time (modulo their count);
    /// unused by a terminate request.
    node: usize,
    act: Act,
    /// Go on at once, without waiting for the supervisor to settle.
    rush: bool,
}

#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<Spec>,
    steps: Vec<Step>,
    /// The supervisor's shutdown budget.
    budget: Option<Duration>,
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        12 => Just(Verdict::Restart),
        4 => Just(Verdict::Stop),
        3 => Just(Verdict::StopParents),
        1 => Just(Verdict::Shutdown),
        1 => Just(Verdict::SpinHalt),
    ]
}

fn escalation() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        4 => Just(Verdict::Stop),
        3 => Just(Verdict::StopParents),
        1 => Just(Verdict::Shutdown),
        1 => Just(Verdict::SpinHalt),
    ]
}

fn on_stop() -> impl Strategy<Value = OnStop> {
    prop_oneof![
        8 => Just(OnStop::Return),
        1 => Just(OnStop::Fail),
        1 => Just(OnStop::Hang),
    ]
}

prop_compose! {
    /// Node `index`: each node before it is a dependency with probability
    /// 0.4.
    fn spec(index: usize)(
        on in prop::collection::vec(prop::bool::weighted(0.4), index),
        verdict in verdict(),
        escalation in escalation(),
        restarts in 1..=3u32,
        backoff in prop::bool::weighted(0.3),
        restart_dependents in prop::bool::weighted(0.25),
        permanent in prop::bool::weighted(0.2),
        required in prop::bool::weighted(0.2),
        on_stop in on_stop(),
        late_start in prop::bool::weighted(0.1),
        nested in prop_oneof![
            7 => Just(None),
            2 => Just(Some(Verdict::Shutdown)),
            1 => Just(Some(Verdict::Stop)),
        ],
    ) -> Spec {
        Spec {
            dependencies: (0..on.len()).filter(|&at| on[at]).collect(),
            verdict,
            escalation,
            restarts,
            backoff,
            restart_dependents,
            permanent,
            required,
            on_stop,
            late_start,
            nested,
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..MAX_NODES,
        prop_oneof![
            12 => Just(Act::Fail),
            4 => Just(Act::Finish),
            1 => Just(Act::Terminate),
        ],
        prop::bool::weighted(0.25),
    )
        .prop_map(|(node, act, rush)| Step { node, act, rush })
}

fn case() -> impl Strategy<Value = Case> {
    (1..=MAX_NODES)
        .prop_flat_map(|count| {
            let nodes: Vec<_> = (0..count).map(|index| spec(index).boxed()).collect();
            let budget = prop_oneof![
                3 => Just(None),
                1 => Just(Some(HANG_TIMEOUT / 2)),
                1 => Just(Some(HANG_TIMEOUT * 3)),
            ];
            (nodes, prop::collection::vec(step(), 0..=MAX_STEPS), budget)
        })
        .prop_map(|(nodes, steps, budget)| Case {
            nodes,
            steps,
            budget,
        })
}

// ---------------------------------------------------------------------------
// The runner

/// What the cases of one run went through, printed at the end so that a
/// generator drifting into trivial cases shows. "With" counts cases.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    nodes: AtomicUsize,
    nested: AtomicUsize,
    steps: AtomicUsize,
    skipped: AtomicUsize,
    events: AtomicUsize,
    with_failures: AtomicUsize,
    with_restarts: AtomicUsize,
    with_spent_budgets: AtomicUsize,
    with_cascades: AtomicUsize,
    with_stop_parents: AtomicUsize,
    with_dependents_restarted: AtomicUsize,
    with_required_completions: AtomicUsize,
    with_permanent_restarts: AtomicUsize,
    with_stops_in_a_backoff: AtomicUsize,
    with_unacted_verdicts: AtomicUsize,
    with_errors_during_stop: AtomicUsize,
    with_stop_timeouts: AtomicUsize,
    with_start_timeouts: AtomicUsize,
    with_nodes_given_up: AtomicUsize,
    with_budgets_spent: AtomicUsize,
    with_nested_failures: AtomicUsize,
    with_nested_completions: AtomicUsize,
    with_nested_given_up: AtomicUsize,
    with_nested_errors_folded: AtomicUsize,
    with_nested_overruns_folded: AtomicUsize,
    ended_completed: AtomicUsize,
    ended_by_parent: AtomicUsize,
    ended_by_terminate: AtomicUsize,
    ended_by_shutdown: AtomicUsize,
    ended_by_spin_halt: AtomicUsize,
}

impl Coverage {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts one case: its steps and what its events show.
    fn count(&self, case: &Case, steps: usize, seen: &[Seen], outcome: &SupervisorOutcome) {
        Coverage::add(&self.cases, 1);
        Coverage::add(&self.nodes, case.nodes.len());
        let nested = case
            .nodes
            .iter()
            .filter(|spec| spec.nested.is_some())
            .count();
        Coverage::add(&self.nested, nested);
        Coverage::add(&self.steps, steps);
        Coverage::add(&self.skipped, case.steps.len() - steps);
        Coverage::add(&self.events, seen.len());
        // The outer supervisor's events: a nested one's show through the
        // counts of what is folded in.
        let outer = || seen.iter().filter(|it| it.inner_of.is_none());
        let any = |counter: &AtomicUsize, test: &dyn Fn(&Seen) -> bool| {
            Coverage::add(counter, usize::from(outer().any(test)));
        };
        let of_nested = |it: &Seen| case.nodes[index_of(&it.event.node)].nested.is_some();
        any(&self.with_failures, &|it| {
            matches!(it.event.kind, EventKind::Failed { .. })
        });
        any(&self.with_restarts, &|it| {
            matches!(it.event.kind, EventKind::Restarting { .. })
        });
        any(&self.with_spent_budgets, &|it| {
            matches!(it.event.kind, EventKind::RestartsExhausted { .. })
        });
        any(&self.with_cascades, &|it| {
            matches!(
                &it.event.kind,
                EventKind::Stopping { cause, .. } if *cause != StopReason::ParentStopped
            )
        });
        any(&self.with_stop_parents, &|it| {
            matches!(
                it.event.kind,
                EventKind::Verdict {
                    verdict: Verdict::StopParents,
                    acted: true,
                    ..
                } | EventKind::RestartsExhausted {
                    escalation: Verdict::StopParents,
                    ..
                }
            )
        });
        any(&self.with_dependents_restarted, &|it| {
            matches!(
                it.event.kind,
                EventKind::Stopping {
                    cause: StopReason::Restart { .. },
                    ..
                }
            )
        });
        any(&self.with_required_completions, &|it| {
            matches!(
                it.event.kind,
                EventKind::Stopping {
                    cause: StopReason::RequiredNodeCompleted { .. },
                    ..
                }
            )
        });
        // A node stopped for good while it waited to restart.
        let in_a_backoff = outer().enumerate().any(|(at, it)| {
            matches!(it.event.kind, EventKind::Stopped { .. })
                && outer()
                    .take(at)
                    .filter(|before| before.event.node == it.event.node)
                    .last()
                    .is_some_and(|before| {
                        matches!(before.event.kind, EventKind::Restarting { delay, .. } if !delay.is_zero())
                    })
        });
        Coverage::add(&self.with_stops_in_a_backoff, usize::from(in_a_backoff));
        any(&self.with_permanent_restarts, &|it| {
            matches!(it.event.kind, EventKind::Completed { .. })
                && it.board[index_of(&it.event.node)].state == NodeState::Backoff
        });
        any(&self.with_unacted_verdicts, &|it| {
            matches!(it.event.kind, EventKind::Verdict { acted: false, .. })
        });
        any(&self.with_errors_during_stop, &|it| {
            matches!(it.event.kind, EventKind::ErrorDuringStop { .. })
        });
        any(&self.with_stop_timeouts, &|it| {
            matches!(it.event.kind, EventKind::StopTimedOut { .. })
        });
        any(&self.with_start_timeouts, &|it| {
            matches!(
                &it.event.kind,
                EventKind::Failed { error, .. } if error.downcast_ref::<StartTimedOut>().is_some()
            )
        });
        any(&self.with_nodes_given_up, &|it| {
            matches!(it.event.kind, EventKind::GivenUp { .. })
        });
        Coverage::add(&self.with_budgets_spent, usize::from(outcome.budget_spent));
        any(&self.with_nested_failures, &|it| {
            matches!(it.event.kind, EventKind::Failed { .. }) && of_nested(it)
        });
        any(&self.with_nested_completions, &|it| {
            matches!(it.event.kind, EventKind::Completed { .. }) && of_nested(it)
        });
        any(&self.with_nested_given_up, &|it| {
            matches!(it.event.kind, EventKind::GivenUp { .. }) && of_nested(it)
        });
        let folded = |node: &str| node.contains('/');
        let errors = outcome.failures.iter().chain(&outcome.shutdown_errors);
        let errors_folded = errors.into_iter().any(|error| folded(&error.node));
        Coverage::add(&self.with_nested_errors_folded, usize::from(errors_folded));
        let overruns_folded = outcome.overran.iter().any(|node| folded(node));
        Coverage::add(
            &self.with_nested_overruns_folded,
            usize::from(overruns_folded),
        );
        Coverage::add(
            match outcome.end {
                SupervisorEnd::Completed => &self.ended_completed,
                SupervisorEnd::Terminated => &self.ended_by_terminate,
                SupervisorEnd::Shutdown { .. } => &self.ended_by_shutdown,
                SupervisorEnd::SpinHaltReleased { .. } => &self.ended_by_spin_halt,
                _ => &self.ended_by_parent,
            },
            1,
        );
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |counter: &AtomicUsize| counter.load(Relaxed);
        write!(
            f,
            "{} cases of {} nodes in all ({} nested), {} steps carried out, {} skipped (no \
             node ready), {} events; cases with failures {}, restarts {}, spent budgets {}, \
             cascades (a node stopped by another's verdict, restart or completion) {}, \
             StopParents {}, dependents restarted {}, required nodes completing {}, \
             permanent restarts {}, stops in a backoff {}, verdicts not acted on {}, errors \
             during a stop {}, stop timeouts {}, start timeouts {}, nodes given up {}, \
             budgets spent {}, nested nodes failing {}, completing {}, given up {}, nested \
             failures or errors folded in {}, nested overruns folded in {}; ended by a \
             completion {}, by the parent {}, by a terminate request {}, by a Shutdown {}, \
             by a released SpinHalt {}",
            n(&self.cases),
            n(&self.nodes),
            n(&self.nested),
            n(&self.steps),
            n(&self.skipped),
            n(&self.events),
            n(&self.with_failures),
            n(&self.with_restarts),
            n(&self.with_spent_budgets),
            n(&self.with_cascades),
            n(&self.with_stop_parents),
            n(&self.with_dependents_restarted),
            n(&self.with_required_completions),
            n(&self.with_permanent_restarts),
            n(&self.with_stops_in_a_backoff),
            n(&self.with_unacted_verdicts),
            n(&self.with_errors_during_stop),
            n(&self.with_stop_timeouts),
            n(&self.with_start_timeouts),
            n(&self.with_nodes_given_up),
            n(&self.with_budgets_spent),
            n(&self.with_nested_failures),
            n(&self.with_nested_completions),
            n(&self.with_nested_given_up),
            n(&self.with_nested_errors_folded),
            n(&self.with_nested_overruns_folded),
            n(&self.ended_completed),
            n(&self.ended_by_parent),
            n(&self.ended_by_terminate),
            n(&self.ended_by_shutdown),
            n(&self.ended_by_spin_halt),
        )
    }
}

/// Runs the cases of test `test` on `executor`, each through `run`.
fn run_model(test: &str, executor: &str, run: impl Fn(Case, Arc<Coverage>)) {
    let model = ModelRun {
        file: "supervisor_model",
        test,
        executor,
        default_cases: 256,
    };
    lifecycle_conformance::run_model(model, case(), run);
}

// ---------------------------------------------------------------------------
// Nodes

fn name(index: usize) -> String {
    format!("n{index}")
}

/// The name of a nested supervisor's one node.
const INNER: &str = "inner";

/// The name of node `n<index>`'s inner node, as the outer outcome has it.
fn inner_name(index: usize) -> String {
    format!("n{index}/{INNER}")
}

/// The index of node `n<index>`.
fn index_of(name: &str) -> usize {
    name[1..].parse().expect("every node is named n<index>")
}

/// What the test holds of one instance: its number and its commands.
#[derive(Clone)]
struct Triggers {
    attempt: u32,
    fail: Latch,
    finish: Latch,
}

/// The test's handle on one node: the current instance, as its factory
/// last built it.
#[derive(Default)]
struct Rig {
    built: AtomicU32,
    current: Mutex<Option<Triggers>>,
}

impl Rig {
    /// The number of the node's next instance: its generation on the board.
    fn next_attempt(&self) -> u32 {
        self.built.fetch_add(1, SeqCst) + 1
    }
}

impl Spec {
    /// Restarts at once or after `BACKOFF`, at most `restarts` of them.
    fn policy(&self) -> RestartPolicy {
        let policy = RestartPolicy::immediate().intensity(self.restarts, WINDOW);
        if self.backoff {
            policy.backoff(BACKOFF, BACKOFF)
        } else {
            policy
        }
    }

    /// The restart delay of its policy: the same for every restart.
    fn restart_delay(&self) -> Duration {
        if self.backoff {
            BACKOFF
        } else {
            Duration::ZERO
        }
    }

    fn script(&self) -> Script {
        Script {
            on_stop: self.on_stop,
            late_start: self.late_start,
        }
    }

    fn node(&self, index: usize, rig: Arc<Rig>, log: &Arc<Log>) -> Node {
        let verdict = self.verdict;
        let node = if let Some(inside) = self.nested {
            // The inner node has the stop timeout: the outer node keeps the
            // default one, which the inner one always beats.
            let nested = nested(index, inside, self.script(), rig, log.clone());
            Node::new(name(index), nested)
        } else {
            let node = Node::new(name(index), factory(index, self.script(), rig));
            with_stop_timeout(node, self.on_stop)
        };
        let node = if self.late_start {
            node.start_timeout(HANG_TIMEOUT)
        } else {
            node
        };
        let node = node
            .depends_on(self.dependencies.iter().map(|&on| name(on)))
            .handler(move |_| verdict)
            .policy(self.policy())
            .on_exhausted(self.escalation);
        let node = if self.restart_dependents {
            node.restart_dependents()
        } else {
            node
        };
        let node = if self.permanent {
            node.permanent()
        } else {
            node
        };
        if self.required {
            node.required_while_running()
        } else {
            node
        }
    }
}

/// How a node's instances behave, besides obeying the test's commands.
#[derive(Clone, Copy)]
struct Script {
    on_stop: OnStop,
    /// The first instance is never ready.
    late_start: bool,
}

/// A node whose instances hang when told to stop is aborted at
/// `HANG_TIMEOUT`.
fn with_stop_timeout(node: Node, on_stop: OnStop) -> Node {
    if on_stop == OnStop::Hang {
        node.stop_timeout(HANG_TIMEOUT)
    } else {
        node
    }
}

/// Builds node `n<index>`'s instances, each with the next attempt number.
fn factory(
    index: usize,
    script: Script,
    rig: Arc<Rig>,
) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    move || Ok(instance(index, rig.next_attempt(), script, &rig))
}

/// Builds nested node `n<index>`'s instances: each a supervisor of one
/// node, `inner`, built once (its handler, deciding `inside`, never
/// restarts it) as the outer node's instance would be, with the outer
/// attempt's number, so that the test's triggers match the outer node's
/// generation. Its events go to `log`, under `n<index>/inner`.
fn nested(
    index: usize,
    inside: Verdict,
    script: Script,
    rig: Arc<Rig>,
    log: Arc<Log>,
) -> impl FnMut() -> Result<Supervisor, FatalError> + Send + 'static {
    move || {
        let attempt = rig.next_attempt();
        let rig = rig.clone();
        let inner = Node::new(INNER, move || Ok(instance(index, attempt, script, &rig)))
            .handler(move |_| inside);
        let log = log.clone();
        Supervisor::builder()
            .node(with_stop_timeout(inner, script.on_stop))
            .on_event(move |event: &SupervisorEvent| log.record(event, Some(index)))
            .build()
            .map_err(FatalError::new)
    }
}

/// An instance of node `n<index>`, ready at once (unless `script` makes a
/// first instance late), that returns when the test tells it to fail (an
/// error "n<index> failed <attempt>") or to finish (`Ok`), or when its stop
/// token is stopped, as `script` says. Its triggers go to the rig.
fn instance(index: usize, attempt: u32, script: Script, rig: &Rig) -> ComponentManager {
    let Script {
        on_stop,
        late_start,
    } = script;
    let never_ready = late_start && attempt == 1;
    let triggers = Triggers {
        attempt,
        fail: Latch::new(),
        finish: Latch::new(),
    };
    *lock(&rig.current) = Some(triggers.clone());
    let failed = format!("{} failed {attempt}", name(index));
    ComponentManager::builder()
        .add_worker(move |ctx, ready| {
            let (fail, finish) = (triggers.fail.clone(), triggers.finish.clone());
            let failed = failed.clone();
            async move {
                if !never_ready {
                    ready.ready();
                }
                let mut fail = pin!(fail.wait());
                let mut finish = pin!(finish.wait());
                let mut stopped = pin!(ctx.stopped());
                poll_fn(|cx| {
                    if fail.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(FatalError::msg(failed.clone())));
                    }
                    if finish.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(()));
                    }
                    match on_stop {
                        OnStop::Hang => Poll::Pending,
                        _ if stopped.as_mut().poll(cx).is_pending() => Poll::Pending,
                        OnStop::Return => Poll::Ready(Ok(())),
                        OnStop::Fail => {
                            Poll::Ready(Err(FatalError::msg(format!("{failed} while stopping"))))
                        }
                    }
                })
                .await
            }
        })
        .build()
}

// ---------------------------------------------------------------------------
// The events

/// An event as the hook saw it.
struct Seen {
    event: SupervisorEvent,
    /// The status board, read in the hook: the state the event leads to
    /// (for a nested supervisor's event, the outer board at the time).
    board: Vec<NodeStatus>,
    /// Whether the test had stopped the parent or sent a terminate request
    /// by then.
    after_outside_stop: bool,
    /// Node `n<i>`'s nested supervisor reported it, about its inner node
    /// (the event names it `n<i>/inner`).
    inner_of: Option<usize>,
}

#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    board: OnceLock<StatusBoard>,
    stopped_from_outside: AtomicBool,
}

impl Log {
    /// Records an event of the supervisor, or of node `n<i>`'s nested
    /// supervisor if `inner_of` is `Some(i)`.
    fn record(&self, event: &SupervisorEvent, inner_of: Option<usize>) {
        let mut event = event.clone();
        if let Some(outer) = inner_of {
            event.node = inner_name(outer).into();
        }
        let seen = Seen {
            event,
            board: self
                .board
                .get()
                .map(StatusBoard::snapshot)
                .unwrap_or_default(),
            after_outside_stop: self.stopped_from_outside.load(SeqCst),
            inner_of,
        };
        lock(&self.seen).push(seen);
    }
}

/// One line per event, with the status it leads to.
fn render(seen: &[Seen]) -> String {
    let mut lines = String::new();
    for (at, it) in seen.iter().enumerate() {
        let board: Vec<String> = it.board.iter().map(ToString::to_string).collect();
        let parent = if it.after_outside_stop {
            " (stopped from outside)"
        } else {
            ""
        };
        lines += &format!(
            "  {at:3}: {:40} [{}]{parent}\n",
            describe(&it.event),
            board.join(" ")
        );
    }
    lines
}

// ---------------------------------------------------------------------------
// One case

async fn run_case(rt: SharedRuntime, case: Case, coverage: Arc<Coverage>) {
    let count = case.nodes.len();
    let rigs: Vec<Arc<Rig>> = (0..count).map(|_| Arc::default()).collect();
    let log = Arc::new(Log::default());
    let terminate = Latch::new();
    let mut builder = Supervisor::builder().terminate_on(terminate.signal());
    for (index, spec) in case.nodes.iter().enumerate() {
        builder = builder.node(spec.node(index, rigs[index].clone(), &log));
    }
    if let Some(budget) = case.budget {
        builder = builder.shutdown_budget(budget);
    }
    let hook = {
        let log = log.clone();
        move |event: &SupervisorEvent| log.record(event, None)
    };
    let supervisor = builder
        .on_event(hook)
        .build()
        .expect("a DAG of distinct names is a valid graph");
    let status = supervisor.status();
    assert!(log.board.set(status.clone()).is_ok(), "one board per case");
    let stop = StopSource::new();
    let run = rt.spawn(supervisor.run(rt.clone(), stop.token()));

    settle(&rt, &case, &log, &status, None, "every node starts").await;
    let mut carried_out = 0;
    for (index, step) in case.steps.iter().enumerate() {
        if step.act == Act::Terminate {
            if !terminate.is_set() {
                log.stopped_from_outside.store(true, SeqCst);
                terminate.set();
                carried_out += 1;
                if !step.rush {
                    let what = format!("after step {index} (a terminate request)");
                    settle(&rt, &case, &log, &status, None, &what).await;
                }
            }
            continue;
        }
        let ready: Vec<usize> = (status.snapshot().iter().enumerate())
            .filter(|(_, node)| node.state == NodeState::Ready)
            .map(|(index, _)| index)
            .collect();
        if ready.is_empty() {
            continue;
        }
        let node = ready[step.node % ready.len()];
        let triggers = lock(&rigs[node].current)
            .clone()
            .expect("a ready node was built");
        let command = match step.act {
            Act::Fail => &triggers.fail,
            _ => &triggers.finish,
        };
        command.set();
        carried_out += 1;
        if !step.rush {
            let what = format!("after step {index} ({step:?} on n{node})");
            let moved = Some((node, triggers.attempt));
            settle(&rt, &case, &log, &status, moved, &what).await;
        }
    }

    log.stopped_from_outside.store(true, SeqCst);
    stop.stop();
    // The run ends, or a spin-halt holds it once every node is down.
    let ended_or_halted = || {
        let board = status.snapshot();
        run.is_finished()
            || (status.spin_halted_by().is_some()
                && board
                    .iter()
                    .all(|node| matches!(node.state, NodeState::Stopped | NodeState::Completed)))
    };
    let what = "the run ends after the parent's stop, or spin-halts";
    if rt
        .timeout(LIMIT, eventually(&rt, what, ended_or_halted))
        .await
        .is_err()
    {
        let what = format!("not within {LIMIT:?}: {what}");
        report(&what, &case, &lock(&log.seen), &status, None)
    }
    let mut released = false;
    if !run.is_finished() && !terminate.is_set() {
        // A spin-halt ignores the parent's stop: only a terminate request
        // ends it.
        let_others_run(&rt).await;
        if run.is_finished() {
            let what = "the run of a spin-halt ended without a terminate request";
            report(what, &case, &lock(&log.seen), &status, None)
        }
        terminate.set();
        released = true;
    }
    let outcome = match rt.timeout(LIMIT, run).await {
        Ok(ended) => ended.expect("the supervisor's run panicked"),
        Err(_) => {
            let what = format!("the run did not end within {LIMIT:?} of the parent's stop");
            report(&what, &case, &lock(&log.seen), &status, None)
        }
    };
    let seen = std::mem::take(&mut *lock(&log.seen));
    let requests = Requests {
        terminate: terminate.is_set() && !released,
        released,
    };
    if let Err(violation) = check(&case, requests, &seen, &outcome, &status.snapshot()) {
        report(&violation, &case, &seen, &status, Some(&outcome));
    }
    coverage.count(&case, carried_out, &seen, &outcome);
}

/// The terminate requests the test sent.
#[derive(Clone, Copy, Debug)]
struct Requests {
    /// One was a step of the case.
    terminate: bool,
    /// One was sent after the parent's stop, to release a spin-halt.
    released: bool,
}

/// Waits until the supervisor is at rest: `moved`'s instance (a node and
/// attempt the test commanded) is no longer the ready one, and every node
/// is ready, completed or stopped. The events so far are checked as it
/// waits, so that a violation fails the case at once, and one that leads
/// to a hang is named.
async fn settle(
    rt: &SharedRuntime,
    case: &Case,
    log: &Log,
    status: &StatusBoard,
    moved: Option<(usize, u32)>,
    what: &str,
) {
    let mut violation = None;
    let at_rest = || {
        if let Err(found) = check_events(case, &lock(&log.seen)) {
            violation = Some(found);
            return true;
        }
        let board = status.snapshot();
        let gone = moved.is_none_or(|(node, attempt)| {
            board[node].state != NodeState::Ready || board[node].generation != attempt
        });
        gone && board.iter().all(|node| {
            matches!(
                node.state,
                NodeState::Ready | NodeState::Completed | NodeState::Stopped
            )
        })
    };
    let what = format!("the supervisor settles {what}");
    // Shorter than `eventually`'s own limit: the report below is the one.
    let settled = rt.timeout(LIMIT, eventually(rt, &what, at_rest)).await;
    if let Some(violation) = violation {
        report(&violation, case, &lock(&log.seen), status, None);
    }
    if settled.is_err() {
        let stuck = format!("not within {LIMIT:?}: {what}");
        report(&stuck, case, &lock(&log.seen), status, None);
    }
}

/// Fails the case: the violation, the case, the outcome if the run ended,
/// and every event with the status it led to.
fn report(
    violation: &str,
    case: &Case,
    seen: &[Seen],
    status: &StatusBoard,
    outcome: Option<&SupervisorOutcome>,
) -> ! {
    let outcome = outcome.map_or("none: the run has not ended".into(), ToString::to_string);
    panic!(
        "{violation}\ncase: {case:#?}\noutcome: {outcome}\nstatus now: {}\n\
         events, each with the status it leads to:\n{}",
        status.summary(),
        render(seen)
    );
}

// ---------------------------------------------------------------------------
// The checks

/// The case's graph, both ways, by node index.
struct Graph {
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    fn new(case: &Case) -> Graph {
        let dependencies: Vec<Vec<usize>> = case
            .nodes
            .iter()
            .map(|spec| spec.dependencies.clone())
            .collect();
        let mut dependents = vec![Vec::new(); dependencies.len()];
        for (node, on) in dependencies.iter().enumerate() {
            for &dependency in on {
                dependents[dependency].push(node);
            }
        }
        Graph {
            dependencies,
            dependents,
        }
    }

    /// `from` and what `edges` lead to from it, transitively, going on
    /// from `from` and from the nodes `through` holds for only.
    fn closure(edges: &[Vec<usize>], from: usize, through: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut found = vec![from];
        let mut next = 0;
        while let Some(&node) = found.get(next) {
            next += 1;
            if node != from && !through(node) {
                continue;
            }
            for &other in &edges[node] {
                if !found.contains(&other) {
                    found.push(other);
                }
            }
        }
        found
    }

    /// `from` and every node depending on it, transitively.
    fn dependents_of(&self, from: usize) -> Vec<usize> {
        Graph::closure(&self.dependents, from, |_| true)
    }

    /// A node depending on `node`, directly or not, that `board` shows up.
    fn dependent_up(&self, board: &[NodeStatus], node: usize) -> Option<usize> {
        let mut dependents = self.dependents_of(node).into_iter().skip(1);
        dependents.find(|&other| is_up(board[other].state))
    }

    /// `from` and every node it depends on, transitively.
    fn dependencies_of(&self, from: usize) -> Vec<usize> {
        Graph::closure(&self.dependencies, from, |_| true)
    }

    /// Whether a node may start on `node` as `board` shows it: ready, or
    /// completed with everything it stands for (its dependencies, through
    /// completed nodes) ready or completed.
    fn may_rely_on(&self, board: &[NodeStatus], node: usize) -> bool {
        match board[node].state {
            NodeState::Ready => true,
            NodeState::Completed => {
                let completed = |at: usize| board[at].state == NodeState::Completed;
                Graph::closure(&self.dependencies, node, completed)
                    .into_iter()
                    .all(|at| matches!(board[at].state, NodeState::Ready | NodeState::Completed))
            }
            _ => false,
        }
    }

    /// The nodes a verdict of `node` stops for good.
    fn covered_by(&self, node: usize, verdict: Verdict) -> Vec<usize> {
        match verdict {
            Verdict::Restart => Vec::new(),
            Verdict::Stop => self.dependents_of(node),
            Verdict::StopParents => {
                let mut covered: Vec<usize> = self
                    .dependencies_of(node)
                    .into_iter()
                    .flat_map(|ancestor| self.dependents_of(ancestor))
                    .collect();
                covered.sort_unstable();
                covered.dedup();
                covered
            }
            Verdict::Shutdown | Verdict::SpinHalt => (0..self.dependencies.len()).collect(),
        }
    }
}

fn is_up(state: NodeState) -> bool {
    matches!(
        state,
        NodeState::Starting | NodeState::Ready | NodeState::Stopping
    )
}

/// An outcome's lists, as the events tell them: the failures and errors
/// during a stop as "node: error", the nodes that overran their stop by
/// name, in the order they first did.
#[derive(Debug, Default)]
struct Entries {
    failures: Vec<String>,
    stop_errors: Vec<String>,
    overran: Vec<String>,
}

impl Entries {
    /// Adds what `event` puts in its supervisor's outcome, `last_error`
    /// being its node's last failure: a failure whose verdict was not acted
    /// on, or whose verdict (or escalation) was `Stop` or `StopParents`; an
    /// error during a stop; an overrun.
    fn note(&mut self, event: &SupervisorEvent, last_error: &str) {
        let node = &event.node;
        let for_good = |verdict: Verdict| matches!(verdict, Verdict::Stop | Verdict::StopParents);
        match &event.kind {
            EventKind::Verdict { verdict, acted, .. } if !*acted || for_good(*verdict) => {
                self.failures.push(format!("{node}: {last_error}"));
            }
            EventKind::RestartsExhausted { escalation, .. } if for_good(*escalation) => {
                self.failures.push(format!("{node}: {last_error}"));
            }
            EventKind::ErrorDuringStop { error, .. } => {
                self.stop_errors.push(format!("{node}: {error}"));
            }
            EventKind::StopTimedOut { .. } | EventKind::GivenUp { .. } => self.overrun(node),
            _ => {}
        }
    }

    /// Names `node` as overrunning its stop, once.
    fn overrun(&mut self, node: &str) {
        if !self.overran.iter().any(|named| named == node) {
            self.overran.push(node.to_string());
        }
    }

    /// Folds in a nested supervisor's entries as the outer run does: its
    /// overruns always, its failures and errors during a stop only if
    /// `errors` (else they go to the fatal hook).
    fn fold(&mut self, nested: Entries, errors: bool) {
        for node in &nested.overran {
            self.overrun(node);
        }
        if errors {
            self.failures.extend(nested.failures);
            self.stop_errors.extend(nested.stop_errors);
        }
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.stop_errors.is_empty() && self.overran.is_empty()
    }
}

/// What a nested node's supervisor has told of its current instance.
#[derive(Default)]
struct Nested {
    /// The inner node's last error.
    last_error: String,
    /// What the nested outcome holds so far, not yet folded in.
    entries: Entries,
    /// The budget gave the outer node up: its nested run was aborted,
    /// maybe just as it ended, so its outcome may be folded in or not.
    given_up: bool,
}

/// What the events of a run tell, for the checks of its end.
struct Told {
    /// Each node's failed attempt still waiting for its verdict.
    unjudged: Vec<Option<u32>>,
    /// What the outcome's lists hold.
    expected: Entries,
    /// What they may hold besides: the outcomes of nested nodes the budget
    /// gave up.
    maybe: Entries,
    /// A nested node whose supervisor's outcome, as its events tell it,
    /// was not folded in (yet), with what it holds.
    unfolded: Option<(usize, Entries)>,
    /// The first Shutdown or SpinHalt acted on (or escalated to), with
    /// its failure as "node: error".
    deciding: Option<(Verdict, String)>,
    /// Whether the parent's stop reached a node.
    parent_stops: bool,
    /// Whether a terminate request reached a node.
    terminate_stops: bool,
    /// Whether the shutdown budget gave a node up.
    given_up: bool,
}

/// Checks the invariants of the module docs over a finished run: its
/// events, each with the status it led to, its outcome and the status at
/// the end.
fn check(
    case: &Case,
    requests: Requests,
    seen: &[Seen],
    outcome: &SupervisorOutcome,
    end: &[NodeStatus],
) -> Result<(), String> {
    let Told {
        unjudged,
        expected,
        maybe,
        unfolded,
        deciding,
        parent_stops,
        terminate_stops,
        given_up,
    } = check_events(case, seen)?;

    // 5. Every failure got its verdict.
    if let Some(node) = unjudged.iter().position(Option::is_some) {
        return Err(format!(
            "invariant 5 (a verdict per failure): n{node}'s attempt {:?} failed and never \
             had a verdict",
            unjudged[node]
        ));
    }
    // 4. Every node done for good, and the run ended as the events say.
    if let Some(node) = end
        .iter()
        .find(|node| !matches!(node.state, NodeState::Stopped | NodeState::Completed))
    {
        return Err(format!(
            "invariant 4 (every node done at the end): {} is {}",
            node.name, node.state
        ));
    }
    let ended_right = match (&outcome.end, &deciding) {
        (SupervisorEnd::Shutdown { node, error }, Some((Verdict::Shutdown, deciding))) => {
            format!("{node}: {error}") == *deciding
        }
        (SupervisorEnd::SpinHaltReleased { node, error }, Some((Verdict::SpinHalt, deciding))) => {
            format!("{node}: {error}") == *deciding && (requests.terminate || requests.released)
        }
        (SupervisorEnd::ParentStopped, None) => !requests.terminate && !terminate_stops,
        (SupervisorEnd::Terminated, None) => requests.terminate && !parent_stops,
        (SupervisorEnd::Completed, None) => !parent_stops && !terminate_stops,
        _ => false,
    };
    if !ended_right || (requests.released && deciding.is_none()) {
        return Err(format!(
            "invariant 4 (how the run ends): it ended with {:?}, the first Shutdown or \
             SpinHalt acted on was {deciding:?}, {requests:?}, a parent stop reached a node: \
             {parent_stops}, a terminate request did: {terminate_stops}",
            outcome.end
        ));
    }
    // 6. The outcome's failures and errors, as the events tell them.
    if let Some((node, entries)) = unfolded {
        return Err(format!(
            "invariant 6 (nested outcomes folded in): n{node}'s nested supervisor told of \
             {entries:?}, which no event of n{node} folded in"
        ));
    }
    let lists = [
        (
            "failures",
            texts(&outcome.failures),
            &expected.failures,
            &maybe.failures,
        ),
        (
            "errors during a stop",
            texts(&outcome.shutdown_errors),
            &expected.stop_errors,
            &maybe.stop_errors,
        ),
        (
            "nodes that overran their stop",
            texts(&outcome.overran),
            &expected.overran,
            &maybe.overran,
        ),
    ];
    for (what, recorded, expected, maybe) in lists {
        if !as_expected(&recorded, expected, maybe) {
            return Err(format!(
                "invariant 6 (the outcome's {what}): the outcome has {recorded:?}, the \
                 events tell of {expected:?}, and maybe {maybe:?}"
            ));
        }
    }
    let clean = matches!(
        outcome.end,
        SupervisorEnd::Completed | SupervisorEnd::ParentStopped | SupervisorEnd::Terminated
    ) && outcome.failures.is_empty()
        && outcome.shutdown_errors.is_empty()
        && outcome.overran.is_empty()
        && !outcome.budget_spent;
    if outcome.is_clean() != clean {
        return Err(format!(
            "invariant 6: the run is clean: {}, but its end, failures, errors during a stop \
             and overruns say {clean}",
            outcome.is_clean()
        ));
    }
    if given_up != outcome.budget_spent {
        return Err(format!(
            "invariant 6 (the shutdown budget): the budget is {:?}, spent: {}, a node given \
             up: {given_up}",
            case.budget, outcome.budget_spent
        ));
    }
    Ok(())
}

/// Each of `items` as it displays.
fn texts<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Whether `recorded` is `expected`, in order, once the entries it has
/// besides that `maybe` allows are left out.
fn as_expected(recorded: &[String], expected: &[String], maybe: &[String]) -> bool {
    let kept = recorded
        .iter()
        .filter(|entry| expected.contains(entry) || !maybe.contains(entry));
    kept.eq(expected.iter())
}

/// Checks the invariants that hold at every event (1, 2, 3, 5 and 7 to
/// 13), and derives what the end must show.
fn check_events(case: &Case, seen: &[Seen]) -> Result<Told, String> {
    let graph = Graph::new(case);
    let count = case.nodes.len();
    // Nodes a stop for good covers, other than the parent's.
    let mut covered = vec![false; count];
    // Each node's failed attempt still waiting for its verdict.
    let mut unjudged: Vec<Option<u32>> = vec![None; count];
    // Each node's last error, which a failure for good records.
    let mut last_error = vec![String::new(); count];
    let mut expected = Entries::default();
    let mut maybe = Entries::default();
    let mut nested: Vec<Nested> = (0..count).map(|_| Nested::default()).collect();
    let mut deciding: Option<(Verdict, String)> = None;
    let mut parent_stops = false;
    let mut terminate_stops = false;
    let mut given_up = false;
    // Nodes restarting with their dependents, until they are ready again.
    let mut restarting = vec![false; count];
    // The restarts each node's budget granted so far.
    let mut restarts = vec![0u32; count];
    // Permanent nodes that completed under a stop for good: done for good.
    let mut finished = vec![false; count];
    // Nested nodes whose current instance's inner node shut it down.
    let mut inner_shut_down = vec![false; count];

    for (at, it) in seen.iter().enumerate() {
        let (event, board) = (&it.event, &it.board);
        let event_at = format!("at event {at} ({})", describe(event));
        if let Some(outer) = it.inner_of {
            check_inner(case, outer, event, &event_at)?;
            let nested = &mut nested[outer];
            if let EventKind::Failed { error, .. } = &event.kind {
                nested.last_error = error.to_string();
            }
            if let EventKind::Verdict {
                verdict: Verdict::Shutdown,
                acted: true,
                ..
            } = event.kind
            {
                inner_shut_down[outer] = true;
            }
            nested.entries.note(event, &nested.last_error);
            continue;
        }
        let node = index_of(&event.node);
        let state = |at: usize| board[at].state;

        // 7. The board shows what the event tells.
        if let Some(states) = shown_with(&event.kind) {
            if !states.contains(&state(node)) {
                return Err(format!(
                    "invariant 7 (the status shows the event's state): {event_at}, \
                     the board shows {} {}",
                    event.node,
                    state(node)
                ));
            }
        }
        // 3. Nothing up depends directly on a node stopped for good.
        for up in (0..count).filter(|&up| is_up(state(up))) {
            if let Some(&on) = graph.dependencies[up]
                .iter()
                .find(|&&on| state(on) == NodeState::Stopped)
            {
                return Err(format!(
                    "invariant 3 (no node up on a stopped one): {event_at}, n{up} is {} \
                     but depends on n{on}, which is stopped",
                    state(up)
                ));
            }
        }

        match &event.kind {
            // 1. Started only on what may be relied on.
            EventKind::Starting { .. } => {
                // 9. Nothing starts once the supervisor goes down.
                if deciding.is_some() || parent_stops || terminate_stops {
                    return Err(format!(
                        "invariant 9 (nothing starts in a global stop): {event_at}, after \
                         {deciding:?}, a parent stop: {parent_stops}, a terminate request: \
                         {terminate_stops}"
                    ));
                }
                if let Some(&on) = graph.dependencies[node]
                    .iter()
                    .find(|&&on| !graph.may_rely_on(board, on))
                {
                    return Err(format!(
                        "invariant 1 (start gating): {event_at}, its dependency n{on} is {} \
                         (or stands for one that is not ready)",
                        state(on)
                    ));
                }
                inner_shut_down[node] = false;
                // 8. Its dependents are down before it starts again.
                if restarting[node] {
                    if let Some(up) = graph.dependent_up(board, node) {
                        return Err(format!(
                            "invariant 8 (restart with dependents): {event_at}, but n{up}, \
                             which depends on it, is {}",
                            state(up)
                        ));
                    }
                }
                // Not while something it depends on restarts with its
                // dependents.
                if let Some(restarting) = (0..count).find(|&other| {
                    restarting[other] && other != node && graph.dependents_of(other).contains(&node)
                }) {
                    return Err(format!(
                        "invariant 8 (restart with dependents): {event_at}, it depends on \
                         n{restarting}, which restarts with its dependents and is not ready again"
                    ));
                }
            }
            EventKind::Restarting { delay, .. } => {
                // 12. A restart waits what the node's policy says.
                if *delay != case.nodes[node].restart_delay() {
                    return Err(format!(
                        "invariant 12 (restart delays): {event_at}, but the node's policy \
                         waits {:?}",
                        case.nodes[node].restart_delay()
                    ));
                }
                restarting[node] = case.nodes[node].restart_dependents;
                // 13. Within the node's budget, and never after it is done
                // for good.
                if restarts[node] >= case.nodes[node].restarts || finished[node] {
                    return Err(format!(
                        "invariant 13 (restart budgets): {event_at}, after {} restarts of \
                         {} allowed, done for good: {}",
                        restarts[node], case.nodes[node].restarts, finished[node]
                    ));
                }
                restarts[node] += 1;
            }
            EventKind::Ready { .. } | EventKind::Stopped { .. } => restarting[node] = false,
            // 2. Told to stop only once nothing depending on it is up.
            EventKind::Stopping { cause, .. } => {
                parent_stops |= *cause == StopReason::ParentStopped;
                terminate_stops |= *cause == StopReason::Terminated;
                if let Some(up) = graph.dependent_up(board, node) {
                    return Err(format!(
                        "invariant 2 (stop order): {event_at}, n{up}, which depends on it, \
                         is {}",
                        state(up)
                    ));
                }
            }
            EventKind::Failed { attempt, error } => {
                // 11. Only a late first instance overruns its start timeout.
                let late = case.nodes[node].late_start && *attempt == 1;
                if error.downcast_ref::<StartTimedOut>().is_some() && !late {
                    return Err(format!(
                        "invariant 11 (start timeouts): {event_at}, but the instance was \
                         ready at once"
                    ));
                }
                if let Some(before) = unjudged[node] {
                    return Err(format!(
                        "invariant 5 (a verdict per failure): {event_at}, attempt {before} \
                         failed before and had no verdict yet"
                    ));
                }
                unjudged[node] = Some(*attempt);
                last_error[node] = error.to_string();
            }
            EventKind::Verdict {
                attempt,
                verdict,
                acted,
            } => {
                // 5. One verdict per failure; acted on unless a stop covers
                // the node.
                if unjudged[node] != Some(*attempt) {
                    return Err(format!(
                        "invariant 5 (a verdict per failure): {event_at}, but the failure \
                         waiting for a verdict is {:?}",
                        unjudged[node]
                    ));
                }
                unjudged[node] = None;
                // 13. The node's handler decided.
                if *verdict != case.nodes[node].verdict {
                    return Err(format!(
                        "invariant 13 (the node's handler): {event_at}, but its handler \
                         decides {}",
                        case.nodes[node].verdict
                    ));
                }
                if *acted && covered[node] {
                    return Err(format!(
                        "invariant 5 (verdicts acted on): {event_at}, acted on although a \
                         stop for good covers the node"
                    ));
                }
                if !*acted && !covered[node] && !it.after_outside_stop {
                    return Err(format!(
                        "invariant 5 (verdicts acted on): {event_at}, not acted on, but no \
                         stop covers the node"
                    ));
                }
                if *acted {
                    for other in graph.covered_by(node, *verdict) {
                        covered[other] = true;
                    }
                    decide(&mut deciding, *verdict, &event.node, &last_error[node]);
                }
            }
            EventKind::RestartsExhausted { escalation, .. } => {
                // 13. The node's escalation, once its budget is spent.
                let spec = &case.nodes[node];
                if *escalation != spec.escalation
                    || restarts[node] != spec.restarts
                    || finished[node]
                {
                    return Err(format!(
                        "invariant 13 (restart budgets): {event_at}, after {} restarts of {} \
                         allowed, escalating to {}, done for good: {}",
                        restarts[node], spec.restarts, spec.escalation, finished[node]
                    ));
                }
                for other in graph.covered_by(node, *escalation) {
                    covered[other] = true;
                }
                decide(&mut deciding, *escalation, &event.node, &last_error[node]);
            }
            EventKind::Completed { .. } => {
                // 13. A nested run its inner node shut down failed.
                if inner_shut_down[node] {
                    return Err(format!(
                        "invariant 13 (nested shutdowns): {event_at}, but its inner node's \
                         Shutdown was acted on: the nested run must fail it"
                    ));
                }
                // 13. A permanent node under a stop for good stays done.
                let going_down = covered[node] || deciding.is_some() || parent_stops;
                if case.nodes[node].permanent && (going_down || terminate_stops) {
                    finished[node] = true;
                    if state(node) != NodeState::Completed {
                        return Err(format!(
                            "invariant 13 (permanent nodes): {event_at}, under a stop for \
                             good, but the board shows {}",
                            state(node)
                        ));
                    }
                }
                if state(node) == NodeState::Backoff {
                    // A permanent node restarting: a spent budget stops it
                    // with the supervisor's own error.
                    last_error[node] = format!(
                        "node {} exited and is permanent, but its restart budget is spent",
                        event.node
                    );
                } else if case.nodes[node].required {
                    for other in graph.dependents_of(node).into_iter().skip(1) {
                        covered[other] = true;
                    }
                }
            }
            // 10. Only a node that hangs when told to stop overruns its
            // stop timeout (a nested one's is the inner node's), and only
            // a shutdown budget gives nodes up.
            EventKind::StopTimedOut { .. } | EventKind::GivenUp { .. } => {
                let timed_out = matches!(event.kind, EventKind::StopTimedOut { .. });
                let spec = &case.nodes[node];
                if timed_out && (spec.on_stop != OnStop::Hang || spec.nested.is_some()) {
                    return Err(format!(
                        "invariant 10 (stop timeouts): {event_at}, but the node stops at \
                         once, or is nested (its inner node times out first)"
                    ));
                }
                if !timed_out && case.budget.is_none() {
                    return Err(format!(
                        "invariant 10 (the shutdown budget): {event_at}, but there is no budget"
                    ));
                }
                given_up |= !timed_out;
            }
            _ => {}
        }
        // 13. The board counts the restarts the events tell.
        if board[node].restarts != restarts[node] {
            return Err(format!(
                "invariant 13 (the board's restarts): {event_at}, the board shows {} \
                 restarts, the events tell of {}",
                board[node].restarts, restarts[node]
            ));
        }
        // 6. What the event adds to the outcome, and what a nested node's
        // supervisor adds with it.
        expected.note(event, &last_error[node]);
        if case.nodes[node].nested.is_some() {
            fold_nested(&event.kind, &mut nested[node], &mut expected, &mut maybe);
        }
    }

    // What the nested runs the budget gave up told after the outer event.
    let mut unfolded = None;
    for (node, nested) in nested.into_iter().enumerate() {
        if nested.given_up {
            maybe.fold(nested.entries, true);
        } else if unfolded.is_none() && !nested.entries.is_empty() {
            unfolded = Some((node, nested.entries));
        }
    }
    Ok(Told {
        unjudged,
        expected,
        maybe,
        unfolded,
        deciding,
        parent_stops,
        terminate_stops,
        given_up,
    })
}

/// Checks invariant 10 at an event of node `n<outer>`'s nested supervisor:
/// only an inner node that hangs when told to stop overruns its stop
/// timeout, and the nested supervisor, without a budget, gives none up.
fn check_inner(case: &Case, outer: usize, event: &SupervisorEvent, at: &str) -> Result<(), String> {
    match event.kind {
        EventKind::StopTimedOut { .. } if case.nodes[outer].on_stop != OnStop::Hang => Err(
            format!("invariant 10 (stop timeouts): {at}, but the inner node stops at once"),
        ),
        EventKind::GivenUp { .. } => Err(format!(
            "invariant 10 (the shutdown budget): {at}, but a nested supervisor has no budget"
        )),
        _ => Ok(()),
    }
}

/// Folds a nested node's supervisor's outcome in where the outer run does
/// (`fold_in_nested`), as the node's event `kind` shows: before its
/// `Completed`, `Waiting` or `Stopped` event (its instance done), or only
/// its overruns, before its `Verdict` (its instance failed: its errors go
/// to the fatal hook). Once the budget gave the node up, its nested run
/// was aborted, maybe as it ended: what it told may be folded in or not.
fn fold_nested(kind: &EventKind, nested: &mut Nested, expected: &mut Entries, maybe: &mut Entries) {
    let errors = match kind {
        EventKind::Completed { .. } | EventKind::Waiting { .. } | EventKind::Stopped { .. } => true,
        EventKind::Verdict { .. } => false,
        EventKind::GivenUp { .. } => {
            nested.given_up = true;
            true
        }
        _ => return,
    };
    let entries = std::mem::take(&mut nested.entries);
    if nested.given_up {
        maybe.fold(entries, true);
    } else {
        expected.fold(entries, errors);
    }
}

/// Notes a verdict acted on (or escalated to) as the run's deciding one if
/// it is the first Shutdown or SpinHalt.
fn decide(deciding: &mut Option<(Verdict, String)>, verdict: Verdict, node: &str, error: &str) {
    if matches!(verdict, Verdict::Shutdown | Verdict::SpinHalt) && deciding.is_none() {
        *deciding = Some((verdict, format!("{node}: {error}")));
    }
}
