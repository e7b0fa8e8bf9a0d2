//! A model-based test of the restartable service base, `StartStop`: random
//! scripts of starts, stops and queries on one service, checked against a
//! reference model of its generations after every step.
//!
//! The service under test (`Scripted`) is a service on `StartStop` whose
//! work is scripted: each start picks a spec (fail at setup or not; a
//! "stubborn" work that ignores its stop token, or one that returns when it
//! stops; keep clones of the generation's handles or not). A generation's
//! work runs in the task `Generation::spawn` makes; it records that it ran
//! (and whether another generation's work was running at the time), then
//! waits for a command from the test ("call started", "exit on your own")
//! or, unless stubborn, for its scope's token, and records how it ended.
//!
//! A case is a list of steps:
//! - start: one to three starts, concurrent (each in a task of its own) or
//!   one after the other; a failing spec makes the start fail at setup;
//! - stop: one to three concurrent stops (through the `Service` trait or the
//!   base), optionally with a start issued while the stop is in progress;
//! - stop with a deadline (`Service::stop_within` or `StartStop::stop_within`):
//!   it times out on a stubborn work, and the stop is abandoned;
//! - two-phase stop: `stop_init`, then optionally a start or a stop issued
//!   while it is open and the latch queries, then `finalize(true)` after
//!   waiting for the stopped latch, `finalize(false)` (after waiting or not),
//!   or dropping the guard;
//! - the current work calls its started handle, or exits on its own;
//! - a stale handle: a kept `StartedHandle` or `StoppedHandle` clone of some
//!   earlier (or the current) generation is called;
//! - latch queries (`started`, `stopped`);
//! - the parent scope is stopped (later starts are born stopped), or
//!   replaced by a fresh one.
//!
//! The model tracks the generations (spec, parent, stop cause of the scope,
//! whether the work exited and how, whether started was called), whether the
//! base is idle or holds a generation, and whether an idle base was asked for
//! a stopped latch. Every latch the test ever got is remembered with the
//! generation the model says it belongs to (a latch asked for while idle
//! belongs to the coming generation). After every step the test checks:
//! 1. each start's outcome (`Started`, `AlreadyRunning` or the setup error);
//!    for concurrent starts, exactly one `Started` unless a work was running;
//! 2. every stop returns only once its generation's stopped latch is set,
//!    and a stop (or start) issued while a stubborn work runs or a two-phase
//!    stop is open has not returned;
//! 3. `is_running` and the base's `Debug` state agree with the model;
//! 4. every latch ever handed out is the same latch as the others of its
//!    generation and kind, and is set exactly when the model says (started:
//!    the work called started or the generation ended; stopped: the
//!    generation ended). So latches asked for before a start are adopted by
//!    it, latches asked for after a completed stop belong to the next
//!    generation, and a stale handle never sets a later generation's latch;
//! 5. `stopped_unchecked` is the current generation's stopped latch, the one
//!    asked for early, the last generation's, or none before any;
//! 6. each generation's scope is stopped with the model's cause
//!    (`ServiceStopped` for a stop through the service or a restart,
//!    `ParentStopped` if the parent stopped first), and a work that saw its
//!    token stopped saw that cause;
//! 7. the works the model says run are running; the ones it says ended have
//!    ended, the way it says; no two works ever ran at the same time, and
//!    each generation that did not fail at setup ran its work exactly once.
//!
//! Positive checks wait with a bounded wait; negative checks are strict
//! after a few yields. At the end of a case the service is stopped, every
//! task is joined, and the harness checks that no task is left.
//!
//! Every run picks a random seed and prints it on standard error (shown
//! with a failure). To reproduce a failure:
//!
//! ```text
//! LIFECYCLE_PROPTEST_SEED=<seed> cargo test -p lifecycle-conformance \
//!     --test service_model -- --exact <test>
//! ```
//!
//! where `<test>` is the failing test (`tokio_current_thread`,
//! `tokio_multi_thread`, `async_std`, `smol` or `virtual_time`); the exact
//! command is printed too. A failure on a multi-threaded executor may depend
//! on timing and need a few runs to show again.
//!
//! `LIFECYCLE_PROPTEST_CASES=<n>` changes the number of cases (256 by
//! default) per executor.

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use lifecycle::{
    FatalError, FatalSlot, JoinHandle, Latch, RuntimeExt, Scope, Service, ServiceFuture,
    SharedRuntime, Signal, StartOutcome, StartStop, StartedHandle, StopCause, StopSource,
    StopToken, StoppedHandle,
};
use lifecycle_conformance::{lock, yield_now, ModelRun};
use proptest::prelude::*;
use proptest::sample::SizeRange;
use proptest::strategy::Union;

/// How long a positive check waits for what the model says must happen.
/// Generous: it only turns a lost wakeup or a deadlock into a failure.
const STEP_LIMIT: Duration = Duration::from_secs(5);

/// The deadline of a stop that must time out (its work is stubborn).
const SHORT_DEADLINE: Duration = Duration::from_millis(1);

lifecycle_conformance::model_conformance!(run_model, run_case);

// ---------------------------------------------------------------------------
// Scripts

/// How one start behaves if it begins a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    /// Fail at setup: end the generation and return an error.
    fail: bool,
    /// The work ignores its stop token and exits only when told to.
    stubborn: bool,
    /// Keep clones of the generation's handles, to call them later. A
    /// failing start without them ends its generation by dropping them.
    keep_handles: bool,
}

/// What `Service::start` does: the test uses it for starts with this spec.
const PLAIN: Spec = Spec {
    fail: false,
    stubborn: false,
    keep_handles: false,
};

