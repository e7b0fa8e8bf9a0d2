//! The supervisor on every executor.
//!
//! Covered:
//! - Building: a duplicate name, an unknown dependency, a cycle and a
//!   self-dependency are refused with the exact culprit, the same way every
//!   time; repeated dependencies are harmless; an empty supervisor is valid
//!   and its run completes at once.
//! - Verdicts on the graph `A -> B -> C`, `A -> D`, `E` (B depends on A, C
//!   on B, D on A): Restart, Stop, StopParents, Shutdown and SpinHalt on B
//!   and StopParents on C, each checked by which nodes end up stopped,
//!   which keep running and how many instances each had; a restart after a
//!   backoff.
//! - Start gating: a child's factory is not called before its parent is
//!   ready; independent nodes start concurrently (both built before
//!   either is ready); peers start in declaration order, not by name.
//! - Stop order: reverse topological, independent branches concurrently; a
//!   terminate request stops in order too.
//! - Shutdown returns only once every node is done; SpinHalt ignores the
//!   parent's stop and ends on a terminate request, one that comes while
//!   nodes are still stopping included, but only once they are done.
//! - Errors reported while being stopped (after a parent stop, a Shutdown,
//!   during a SpinHalt): recorded in the outcome, never handled, never
//!   blocking; each repeated 200 times.
//! - Restart with dependents, a spent restart budget and its escalation, a
//!   hung node aborted at its stop timeout (and given up if the abort does
//!   not end it either), a factory error, a start
//!   timeout, a nested supervisor, clean completion with and without
//!   `required_while_running`, a permanent node, and one exiting at once
//!   until its restart budget is spent (escalated to Stop, its failure in
//!   the outcome).
//! - A node that failed on its own and ignores the stop that follows is
//!   aborted at its stop timeout, named in the outcome, and its handler
//!   then gets its original error.
//! - The exact event sequence of a restart followed by a parent stop, and
//!   of a failure whose verdict comes once the parent's stop covers the
//!   node (recorded, not acted on); the same under a dependency's Stop
//!   verdict while the rest keeps running (both failures in the outcome,
//!   in order); a subscriber reading the status board finds it showing
//!   the state every event tells of.
//! - The shutdown budget: a node that ignores its stop, with no stop
//!   timeout of its own, is aborted when the budget runs out and named;
//!   during a spin-halt too, which then still waits for its terminate
//!   request.
//! - A factory failing at once under an unlimited immediate policy does not
//!   keep the supervisor from its parent's stop; a supervisor started as a
//!   component can be aborted, and takes its nodes down with it.

