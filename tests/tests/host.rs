//! A supervisor as a process's main job ([`HostRun`]) on every executor,
//! with the host's requests scripted instead of sent by the OS.
//!
//! Covered:
//! - Interrupt and terminate each stop cleanly, in reverse dependency
//!   order, with exit code 0.
//! - A second interrupt during a stop returns at once with code 130, while
//!   a node still hangs in its stop; the node's task is aborted.
//! - A spin-halt ignores interrupts (one or two) and ends on terminate
//!   with code 3.
//! - A Shutdown verdict gives code 1; an error during the stop gives code
//!   1; a node overrunning its stop timeout gives code 4.
//! - The requests ending (a closed stream) does not end the run.
//! - The notifier: ready once, stopping once, a status line per change
//!   (the last one the final state), alive calls while the run goes on.
//! - `Supervisor::of_one`: one component's failure is the exit code.
//! - A supervisor started before (as a component) is refused with a typed
//!   error: the host's requests could never reach it.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use lifecycle::{
    Component, ComponentManager, ExitReason, FatalError, FatalSlot, HostExit, HostNotify, HostRun,
    HostSignal, Latch, Node, RuntimeExt, Scope, SharedRuntime, StartError, StopSource, Supervisor,
    SupervisorEnd, Verdict,
};
use lifecycle_conformance::{conformance, eventually, let_others_run, Events};

conformance!(
    interrupt_stops_cleanly_in_order,
    terminate_stops_cleanly,
    second_interrupt_forces_the_exit,
    spin_halt_ignores_interrupts_and_ends_on_terminate,
    shutdown_verdict_is_fatal,
    error_during_the_stop_is_fatal,
    nodes_stopped_by_their_failures_are_fatal,
    overrunning_a_stop_timeout_is_its_own_code,
    closed_requests_do_not_end_the_run,
    notifier_hears_ready_stopping_and_every_change,
    notifier_is_called_alive_while_the_run_goes_on,
    one_component_failure_is_the_exit_code,
    a_started_supervisor_is_refused,
);

/// Short enough to keep the suite fast, long enough to be a real wait.
const SHORT: Duration = Duration::from_millis(5);

/// What a node's instance does once told to stop.
#[derive(Clone, Copy)]
enum OnStop {
    /// Logs "X stopped" and returns `Ok`.
    Return,
    /// Logs "X stopped" and returns an error.
    Fail,
    /// Logs "X stopped" and never returns (until aborted).
    Hang,
}

/// A node whose instances are ready at once and serve until told to stop,
/// or fail with "X failed" once `fail` is set.
fn node(name: &'static str, log: &Events, fail: &Latch, on_stop: OnStop) -> Node {
    let (log, fail) = (log.clone(), fail.clone());
    Node::new(name, move || {
        let (log, fail) = (log.clone(), fail.clone());
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let (log, fail) = (log.clone(), fail.clone());
                async move {
                    ready.ready();
                    let failed = futures_util::future::select(
                        Box::pin(fail.wait_owned()),
                        Box::pin(ctx.token().clone().stopped_owned()),
                    )
                    .await;
                    if let futures_util::future::Either::Left(_) = failed {
                        return Err(FatalError::msg(format!("{name} failed")));
                    }
                    log.push(format!("{name} stopped"));
                    match on_stop {
                        OnStop::Return => Ok(()),
                        OnStop::Fail => {
                            Err(FatalError::msg(format!("{name} failed while stopping")))
                        }
                        OnStop::Hang => pending().await,
                    }
                }
            })
            .build())
    })
}

/// Host requests, each sent when its trigger is set, in order.
struct Script {
    steps: Vec<(Latch, HostSignal)>,
    delivered: Events,
}

impl Script {
    fn new() -> Script {
        Script {
            steps: Vec::new(),
            delivered: Events::new(),
        }
    }

    /// Adds a request; setting the returned latch sends it (once the ones
    /// before it are sent).
    fn then(&mut self, signal: HostSignal) -> Latch {
        let trigger = Latch::new();
        self.steps.push((trigger.clone(), signal));
        trigger
    }