/// Which API a stop goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Service,
    Base,
}

/// How a two-phase stop is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// Wait for the stopped latch, then `finalize(true)`.
    WaitThenTrue,
    /// Wait for the stopped latch, then `finalize(false)`.
    WaitThenFalse,
    /// `finalize(false)` at once.
    False,
    /// Drop the guard at once.
    Drop,
}

/// What is issued while a two-phase stop is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Nothing,
    Start(Spec),
    Stop,
}

#[derive(Clone, Debug)]
enum Step {
    /// Starts, concurrent if `concurrent` and there are several (and none
    /// fails, and the parent is not stopped: see `World::start`).
    Start { specs: Vec<Spec>, concurrent: bool },
    /// Concurrent stops; with one caller, maybe a start issued while the
    /// stop is in progress.
    Stop {
        callers: usize,
        via: Via,
        start_meanwhile: Option<Spec>,
    },
    /// A stop with a deadline: short if the work is stubborn (it times out),
    /// else long.
    StopWithin(Via),
    /// A two-phase stop.
    TwoPhase {
        close: Close,
        pending: Pending,
        query: bool,
    },
    /// The current work calls its started handle.
    Ready,
    /// The current work exits on its own.
    Exit,
    /// A kept handle of generation `pick` (modulo their count) is called:
    /// the stopped one if `stopped`, else the started one.
    Stale { pick: usize, stopped: bool },
    /// Ask for the latches, through the `Service` trait or the base.
    Query {
        started: bool,
        stopped: bool,
        via: Via,
    },
    /// Stop the parent scope.
    ParentStop,
    /// Use a fresh parent scope from now on.
    NewParent,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Step>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(fail, stubborn, keep_handles)| Spec {
            fail,
            stubborn,
            keep_handles,
        })
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![Just(Via::Service), Just(Via::Base)]
}

fn step() -> BoxedStrategy<Step> {
    let start = (prop::collection::vec(spec(), 1..=3), any::<bool>())
        .prop_map(|(specs, concurrent)| Step::Start { specs, concurrent });
    let stop = (1..=3usize, via(), prop::option::weighted(0.3, spec())).prop_map(
        |(callers, via, start_meanwhile)| Step::Stop {
            callers,
            via,
            start_meanwhile,
        },
    );
    let close = prop_oneof![
        Just(Close::WaitThenTrue),
        Just(Close::WaitThenFalse),
        Just(Close::False),
        Just(Close::Drop),
    ];
    let pending = prop_oneof![
        2 => Just(Pending::Nothing),
        1 => spec().prop_map(Pending::Start),
        1 => Just(Pending::Stop),
    ];
    let two_phase =
        (close, pending, any::<bool>()).prop_map(|(close, pending, query)| Step::TwoPhase {
            close,
            pending,
            query,
        });
    let query =
        (any::<bool>(), any::<bool>(), via()).prop_map(|(started, stopped, via)| Step::Query {
            started,
            stopped,
            via,
        });
    let stale =
        (0..8usize, any::<bool>()).prop_map(|(pick, stopped)| Step::Stale { pick, stopped });
    Union::new_weighted(vec![
        (8, start.boxed()),
        (4, stop.boxed()),
        (2, via().prop_map(Step::StopWithin).boxed()),
        (4, two_phase.boxed()),
        (3, Just(Step::Ready).boxed()),
        (2, Just(Step::Exit).boxed()),
        (3, stale.boxed()),
        (3, query.boxed()),
        (1, Just(Step::ParentStop).boxed()),
        (1, Just(Step::NewParent).boxed()),
    ])
    .boxed()
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(step(), SizeRange::from(0..=32)).prop_map(|steps| Case { steps })
}

// ---------------------------------------------------------------------------
// The runner

/// What the cases of one run went through, printed at the end so that a
/// generator drifting into trivial cases shows.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    steps: AtomicUsize,
    generations: AtomicUsize,
    failed_starts: AtomicUsize,
    born_stopped: AtomicUsize,
    restarts_after_exit: AtomicUsize,
    adopted: AtomicUsize,
    concurrent_starts: AtomicUsize,
    starts_behind_a_stop: AtomicUsize,
    stops_behind_a_stop: AtomicUsize,
    waiting_stops: AtomicUsize,
    deadlines_passed: AtomicUsize,
    abandoned: AtomicUsize,
    stale_calls: AtomicUsize,
    racy_restarts: AtomicUsize,
}

impl Coverage {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Relaxed);
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |counter: &AtomicUsize| counter.load(Relaxed);
        write!(
            f,
            "{} cases, {} steps carried out; {} generations, {} failed at setup, \
             {} born stopped, {} begun after the last one exited, {} adopting early latches; \
             {} concurrent start batches; {} starts and {} stops issued behind an open stop; \
             {} stops waiting for a stubborn work; {} deadlines passed; {} stops abandoned \
             with the work running; {} stale handle calls; {} starts racing a work's exit",
            n(&self.cases),
            n(&self.steps),
            n(&self.generations),
            n(&self.failed_starts),
            n(&self.born_stopped),
            n(&self.restarts_after_exit),
            n(&self.adopted),
            n(&self.concurrent_starts),
            n(&self.starts_behind_a_stop),
            n(&self.stops_behind_a_stop),
            n(&self.waiting_stops),
            n(&self.deadlines_passed),
            n(&self.abandoned),
            n(&self.stale_calls),
            n(&self.racy_restarts),
        )
    }
}