use std::future::{pending, poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use lifecycle::EventKind;
use lifecycle::{
    wait_signal_or_stop, BuildError, Component, ComponentManager, Failure, FatalError, JoinHandle,
    Latch, Node, NodeFailed, RestartPolicy, Runtime, RuntimeExt, SharedRuntime, Signal,
    SignalOrStop, StartTimedOut, StatusBoard, StopSource, Supervisor, SupervisorBuilder,
    SupervisorEnd, SupervisorEvent, SupervisorOutcome, Verdict,
};
use lifecycle_conformance::{
    conformance, describe, describing, eventually, let_others_run, shown_with, Counter, Events,
    ManualComponent,
};

conformance!(
    shutdown_budget_aborts_what_is_not_done,
    nodes_given_up_by_the_budget_are_told_why,
    failed_node_waits_for_a_dependent_the_budget_gives_up,
    node_failing_in_a_cascade_is_stopped_after_its_dependents,
    node_in_backoff_is_stopped_after_its_dependents,
    dependent_stopped_for_a_restart_waits_for_it,
    failure_given_up_by_the_shutdown_budget_stays_in_the_outcome,
    error_after_the_budget_gave_a_node_up_goes_to_the_hook,
    error_after_a_node_completed_goes_to_the_hook,
    factory_failing_at_once_does_not_spin_the_supervisor,
    aborting_a_supervisor_started_as_a_component_ends_it,
    error_after_the_run_was_aborted_goes_to_the_hook,
    duplicate_name_is_refused,
    unknown_dependency_is_refused,
    cycle_is_refused_with_its_nodes,
    self_dependency_is_a_cycle_of_one,
    repeated_dependencies_are_harmless,
    empty_supervisor_completes_at_once,
    restart_on_b_restarts_only_b,
    restart_after_a_backoff,
    stop_on_b_stops_b_and_its_dependents,
    stop_parents_on_b_stops_its_whole_tree,
    stop_parents_on_c_stops_its_whole_tree,
    shutdown_on_b_stops_everything_and_returns_the_error,
    spin_halt_on_b_stops_everything_until_terminate,
    child_starts_only_once_its_parent_is_ready,
    stop_order_is_reverse_topological,
    independent_branches_stop_concurrently,
    terminate_request_stops_in_order,
    shutdown_returns_once_every_node_is_done,
    spin_halt_ignores_the_parent_stop,
    error_while_stopping_after_a_parent_stop,
    error_while_stopping_after_a_shutdown,
    error_while_stopping_during_a_spin_halt,
    restart_with_dependents,
    spent_budget_escalates_to_the_chosen_verdict,
    spent_budget_shuts_down_by_default,
    hung_node_is_aborted_at_its_stop_timeout,
    an_instance_its_abort_does_not_end_is_given_up,
    stop_timeouts_are_each_nodes_own,
    factory_error_goes_to_the_handler,
    start_timeout_fails_the_node,
    error_while_stopping_after_a_start_timeout_goes_to_the_hook,
    nested_supervisor,
    nested_outcome_is_part_of_the_outer_one,
    clean_completion_keeps_dependents_running,
    completion_of_a_required_node_stops_its_dependents,
    permanent_node_is_restarted_after_a_clean_exit,
    restart_with_dependents_waits_for_the_node_to_be_ready,
    completed_node_stands_for_its_dependencies,
    permanent_node_exiting_while_waiting_to_restart_comes_back,
    restart_then_stop_event_sequence,
    verdict_during_a_cascade_is_recorded_not_acted_on,
    status_shows_what_each_event_tells,
    verdict_during_a_stop_cascade_is_recorded_while_running,
    independent_nodes_start_concurrently,
    peers_start_in_declaration_order,
    terminate_during_a_spin_halt_waits_for_the_stop,
    node_failing_on_its_own_is_aborted_at_its_stop_timeout,
    shutdown_budget_runs_out_during_a_spin_halt,
    spin_halt_within_its_budget_leaves_it_unspent,
    permanent_node_exiting_at_once_spends_its_budget,
);

/// Short enough to keep the suite fast, long enough to be a real wait.
const SHORT: Duration = Duration::from_millis(5);

/// How many times the racy error-while-stopping scenarios repeat.
const REPEATS: usize = 200;

/// What a probe's worker does once told to stop.
#[derive(Clone, Copy, PartialEq)]
enum OnStop {
    /// Logs "X stopped" and returns `Ok`.
    Return,
    /// Logs "X stopped" and returns an error.
    Fail,
    /// Logs "X stopped", waits a little, logs "X returned" and returns `Ok`.
    Linger,
    /// Logs "X stopped" and never returns (until aborted).
    Hang,
}

/// One node's instances, driven by the scenario: each instance is a
/// one-worker manager that becomes ready once the gate is open, then serves
/// until told to stop, or until the scenario makes it fail or finish.
#[derive(Clone)]
struct Probe {
    name: &'static str,
    log: Events,
    built: Counter,
    /// Open (set) when the instances built from now on become ready.
    gate: Arc<Mutex<Latch>>,
    on_stop: OnStop,
    /// How every instance ends right after calling ready, if it does.
    at_once: Option<Woken>,
    /// The current instance's triggers.
    fail: Arc<Mutex<Latch>>,
    finish: Arc<Mutex<Latch>>,
}

#[derive(Clone, Copy)]
enum Woken {
    Stopped,
    Failed,
    Finished,
}

impl Probe {
    /// A probe that is ready at once and returns when told to stop.
    fn new(name: &'static str, log: &Events) -> Probe {
        let gate = Latch::new();
        gate.set();
        Probe {
            name,
            log: log.clone(),
            built: Counter::default(),
            gate: Arc::new(Mutex::new(gate)),
            on_stop: OnStop::Return,
            at_once: None,
            fail: Arc::default(),
            finish: Arc::default(),
        }
    }

    /// Ready only once [`open`](Probe::open) is called.
    fn gated(self) -> Probe {
        self.close();
        self
    }

    /// Instances built from now on are ready only once
    /// [`open`](Probe::open) is called (again).
    fn close(&self) {
        *self.gate.lock().unwrap() = Latch::new();
    }

    fn on_stop(mut self, on_stop: OnStop) -> Probe {
        self.on_stop = on_stop;
        self
    }

    /// Every instance fails right after calling ready.
    fn failing_at_once(mut self) -> Probe {
        self.at_once = Some(Woken::Failed);
        self
    }

    /// Every instance returns `Ok` right after calling ready.
    fn finishing_at_once(mut self) -> Probe {
        self.at_once = Some(Woken::Finished);
        self
    }

    fn open(&self) {
        self.gate.lock().unwrap().set();
    }

    /// Makes the current instance fail with "X failed N".
    fn fail(&self) {
        self.fail.lock().unwrap().set();
    }

    /// Makes the current instance return `Ok` on its own.
    fn finish(&self) {
        self.finish.lock().unwrap().set();
    }

    fn built(&self) -> u32 {
        self.built.get()
    }

    /// A node of this probe restarting at once when told to restart.
    fn node(&self) -> Node {
        Node::new(self.name, self.factory()).policy(RestartPolicy::immediate())
    }

    /// As [`node`](Probe::node), with a factory whose first call fails
    /// with "no config" (the probe builds nothing then).
    fn node_without_config_at_first(&self) -> Node {
        let calls = Counter::default();
        let mut build = self.factory();
        let factory = move || {
            if calls.next() == 1 {
                Err(FatalError::msg("no config"))
            } else {
                build()
            }
        };
        Node::new(self.name, factory).policy(RestartPolicy::immediate())
    }

    fn factory(&self) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
        let probe = self.clone();
        move || Ok(probe.build())
    }

    fn build(&self) -> ComponentManager {
        let instance = self.built.next();
        let (fail, finish) = (Latch::new(), Latch::new());
        let gate = self.gate.lock().unwrap().clone();
        *self.fail.lock().unwrap() = fail.clone();
        *self.finish.lock().unwrap() = finish.clone();
        let probe = self.clone();
        ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let (probe, fail, finish) = (probe.clone(), fail.clone(), finish.clone());
                let gate = gate.clone();
                async move {
                    let name = probe.name;
                    let woken = if let Some(woken) = probe.at_once {
                        ready.ready();
                        woken
                    } else {
                        let mut gate = pin!(gate.wait());
                        let mut stopped = pin!(ctx.stopped());
                        let open = poll_fn(|cx| {
                            if stopped.as_mut().poll(cx).is_ready() {
                                Poll::Ready(false)
                            } else if gate.as_mut().poll(cx).is_ready() {
                                Poll::Ready(true)
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
                        if open {
                            ready.ready();
                            let mut fail = pin!(fail.wait());
                            let mut finish = pin!(finish.wait());
                            poll_fn(|cx| {
                                if fail.as_mut().poll(cx).is_ready() {
                                    Poll::Ready(Woken::Failed)
                                } else if finish.as_mut().poll(cx).is_ready() {
                                    Poll::Ready(Woken::Finished)
                                } else if stopped.as_mut().poll(cx).is_ready() {
                                    Poll::Ready(Woken::Stopped)
                                } else {
                                    Poll::Pending
                                }
                            })
                            .await
                        } else {
                            Woken::Stopped
                        }
                    };
                    match woken {
                        Woken::Failed => Err(FatalError::msg(format!("{name} failed {instance}"))),
                        Woken::Finished => Ok(()),
                        Woken::Stopped => {
                            probe.log.push(format!("{name} stopped"));
                            match probe.on_stop {
                                OnStop::Return => Ok(()),
                                OnStop::Fail => {
                                    Err(FatalError::msg(format!("{name} failed while stopping")))
                                }
                                OnStop::Linger => {
                                    ctx.runtime().sleep(SHORT).await;
                                    probe.log.push(format!("{name} returned"));
                                    Ok(())
                                }
                                OnStop::Hang => pending().await,
                            }
                        }
                    }
                }
            })
            .build()
    }
}

/// A supervisor's run in a task of its own, with what a scenario watches.
struct Running {
    stop: StopSource,
    status: StatusBoard,
    ready: Signal,
    run: JoinHandle<SupervisorOutcome>,
}

fn launch(rt: &SharedRuntime, supervisor: Supervisor) -> Running {
    let stop = StopSource::new();
    let status = supervisor.status();
    let ready = Component::ready(&supervisor);
    let run = rt.spawn(supervisor.run(rt.clone(), stop.token()));
    Running {
        stop,
        status,
        ready,
        run,
    }
}

/// Builds the supervisor, launches its run and waits until every node is
/// ready.
async fn launch_ready(rt: &SharedRuntime, builder: SupervisorBuilder) -> Running {
    let running = launch(rt, builder.build().unwrap());
    running.ready.wait().await;
    running
}

impl Running {
    /// The outcome of a spin-halt after `node` failed with `error`: the run
    /// goes on until `terminate` is set, then ends, released by it.
    async fn released_by(self, terminate: &Latch, node: &str, error: &str) -> SupervisorOutcome {
        assert!(
            !self.run.is_finished(),
            "a spin-halt waits for a terminate request"
        );
        terminate.set();
        let outcome = self.outcome().await;
        assert_released_by(&outcome, node, error);
        outcome
    }

    /// Waits until the status summary is `expected`, then checks that it
    /// stays so while everything else gets a chance to run.
    async fn settles_to(&self, rt: &SharedRuntime, expected: &str) {
        eventually(rt, &format!("status becomes {expected}"), || {
            self.status.summary() == expected
        })
        .await;
        let_others_run(rt).await;
        assert_eq!(self.status.summary(), expected);
    }

    async fn outcome(self) -> SupervisorOutcome {
        self.run.await.expect("the supervisor's run panicked")
    }

    /// Waits for the run to end on its own and returns the outcome, which
    /// must be a completion (every node done for good).
    async fn completes(self) -> SupervisorOutcome {
        let outcome = self.outcome().await;
        assert!(
            matches!(outcome.end, SupervisorEnd::Completed),
            "got {outcome:?}"
        );
        outcome
    }

    /// Stops the parent and returns the outcome, which must be a parent
    /// stop.
    async fn stop_parent(self) -> SupervisorOutcome {
        self.stop.stop();
        let outcome = self.outcome().await;
        assert!(
            matches!(outcome.end, SupervisorEnd::ParentStopped),
            "got {outcome:?}"
        );
        outcome
    }

    /// Stops the parent and returns the outcome, in which the shutdown
    /// budget must have run out.
    async fn stop_spending_the_budget(self) -> SupervisorOutcome {
        self.stop.stop();
        let outcome = self.outcome().await;
        assert!(outcome.budget_spent, "got {outcome:?}");
        outcome
    }

    /// Stops the parent and returns the outcome, which must be a clean
    /// parent stop.
    async fn stop_cleanly(self) -> SupervisorOutcome {
        let outcome = self.stop_parent().await;
        assert!(outcome.is_clean(), "got {outcome:?}");
        outcome
    }

    /// Stops the parent and returns the outcome, which must be a parent
    /// stop after `failures` (each "node: error") left nodes stopped for
    /// good, so not a clean one.
    async fn stop_after_failures(self, failures: &[&str]) -> SupervisorOutcome {
        let outcome = self.stop_parent().await;
        assert_eq!(failed(&outcome), failures);
        assert!(!outcome.is_clean(), "got {outcome:?}");
        outcome
    }

    /// Stops the parent and returns the outcome, which must be a parent
    /// stop that took at least `at_least` (on the runtime's clock).
    async fn stop_taking(self, rt: &SharedRuntime, at_least: Duration) -> SupervisorOutcome {
        let stopped_at = rt.now();
        let outcome = self.stop_parent().await;
        assert!(rt.now().saturating_duration_since(stopped_at) >= at_least);
        outcome
    }
}

/// Checks that the run ended with a Shutdown verdict on `node`, which
/// failed with `error`.
fn assert_shut_down_by(outcome: &SupervisorOutcome, node: &str, error: &str) {
    match &outcome.end {
        SupervisorEnd::Shutdown {
            node: failing,
            error: failed,
        } => {
            assert_eq!(&**failing, node);
            assert_eq!(failed.to_string(), error);
        }
        other => panic!("expected a shutdown by {node}, got {other:?}"),
    }
}

/// The failures an outcome records, each as "node: error", in order.
fn failed(outcome: &SupervisorOutcome) -> Vec<String> {
    outcome.failures.iter().map(ToString::to_string).collect()
}

/// The nodes an outcome names as having overrun their stop, in order.
fn overran(outcome: &SupervisorOutcome) -> Vec<String> {
    outcome.overran.iter().map(ToString::to_string).collect()
}

/// A handler that records "node attempt error" and returns `verdict`.
fn recording(
    handled: &Events,
    name: &'static str,
    verdict: Verdict,
) -> impl FnMut(&Failure) -> Verdict + Send + 'static {
    let handled = handled.clone();
    move |failure: &Failure| {
        handled.push(format!("{name} {} {}", failure.attempt, failure.error));
        verdict
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

fn refused(builder: SupervisorBuilder) -> BuildError {
    match builder.build() {
        Ok(_) => panic!("the graph was accepted"),
        Err(error) => error,
    }
}

/// A node that is never run.
fn idle(name: &str) -> Node {
    Node::new(name, || {
        Ok::<_, FatalError>(ComponentManager::builder().build())
    })
}

async fn duplicate_name_is_refused(_rt: SharedRuntime) {
    let build = || {
        Supervisor::builder()
            .node(idle("a"))
            .node(idle("b"))
            .node(idle("a"))
            .node(idle("b"))
    };
    assert_eq!(refused(build()), BuildError::DuplicateName("a".to_string()));
    assert_eq!(refused(build()), refused(build()), "deterministic");
}

async fn unknown_dependency_is_refused(_rt: SharedRuntime) {
    let build = || {
        Supervisor::builder()
            .node(idle("a"))
            .node(idle("b").depends_on(["a", "nowhere"]))
            .node(idle("c").depends_on(["elsewhere"]))
    };
    assert_eq!(
        refused(build()),
        BuildError::UnknownDependency {
            node: "b".to_string(),
            dependency: "nowhere".to_string(),
        }
    );
    assert_eq!(refused(build()), refused(build()), "deterministic");
}

async fn cycle_is_refused_with_its_nodes(_rt: SharedRuntime) {
    // x -> a -> b -> c -> a: the cycle is a, b, c, not the path into it.
    let build = || {
        Supervisor::builder()
            .node(idle("free"))
            .node(idle("x").depends_on(["a"]))
            .node(idle("a").depends_on(["b"]))
            .node(idle("b").depends_on(["c"]))
            .node(idle("c").depends_on(["a"]))
    };
    let error = refused(build());
    assert_eq!(error, BuildError::Cycle(names(&["a", "b", "c"])));
    assert_eq!(
        error.to_string(),
        r#"dependency cycle: "a" -> "b" -> "c" -> "a""#
    );
    assert_eq!(refused(build()), error, "deterministic");
}

async fn self_dependency_is_a_cycle_of_one(_rt: SharedRuntime) {
    let build = || {
        Supervisor::builder()
            .node(idle("a"))
            .node(idle("b").depends_on(["a", "b"]))
    };
    assert_eq!(refused(build()), BuildError::Cycle(names(&["b"])));
    assert_eq!(refused(build()), refused(build()), "deterministic");
}

async fn repeated_dependencies_are_harmless(rt: SharedRuntime) {
    let log = Events::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let builder = Supervisor::builder()
        .node(a.node())
        .node(b.node().depends_on(["a", "a"]).depends_on(["a"]));
    let running = launch_ready(&rt, builder).await;
    assert_eq!(running.status.summary(), "a=ready b=ready");
    running.stop_cleanly().await;
    assert_eq!(log.snapshot(), ["b stopped", "a stopped"]);
    assert_eq!((a.built(), b.built()), (1, 1));
}

async fn empty_supervisor_completes_at_once(rt: SharedRuntime) {
    let supervisor = Supervisor::builder().build().unwrap();
    let ready = Component::ready(&supervisor);
    let outcome = supervisor.run(rt.clone(), StopSource::new().token()).await;
    assert!(
        matches!(outcome.end, SupervisorEnd::Completed),
        "got {outcome:?}"
    );
    assert!(outcome.is_clean());
    assert!(outcome.shutdown_errors.is_empty() && outcome.overran.is_empty());
    // Every one of its (no) nodes is ready: like a manager with no workers.
    assert!(ready.is_set(), "an empty supervisor is ready");
}

/// The graph A -> B -> C, A -> D plus E, one probe per node.
struct Abcde {
    log: Events,
    handled: Events,
    probes: Vec<Probe>,
}

impl Abcde {
    fn new() -> Abcde {
        let log = Events::new();
        let probes = ["A", "B", "C", "D", "E"]
            .into_iter()
            .map(|name| Probe::new(name, &log))
            .collect();
        Abcde {
            log,
            handled: Events::new(),
            probes,
        }
    }

    fn probe(&self, name: &str) -> &Probe {
        self.probes
            .iter()
            .find(|probe| probe.name == name)
            .expect("no such probe")
    }

    /// Every node records its failures and decides `verdict`.
    fn supervisor(&self, verdict: Verdict) -> SupervisorBuilder {
        self.supervisor_with(verdict, |node| node)
    }

    fn supervisor_with(&self, verdict: Verdict, tune: impl Fn(Node) -> Node) -> SupervisorBuilder {
        let node = |name: &'static str| {
            tune(
                self.probe(name)
                    .node()
                    .handler(recording(&self.handled, name, verdict)),
            )
        };
        Supervisor::builder()
            .node(node("A"))
            .node(node("B").depends_on(["A"]))
            .node(node("C").depends_on(["B"]))
            .node(node("D").depends_on(["A"]))
            .node(node("E"))
    }

    fn built(&self) -> Vec<u32> {
        self.probes.iter().map(Probe::built).collect()
    }
}

const ALL_READY: &str = "A=ready B=ready C=ready D=ready E=ready";

/// Starts the graph, waits until it is ready and fails `node` with its
/// verdict.
async fn fail_in_graph(rt: &SharedRuntime, graph: &Abcde, verdict: Verdict, node: &str) -> Running {
    let running = launch_ready(rt, graph.supervisor(verdict)).await;
    assert_eq!(running.status.summary(), ALL_READY);
    graph.probe(node).fail();
    running
}

async fn restart_on_b_restarts_only_b(rt: SharedRuntime) {
    let graph = Abcde::new();
    let running = fail_in_graph(&rt, &graph, Verdict::Restart, "B").await;
    running
        .settles_to(&rt, "A=ready B=ready(2) C=ready D=ready E=ready")
        .await;
    assert_eq!(graph.built(), [1, 2, 1, 1, 1]);
    assert_eq!(graph.handled.snapshot(), ["B 1 B failed 1"]);
    assert!(graph.log.is_empty(), "nothing was stopped: {:?}", graph.log);
    let status = running.status.snapshot();
    assert_eq!(status[1].restarts, 1);
    assert_eq!(
        status[1]
            .last_error
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("B failed 1")
    );
    running.stop_cleanly().await;
}

async fn restart_after_a_backoff(rt: SharedRuntime) {
    let graph = Abcde::new();
    let policy = RestartPolicy::immediate().backoff(SHORT, SHORT);
    let builder = graph.supervisor_with(Verdict::Restart, |node| node.policy(policy.clone()));
    let running = launch_ready(&rt, builder).await;
    let failed_at = rt.now();
    graph.probe("B").fail();
    running
        .settles_to(&rt, "A=ready B=ready(2) C=ready D=ready E=ready")
        .await;
    assert!(
        rt.now().saturating_duration_since(failed_at) >= SHORT,
        "restarted before the backoff"
    );
    assert_eq!(graph.built(), [1, 2, 1, 1, 1]);
    running.stop_cleanly().await;
}

async fn stop_on_b_stops_b_and_its_dependents(rt: SharedRuntime) {
    let graph = Abcde::new();
    let running = fail_in_graph(&rt, &graph, Verdict::Stop, "B").await;
    running
        .settles_to(&rt, "A=ready B=stopped C=stopped D=ready E=ready")
        .await;
    assert_eq!(graph.built(), [1, 1, 1, 1, 1]);
    assert_eq!(graph.log.snapshot(), ["C stopped"]);
    running.stop_after_failures(&["B: B failed 1"]).await;
    assert_eq!(graph.handled.snapshot(), ["B 1 B failed 1"]);
}

async fn stop_parents_on_b_stops_its_whole_tree(rt: SharedRuntime) {
    stop_parents_stops_the_whole_tree(rt, "B").await;
}

async fn stop_parents_on_c_stops_its_whole_tree(rt: SharedRuntime) {
    stop_parents_stops_the_whole_tree(rt, "C").await;
}

/// StopParents on `failing` (B or C): everything it hangs from, and what
/// hangs from those, stops; the independent E keeps running; A, the root,
/// stops last.
async fn stop_parents_stops_the_whole_tree(rt: SharedRuntime, failing: &str) {
    let graph = Abcde::new();
    let running = fail_in_graph(&rt, &graph, Verdict::StopParents, failing).await;
    running
        .settles_to(&rt, "A=stopped B=stopped C=stopped D=stopped E=ready")
        .await;
    assert_eq!(graph.built(), [1, 1, 1, 1, 1]);
    let stops = graph.log.snapshot();
    assert_eq!(stops.len(), 3, "{stops:?}");
    assert_eq!(stops[2], "A stopped");
    running
        .stop_after_failures(&[&format!("{failing}: {failing} failed 1")])
        .await;
    assert_eq!(
        graph.handled.snapshot(),
        [format!("{failing} 1 {failing} failed 1")]
    );
}

/// Checks that `log` lists each of `order`'s pairs in that order.
fn assert_before(log: &[String], pairs: &[(&str, &str)]) {
    let at = |entry: &str| {
        log.iter()
            .position(|logged| logged == entry)
            .unwrap_or_else(|| panic!("{entry:?} missing from {log:?}"))
    };
    for (first, second) in pairs {
        assert!(at(first) < at(second), "{first} after {second}: {log:?}");
    }
}

async fn shutdown_on_b_stops_everything_and_returns_the_error(rt: SharedRuntime) {
    let graph = Abcde::new();
    let running = fail_in_graph(&rt, &graph, Verdict::Shutdown, "B").await;
    let status = running.status.clone();
    let outcome = running.outcome().await;
    assert_shut_down_by(&outcome, "B", "B failed 1");
    assert_eq!(
        outcome.error().map(ToString::to_string).as_deref(),
        Some("B failed 1")
    );
    assert!(!outcome.is_clean());
    assert!(outcome.shutdown_errors.is_empty());
    assert_eq!(
        status.summary(),
        "A=stopped B=stopped C=stopped D=stopped E=stopped"
    );
    let stops = graph.log.snapshot();
    assert_eq!(stops.len(), 4, "{stops:?}");
    assert_before(
        &stops,
        &[("C stopped", "A stopped"), ("D stopped", "A stopped")],
    );
    assert_eq!(graph.built(), [1, 1, 1, 1, 1]);
    assert_eq!(graph.handled.snapshot(), ["B 1 B failed 1"]);
}

async fn spin_halt_on_b_stops_everything_until_terminate(rt: SharedRuntime) {
    let graph = Abcde::new();
    let terminate = Latch::new();
    let builder = graph
        .supervisor(Verdict::SpinHalt)
        .terminate_on(terminate.signal());
    let running = launch_ready(&rt, builder).await;
    graph.probe("B").fail();
    running
        .settles_to(
            &rt,
            "A=stopped B=stopped C=stopped D=stopped E=stopped spin-halt after B",
        )
        .await;
    assert_eq!(graph.built(), [1, 1, 1, 1, 1]);
    running.released_by(&terminate, "B", "B failed 1").await;
    assert_eq!(graph.handled.snapshot(), ["B 1 B failed 1"]);
}

async fn child_starts_only_once_its_parent_is_ready(rt: SharedRuntime) {
    let log = Events::new();
    let parent = Probe::new("parent", &log).gated();
    let child = Probe::new("child", &log);
    let supervisor = Supervisor::builder()
        .node(child.node().depends_on(["parent"]))
        .node(parent.node())
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    eventually(&rt, "the parent is built", || parent.built() == 1).await;
    // The parent becomes ready only after a delay.
    let_others_run(&rt).await;
    assert_eq!(
        child.built(),
        0,
        "the child was built before its parent was ready"
    );
    assert_eq!(running.status.summary(), "child=waiting parent=starting");
    parent.open();
    running.ready.wait().await;
    assert_eq!(child.built(), 1);
    running.stop_cleanly().await;
    assert_eq!(log.snapshot(), ["child stopped", "parent stopped"]);
}

async fn stop_order_is_reverse_topological(rt: SharedRuntime) {
    let graph = Abcde::new();
    let running = launch_ready(&rt, graph.supervisor(Verdict::Restart)).await;
    running.stop_cleanly().await;
    let stops = graph.log.snapshot();
    assert_eq!(stops.len(), 5, "{stops:?}");
    assert_before(
        &stops,
        &[
            ("C stopped", "B stopped"),
            ("B stopped", "A stopped"),
            ("D stopped", "A stopped"),
        ],
    );

    // A chain has exactly one stop order.
    let log = Events::new();
    let chain: Vec<Probe> = ["one", "two", "three", "four"]
        .into_iter()
        .map(|name| Probe::new(name, &log))
        .collect();
    let mut builder = Supervisor::builder();
    for pair in chain.windows(2).rev() {
        builder = builder.node(pair[1].node().depends_on([pair[0].name]));
    }
    let running = launch_ready(&rt, builder.node(chain[0].node())).await;
    running.stop_cleanly().await;
    assert_eq!(
        log.snapshot(),
        [
            "four stopped",
            "three stopped",
            "two stopped",
            "one stopped"
        ]
    );
}

/// A worker that, told to stop, holds until `other` was told to stop too.
fn holding(
    name: &'static str,
    log: &Events,
    told: &Latch,
    other: &Latch,
) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    let (log, told, other) = (log.clone(), told.clone(), other.clone());
    move || {
        let (log, told, other) = (log.clone(), told.clone(), other.clone());
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let (log, told, other) = (log.clone(), told.clone(), other.clone());
                async move {
                    ready.ready();
                    ctx.stopped().await;
                    log.push(format!("{name} told"));
                    told.set();
                    other.wait().await;
                    log.push(format!("{name} stopped"));
                    Ok(())
                }
            })
            .build())
    }
}