    /// The requests as a stream that ends after the last one.
    fn stream(self) -> impl Stream<Item = HostSignal> + Send + Unpin {
        let delivered = self.delivered;
        Box::pin(stream::iter(self.steps).then(move |(trigger, signal)| {
            let delivered = delivered.clone();
            async move {
                trigger.wait().await;
                delivered.push(format!("{signal:?}"));
                signal
            }
        }))
    }
}

/// Records what a run tells its service manager.
#[derive(Clone)]
struct Recorder {
    log: Events,
    every: Option<Duration>,
}

impl HostNotify for Recorder {
    fn ready(&mut self) {
        self.log.push("ready");
    }
    fn stopping(&mut self) {
        self.log.push("stopping");
    }
    fn status(&mut self, summary: &str) {
        self.log.push(format!("status {summary}"));
    }
    fn alive_every(&self) -> Option<Duration> {
        self.every
    }
    fn alive(&mut self) {
        self.log.push("alive");
    }
}

/// A run in its own task, with the latch its supervisor's ready sets.
struct Hosted {
    ready: lifecycle::Signal,
    status: lifecycle::StatusBoard,
    run: lifecycle::JoinHandle<HostExit>,
}

fn start(rt: &SharedRuntime, supervisor: Supervisor, script: Script) -> Hosted {
    start_notifying(rt, supervisor, script, None)
}

/// Runs `supervisor` under `script` in its own task, telling `notify`
/// (if any) what a service manager would hear.
fn start_notifying(
    rt: &SharedRuntime,
    supervisor: Supervisor,
    script: Script,
    notify: Option<Recorder>,
) -> Hosted {
    let ready = lifecycle::Component::ready(&supervisor);
    let status = supervisor.status();
    let mut run = HostRun::new(supervisor).expect("a fresh supervisor");
    if let Some(notify) = notify {
        run = run.notify(notify);
    }
    let run = rt.spawn(run.run(rt.clone(), script.stream()));
    Hosted { ready, status, run }
}

impl Hosted {
    async fn exit(self) -> HostExit {
        self.run.await.expect("the host run panicked")
    }
}

/// `config <- db <- api`, all returning on their stop.
fn chain(log: &Events, fail_db: &Latch) -> Supervisor {
    let never = Latch::new();
    Supervisor::builder()
        .node(node("config", log, &never, OnStop::Return))
        .node(node("db", log, fail_db, OnStop::Return).depends_on(["config"]))
        .node(node("api", log, &never, OnStop::Return).depends_on(["db"]))
        .build()
        .unwrap()
}

async fn a_started_supervisor_is_refused(rt: SharedRuntime) {
    let supervisor = Supervisor::builder()
        .node(Node::new("a", || Ok(ComponentManager::builder().build())))
        .build()
        .unwrap();
    let parent = StopSource::new();
    supervisor
        .start(Scope::new(rt.clone(), parent.token(), FatalSlot::new()))
        .unwrap();
    let done = Component::done(&supervisor);
    assert!(matches!(
        HostRun::new(supervisor),
        Err(StartError::AlreadyStarted)
    ));
    // Refusing it left its run alone: it still stops with its parent.
    parent.stop();
    done.wait().await;
}

async fn interrupt_stops_cleanly_in_order(rt: SharedRuntime) {
    let log = Events::new();
    let mut script = Script::new();
    let interrupt = script.then(HostSignal::Interrupt);
    let hosted = start(&rt, chain(&log, &Latch::new()), script);
    hosted.ready.wait().await;
    interrupt.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.reason, ExitReason::Clean);
    assert_eq!(exit.code(), 0);
    assert_eq!(exit.request, Some(HostSignal::Interrupt));
    assert_eq!(
        exit.to_string(),
        "clean stop (exit code 0): stopped by SIGINT"
    );
    let outcome = exit.outcome.expect("a graceful stop has an outcome");
    assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
    // The outcome alone does not know the parent was a signal.
    assert_eq!(outcome.to_string(), "stopped by the parent");
    assert_eq!(
        log.snapshot(),
        ["api stopped", "db stopped", "config stopped"]
    );
}