/// Runs the cases of test `test` on `executor`, each through `run`.
fn run_model(test: &str, executor: &str, run: impl Fn(Case, Arc<Coverage>)) {
    let model = ModelRun {
        file: "service_model",
        test,
        executor,
        default_cases: 256,
    };
    lifecycle_conformance::run_model(model, case(), run);
}

/// Runs `future` for at most [`STEP_LIMIT`]; panics with `what` otherwise.
async fn within<F: Future>(rt: &SharedRuntime, what: impl fmt::Display, future: F) -> F::Output {
    lifecycle_conformance::within(rt, STEP_LIMIT, what, future).await
}

/// Gives tasks that must not make progress a chance to make it wrongly,
/// before a negative check.
async fn yields() {
    for _ in 0..5 {
        yield_now().await;
    }
}

// ---------------------------------------------------------------------------
// The scripted service

/// A stop cause as the model names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// `StopCause::ServiceStopped`.
    Service,
    /// `StopCause::ParentStopped`.
    Parent,
    /// Anything else: always wrong here.
    Other,
}

fn cause_of(token: &StopToken) -> Option<Cause> {
    token.cause().map(|cause| match cause {
        StopCause::ServiceStopped => Cause::Service,
        StopCause::ParentStopped => Cause::Parent,
        _ => Cause::Other,
    })
}

/// How a generation's work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// Told to exit by the test.
    Command,
    /// Saw its token stopped, with this cause.
    Token(Option<Cause>),
}

/// The test's side of one generation.
struct GenRig {
    number: usize,
    spec: Spec,
    token: StopToken,
    /// Kept clones of the generation's handles (if the spec says so).
    started: Option<StartedHandle>,
    stopped: Option<StoppedHandle>,
    /// Commands to the work, and the acknowledgement of "call started".
    ready_cmd: Latch,
    ready_ack: Latch,
    exit_cmd: Latch,
    /// How the work ended, written by the work just before it returns.
    exit: Mutex<Option<Exit>>,
    /// The work's task, until the test joins it.
    join: Mutex<Option<JoinHandle<usize>>>,
}

/// What the works share: who is running.
#[derive(Default)]
struct Works {
    live: AtomicUsize,
    overlapped: AtomicBool,
    /// The generation numbers of the works, in the order they began running.
    ran: Mutex<Vec<usize>>,
}

/// Counts a work as running while it exists.
struct Live(Arc<Works>);

impl Live {
    fn enter(works: &Arc<Works>, number: usize) -> Self {
        lock(&works.ran).push(number);
        if works.live.fetch_add(1, AcqRel) != 0 {
            works.overlapped.store(true, Release);
        }
        Live(works.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, AcqRel);
    }
}

#[derive(Default)]
struct Scripted {
    base: StartStop,
    gens: Mutex<Vec<Arc<GenRig>>>,
    works: Arc<Works>,
}

/// What woke a work up.
enum Wake {
    Ready,
    Exit,
    Stopped,
}

async fn work(works: Arc<Works>, rig: Arc<GenRig>, scope: Scope, started: StartedHandle) -> usize {
    let live = Live::enter(&works, rig.number);
    let token = scope.token();
    let mut ready_done = false;
    let exit = loop {
        let wake = {
            let mut exit_cmd = pin!(rig.exit_cmd.wait());
            let mut ready_cmd = pin!(rig.ready_cmd.wait());
            let mut stopped = pin!(token.stopped());
            poll_fn(|cx| {
                if exit_cmd.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Exit);
                }
                if !ready_done && ready_cmd.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Ready);
                }
                if !rig.spec.stubborn && stopped.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Stopped);
                }
                Poll::Pending
            })
            .await
        };
        match wake {
            Wake::Ready => {
                started.set();
                ready_done = true;
                rig.ready_ack.set();
            }
            Wake::Exit => break Exit::Command,
            Wake::Stopped => break Exit::Token(cause_of(token)),
        }
    };
    *lock(&rig.exit) = Some(exit);
    drop(live);
    rig.number
}

impl Scripted {
    /// The start body a service author writes, with the behaviour `spec`
    /// says.
    async fn start_with(&self, scope: &Scope, spec: Spec) -> Result<StartOutcome, FatalError> {
        let Some(generation) = self.base.begin(scope).await else {
            return Ok(StartOutcome::AlreadyRunning);
        };
        let rig = {
            let mut gens = lock(&self.gens);
            let rig = Arc::new(GenRig {
                number: gens.len(),
                spec,
                token: generation.scope.token().clone(),
                started: spec.keep_handles.then(|| generation.started.clone()),
                stopped: spec.keep_handles.then(|| generation.stopped.clone()),
                ready_cmd: Latch::new(),
                ready_ack: Latch::new(),
                exit_cmd: Latch::new(),
                exit: Mutex::new(None),
                join: Mutex::new(None),
            });
            gens.push(rig.clone());
            rig
        };
        if spec.fail {
            // A kept clone keeps the generation alive: say it ended.
            // Without one, dropping the handles ends it.
            if spec.keep_handles {
                generation.stopped.set();
            }
            drop(generation);
            return Err(FatalError::msg(format!(
                "generation {} failed to start",
                rig.number
            )));
        }
        let works = self.works.clone();
        let join = generation.spawn({
            let rig = rig.clone();
            move |scope, started| work(works, rig, scope, started)
        });
        *lock(&rig.join) = Some(join);
        Ok(StartOutcome::Started)
    }

    fn rig(&self, number: usize) -> Arc<GenRig> {
        lock(&self.gens)[number].clone()
    }
}