async fn independent_branches_stop_concurrently(rt: SharedRuntime) {
    let log = Events::new();
    let root = Probe::new("root", &log);
    let (x_told, y_told) = (Latch::new(), Latch::new());
    let builder = Supervisor::builder()
        .node(root.node())
        .node(Node::new("x", holding("x", &log, &x_told, &y_told)).depends_on(["root"]))
        .node(Node::new("y", holding("y", &log, &y_told, &x_told)).depends_on(["root"]));
    let running = launch_ready(&rt, builder).await;
    // If x and y were stopped one after the other, each would wait for
    // the other for ever.
    running.stop_cleanly().await;
    let stops = log.snapshot();
    assert_eq!(stops.len(), 5, "{stops:?}");
    let mut told = stops[..2].to_vec();
    told.sort();
    assert_eq!(told, ["x told", "y told"]);
    assert_eq!(stops[4], "root stopped");
}

async fn terminate_request_stops_in_order(rt: SharedRuntime) {
    let log = Events::new();
    let terminate = Latch::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let builder = Supervisor::builder()
        .node(a.node())
        .node(b.node().depends_on(["a"]))
        .terminate_on(terminate.signal());
    let running = launch_ready(&rt, builder).await;
    terminate.set();
    let outcome = running.outcome().await;
    assert!(
        matches!(outcome.end, SupervisorEnd::Terminated),
        "got {outcome:?}"
    );
    assert!(outcome.is_clean());
    assert_eq!(log.snapshot(), ["b stopped", "a stopped"]);
}

async fn shutdown_returns_once_every_node_is_done(rt: SharedRuntime) {
    let log = Events::new();
    let slow = Probe::new("slow", &log).on_stop(OnStop::Linger);
    let slower = Probe::new("slower", &log).on_stop(OnStop::Linger);
    let failing = Probe::new("failing", &log);
    let builder = Supervisor::builder()
        .node(slow.node())
        .node(slower.node().depends_on(["slow"]))
        .node(failing.node().handler(|_| Verdict::Shutdown));
    let running = launch_ready(&rt, builder).await;
    failing.fail();
    let outcome = running.outcome().await;
    assert!(
        matches!(outcome.end, SupervisorEnd::Shutdown { .. }),
        "got {outcome:?}"
    );
    // Each lingering node returned before the next was told, and both
    // before the run returned.
    assert_eq!(
        log.snapshot(),
        [
            "slower stopped",
            "slower returned",
            "slow stopped",
            "slow returned"
        ]
    );
}

async fn spin_halt_ignores_the_parent_stop(rt: SharedRuntime) {
    let log = Events::new();
    let terminate = Latch::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let supervisor = Supervisor::builder()
        .node(a.node())
        .node(b.node().depends_on(["a"]).handler(|_| Verdict::SpinHalt))
        .terminate_on(terminate.signal())
        .build()
        .unwrap();
    let shutdown = Component::shutdown_signal(&supervisor);
    let running = launch(&rt, supervisor);
    running.ready.wait().await;
    b.fail();
    running
        .settles_to(&rt, "a=stopped b=stopped spin-halt after b")
        .await;
    assert_eq!(running.status.spin_halted_by().as_deref(), Some("b"));
    assert!(shutdown.is_set());
    // The parent's stop (an interrupt) does not release it.
    running.stop.stop();
    let_others_run(&rt).await;
    assert!(
        !running.run.is_finished(),
        "the parent's stop ended a spin-halt"
    );
    assert_eq!((a.built(), b.built()), (1, 1), "nothing restarts");
    terminate.set();
    let outcome = running.outcome().await;
    assert!(
        matches!(&outcome.end, SupervisorEnd::SpinHaltReleased { node, .. } if &**node == "b"),
        "got {outcome:?}"
    );
    assert_eq!(log.snapshot(), ["a stopped"]);
}