async fn terminate_stops_cleanly(rt: SharedRuntime) {
    let log = Events::new();
    let mut script = Script::new();
    let terminate = script.then(HostSignal::Terminate);
    let hosted = start(&rt, chain(&log, &Latch::new()), script);
    hosted.ready.wait().await;
    terminate.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.code(), 0, "{exit}");
    assert_eq!(exit.request, Some(HostSignal::Terminate));
    assert_eq!(
        exit.to_string(),
        "clean stop (exit code 0): stopped by SIGTERM"
    );
    let outcome = exit.outcome.expect("a graceful stop has an outcome");
    assert!(matches!(outcome.end, SupervisorEnd::Terminated));
    assert_eq!(
        log.snapshot(),
        ["api stopped", "db stopped", "config stopped"]
    );
}

async fn second_interrupt_forces_the_exit(rt: SharedRuntime) {
    let log = Events::new();
    let never = Latch::new();
    let supervisor = Supervisor::builder()
        .node(node("base", &log, &never, OnStop::Return))
        .node(
            node("stuck", &log, &never, OnStop::Hang)
                .depends_on(["base"])
                .no_stop_timeout(),
        )
        .build()
        .unwrap();
    let mut script = Script::new();
    let (first, second) = (
        script.then(HostSignal::Interrupt),
        script.then(HostSignal::Interrupt),
    );
    let delivered = script.delivered.clone();
    let hosted = start(&rt, supervisor, script);
    hosted.ready.wait().await;
    first.set();
    eventually(&rt, "the stuck node is told to stop", || {
        log.snapshot() == ["stuck stopped"]
    })
    .await;
    let_others_run(&rt).await;
    assert!(
        !hosted.run.is_finished(),
        "the stop waits for the stuck node"
    );
    // The ordered stop never reached the base node: the stuck one holds it.
    assert_eq!(log.snapshot(), ["stuck stopped"]);
    second.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.reason, ExitReason::Forced);
    assert_eq!(exit.code(), 130);
    assert!(exit.outcome.is_none(), "a forced exit does not wait");
    assert_eq!(exit.request, Some(HostSignal::Interrupt));
    assert_eq!(delivered.snapshot(), ["Interrupt", "Interrupt"]);
    // Dropping the run stops every scope at once and aborts the tasks, so
    // the base node may or may not log its stop before it is aborted.
}

async fn spin_halt_ignores_interrupts_and_ends_on_terminate(rt: SharedRuntime) {
    let (log, fail) = (Events::new(), Latch::new());
    let never = Latch::new();
    let supervisor = Supervisor::builder()
        .node(node("base", &log, &never, OnStop::Return))
        .node(
            node("halting", &log, &fail, OnStop::Return)
                .depends_on(["base"])
                .handler(|_| Verdict::SpinHalt),
        )
        .build()
        .unwrap();
    let mut script = Script::new();
    let interrupts = [
        script.then(HostSignal::Interrupt),
        script.then(HostSignal::Interrupt),
    ];
    let terminate = script.then(HostSignal::Terminate);
    let delivered = script.delivered.clone();
    let hosted = start(&rt, supervisor, script);
    hosted.ready.wait().await;
    fail.set();
    let status = hosted.status.clone();
    eventually(&rt, "the spin-halt", || {
        status.summary() == "base=stopped halting=stopped spin-halt after halting"
    })
    .await;
    for interrupt in &interrupts {
        interrupt.set();
    }
    eventually(&rt, "both interrupts are delivered", || {
        delivered.len() == 2
    })
    .await;
    let_others_run(&rt).await;
    assert!(!hosted.run.is_finished(), "an interrupt ended a spin-halt");
    terminate.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.reason, ExitReason::SpinHaltReleased);
    assert_eq!(exit.code(), 3);
    // The interrupts were ignored: the first request acted on is SIGTERM.
    assert_eq!(exit.request, Some(HostSignal::Terminate));
    let outcome = exit.outcome.expect("a released spin-halt has an outcome");
    assert_eq!(
        outcome.error().map(ToString::to_string).as_deref(),
        Some("halting failed")
    );
}