impl Service for Scripted {
    fn start<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
        Box::pin(self.start_with(scope, PLAIN))
    }

    fn stop(&self) -> ServiceFuture<'_, ()> {
        Box::pin(self.base.stop())
    }

    fn started(&self) -> Signal {
        self.base.started()
    }

    fn stopped(&self) -> Signal {
        self.base.stopped()
    }
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Debug)]
struct GenModel {
    spec: Spec,
    /// The parent scope it was started in.
    parent: usize,
    /// Its scope's stop cause.
    cause: Option<Cause>,
    /// Its stopped latch is set: the start failed, or the work returned.
    exited: bool,
    /// How the work ended (none for a failed start).
    exit: Option<Exit>,
    /// The work was told to call started.
    work_ready: bool,
    /// Started was called, by the work or through a kept handle.
    called_started: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BaseState {
    Idle,
    /// Holds generation `n`: its work runs, or it exited but no stop or
    /// start has reset it yet.
    Current(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Started,
    Stopped,
}

#[derive(Debug)]
struct Model {
    gens: Vec<GenModel>,
    base: BaseState,
    /// Idle, and a stopped latch was asked for: the coming generation's.
    early_stopped: bool,
    /// The last generation whose stop completed.
    last_completed: Option<usize>,
    /// Whether each parent scope is stopped; the last is the one in use.
    parents: Vec<bool>,
}

impl Model {
    fn new() -> Self {
        Model {
            gens: Vec::new(),
            base: BaseState::Idle,
            early_stopped: false,
            last_completed: None,
            parents: vec![false],
        }
    }

    fn current(&self) -> Option<usize> {
        match self.base {
            BaseState::Idle => None,
            BaseState::Current(number) => Some(number),
        }
    }

    /// The current generation, if its work runs.
    fn running(&self) -> Option<usize> {
        self.current().filter(|&number| !self.gens[number].exited)
    }

    fn parent_stopped(&self) -> bool {
        *self.parents.last().expect("a parent")
    }

    /// The generation a latch asked for now belongs to.
    fn owner(&self) -> usize {
        self.current().unwrap_or(self.gens.len())
    }

    /// Whether the latch of `kind` of generation `number` is set.
    fn latch(&self, number: usize, kind: Kind) -> bool {
        self.gens.get(number).is_some_and(|generation| match kind {
            Kind::Started => generation.called_started || generation.exited,
            Kind::Stopped => generation.exited,
        })
    }

    /// A start begins generation `gens.len()`. Returns its number and the
    /// works that must exit now.
    fn begin(&mut self, spec: Spec) -> (usize, Vec<usize>) {
        assert!(
            self.running().is_none(),
            "the model begins over a running work"
        );
        if let Some(old) = self.current() {
            // The old work exited; the new start stops its scope.
            self.gens[old].cause.get_or_insert(Cause::Service);
        }
        self.early_stopped = false;
        let number = self.gens.len();
        let parent_stopped = self.parent_stopped();
        let mut generation = GenModel {
            spec,
            parent: self.parents.len() - 1,
            cause: parent_stopped.then_some(Cause::Parent),
            exited: spec.fail,
            exit: None,
            work_ready: false,
            called_started: false,
        };
        let mut must_exit = Vec::new();
        if parent_stopped && !spec.fail && !spec.stubborn {
            generation.exited = true;
            generation.exit = Some(Exit::Token(Some(Cause::Parent)));
            must_exit.push(number);
        }
        self.gens.push(generation);
        self.base = BaseState::Current(number);
        (number, must_exit)
    }

    /// A stop through the service opens on generation `number`.
    fn open_stop(&mut self, number: usize) -> Vec<usize> {
        let generation = &mut self.gens[number];
        let cause = *generation.cause.get_or_insert(Cause::Service);
        if generation.exited || generation.spec.stubborn {
            return Vec::new();
        }
        generation.exited = true;
        generation.exit = Some(Exit::Token(Some(cause)));
        vec![number]
    }

    /// The running work of generation `number` is told to exit.
    fn exit_command(&mut self, number: usize) {
        let generation = &mut self.gens[number];
        assert!(!generation.exited);
        generation.exited = true;
        generation.exit = Some(Exit::Command);
    }

    /// A stop of the current generation completes.
    fn complete_stop(&mut self) {
        let number = self.current().expect("a generation to stop");
        assert!(
            self.gens[number].exited,
            "a stop completed over a running work"
        );
        self.base = BaseState::Idle;
        self.last_completed = Some(number);
        self.early_stopped = false;
    }

    /// The parent in use stops. Returns the works that must exit now.
    fn parent_stop(&mut self) -> Vec<usize> {
        let parent = self.parents.len() - 1;
        self.parents[parent] = true;
        let Some(number) = self.current() else {
            return Vec::new();
        };
        let generation = &mut self.gens[number];
        if generation.parent != parent || generation.cause.is_some() {
            return Vec::new();
        }
        generation.cause = Some(Cause::Parent);
        if generation.exited || generation.spec.stubborn {
            return Vec::new();
        }
        generation.exited = true;
        generation.exit = Some(Exit::Token(Some(Cause::Parent)));
        vec![number]
    }
}

// ---------------------------------------------------------------------------
// One case

struct World {
    rt: SharedRuntime,
    svc: Arc<Scripted>,
    parents: Vec<StopSource>,
    slot: FatalSlot,
    model: Model,
    /// The first latch the test got of each generation and kind.
    seen: HashMap<(usize, Kind), Signal>,
    /// The step being run, for messages.
    at: String,
    coverage: Arc<Coverage>,
}

async fn run_case(rt: SharedRuntime, case: Case, coverage: Arc<Coverage>) {
    let mut world = World {
        rt,
        svc: Arc::default(),
        parents: vec![StopSource::new()],
        slot: FatalSlot::new(),
        model: Model::new(),
        seen: HashMap::new(),
        at: "at the beginning".into(),
        coverage,
    };
    world.check().await;
    for (index, step) in case.steps.iter().enumerate() {
        world.at = format!("after step {index} ({step:?})");
        Coverage::add(&world.coverage.steps, 1);
        world.step(step).await;
        world.check().await;
    }
    world.at = "after the final stop".into();
    world.finish().await;
    world.check().await;
    Coverage::add(&world.coverage.cases, 1);
}

impl World {
    fn scope(&self) -> Scope {
        let parent = self.parents.last().expect("a parent");
        Scope::new(self.rt.clone(), parent.token(), self.slot.clone())
    }

    fn rig(&self, number: usize) -> Arc<GenRig> {
        self.svc.rig(number)
    }

    async fn step(&mut self, step: &Step) {
        match *step {
            Step::Start {
                ref specs,
                concurrent,
            } => self.start(specs, concurrent).await,
            Step::Stop {
                callers,
                via,
                start_meanwhile,
            } => self.stop(callers, via, start_meanwhile).await,
            Step::StopWithin(via) => self.stop_within(via).await,
            Step::TwoPhase {
                close,
                pending,
                query,
            } => self.two_phase(close, pending, query).await,
            Step::Ready => {
                if let Some(number) = self.model.running() {
                    if !self.model.gens[number].work_ready {
                        let rig = self.rig(number);
                        rig.ready_cmd.set();
                        let what = format!("{}: work {number} calls started", self.at);
                        within(&self.rt, what, rig.ready_ack.wait()).await;
                        let generation = &mut self.model.gens[number];
                        generation.work_ready = true;
                        generation.called_started = true;
                    }
                }
            }
            Step::Exit => {
                if let Some(number) = self.model.running() {
                    self.rig(number).exit_cmd.set();
                    self.model.exit_command(number);
                    self.settle(&[number]).await;
                }
            }
            Step::Stale { pick, stopped } => self.stale(pick, stopped),
            Step::Query {
                started,
                stopped,
                via,
            } => self.query(started, stopped, via),
            Step::ParentStop => {
                self.parents.last().expect("a parent").stop();
                let must_exit = self.model.parent_stop();
                self.settle(&must_exit).await;
            }
            Step::NewParent => {
                self.parents.push(StopSource::new());
                self.model.parents.push(false);
            }
        }
    }

    /// Records a generation the service just began, and checks that the
    /// service's registry agrees.
    fn begun(&mut self, spec: Spec) -> Vec<usize> {
        let restart = self.model.current().is_some();
        let adopts = self.model.current().is_none()
            && (self
                .seen
                .contains_key(&(self.model.gens.len(), Kind::Started))
                || self
                    .seen
                    .contains_key(&(self.model.gens.len(), Kind::Stopped)));
        let (number, must_exit) = self.model.begin(spec);
        let rig = self.rig(number);
        assert_eq!(
            (rig.number, rig.spec),
            (number, spec),
            "{}: the service began another generation than the model",
            self.at
        );
        assert_eq!(
            lock(&self.svc.gens).len(),
            number + 1,
            "{}: the service began more generations than the model",
            self.at
        );
        let coverage = &self.coverage;
        Coverage::add(&coverage.generations, 1);
        Coverage::add(&coverage.failed_starts, usize::from(spec.fail));
        Coverage::add(
            &coverage.born_stopped,
            usize::from(self.model.parent_stopped()),
        );
        Coverage::add(&coverage.restarts_after_exit, usize::from(restart));
        Coverage::add(&coverage.adopted, usize::from(adopts));
        must_exit
    }

    /// Checks the result of a start the model says began a generation, and
    /// records it.
    async fn expect_begun(&mut self, spec: Spec, result: Result<StartOutcome, FatalError>) {
        let number = self.model.gens.len();
        match result {
            Ok(outcome) => assert!(
                !spec.fail && outcome == StartOutcome::Started,
                "{}: a start returned {outcome:?}, expected generation {number} to begin{}",
                self.at,
                if spec.fail { " and fail" } else { "" },
            ),
            Err(error) => assert!(
                spec.fail && error.to_string() == format!("generation {number} failed to start"),
                "{}: a start failed with {error}, expected generation {number} to begin{}",
                self.at,
                if spec.fail { " and fail" } else { "" },
            ),
        }
        let must_exit = self.begun(spec);
        self.settle(&must_exit).await;
    }

    /// Checks the result of a start the model says found a work running.
    fn expect_already_running(&self, result: &Result<StartOutcome, FatalError>) {
        assert!(
            matches!(result, Ok(StartOutcome::AlreadyRunning)),
            "{}: a start returned {result:?} while work {:?} runs",
            self.at,
            self.model.running(),
        );
    }

    /// A start issued now, in a task of its own.
    fn spawn_start(&self, spec: Spec) -> JoinHandle<Result<StartOutcome, FatalError>> {
        let svc = self.svc.clone();
        let scope = self.scope();
        self.rt
            .spawn(async move { svc.start_with(&scope, spec).await })
    }

    /// A stop issued now, in a task of its own. Returns whether
    /// `stopped` was set when the stop returned.
    fn spawn_stop(&self, via: Via, stopped: Option<Signal>) -> JoinHandle<bool> {
        let svc = self.svc.clone();
        self.rt.spawn(async move {
            match via {
                Via::Service => Service::stop(&*svc).await,
                Via::Base => svc.base.stop().await,
            }
            stopped.is_none_or(|stopped| stopped.is_set())
        })
    }

    async fn join<T>(&self, what: &str, task: JoinHandle<T>) -> T {
        let what = format!("{}: {what}", self.at);
        within(&self.rt, &what, task)
            .await
            .unwrap_or_else(|error| panic!("{what}: the task failed: {error:?}"))
    }

    async fn start(&mut self, specs: &[Spec], concurrent: bool) {
        // Concurrent starts that begin a generation whose work ends at once
        // (a failing one, or one born stopped) may begin several, in an
        // order the registry cannot tell; those run one after the other.
        let concurrent = concurrent
            && specs.len() > 1
            && !self.model.parent_stopped()
            && specs.iter().all(|spec| !spec.fail);
        if !concurrent {
            for &spec in specs {
                let scope = self.scope();
                let start = if spec == PLAIN {
                    Service::start(&*self.svc, &scope)
                } else {
                    Box::pin(self.svc.start_with(&scope, spec))
                };
                let what = format!("{}: a start returns", self.at);
                let result = within(&self.rt, what, start).await;
                if self.model.running().is_some() {
                    self.expect_already_running(&result);
                } else {
                    self.expect_begun(spec, result).await;
                }
            }
            return;
        }
        Coverage::add(&self.coverage.concurrent_starts, 1);
        let tasks: Vec<_> = specs.iter().map(|&spec| self.spawn_start(spec)).collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            let outcome = self
                .join("a concurrent start returns", task)
                .await
                .unwrap_or_else(|error| panic!("{}: a start failed: {error}", self.at));
            outcomes.push(outcome);
        }
        let winners: Vec<usize> = (0..specs.len())
            .filter(|&index| outcomes[index] == StartOutcome::Started)
            .collect();
        if self.model.running().is_some() {
            assert!(
                winners.is_empty(),
                "{}: concurrent starts returned {outcomes:?} while a work runs",
                self.at
            );
        } else {
            assert_eq!(
                winners.len(),
                1,
                "{}: concurrent starts returned {outcomes:?}: exactly one must begin",
                self.at
            );
            let must_exit = self.begun(specs[winners[0]]);
            self.settle(&must_exit).await;
        }
    }

    async fn stop(&mut self, callers: usize, via: Via, start_meanwhile: Option<Spec>) {
        let current = self.model.current();
        // Taken before the stop: after it, it would be the next generation's.
        let stopped = current.map(|_| {
            self.svc
                .base
                .stopped_unchecked()
                .expect("a generation has a stopped latch")
        });
        let stops: Vec<_> = (0..callers)
            .map(|_| self.spawn_stop(via, stopped.clone()))
            .collect();
        let mut must_exit = Vec::new();
        let mut start = None;
        if let Some(number) = current {
            let token = self.rig(number).token.clone();
            // A start issued once the stop has begun waits for it; that the
            // stop has begun shows only if the scope was not stopped before.
            let was_stopped = token.is_stopped();
            let what = format!("{}: the stop stops generation {number}'s scope", self.at);
            within(&self.rt, what, token.stopped()).await;
            must_exit = self.model.open_stop(number);
            if callers == 1 && !was_stopped {
                start = start_meanwhile.map(|spec| (spec, self.spawn_start(spec)));
                Coverage::add(
                    &self.coverage.starts_behind_a_stop,
                    usize::from(start.is_some()),
                );
            }
            if self.model.running() == Some(number) {
                // A stubborn work: every stop, and the start, wait for it.
                Coverage::add(&self.coverage.waiting_stops, 1);
                yields().await;
                for stop in &stops {
                    assert!(
                        !stop.is_finished(),
                        "{}: a stop returned while the work still runs",
                        self.at
                    );
                }
                if let Some((_, start)) = &start {
                    assert!(
                        !start.is_finished(),
                        "{}: a start returned while a stop is in progress",
                        self.at
                    );
                }
                self.rig(number).exit_cmd.set();
                self.model.exit_command(number);
                must_exit.push(number);
            }
        }
        self.settle(&must_exit).await;
        for stop in stops {
            assert!(
                self.join("a stop returns", stop).await,
                "{}: a stop returned before the generation's stopped latch was set",
                self.at
            );
        }
        if current.is_some() {
            self.model.complete_stop();
        }
        match start {
            Some((spec, start)) => {
                let result = self.join("a start behind a stop returns", start).await;
                self.expect_begun(spec, result).await;
            }
            None => {
                if let Some(spec) = start_meanwhile {
                    // Not issued during the stop: issue it now.
                    self.start(&[spec], false).await;
                }
            }
        }
    }

    async fn stop_within(&mut self, via: Via) {
        let stubborn = self
            .model
            .running()
            .is_some_and(|number| self.model.gens[number].spec.stubborn);
        let deadline = if stubborn { SHORT_DEADLINE } else { STEP_LIMIT };
        let begun = self.rt.now();
        let result = within(
            &self.rt,
            format!("{}: a stop with a deadline returns", self.at),
            async {
                match via {
                    Via::Service => self.svc.stop_within(&*self.rt, deadline).await,
                    Via::Base => self.svc.base.stop_within(deadline).await,
                }
            },
        )
        .await;
        let Some(number) = self.model.current() else {
            assert!(
                result.is_ok(),
                "{}: a stop with nothing to stop timed out",
                self.at
            );
            return;
        };
        let must_exit = self.model.open_stop(number);
        if stubborn {
            assert!(
                result.is_err(),
                "{}: a stop with a deadline returned Ok while the work runs",
                self.at
            );
            let waited = self.rt.now().saturating_duration_since(begun);
            assert!(
                waited >= deadline,
                "{}: a stop timed out after {waited:?}, before its deadline {deadline:?}",
                self.at
            );
            // Abandoned: the generation stays, its scope stopped.
            Coverage::add(&self.coverage.deadlines_passed, 1);
            Coverage::add(&self.coverage.abandoned, 1);
        } else {
            assert!(
                result.is_ok(),
                "{}: a stop with a deadline of {deadline:?} timed out on a work that \
                 returns when stopped",
                self.at
            );
            self.settle(&must_exit).await;
            self.model.complete_stop();
        }
    }

    async fn two_phase(&mut self, close: Close, pending: Pending, query: bool) {
        let current = self.model.current();
        // The guard borrows the base; a clone of the service keeps `self` free.
        let svc = self.svc.clone();
        let guard = within(
            &self.rt,
            format!("{}: stop_init returns", self.at),
            svc.base.stop_init(),
        )
        .await;
        let Some(number) = current else {
            assert!(
                guard.is_none(),
                "{}: stop_init opened a stop on an idle base",
                self.at
            );
            return;
        };
        let Some(guard) = guard else {
            panic!("{}: stop_init found nothing to stop", self.at);
        };
        let mut must_exit = self.model.open_stop(number);
        self.observe(number, Kind::Stopped, guard.stopped().clone());
        assert!(
            self.rig(number).token.is_stopped(),
            "{}: stop_init left generation {number}'s scope running",
            self.at
        );

        // Issued while the stop is open: they wait for it to close.
        let start = match pending {
            Pending::Start(spec) => {
                Coverage::add(&self.coverage.starts_behind_a_stop, 1);
                Some((spec, self.spawn_start(spec)))
            }
            _ => None,
        };
        let stop = (pending == Pending::Stop).then(|| {
            Coverage::add(&self.coverage.stops_behind_a_stop, 1);
            self.spawn_stop(Via::Base, Some(guard.stopped().clone()))
        });
        yields().await;
        assert!(
            start.as_ref().is_none_or(|(_, start)| !start.is_finished())
                && stop.as_ref().is_none_or(|stop| !stop.is_finished()),
            "{}: a start or stop returned while a two-phase stop is open",
            self.at
        );
        // The queries do not wait for the open stop.
        let state = format!("{:?}", self.svc.base);
        assert!(
            state.contains("\"stopping\""),
            "{}: the base says {state} while a two-phase stop is open",
            self.at
        );
        if query {
            self.query(true, true, Via::Base);
            // A work on its way out may or may not have ended yet.
            if must_exit.is_empty() {
                assert_eq!(
                    self.svc.base.is_running(),
                    self.model.running().is_some(),
                    "{}: is_running while a two-phase stop is open",
                    self.at
                );
            }
        }

        match close {
            Close::WaitThenTrue | Close::WaitThenFalse => {
                if self.model.running() == Some(number) {
                    self.rig(number).exit_cmd.set();
                    self.model.exit_command(number);
                    must_exit.push(number);
                }
                let what = format!("{}: the guard's stopped latch is set", self.at);
                within(&self.rt, what, guard.stopped().wait()).await;
                self.settle(&std::mem::take(&mut must_exit)).await;
                guard.finalize(close == Close::WaitThenTrue);
                if close == Close::WaitThenTrue {
                    self.model.complete_stop();
                }
            }
            Close::False | Close::Drop => {
                if close == Close::False {
                    guard.finalize(false);
                } else {
                    drop(guard);
                }
                if self.model.running() == Some(number) {
                    Coverage::add(&self.coverage.abandoned, 1);
                }
            }
        }
        // A work that returns when stopped may still be on its way out when
        // the stop is abandoned: a start then either finds it running or
        // begins the next generation.
        let racy = matches!(close, Close::False | Close::Drop) && must_exit.contains(&number);
        self.settle(&must_exit).await;

        if let Some((spec, start)) = start {
            let result = self
                .join("a start behind a two-phase stop returns", start)
                .await;
            if racy {
                Coverage::add(&self.coverage.racy_restarts, 1);
                if !matches!(result, Ok(StartOutcome::AlreadyRunning)) {
                    self.expect_begun(spec, result).await;
                }
            } else if self.model.running().is_some() {
                self.expect_already_running(&result);
            } else {
                self.expect_begun(spec, result).await;
            }
        }
        if let Some(stop) = stop {
            if self.model.current().is_some() {
                if let Some(number) = self.model.running() {
                    // Abandoned on a stubborn work: the stop waits for it.
                    yields().await;
                    assert!(
                        !stop.is_finished(),
                        "{}: a stop returned while the work still runs",
                        self.at
                    );
                    self.rig(number).exit_cmd.set();
                    self.model.exit_command(number);
                    self.settle(&[number]).await;
                }
                self.model.complete_stop();
            }
            assert!(
                self.join("a stop behind a two-phase stop returns", stop)
                    .await,
                "{}: a stop returned before the generation's stopped latch was set",
                self.at
            );
        }
    }

    /// Calls a kept handle of a generation.
    fn stale(&mut self, pick: usize, stopped: bool) {
        let count = self.model.gens.len();
        if count == 0 {
            return;
        }
        let number = pick % count;
        // Saying that a running work ended while it runs is a misuse that
        // would let the next start run two works at once.
        if stopped && self.model.running() == Some(number) {
            return;
        }
        let rig = self.rig(number);
        // Make sure the current (or coming) generation's latches are
        // checked afterwards.
        let owner = self.model.owner();
        if owner != number {
            Coverage::add(&self.coverage.stale_calls, 1);
            if self.model.current().is_some() {
                self.query(true, true, Via::Base);
            }
        }
        if stopped {
            if let Some(handle) = &rig.stopped {
                handle.set();
            }
        } else if let Some(handle) = &rig.started {
            handle.set();
            if self.model.current() == Some(number) {
                self.model.gens[number].called_started = true;
            }
        }
    }

    /// Asks for the latches and checks that each is its generation's.
    fn query(&mut self, started: bool, stopped: bool, via: Via) {
        let owner = self.model.owner();
        if started {
            let signal = match via {
                Via::Service => Service::started(&*self.svc),
                Via::Base => self.svc.base.started(),
            };
            self.observe(owner, Kind::Started, signal);
        }
        if stopped {
            let signal = match via {
                Via::Service => Service::stopped(&*self.svc),
                Via::Base => self.svc.base.stopped(),
            };
            self.observe(owner, Kind::Stopped, signal);
            if self.model.current().is_none() {
                self.model.early_stopped = true;
            }
        }
    }

    /// Checks that `signal` is the latch of `kind` of generation `owner` the
    /// test saw before, if any, and remembers it.
    fn observe(&mut self, owner: usize, kind: Kind, signal: Signal) {
        let at = &self.at;
        let model = &self.model;
        let first = self
            .seen
            .entry((owner, kind))
            .or_insert_with(|| signal.clone());
        assert!(
            first.same_as(&signal),
            "{at}: generation {owner}'s {kind:?} latch is another latch than before; {model:?}"
        );
    }

    /// Joins the works that the model says exit now, and checks how they
    /// ended.
    async fn settle(&self, works: &[usize]) {
        for &number in works {
            let rig = self.rig(number);
            let join = lock(&rig.join)
                .take()
                .unwrap_or_else(|| panic!("{}: work {number} was joined already", self.at));
            let what = format!("{}: work {number} returns", self.at);
            let returned = within(&self.rt, &what, join)
                .await
                .unwrap_or_else(|error| panic!("{what}: the task failed: {error:?}"));
            assert_eq!(returned, number);
            let exit = *lock(&rig.exit);
            assert_eq!(
                exit, self.model.gens[number].exit,
                "{}: work {number} ended another way than the model says",
                self.at
            );
        }
    }

    /// Stops the service, and the work first if it is stubborn.
    async fn finish(&mut self) {
        self.stop(1, Via::Service, None).await;
        assert!(!self.svc.base.is_running());
        for (number, generation) in self.model.gens.iter().enumerate() {
            assert!(generation.exited, "generation {number} never ended");
            assert!(
                generation.cause.is_some(),
                "generation {number}'s scope is never stopped in the model"
            );
        }
        let expected: Vec<usize> = (0..self.model.gens.len())
            .filter(|&number| !self.model.gens[number].spec.fail)
            .collect();
        assert_eq!(
            *lock(&self.svc.works.ran),
            expected,
            "{}: the works that ran, in order",
            self.at
        );
    }

    /// Checks the invariants against the model.
    async fn check(&mut self) {
        // Give wrong wakeups every chance to show before the negative checks.
        yields().await;
        let at = &self.at;
        let model = &self.model;
        let base = &self.svc.base;

        // 3. The base's state.
        assert_eq!(
            base.is_running(),
            model.running().is_some(),
            "{at}: is_running; {model:?}"
        );
        let expected = match model.base {
            BaseState::Idle => "idle",
            BaseState::Current(number) if model.gens[number].exited => "exited",
            BaseState::Current(_) => "running",
        };
        let state = format!("{base:?}");
        assert!(
            state.contains(&format!("\"{expected}\"")),
            "{at}: the base says {state}, the model {expected}; {model:?}"
        );

        // 5. The unchecked stopped latch.
        let unchecked_owner = match model.base {
            BaseState::Current(number) => Some(number),
            BaseState::Idle if model.early_stopped => Some(model.gens.len()),
            BaseState::Idle => model.last_completed,
        };
        match (base.stopped_unchecked(), unchecked_owner) {
            (Some(signal), Some(owner)) => self.observe(owner, Kind::Stopped, signal),
            (None, None) => {}
            (got, _) => panic!(
                "{at}: stopped_unchecked is {got:?}, expected generation {unchecked_owner:?}'s; \
                 {model:?}"
            ),
        }

        // 4. Every latch handed out is set exactly when its generation says.
        let (at, model) = (&self.at, &self.model);
        for (&(owner, kind), signal) in &self.seen {
            assert_eq!(
                signal.is_set(),
                model.latch(owner, kind),
                "{at}: generation {owner}'s {kind:?} latch; {model:?}"
            );
        }

        // 6. and 7. Each generation's scope and work.
        let gens = lock(&self.svc.gens).clone();
        assert_eq!(
            gens.len(),
            model.gens.len(),
            "{at}: the service began another number of generations than the model"
        );
        for (number, (rig, generation)) in gens.iter().zip(&model.gens).enumerate() {
            assert_eq!(
                cause_of(&rig.token),
                generation.cause,
                "{at}: generation {number}'s stop cause; {model:?}"
            );
            let join = lock(&rig.join);
            if generation.exited {
                assert!(
                    join.is_none(),
                    "{at}: work {number} ended in the model but was never joined"
                );
            } else {
                let join = join
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: work {number} runs but has no task"));
                assert!(
                    !join.is_finished() && lock(&rig.exit).is_none(),
                    "{at}: work {number} ended while the model says it runs; {model:?}"
                );
            }
        }
        assert!(
            !self.svc.works.overlapped.load(Acquire),
            "{at}: two generations' works ran at the same time"
        );
    }
}