/// Checks an outcome's shutdown errors: `nodes` failed while stopping, in
/// this order.
fn assert_stop_errors(outcome: &SupervisorOutcome, nodes: &[&str]) {
    let errors: Vec<(String, String)> = outcome
        .shutdown_errors
        .iter()
        .map(|error| (error.node.to_string(), error.error.to_string()))
        .collect();
    let expected: Vec<(String, String)> = nodes
        .iter()
        .map(|node| (node.to_string(), format!("{node} failed while stopping")))
        .collect();
    assert_eq!(errors, expected, "{outcome:?}");
}

/// `a` <- `b`, both failing while stopping; their handlers record into
/// `handled` and restart.
fn pair_failing_while_stopping(log: &Events, handled: &Events) -> (SupervisorBuilder, [Probe; 2]) {
    let [a, b] = ["a", "b"].map(|name| Probe::new(name, log).on_stop(OnStop::Fail));
    let builder = Supervisor::builder()
        .node(a.node().handler(recording(handled, "a", Verdict::Restart)))
        .node(
            b.node()
                .depends_on(["a"])
                .handler(recording(handled, "b", Verdict::Restart)),
        );
    (builder, [a, b])
}

async fn error_while_stopping_after_a_parent_stop(rt: SharedRuntime) {
    for _ in 0..REPEATS {
        let (log, handled, events) = (Events::new(), Events::new(), Events::new());
        let (builder, [a, b]) = pair_failing_while_stopping(&log, &handled);
        let running = launch_ready(&rt, builder.on_event(describing(&events))).await;
        let outcome = running.stop_parent().await;
        assert_eq!(outcome.shutdown_errors.len(), 2, "{events:?}");
        assert_stop_errors(&outcome, &["b", "a"]);
        assert!(handled.is_empty(), "handled: {handled:?}");
        assert_eq!((a.built(), b.built()), (1, 1));
    }
}

/// `a` <- `b` fail while stopping; `f` fails with `verdict`.
fn failing_while_stopping(
    log: &Events,
    handled: &Events,
    verdict: Verdict,
    terminate: &Latch,
) -> (SupervisorBuilder, Probe) {
    let (pair, _) = pair_failing_while_stopping(log, handled);
    let f = Probe::new("f", log);
    let builder = pair
        .node(f.node().handler(recording(handled, "f", verdict)))
        .terminate_on(terminate.signal());
    (builder, f)
}

async fn error_while_stopping_after_a_shutdown(rt: SharedRuntime) {
    for _ in 0..REPEATS {
        let (log, handled) = (Events::new(), Events::new());
        let (builder, f) = failing_while_stopping(&log, &handled, Verdict::Shutdown, &Latch::new());
        let running = launch_ready(&rt, builder).await;
        f.fail();
        let outcome = running.outcome().await;
        assert!(
            matches!(&outcome.end, SupervisorEnd::Shutdown { node, .. } if &**node == "f"),
            "got {outcome:?}"
        );
        assert_stop_errors(&outcome, &["b", "a"]);
        assert_eq!(handled.snapshot(), ["f 1 f failed 1"]);
    }
}

async fn error_while_stopping_during_a_spin_halt(rt: SharedRuntime) {
    for _ in 0..REPEATS {
        let (log, handled, terminate) = (Events::new(), Events::new(), Latch::new());
        let (builder, f) = failing_while_stopping(&log, &handled, Verdict::SpinHalt, &terminate);
        let running = launch_ready(&rt, builder).await;
        f.fail();
        // Both have logged their stop once the second one has.
        let status = running.status.clone();
        eventually(&rt, "every node is stopped", || {
            status.summary() == "a=stopped b=stopped f=stopped spin-halt after f"
        })
        .await;
        running.stop.stop();
        terminate.set();
        let outcome = running.outcome().await;
        assert!(
            matches!(&outcome.end, SupervisorEnd::SpinHaltReleased { node, .. } if &**node == "f"),
            "got {outcome:?}"
        );
        assert_stop_errors(&outcome, &["b", "a"]);
        assert_eq!(handled.snapshot(), ["f 1 f failed 1"]);
    }
}

/// A probe whose factory also logs "X built N".
fn logging_builds(probe: &Probe) -> Node {
    let mut build = probe.factory();
    let (log, name, built) = (probe.log.clone(), probe.name, probe.built.clone());
    Node::new(probe.name, move || {
        let manager = build();
        log.push(format!("{name} built {}", built.get()));
        manager
    })
    .policy(RestartPolicy::immediate())
}

/// The chain `first <- second <- third` of nodes logging their builds,
/// the first restarting its dependents with it, launched and ready.
async fn restarting_chain(
    rt: &SharedRuntime,
    log: &Events,
    names: [&'static str; 3],
) -> ([Probe; 3], Running) {
    let probes = names.map(|name| Probe::new(name, log));
    let [first, second, third] = &probes;
    let builder = Supervisor::builder()
        .node(logging_builds(first).restart_dependents())
        .node(logging_builds(second).depends_on([first.name]))
        .node(logging_builds(third).depends_on([second.name]));
    let running = launch_ready(rt, builder).await;
    (probes, running)
}

async fn restart_with_dependents(rt: SharedRuntime) {
    let log = Events::new();
    let ([a, _, _], running) = restarting_chain(&rt, &log, ["a", "b", "c"]).await;
    a.fail();
    running
        .settles_to(&rt, "a=ready(2) b=ready(2) c=ready(2)")
        .await;
    running.stop_cleanly().await;
    // The dependents stop first (in order), a comes back, then they do
    // (each once what it depends on is ready).
    assert_eq!(
        log.snapshot(),
        [
            "a built 1",
            "b built 1",
            "c built 1",
            "c stopped",
            "b stopped",
            "a built 2",
            "b built 2",
            "c built 2",
            "c stopped",
            "b stopped",
            "a stopped",
        ]
    );
}

/// `node` restarting on failure (recorded into `handled` as `name`) with a
/// budget of two restarts, escalated to Stop once spent.
fn two_restarts_then_stop(node: Node, handled: &Events, name: &'static str) -> Node {
    node.policy(RestartPolicy::immediate().intensity(2, Duration::from_secs(3600)))
        .handler(recording(handled, name, Verdict::Restart))
        .on_exhausted(Verdict::Stop)
}

async fn spent_budget_escalates_to_the_chosen_verdict(rt: SharedRuntime) {
    let log = Events::new();
    let handled = Events::new();
    let a = Probe::new("a", &log);
    let b = Probe::new("b", &log).failing_at_once();
    let c = Probe::new("c", &log);
    let supervisor = Supervisor::builder()
        .node(a.node())
        .node(two_restarts_then_stop(
            b.node().depends_on(["a"]),
            &handled,
            "b",
        ))
        .node(c.node().depends_on(["b"]))
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    running
        .settles_to(&rt, "a=ready b=stopped(3) c=stopped")
        .await;
    // Two restarts allowed: the third failure is the one that escalates.
    assert_eq!(
        handled.snapshot(),
        ["b 1 b failed 1", "b 2 b failed 2", "b 3 b failed 3"]
    );
    // b calls ready before it fails, so c may have started in between on a
    // multi-threaded executor; either way it ends stopped with b.
    assert_eq!((a.built(), b.built()), (1, 3));
    running.stop_after_failures(&["b: b failed 3"]).await;
}

async fn spent_budget_shuts_down_by_default(rt: SharedRuntime) {
    let log = Events::new();
    let a = Probe::new("a", &log);
    let b = Probe::new("b", &log).failing_at_once();
    let supervisor = Supervisor::builder()
        .node(a.node())
        .node(b.node().depends_on(["a"]).policy(RestartPolicy::never()))
        .build()
        .unwrap();
    let outcome = launch(&rt, supervisor).outcome().await;
    assert_shut_down_by(&outcome, "b", "b failed 1");
    assert_eq!(log.snapshot(), ["a stopped"]);
    assert_eq!(b.built(), 1);
}

async fn hung_node_is_aborted_at_its_stop_timeout(rt: SharedRuntime) {
    let log = Events::new();
    let a = Probe::new("a", &log);
    let hung = Probe::new("hung", &log).on_stop(OnStop::Hang);
    let builder = Supervisor::builder()
        .node(a.node())
        .node(hung.node().depends_on(["a"]).stop_timeout(SHORT));
    let running = launch_ready(&rt, builder).await;
    let outcome = running.stop_taking(&rt, SHORT).await;
    assert_eq!(overran(&outcome), ["hung"]);
    assert!(!outcome.is_clean());
    assert!(outcome.to_string().contains("overran their stop: hung"));
    // a is told to stop only once the hung node is gone.
    assert_eq!(log.snapshot(), ["hung stopped", "a stopped"]);
}

async fn an_instance_its_abort_does_not_end_is_given_up(rt: SharedRuntime) {
    // Past its stop timeout the instance is aborted; still not done as long
    // again after that, it is given up: the node counts as stopped and what
    // it depends on is stopped next, rather than the run hanging.
    let log = Events::new();
    let a = Probe::new("a", &log);
    // Ready at start; its stop and its abort change nothing: never done,
    // as a task that never yields would be.
    let stuck = ManualComponent::new();
    stuck.ready_latch().set();
    let builder = Supervisor::builder().node(a.node()).node(
        Node::new("stuck", stuck.factory())
            .depends_on(["a"])
            .stop_timeout(SHORT),
    );
    let running = launch_ready(&rt, builder).await;
    let status = running.status.clone();
    let outcome = running.stop_taking(&rt, SHORT * 2).await;
    assert_eq!(overran(&outcome), ["stuck"]);
    assert_eq!(stuck.abort_calls(), 1, "aborted once, then given up");
    assert!(!stuck.done_latch().is_set());
    assert_eq!(log.snapshot(), ["a stopped"]);
    assert_eq!(status.summary(), "a=stopped stuck=stopped");
}

async fn stop_timeouts_are_each_nodes_own(rt: SharedRuntime) {
    // Told to stop together, the node with the longer timeout first: the
    // shorter one still runs out first (the overran list is in the order
    // of the timeouts), and the run waits for the longer one.
    let log = Events::new();
    let slow = Probe::new("slow", &log).on_stop(OnStop::Hang);
    let quick = Probe::new("quick", &log).on_stop(OnStop::Hang);
    let long = SHORT * 20;
    let builder = Supervisor::builder()
        .node(slow.node().stop_timeout(long))
        .node(quick.node().stop_timeout(SHORT));
    let running = launch_ready(&rt, builder).await;
    let outcome = running.stop_taking(&rt, long).await;
    assert_eq!(overran(&outcome), ["quick", "slow"]);
}

async fn factory_error_goes_to_the_handler(rt: SharedRuntime) {
    let log = Events::new();
    let handled = Events::new();
    let probe = Probe::new("f", &log);
    let builder = Supervisor::builder().node(
        probe
            .node_without_config_at_first()
            .handler(recording(&handled, "f", Verdict::Restart)),
    );
    let running = launch_ready(&rt, builder).await;
    assert_eq!(running.status.summary(), "f=ready(2)");
    assert_eq!(handled.snapshot(), ["f 1 no config"]);
    assert_eq!(probe.built(), 1);
    running.stop_cleanly().await;
}

async fn start_timeout_fails_the_node(rt: SharedRuntime) {
    let log = Events::new();
    let slow = Probe::new("slow", &log).gated();
    let child = Probe::new("child", &log);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let supervisor = Supervisor::builder()
        .node(slow.node().start_timeout(SHORT).handler({
            let errors = errors.clone();
            move |failure: &Failure| {
                errors.lock().unwrap().push(failure.error.clone());
                Verdict::Stop
            }
        }))
        .node(child.node().depends_on(["slow"]))
        .build()
        .unwrap();
    // Nothing is left once the slow node and its dependent are stopped.
    launch(&rt, supervisor).completes().await;
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].downcast_ref::<StartTimedOut>(),
        Some(&StartTimedOut {
            node: "slow".into(),
            timeout: SHORT,
        })
    );
    assert_eq!(child.built(), 0);
    assert_eq!(log.snapshot(), ["slow stopped"]);
}