/// Runs `supervisor` with no host request, sets `fail` once it is ready,
/// and returns how the run ended, which is on its own.
async fn exit_after_failing(rt: &SharedRuntime, supervisor: Supervisor, fail: &Latch) -> HostExit {
    let hosted = start(rt, supervisor, Script::new());
    hosted.ready.wait().await;
    fail.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.request, None, "the supervisor ended on its own");
    exit
}

async fn shutdown_verdict_is_fatal(rt: SharedRuntime) {
    let (log, fail) = (Events::new(), Latch::new());
    let supervisor = Supervisor::builder()
        .node(node("db", &log, &fail, OnStop::Return).handler(|_| Verdict::Shutdown))
        .build()
        .unwrap();
    let exit = exit_after_failing(&rt, supervisor, &fail).await;
    assert_eq!(exit.reason, ExitReason::Fatal);
    assert_eq!(exit.code(), 1);
    assert_eq!(
        exit.to_string(),
        "fatal failure (exit code 1): shut down after node db failed: db failed"
    );
}

async fn error_during_the_stop_is_fatal(rt: SharedRuntime) {
    let log = Events::new();
    let supervisor = Supervisor::builder()
        .node(node("flush", &log, &Latch::new(), OnStop::Fail))
        .build()
        .unwrap();
    let mut script = Script::new();
    let terminate = script.then(HostSignal::Terminate);
    let hosted = start(&rt, supervisor, script);
    hosted.ready.wait().await;
    terminate.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.reason, ExitReason::Fatal);
    assert_eq!(
        exit.to_string(),
        "fatal failure (exit code 1): stopped by SIGTERM; \
         flush failed while stopping: flush failed while stopping"
    );
}

async fn nodes_stopped_by_their_failures_are_fatal(rt: SharedRuntime) {
    let (log, fail) = (Events::new(), Latch::new());
    let supervisor = Supervisor::builder()
        .node(node("a", &log, &fail, OnStop::Return).handler(|_| Verdict::Stop))
        .node(node("b", &log, &fail, OnStop::Return).handler(|_| Verdict::Stop))
        .build()
        .unwrap();
    // Each node stops for good; the supervisor ends when both have, on its
    // own, but not cleanly.
    let exit = exit_after_failing(&rt, supervisor, &fail).await;
    assert_eq!(exit.reason, ExitReason::Fatal);
    let outcome = exit.outcome.as_ref().expect("the run ended on its own");
    assert!(matches!(outcome.end, SupervisorEnd::Completed));
    assert!(!outcome.is_clean());
    let mut failures: Vec<_> = outcome
        .failures
        .iter()
        .map(|failure| failure.to_string())
        .collect();
    failures.sort();
    assert_eq!(failures, ["a: a failed", "b: b failed"]);
    assert!(
        exit.to_string()
            .starts_with("fatal failure (exit code 1): every node ended; "),
        "{exit}"
    );
}

async fn overrunning_a_stop_timeout_is_its_own_code(rt: SharedRuntime) {
    let log = Events::new();
    let supervisor = Supervisor::builder()
        .node(node("slow", &log, &Latch::new(), OnStop::Hang).stop_timeout(SHORT))
        .build()
        .unwrap();
    let mut script = Script::new();
    let interrupt = script.then(HostSignal::Interrupt);
    let hosted = start(&rt, supervisor, script);
    hosted.ready.wait().await;
    interrupt.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.reason, ExitReason::Overran);
    assert_eq!(exit.code(), 4);
    let outcome = exit.outcome.expect("an overrun stop has an outcome");
    assert_eq!(outcome.overran, [Arc::<str>::from("slow")]);
}

async fn closed_requests_do_not_end_the_run(rt: SharedRuntime) {
    let log = Events::new();
    let finish = Latch::new();
    let supervisor = Supervisor::builder()
        .node(Node::new("job", {
            let finish = finish.clone();
            move || {
                let finish = finish.clone();
                Ok(ComponentManager::builder()
                    .add_worker(move |_, ready| {
                        let finish = finish.clone();
                        async move {
                            ready.ready();
                            finish.wait().await;
                            Ok(())
                        }
                    })
                    .build())
            }
        }))
        .build()
        .unwrap();
    // No requests at all: the stream ends at once.
    let hosted = start(&rt, supervisor, Script::new());
    hosted.ready.wait().await;
    let_others_run(&rt).await;
    assert!(
        !hosted.run.is_finished(),
        "the end of the requests ended the run"
    );
    finish.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.code(), 0, "{exit}");
    assert!(matches!(
        exit.outcome.map(|outcome| outcome.end),
        Some(SupervisorEnd::Completed)
    ));
    assert!(log.is_empty());
}