async fn error_while_stopping_after_a_start_timeout_goes_to_the_hook(rt: SharedRuntime) {
    // The node never becomes ready; when told to stop after its start
    // timeout, it fails to flush. That error is not the node's failure
    // (the timeout is), and it is not lost either.
    let hooked = Events::new();
    let supervisor = Supervisor::builder()
        .node(
            Node::new("slow", || {
                Ok(ComponentManager::builder()
                    .add_worker(|ctx, _ready| async move {
                        ctx.stopped().await;
                        Err(FatalError::msg("flush failed"))
                    })
                    .build())
            })
            .start_timeout(SHORT)
            .handler(|_| Verdict::Stop),
        )
        .fatal_hook(hooked.hook())
        .build()
        .unwrap();
    launch(&rt, supervisor).completes().await;
    assert_eq!(hooked.snapshot(), ["flush failed"]);
}

async fn nested_supervisor(rt: SharedRuntime) {
    let log = Events::new();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let db = Probe::new("db", &log);
    let unhandled = Events::new();
    let x = Probe::new("x", &log).gated().on_stop(OnStop::Fail);
    let y = Probe::new("y", &log);
    let api = Probe::new("api", &log);
    let inner = {
        let (x, y) = (x.clone(), y.clone());
        move || {
            Supervisor::builder()
                .node(x.node())
                .node(y.node().depends_on(["x"]).handler(|_| Verdict::Shutdown))
                .build()
                .map_err(FatalError::new)
        }
    };
    let supervisor = Supervisor::builder()
        .node(db.node())
        .node(Node::new("inner", inner).depends_on(["db"]).handler({
            let handled = handled.clone();
            move |failure: &Failure| {
                handled.lock().unwrap().push(failure.clone());
                Verdict::Stop
            }
        }))
        .node(api.node().depends_on(["inner"]))
        .fatal_hook(unhandled.hook())
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    eventually(&rt, "x is built", || x.built() == 1).await;
    let_others_run(&rt).await;
    // The inner supervisor is ready only once all its nodes are.
    assert_eq!(y.built(), 0);
    assert_eq!(
        api.built(),
        0,
        "api started before the inner supervisor was ready"
    );
    x.open();
    running.ready.wait().await;
    assert_eq!((y.built(), api.built()), (1, 1));

    // A Shutdown inside is a failure of the inner node outside.
    y.fail();
    running
        .settles_to(&rt, "db=ready inner=stopped api=stopped")
        .await;
    {
        let handled = handled.lock().unwrap();
        assert_eq!(handled.len(), 1);
        let failed = handled[0]
            .error
            .downcast_ref::<NodeFailed>()
            .expect("the inner supervisor's error names its node");
        assert_eq!(&*failed.node, "y");
        assert_eq!(failed.error.to_string(), "y failed 1");
    }
    // The inner supervisor failed as a whole: the error x reported while
    // it stopped is a later error of the failed node, and went to the hook.
    assert_eq!(
        unhandled.snapshot(),
        ["node inner/x failed: x failed while stopping"]
    );
    let outcome = running
        .stop_after_failures(&["inner: node y failed: y failed 1"])
        .await;
    assert!(outcome.shutdown_errors.is_empty(), "{outcome:?}");
    // Inside, x stopped before the inner supervisor was done; outside, api
    // stopped after the verdict on the inner node, db at the parent stop.
    assert_eq!(log.snapshot(), ["x stopped", "api stopped", "db stopped"]);
}

async fn nested_outcome_is_part_of_the_outer_one(rt: SharedRuntime) {
    let log = Events::new();
    let x = Probe::new("x", &log).on_stop(OnStop::Fail);
    let y = Probe::new("y", &log);
    let inner = {
        let (x, y) = (x.clone(), y.clone());
        move || {
            Supervisor::builder()
                .node(x.node())
                .node(y.node().handler(|_| Verdict::Stop))
                .build()
                .map_err(FatalError::new)
        }
    };
    let builder = Supervisor::builder().node(Node::new("inner", inner));
    let running = launch_ready(&rt, builder).await;
    // Inside, y stops for good and x keeps running: the inner supervisor
    // runs on, and the outer one sees nothing yet.
    y.fail();
    running.settles_to(&rt, "inner=ready").await;
    // The parent's stop reaches x through the inner supervisor; the inner
    // outcome (y's failure, x's error while stopping) is the outer one's,
    // under the inner node's name.
    let outcome = running.stop_after_failures(&["inner/y: y failed 1"]).await;
    let stop_errors: Vec<_> = outcome
        .shutdown_errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(stop_errors, ["inner/x: x failed while stopping"]);
}

async fn clean_completion_keeps_dependents_running(rt: SharedRuntime) {
    let log = Events::new();
    let handled = Events::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let builder = Supervisor::builder()
        .node(a.node().handler(recording(&handled, "a", Verdict::Restart)))
        .node(b.node().depends_on(["a"]));
    let running = launch_ready(&rt, builder).await;
    a.finish();
    running.settles_to(&rt, "a=completed b=ready").await;
    running.stop_cleanly().await;
    assert_eq!(log.snapshot(), ["b stopped"]);
    assert!(handled.is_empty());
    assert_eq!((a.built(), b.built()), (1, 1));
}

async fn completion_of_a_required_node_stops_its_dependents(rt: SharedRuntime) {
    let log = Events::new();
    let [a, b, c] = ["a", "b", "c"].map(|name| Probe::new(name, &log));
    let builder = Supervisor::builder()
        .node(a.node().required_while_running())
        .node(b.node().depends_on(["a"]))
        .node(c.node().depends_on(["b"]));
    let running = launch_ready(&rt, builder).await;
    let status = running.status.clone();
    a.finish();
    // Every node is done for good: the run completes on its own.
    let outcome = running.completes().await;
    assert!(outcome.is_clean());
    assert_eq!(status.summary(), "a=completed b=stopped c=stopped");
    assert_eq!(log.snapshot(), ["c stopped", "b stopped"]);
}

async fn permanent_node_is_restarted_after_a_clean_exit(rt: SharedRuntime) {
    let log = Events::new();
    let handled = Events::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let builder = Supervisor::builder()
        .node(
            a.node()
                .permanent()
                .handler(recording(&handled, "a", Verdict::Stop)),
        )
        .node(b.node().depends_on(["a"]));
    let running = launch_ready(&rt, builder).await;
    a.finish();
    running.settles_to(&rt, "a=ready(2) b=ready").await;
    assert!(handled.is_empty(), "a clean exit is not a failure");
    assert_eq!(running.status.snapshot()[0].restarts, 1);
    running.stop_cleanly().await;
    assert_eq!(log.snapshot(), ["b stopped", "a stopped"]);
}

async fn restart_with_dependents_waits_for_the_node_to_be_ready(rt: SharedRuntime) {
    let log = Events::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let builder = Supervisor::builder()
        .node(logging_builds(&a).restart_dependents())
        .node(logging_builds(&b).depends_on(["a"]));
    let running = launch_ready(&rt, builder).await;
    a.close();
    a.fail();
    // a's second instance is not ready yet: b stays down.
    running.settles_to(&rt, "a=starting(2) b=waiting").await;
    a.open();
    running.settles_to(&rt, "a=ready(2) b=ready(2)").await;
    running.stop_cleanly().await;
    assert_eq!(
        log.snapshot(),
        [
            "a built 1",
            "b built 1",
            "b stopped",
            "a built 2",
            "b built 2",
            "b stopped",
            "a stopped",
        ]
    );
}

async fn completed_node_stands_for_its_dependencies(rt: SharedRuntime) {
    let log = Events::new();
    let ([db, migrate, _], running) = restarting_chain(&rt, &log, ["db", "migrate", "api"]).await;
    migrate.finish();
    running
        .settles_to(&rt, "db=ready migrate=completed api=ready")
        .await;
    // db restarts with its dependents: api is one, through migrate, and
    // waits for db's new instance to be ready, as if it depended on db.
    db.close();
    db.fail();
    running
        .settles_to(&rt, "db=starting(2) migrate=completed api=waiting")
        .await;
    db.open();
    running
        .settles_to(&rt, "db=ready(2) migrate=completed api=ready(2)")
        .await;
    running.stop_cleanly().await;
    assert_eq!(
        log.snapshot(),
        [
            "db built 1",
            "migrate built 1",
            "api built 1",
            "api stopped",
            "db built 2",
            "api built 2",
            "api stopped",
            "db stopped",
        ]
    );
}

async fn permanent_node_exiting_while_waiting_to_restart_comes_back(rt: SharedRuntime) {
    let log = Events::new();
    let (a, b) = (Probe::new("a", &log), Probe::new("b", &log));
    let (c_told, release) = (Latch::new(), Latch::new());
    let builder = Supervisor::builder()
        .node(a.node().restart_dependents())
        .node(b.node().permanent().depends_on(["a"]))
        .node(Node::new("c", holding("c", &log, &c_told, &release)).depends_on(["b"]));
    let running = launch_ready(&rt, builder).await;
    a.fail();
    // b is to stop for a's restart once c is down; c holds, and b exits
    // cleanly on its own meanwhile.
    c_told.wait().await;
    b.finish();
    eventually(&rt, "b's exit is seen", || {
        !running.status.summary().contains("b=ready")
    })
    .await;
    release.set();
    // Permanent: b comes back once a is ready again, and c after it.
    running
        .settles_to(&rt, "a=ready(2) b=ready(2) c=ready(2)")
        .await;
    running.stop_cleanly().await;
}

async fn restart_then_stop_event_sequence(rt: SharedRuntime) {
    let log = Events::new();
    let events = Events::new();
    let n = Probe::new("n", &log);
    let builder = Supervisor::builder()
        .node(n.node())
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    n.fail();
    running.settles_to(&rt, "n=ready(2)").await;
    running.stop_cleanly().await;
    assert_eq!(
        events.snapshot(),
        [
            "n starting 1",
            "n ready 1",
            "n failed 1: n failed 1",
            "n verdict 1: restart, acted on: true",
            "n restarting 2 after 0ns",
            "n starting 2",
            "n ready 2",
            "n stopping 2: the parent stopped",
            "n stopped 2",
        ]
    );
}

async fn status_shows_what_each_event_tells(rt: SharedRuntime) {
    let log = Events::new();
    let [failing, finishing, permanent] =
        ["failing", "finishing", "permanent"].map(|name| Probe::new(name, &log));
    let erring = Probe::new("erring", &log).on_stop(OnStop::Fail);
    let config = Probe::new("config", &log).node_without_config_at_first();
    let board = Arc::new(OnceLock::<StatusBoard>::new());
    let (events, mismatches) = (Events::new(), Events::new());
    let hook = {
        let (board, events, mismatches) = (board.clone(), events.clone(), mismatches.clone());
        move |event: &SupervisorEvent| {
            events.push(describe(event));
            let shown = board.get().and_then(|board| {
                board
                    .snapshot()
                    .into_iter()
                    .find(|it| it.name == event.node)
            });
            let Some(shown) = shown else {
                return mismatches.push(format!("{}: no status", describe(event)));
            };
            if shown_with(&event.kind).is_some_and(|states| !states.contains(&shown.state)) {
                mismatches.push(format!("{}: shown {}", describe(event), shown.state));
            }
        }
    };
    let supervisor = Supervisor::builder()
        .node(failing.node())
        .node(finishing.node())
        .node(permanent.node().permanent())
        .node(erring.node())
        .node(config)
        .on_event(hook)
        .build()
        .unwrap();
    board.set(supervisor.status()).ok().unwrap();
    let running = launch(&rt, supervisor);
    running.ready.wait().await;
    failing.fail();
    finishing.finish();
    permanent.finish();
    running
        .settles_to(
            &rt,
            "failing=ready(2) finishing=completed permanent=ready(2) erring=ready config=ready(2)",
        )
        .await;
    let outcome = running.stop_parent().await;
    assert_stop_errors(&outcome, &["erring"]);
    assert_eq!(mismatches.snapshot(), Vec::<String>::new());
    // Every kind checked above came by.
    let events = events.snapshot();
    for kind in [
        "failing failed 1",
        "config failed 1",
        "failing restarting 2",
        "config starting 2",
        "finishing completed 1",
        "permanent completed 1",
        "erring stopping 1",
        "erring error during stop 1",
        "failing stopped 2",
        "failing ready 2",
    ] {
        assert!(
            events.iter().any(|event| event.starts_with(kind)),
            "no {kind:?} in {events:?}"
        );
    }
}

async fn factory_failing_at_once_does_not_spin_the_supervisor(rt: SharedRuntime) {
    let attempts = Arc::new(AtomicU32::new(0));
    let supervisor = Supervisor::builder()
        .node(
            Node::new("broken", {
                let attempts = attempts.clone();
                move || -> Result<ComponentManager, FatalError> {
                    attempts.fetch_add(1, SeqCst);
                    Err(FatalError::msg("no config"))
                }
            })
            .policy(RestartPolicy::immediate().unlimited()),
        )
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    // Not `eventually`: on virtual time the clock stands still while the
    // supervisor is busy restarting, so only yields make progress here.
    while attempts.load(SeqCst) <= 3 {
        lifecycle_conformance::yield_now().await;
    }
    running.stop_parent().await;
}

/// What a [`watched`] worker heeds once ready.
#[derive(Clone, Copy)]
enum Heeds {
    /// It returns when told to stop.
    Stop,
    /// It ignores its stop: only an abort ends it.
    Nothing,
}

/// A factory of one-worker managers whose worker is ready at once and sets
/// `gone` when its future is dropped (returned or aborted).
fn watched(
    gone: &Latch,
    heeds: Heeds,
) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    let gone = gone.clone();
    move || {
        let gone = gone.clone();
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let probe = lifecycle_conformance::DropProbe::on(&gone);
                async move {
                    let _probe = probe;
                    ready.ready();
                    match heeds {
                        Heeds::Stop => ctx.stopped().await,
                        Heeds::Nothing => pending::<()>().await,
                    }
                    Ok(())
                }
            })
            .build())
    }
}

/// Starts `supervisor` as a component (not through [`launch`]), under a
/// parent stop of its own, and returns that parent stop.
fn start_as_component(rt: &SharedRuntime, supervisor: &Supervisor) -> StopSource {
    let parent = StopSource::new();
    let slot = lifecycle::FatalSlot::new();
    supervisor
        .start(lifecycle_conformance::scope(rt, &parent, &slot))
        .unwrap();
    parent
}

async fn aborting_a_supervisor_started_as_a_component_ends_it(rt: SharedRuntime) {
    let worker_gone = Latch::new();
    let supervisor = Supervisor::builder()
        .node(Node::new("serving", watched(&worker_gone, Heeds::Stop)))
        .build()
        .unwrap();
    let parent = start_as_component(&rt, &supervisor);
    Component::ready(&supervisor).wait().await;
    supervisor.abort();
    Component::done(&supervisor).wait().await;
    assert!(matches!(
        supervisor.outcome().map(|outcome| outcome.end),
        Some(SupervisorEnd::Aborted)
    ));
    worker_gone.wait().await; // the node's scope was stopped with the run
    assert!(!parent.is_stopped());
}

async fn error_after_the_run_was_aborted_goes_to_the_hook(rt: SharedRuntime) {
    // The aborted run no longer watches its node: what the node reports
    // afterwards must reach the hook rather than wait in its slot.
    let hooked = Events::new();
    let stubborn = ManualComponent::new();
    let supervisor = Supervisor::builder()
        .node(Node::new("stubborn", stubborn.factory()))
        .fatal_hook(hooked.hook())
        .build()
        .unwrap();
    let _parent = start_as_component(&rt, &supervisor);
    let scope = stubborn.started().await;
    supervisor.abort();
    Component::done(&supervisor).wait().await;
    scope.throw(FatalError::msg("flush failed after the abort"));
    assert_eq!(hooked.snapshot(), ["flush failed after the abort"]);
}

/// Builds `builder` with a hook that describes every event into `events`,
/// each stop event (stopping, given up, stopped) followed by the whole
/// status as the run shows it then (`[a=stopping b=stopped]`); launches it
/// and waits until it is ready.
async fn launch_showing_stops(
    rt: &SharedRuntime,
    builder: SupervisorBuilder,
    events: &Events,
) -> Running {
    let board = Arc::new(OnceLock::<StatusBoard>::new());
    let hook = {
        let (board, events) = (board.clone(), events.clone());
        move |event: &SupervisorEvent| {
            let mut line = describe(event);
            if matches!(
                event.kind,
                EventKind::Stopping { .. } | EventKind::GivenUp { .. } | EventKind::Stopped { .. }
            ) {
                let summary = board.get().map(StatusBoard::summary);
                line = format!("{line} [{}]", summary.unwrap_or_default());
            }
            events.push(line);
        }
    };
    let supervisor = builder.on_event(hook).build().unwrap();
    board.set(supervisor.status()).ok().unwrap();
    let running = launch(rt, supervisor);
    running.ready.wait().await;
    running
}

/// db, and api on it, which ignores its stop: when the budget runs out,
/// api (stopping) and db (waiting for it, never told to stop) are both
/// given up, each with an event the status shows as stopping, then
/// stopped: api first, as in every stop, although db was given up first.
async fn nodes_given_up_by_the_budget_are_told_why(rt: SharedRuntime) {
    let (db_gone, api_gone, events) = (Latch::new(), Latch::new(), Events::new());
    let builder = Supervisor::builder()
        .node(Node::new("db", watched(&db_gone, Heeds::Stop)))
        .node(
            Node::new("api", watched(&api_gone, Heeds::Nothing))
                .depends_on(["db"])
                .no_stop_timeout(),
        )
        .shutdown_budget(SHORT);
    let running = launch_showing_stops(&rt, builder, &events).await;
    let outcome = running.stop_spending_the_budget().await;
    assert_eq!(overran(&outcome), ["db", "api"]);
    assert_eq!(
        events_of(&events, "db"),
        [
            "db starting 1",
            "db ready 1",
            "db given up 1 after a budget of 5ms [db=stopping api=stopping]",
            // Not before api, which depends on it, is down.
            "db stopped 1 [db=stopped api=stopped]",
        ]
    );
    assert_eq!(
        events_of(&events, "api"),
        [
            "api starting 1",
            "api ready 1",
            "api stopping 1: the parent stopped [db=ready api=stopping]",
            "api given up 1 after a budget of 5ms [db=stopping api=stopping]",
            "api stopped 1 [db=stopping api=stopped]",
        ]
    );
    // Both aborted, not left behind.
    db_gone.wait().await;
    api_gone.wait().await;
}

/// a fails with Shutdown while b, which depends on it, ignores its stop:
/// a shows stopping, its instance down, until the budget gives b up; then
/// a is stopped too, and only b is named as overrunning.
async fn failed_node_waits_for_a_dependent_the_budget_gives_up(rt: SharedRuntime) {
    let (log, events, gone) = (Events::new(), Events::new(), Latch::new());
    let a = Probe::new("a", &log);
    let builder = Supervisor::builder()
        .node(a.node().handler(|_| Verdict::Shutdown))
        .node(
            Node::new("b", watched(&gone, Heeds::Nothing))
                .depends_on(["a"])
                .no_stop_timeout(),
        )
        .shutdown_budget(SHORT);
    let running = launch_showing_stops(&rt, builder, &events).await;
    a.fail();
    let outcome = running.outcome().await;
    assert_shut_down_by(&outcome, "a", "a failed 1");
    assert!(outcome.budget_spent, "got {outcome:?}");
    assert_eq!(overran(&outcome), ["b"]);
    assert_eq!(
        events_of(&events, "a"),
        [
            "a starting 1",
            "a ready 1",
            "a failed 1: a failed 1",
            "a verdict 1: shutdown, acted on: true",
            "a stopped 1 [a=stopped b=stopped]",
        ]
    );
    assert_eq!(
        events_of(&events, "b"),
        [
            "b starting 1",
            "b ready 1",
            "b stopping 1: shutdown after a failed [a=stopping b=stopping]",
            "b given up 1 after a budget of 5ms [a=stopping b=stopping]",
            "b stopped 1 [a=stopping b=stopped]",
        ]
    );
    gone.wait().await;
}

/// a <- b <- c: a fails with Stop, whose cascade covers b and c. c holds
/// its stop until released; meanwhile b, waiting for c, fails on its own:
/// its verdict is not acted on, and it shows stopping until c is done.
/// Then the nodes are stopped dependents first: c, b, a.
async fn node_failing_in_a_cascade_is_stopped_after_its_dependents(rt: SharedRuntime) {
    let (log, events, handled) = (Events::new(), Events::new(), Events::new());
    let [a, b] = ["a", "b"].map(|name| Probe::new(name, &log));
    let (c_told, release) = (Latch::new(), Latch::new());
    let builder = Supervisor::builder()
        .node(a.node().handler(recording(&handled, "a", Verdict::Stop)))
        .node(
            b.node()
                .depends_on(["a"])
                .handler(recording(&handled, "b", Verdict::Restart)),
        )
        .node(Node::new("c", holding("c", &log, &c_told, &release)).depends_on(["b"]));
    let running = launch_showing_stops(&rt, builder, &events).await;
    a.fail();
    c_told.wait().await;
    b.fail();
    eventually(&rt, "b's verdict is recorded", || {
        handled.snapshot().len() == 2
    })
    .await;
    assert_eq!(handled.snapshot(), ["a 1 a failed 1", "b 1 b failed 1"]);
    assert_eq!(running.status.summary(), "a=stopping b=stopping c=stopping");
    release.set();
    running
        .settles_to(&rt, "a=stopped b=stopped c=stopped")
        .await;
    let stopped = events_of_kind(&events, &["stopped"]);
    assert_eq!(
        stopped,
        [
            "c stopped 1 [a=stopping b=stopping c=stopped]",
            "b stopped 1 [a=stopping b=stopped c=stopped]",
            "a stopped 1 [a=stopped b=stopped c=stopped]",
        ]
    );
    // Every node is down for good: the run ends on its own.
    let outcome = running.completes().await;
    assert_eq!(failed(&outcome), ["a: a failed 1", "b: b failed 1"]);
}