async fn notifier_hears_ready_stopping_and_every_change(rt: SharedRuntime) {
    let (log, heard) = (Events::new(), Events::new());
    let mut script = Script::new();
    let interrupt = script.then(HostSignal::Interrupt);
    let never = Latch::new();
    let supervisor = Supervisor::builder()
        .node(node("db", &log, &never, OnStop::Return))
        .node(node("api", &log, &never, OnStop::Return).depends_on(["db"]))
        .build()
        .unwrap();
    let recorder = Recorder {
        log: heard.clone(),
        every: None,
    };
    let hosted = start_notifying(&rt, supervisor, script, Some(recorder));
    hosted.ready.wait().await;
    eventually(&rt, "ready is told", || heard.count("ready") == 1).await;
    interrupt.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.code(), 0, "{exit}");
    let heard = heard.snapshot();
    let at = |line: &str| heard.iter().position(|heard| heard == line);
    let ready = at("ready").expect("ready was told");
    let stopping = at("stopping").expect("stopping was told");
    assert!(ready < stopping, "{heard:?}");
    assert_eq!(heard.iter().filter(|line| *line == "ready").count(), 1);
    assert_eq!(heard.iter().filter(|line| *line == "stopping").count(), 1);
    assert!(
        ready > at("status db=ready api=ready").expect("the ready status was told"),
        "ready is told after the status that shows it: {heard:?}"
    );
    assert_eq!(
        heard.last().map(String::as_str),
        Some("status db=stopped api=stopped"),
        "{heard:?}"
    );
    // Each status line is a change.
    let statuses: Vec<_> = heard
        .iter()
        .filter(|line| line.starts_with("status"))
        .collect();
    for pair in statuses.windows(2) {
        assert_ne!(pair[0], pair[1], "{heard:?}");
    }
}

async fn notifier_is_called_alive_while_the_run_goes_on(rt: SharedRuntime) {
    let (log, heard) = (Events::new(), Events::new());
    let mut script = Script::new();
    let terminate = script.then(HostSignal::Terminate);
    let supervisor = Supervisor::builder()
        .node(node("db", &log, &Latch::new(), OnStop::Return))
        .build()
        .unwrap();
    let recorder = Recorder {
        log: heard.clone(),
        every: Some(SHORT),
    };
    let hosted = start_notifying(&rt, supervisor, script, Some(recorder));
    hosted.ready.wait().await;
    eventually(&rt, "alive is told again and again", || {
        heard.count("alive") >= 3
    })
    .await;
    terminate.set();
    let exit = hosted.exit().await;
    assert_eq!(exit.code(), 0, "{exit}");
    let before = heard.count("alive");
    rt.sleep(SHORT * 4).await;
    assert_eq!(
        heard.count("alive"),
        before,
        "alive was told after the run ended"
    );
}

async fn one_component_failure_is_the_exit_code(rt: SharedRuntime) {
    let fail = Latch::new();
    let supervisor = Supervisor::of_one("app", {
        let fail = fail.clone();
        move || {
            let fail = fail.clone();
            Ok(ComponentManager::builder()
                .add_worker(move |_, ready| {
                    let fail = fail.clone();
                    async move {
                        ready.ready();
                        fail.wait().await;
                        Err(FatalError::msg("app broke"))
                    }
                })
                .build())
        }
    });
    let exit = exit_after_failing(&rt, supervisor, &fail).await;
    assert_eq!(exit.code(), 1);
    match exit.outcome.map(|outcome| outcome.end) {
        Some(SupervisorEnd::Shutdown { node, error }) => {
            assert_eq!(&*node, "app");
            assert_eq!(error.to_string(), "app broke");
        }
        other => panic!("expected a shutdown, got {other:?}"),
    }
}