/// b depends on a, which fails and waits out a long backoff: the parent's
/// stop finds a down already, but a is stopped for good only after b.
async fn node_in_backoff_is_stopped_after_its_dependents(rt: SharedRuntime) {
    let (log, events) = (Events::new(), Events::new());
    let [a, b] = ["a", "b"].map(|name| Probe::new(name, &log));
    let slow = RestartPolicy::default()
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .jitter(0.0);
    let builder = Supervisor::builder()
        .node(a.node().policy(slow))
        .node(b.node().depends_on(["a"]));
    let running = launch_showing_stops(&rt, builder, &events).await;
    a.fail();
    running.settles_to(&rt, "a=backoff b=ready").await;
    running.stop_cleanly().await;
    let stops = events_of_kind(&events, &["stopping", "stopped"]);
    assert_eq!(
        stops,
        [
            "b stopping 1: the parent stopped [a=backoff b=stopping]",
            "b stopped 1 [a=backoff b=stopped]",
            "a stopped 1 [a=stopped b=stopped]",
        ]
    );
}

/// a restarts with its dependents b (on a) and c and d (on b). c lingers
/// on its stop; d, stopped first, waits: b is still ready, but waiting to
/// be stopped, and a dependent started on it again would keep it from
/// ever stopping. Once c is down, b stops, a restarts, and all come back.
async fn dependent_stopped_for_a_restart_waits_for_it(rt: SharedRuntime) {
    let (log, events) = (Events::new(), Events::new());
    let [a, b, d] = ["a", "b", "d"].map(|name| Probe::new(name, &log));
    let (c_told, release) = (Latch::new(), Latch::new());
    let builder = Supervisor::builder()
        .node(a.node().restart_dependents())
        .node(b.node().depends_on(["a"]))
        .node(
            Node::new("c", holding("c", &log, &c_told, &release))
                .depends_on(["b"])
                .policy(RestartPolicy::immediate()),
        )
        .node(d.node().depends_on(["b"]))
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    a.fail();
    c_told.wait().await;
    running
        .settles_to(&rt, "a=waiting b=ready c=stopping d=waiting")
        .await;
    release.set();
    running
        .settles_to(&rt, "a=ready(2) b=ready(2) c=ready(2) d=ready(2)")
        .await;
    assert_eq!(
        events_of(&events, "d"),
        [
            "d starting 1",
            "d ready 1",
            "d stopping 1: a restarts with its dependents",
            "d waiting 1",
            "d starting 2",
            "d ready 2",
        ]
    );
    running.stop_cleanly().await;
}

async fn shutdown_budget_aborts_what_is_not_done(rt: SharedRuntime) {
    let gone = Latch::new();
    let builder = Supervisor::builder()
        .node(Node::new("stubborn", watched(&gone, Heeds::Nothing)).no_stop_timeout())
        .shutdown_budget(Duration::from_millis(20));
    let running = launch_ready(&rt, builder).await;
    let outcome = running.stop_spending_the_budget().await;
    assert_eq!(overran(&outcome), ["stubborn"]);
    assert!(!outcome.is_clean());
    gone.wait().await; // the worker was aborted, not left behind
}

/// A node whose first instance fails with "X failed 1" once `fail` is
/// set, and whose second worker then keeps that failed instance from being
/// done until `release` is set: a failure whose verdict waits (never set:
/// the instance ignores its stop until aborted). Later instances serve
/// until told to stop. `built` counts the instances. It restarts at once
/// when told to restart.
fn failing_then_held(name: &'static str, fail: &Latch, release: &Latch, built: &Counter) -> Node {
    let (fail, release, built) = (fail.clone(), release.clone(), built.clone());
    let factory = move || {
        let instance = built.next();
        let first = instance == 1;
        let (fail, release) = (fail.clone(), release.clone());
        Ok::<_, FatalError>(
            ComponentManager::builder()
                .add_worker(move |ctx, ready| {
                    let fail = fail.clone();
                    async move {
                        ready.ready();
                        if !first {
                            ctx.stopped().await;
                            return Ok(());
                        }
                        let woken = wait_signal_or_stop(&fail.signal(), ctx.token()).await;
                        if woken == SignalOrStop::Signal {
                            ctx.throw(FatalError::msg(format!("{name} failed {instance}")));
                        }
                        Ok(())
                    }
                })
                .add_worker(move |ctx, ready| {
                    let release = release.clone();
                    async move {
                        ready.ready();
                        ctx.stopped().await;
                        if first {
                            release.wait().await;
                        }
                        Ok(())
                    }
                })
                .build(),
        )
    };
    Node::new(name, factory).policy(RestartPolicy::immediate())
}

async fn error_after_the_budget_gave_a_node_up_goes_to_the_hook(rt: SharedRuntime) {
    // A node that neither stops nor aborts is given up when the budget
    // runs out; what it reports after the run has ended has no reader
    // left, and must reach the hook rather than wait in its slot.
    let hooked = Events::new();
    let stubborn = ManualComponent::new();
    let supervisor = Supervisor::builder()
        .node(Node::new("stubborn", stubborn.factory()).no_stop_timeout())
        .shutdown_budget(SHORT)
        .fatal_hook(hooked.hook())
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    let scope = stubborn.started().await;
    let outcome = running.stop_spending_the_budget().await;
    assert_eq!(overran(&outcome), ["stubborn"]);
    scope.throw(FatalError::msg("flush failed after the run"));
    assert_eq!(hooked.snapshot(), ["flush failed after the run"]);
}

async fn error_after_a_node_completed_goes_to_the_hook(rt: SharedRuntime) {
    // A node that ends cleanly is done with: what it reports afterwards (a
    // callback it left behind) has no reader, and must reach the hook
    // rather than wait in its slot as a first error nobody takes.
    let (log, hooked, oneshot) = (Events::new(), Events::new(), ManualComponent::new());
    let server = Probe::new("server", &log);
    let supervisor = Supervisor::builder()
        .node(Node::new("oneshot", oneshot.factory()))
        .node(server.node())
        .fatal_hook(hooked.hook())
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    let scope = oneshot.started().await;
    oneshot.ready_latch().set();
    oneshot.done_latch().set();
    running
        .settles_to(&rt, "oneshot=completed server=ready")
        .await;
    scope.throw(FatalError::msg("late callback failed"));
    assert_eq!(hooked.snapshot(), ["late callback failed"]);
    running.stop_cleanly().await;
}

/// The events about `node`, in order.
fn events_of(events: &Events, node: &str) -> Vec<String> {
    let prefix = format!("{node} ");
    events
        .snapshot()
        .into_iter()
        .filter(|event| event.starts_with(&prefix))
        .collect()
}

/// The events of the kinds named (the word after the node: `"stopped"`),
/// in order.
fn events_of_kind(events: &Events, kinds: &[&str]) -> Vec<String> {
    events
        .snapshot()
        .into_iter()
        .filter(|event| {
            event
                .split(' ')
                .nth(1)
                .is_some_and(|kind| kinds.contains(&kind))
        })
        .collect()
}

/// Waits until `events` tell of the failure of `node`'s first instance.
async fn failure_is_seen(rt: &SharedRuntime, events: &Events, node: &str) {
    let failed = format!("{node} failed 1: {node} failed 1");
    eventually(rt, &format!("{node}'s failure is seen"), || {
        events.count(&failed) == 1
    })
    .await;
}

async fn verdict_during_a_cascade_is_recorded_not_acted_on(rt: SharedRuntime) {
    let (events, handled) = (Events::new(), Events::new());
    let (release, b_failed) = (Latch::new(), Latch::new());
    let built = Counter::default();
    let a = Probe::new("a", &Events::new());
    // b fails on its own, but the failed instance is kept from being done
    // until `release`: by then the parent has stopped.
    let b = failing_then_held("b", &b_failed, &release, &built)
        .depends_on(["a"])
        .handler(recording(&handled, "b", Verdict::Restart));
    let builder = Supervisor::builder()
        .node(a.node())
        .node(b)
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    b_failed.set();
    failure_is_seen(&rt, &events, "b").await;
    running.stop.stop();
    let_others_run(&rt).await;
    release.set();
    let outcome = running.outcome().await;
    assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
    // The handler was asked (its decision is recorded), but the stop
    // already covered b: no restart.
    assert_eq!(handled.snapshot(), ["b 1 b failed 1"]);
    assert_eq!(built.get(), 1);
    // A failure of its own, not fallout of the stop: the outcome has it.
    assert_eq!(failed(&outcome), ["b: b failed 1"]);
    assert!(!outcome.is_clean());
    assert_eq!(
        events_of(&events, "b"),
        [
            "b starting 1",
            "b ready 1",
            "b failed 1: b failed 1",
            "b verdict 1: restart, acted on: false",
            "b stopped 1",
        ]
    );
}

async fn verdict_during_a_stop_cascade_is_recorded_while_running(rt: SharedRuntime) {
    // a <- b <- c, and e. c fails on its own, but its failed instance is
    // held from being done; meanwhile b fails with Stop, whose cascade
    // covers c. c's verdict, once it is done, is recorded and ignored; the
    // supervisor keeps running a and e.
    let (log, events, handled) = (Events::new(), Events::new(), Events::new());
    let [a, b, e] = ["a", "b", "e"].map(|name| Probe::new(name, &log));
    let (c_fails, release) = (Latch::new(), Latch::new());
    let c_built = Counter::default();
    let builder = Supervisor::builder()
        .node(a.node())
        .node(
            b.node()
                .depends_on(["a"])
                .handler(recording(&handled, "b", Verdict::Stop)),
        )
        .node(
            failing_then_held("c", &c_fails, &release, &c_built)
                .depends_on(["b"])
                .handler(recording(&handled, "c", Verdict::Restart)),
        )
        .node(e.node())
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    c_fails.set();
    failure_is_seen(&rt, &events, "c").await;
    b.fail();
    // b's verdict is acted on while c is still stopping: b's instance is
    // down already, but b is stopped for good only after c, its
    // dependent, is done.
    eventually(&rt, "b's verdict is acted on", || {
        events
            .snapshot()
            .contains(&"b verdict 1: stop, acted on: true".to_string())
    })
    .await;
    assert_eq!(handled.snapshot(), ["b 1 b failed 1"], "c is not done yet");
    assert_eq!(
        running.status.summary(),
        "a=ready b=stopping c=stopping e=ready"
    );
    release.set();
    running
        .settles_to(&rt, "a=ready b=stopped c=stopped e=ready")
        .await;
    let stopped = events_of_kind(&events, &["stopped"]);
    assert_eq!(stopped, ["c stopped 1", "b stopped 1"], "dependents first");
    assert!(
        !running.run.is_finished(),
        "a Stop cascade does not end the supervisor"
    );
    // c's handler was asked once, and its Restart ignored.
    assert_eq!(handled.snapshot(), ["b 1 b failed 1", "c 1 c failed 1"]);
    assert_eq!(c_built.get(), 1, "c was restarted");
    assert_eq!((a.built(), b.built(), e.built()), (1, 1, 1));
    assert_eq!(
        events_of(&events, "b"),
        [
            "b starting 1",
            "b ready 1",
            "b failed 1: b failed 1",
            "b verdict 1: stop, acted on: true",
            "b stopped 1",
        ]
    );
    assert_eq!(
        events_of(&events, "c"),
        [
            "c starting 1",
            "c ready 1",
            "c failed 1: c failed 1",
            "c verdict 1: restart, acted on: false",
            "c stopped 1",
        ]
    );
    // Both failures left their node stopped for good, in the order their
    // verdicts came; nothing was stopped by the supervisor but a and e, at
    // the parent's stop.
    running
        .stop_after_failures(&["b: b failed 1", "c: c failed 1"])
        .await;
    let mut stops = log.snapshot();
    stops.sort();
    assert_eq!(stops, ["a stopped", "e stopped"]);
}

async fn independent_nodes_start_concurrently(rt: SharedRuntime) {
    let log = Events::new();
    let x = Probe::new("x", &log).gated();
    let y = Probe::new("y", &log).gated();
    let supervisor = Supervisor::builder()
        .node(x.node())
        .node(y.node())
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    // Neither is ready: were they started one after the other, the second
    // would wait for the first for ever.
    eventually(&rt, "both are built", || x.built() == 1 && y.built() == 1).await;
    assert_eq!(running.status.summary(), "x=starting y=starting");
    assert!(!running.ready.is_set());
    y.open();
    x.open();
    running.ready.wait().await;
    running.stop_cleanly().await;
    assert_eq!((x.built(), y.built()), (1, 1));
}

async fn peers_start_in_declaration_order(rt: SharedRuntime) {
    // Declared neither alphabetically nor root first: peers that become
    // startable together (once the root is ready) start in declaration
    // order. The factories run on the supervisor's own task, so the order
    // is the same on every executor.
    let log = Events::new();
    let root = Probe::new("root", &log).gated();
    let [zeta, alpha, mid] = ["zeta", "alpha", "mid"].map(|name| Probe::new(name, &log));
    let supervisor = Supervisor::builder()
        .node(logging_builds(&zeta).depends_on(["root"]))
        .node(logging_builds(&alpha).depends_on(["root"]))
        .node(logging_builds(&root))
        .node(logging_builds(&mid).depends_on(["root"]))
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    eventually(&rt, "the root is built", || root.built() == 1).await;
    root.open();
    running.ready.wait().await;
    assert_eq!(
        log.snapshot(),
        [
            "root built 1",
            "zeta built 1",
            "alpha built 1",
            "mid built 1"
        ]
    );
    running.stop_cleanly().await;
}

/// A supervisor of `f`, a probe whose failure is a SpinHalt (its handler
/// records into `handled`), beside `other`, released by `terminate`.
fn spin_halting_beside(
    other: Node,
    handled: &Events,
    terminate: &Latch,
) -> (SupervisorBuilder, Probe) {
    let f = Probe::new("f", &Events::new());
    let builder = Supervisor::builder()
        .node(f.node().handler(recording(handled, "f", Verdict::SpinHalt)))
        .node(other)
        .terminate_on(terminate.signal());
    (builder, f)
}

/// Checks that the run ended with a spin-halt after `node` failed with
/// `error`, released by a terminate request.
fn assert_released_by(outcome: &SupervisorOutcome, node: &str, error: &str) {
    match &outcome.end {
        SupervisorEnd::SpinHaltReleased {
            node: halted,
            error: failed,
        } => {
            assert_eq!(&**halted, node);
            assert_eq!(failed.to_string(), error);
        }
        other => panic!("expected a spin-halt after {node}, got {other:?}"),
    }
    assert!(!outcome.is_clean());
}

async fn terminate_during_a_spin_halt_waits_for_the_stop(rt: SharedRuntime) {
    let (log, handled, terminate) = (Events::new(), Events::new(), Latch::new());
    let (slow_told, release) = (Latch::new(), Latch::new());
    let slow = Node::new("slow", holding("slow", &log, &slow_told, &release));
    let (builder, f) = spin_halting_beside(slow, &handled, &terminate);
    let running = launch_ready(&rt, builder).await;
    f.fail();
    slow_told.wait().await;
    assert_eq!(
        running.status.summary(),
        "f=stopped slow=stopping spin-halt after f"
    );
    // The request comes while slow is still stopping: it releases the
    // spin-halt, but only once every node is done.
    terminate.set();
    let_others_run(&rt).await;
    assert!(
        !running.run.is_finished(),
        "the run returned before slow was done"
    );
    assert_eq!(
        running.status.summary(),
        "f=stopped slow=stopping spin-halt after f"
    );
    release.set();
    let status = running.status.clone();
    let outcome = running.outcome().await;
    assert_released_by(&outcome, "f", "f failed 1");
    assert_eq!(status.summary(), "f=stopped slow=stopped spin-halt after f");
    assert_eq!(log.snapshot(), ["slow told", "slow stopped"]);
    assert_eq!(handled.snapshot(), ["f 1 f failed 1"]);
    assert!(outcome.failures.is_empty() && outcome.shutdown_errors.is_empty());
    assert!(outcome.overran.is_empty() && !outcome.budget_spent);
}

async fn node_failing_on_its_own_is_aborted_at_its_stop_timeout(rt: SharedRuntime) {
    // n fails, and its second worker ignores the stop that follows: at its
    // stop timeout the instance is aborted, and only then is the handler
    // asked, with n's own error.
    let (events, handled) = (Events::new(), Events::new());
    let (fail, never) = (Latch::new(), Latch::new());
    let built = Counter::default();
    let builder = Supervisor::builder()
        .node(
            failing_then_held("n", &fail, &never, &built)
                .stop_timeout(SHORT)
                .handler(recording(&handled, "n", Verdict::Restart)),
        )
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    let failed_at = rt.now();
    fail.set();
    running.settles_to(&rt, "n=ready(2)").await;
    assert!(
        rt.now().saturating_duration_since(failed_at) >= SHORT,
        "restarted before its stop timeout"
    );
    assert_eq!(handled.snapshot(), ["n 1 n failed 1"]);
    assert_eq!(built.get(), 2);
    let outcome = running.stop_parent().await;
    assert_eq!(overran(&outcome), ["n"]);
    // Restarted: not a failure for good.
    assert!(outcome.failures.is_empty(), "got {outcome:?}");
    assert!(!outcome.is_clean());
    assert_eq!(
        events.snapshot(),
        [
            "n starting 1",
            "n ready 1",
            "n failed 1: n failed 1",
            "n stop timed out 1 after 5ms",
            "n verdict 1: restart, acted on: true",
            "n restarting 2 after 0ns",
            "n starting 2",
            "n ready 2",
            "n stopping 2: the parent stopped",
            "n stopped 2",
        ]
    );
}

/// A spin-halt whose stop ends within the shutdown budget has not spent
/// it, however long it then waits for its terminate request: the budget
/// bounds the stop, not the wait.
async fn spin_halt_within_its_budget_leaves_it_unspent(rt: SharedRuntime) {
    let (handled, terminate, gone) = (Events::new(), Latch::new(), Latch::new());
    let quick = Node::new("quick", watched(&gone, Heeds::Stop));
    let (builder, f) = spin_halting_beside(quick, &handled, &terminate);
    let running = launch_ready(&rt, builder.shutdown_budget(SHORT)).await;
    f.fail();
    running
        .settles_to(&rt, "f=stopped quick=stopped spin-halt after f")
        .await;
    // Well past the budget, still spin-halted.
    rt.sleep(SHORT * 4).await;
    let outcome = running.released_by(&terminate, "f", "f failed 1").await;
    assert!(!outcome.budget_spent, "got {outcome:?}");
    assert!(outcome.overran.is_empty(), "got {outcome:?}");
}

async fn shutdown_budget_runs_out_during_a_spin_halt(rt: SharedRuntime) {
    // stubborn ignores the spin-halt's stop and has no stop timeout of its
    // own: the shutdown budget gives it up, and the spin-halt goes on
    // until the terminate request.
    let (events, handled, terminate, gone) =
        (Events::new(), Events::new(), Latch::new(), Latch::new());
    let stubborn = Node::new("stubborn", watched(&gone, Heeds::Nothing)).no_stop_timeout();
    let (builder, f) = spin_halting_beside(stubborn, &handled, &terminate);
    let builder = builder.shutdown_budget(SHORT).on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    let failed_at = rt.now();
    f.fail();
    running
        .settles_to(&rt, "f=stopped stubborn=stopped spin-halt after f")
        .await;
    assert!(
        rt.now().saturating_duration_since(failed_at) >= SHORT,
        "given up before the budget ran out"
    );
    gone.wait().await; // aborted, not left behind
    let outcome = running.released_by(&terminate, "f", "f failed 1").await;
    assert!(outcome.budget_spent, "got {outcome:?}");
    assert_eq!(overran(&outcome), ["stubborn"]);
    assert_eq!(handled.snapshot(), ["f 1 f failed 1"]);
    assert_eq!(
        events_of(&events, "stubborn"),
        [
            "stubborn starting 1",
            "stubborn ready 1",
            "stubborn stopping 1: spin-halt after f failed",
            "stubborn given up 1 after a budget of 5ms",
            "stubborn stopped 1",
        ]
    );
}

async fn permanent_node_exiting_at_once_spends_its_budget(rt: SharedRuntime) {
    let (log, events, handled) = (Events::new(), Events::new(), Events::new());
    let p = Probe::new("p", &log).finishing_at_once();
    let supervisor = Supervisor::builder()
        .node(two_restarts_then_stop(p.node().permanent(), &handled, "p"))
        .on_event(describing(&events))
        .build()
        .unwrap();
    let running = launch(&rt, supervisor);
    let status = running.status.clone();
    // p, the only node, ends stopped for good: the run completes.
    let outcome = running.completes().await;
    // Two restarts allowed: the third exit escalates.
    assert_eq!(p.built(), 3);
    assert_eq!(status.summary(), "p=stopped(3)");
    assert_eq!(
        failed(&outcome),
        ["p: node p exited and is permanent, but its restart budget is spent"]
    );
    assert!(!outcome.is_clean());
    assert!(handled.is_empty(), "a clean exit is not a failure");
    // Ready comes with done here: whether the run sees it is a race.
    let events: Vec<_> = events
        .snapshot()
        .into_iter()
        .filter(|event| !event.starts_with("p ready"))
        .collect();
    assert_eq!(
        events,
        [
            "p starting 1",
            "p completed 1",
            "p restarting 2 after 0ns",
            "p starting 2",
            "p completed 2",
            "p restarting 3 after 0ns",
            "p starting 3",
            "p completed 3",
            "p restarts exhausted 3: stop",
            "p stopped 3",
        ]
    );
    assert!(log.is_empty(), "nothing was told to stop: {log:?}");
}

/// n fails on its own before the parent's stop, and its failed instance
/// ignores the stop that follows (no stop timeout of its own); the shutdown
/// budget gives it up. Its failure stays in the outcome's `failures`, its
/// verdict recorded and not acted on, as when the failed instance ends
/// within the budget (`verdict_during_a_cascade_is_recorded_not_acted_on`).
async fn failure_given_up_by_the_shutdown_budget_stays_in_the_outcome(rt: SharedRuntime) {
    let events = Events::new();
    let (fail, never) = (Latch::new(), Latch::new());
    let builder = Supervisor::builder()
        .node(failing_then_held("n", &fail, &never, &Counter::default()).no_stop_timeout())
        .shutdown_budget(SHORT)
        .on_event(describing(&events));
    let running = launch_ready(&rt, builder).await;
    fail.set();
    failure_is_seen(&rt, &events, "n").await;
    let outcome = running.stop_spending_the_budget().await;
    assert_eq!(overran(&outcome), ["n"]);
    assert_eq!(failed(&outcome), ["n: n failed 1"]);
    assert_eq!(events.count("n verdict 1: restart, acted on: false"), 1);
}
