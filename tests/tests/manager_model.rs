//! A model-based test of `ComponentManager`: random scripts of workers, each
//! driven step by step by the test, checked against a reference model after
//! every step.
//!
//! A case is a number of workers (0 to 5), whether the parent's token is
//! stopped before `start`, and a list of steps:
//! - a batch of commands delivered at once to distinct workers (and, maybe,
//!   a parent stop while they run): call the ready handle (again, possibly),
//!   do some work and report whether the token is stopped, throw through the
//!   worker context and keep running, return an error, return `Ok` on its
//!   own, or wait for the stop token and then return `Ok`;
//! - a stop of the parent's token (the start scope's `StopSource`);
//! - a call of a worker's ready handle from outside the worker, kept from
//!   its start (possibly after the worker returned, or after done);
//! - a throw through a worker's `ThrowHandle` from outside the worker (a
//!   callback; possibly after the worker returned, or after done).
//!
//! Each worker reads its commands from a mailbox of its own and
//! acknowledges each once carried out; a worker that returns is acknowledged
//! by the executor dropping its task (see `Tracker`), so that when a step is
//! complete its whole effect on the manager is complete too. After every
//! step the test checks, against the model:
//! 1. the shutdown signal is set iff the parent was stopped, a worker threw
//!    while the manager was live, or every worker returned;
//! 2. and 5. ready is set iff every worker called its ready handle before
//!    done (a ready handle called after done is ignored);
//! 3. and 6. done is set iff every worker returned; once done is set, every
//!    worker's future has been dropped;
//! 4. a worker that observed its token stopped implies the shutdown signal;
//! 7. if a worker threw while the manager was live, the parent's fatal slot
//!    received exactly one error, one of the first batch that threw (every
//!    throw has a unique message), and every other error reached the hook,
//!    each once; otherwise the parent received none. A throw after done
//!    only reaches the hook;
//! 8. the workers' token is stopped promptly after a stop or a fatal error
//!    (workers waiting on it return within a bounded wait), and never
//!    before.
//!
//! Positive checks wait for the signal with a bounded wait (never a
//! sleep-based guess); negative checks are strict. Watchers check the
//! ordering "error delivered, then shutdown signal, then done" and "ready
//! before done". At the end of a case the parent is stopped, every worker
//! still running is told to wait for the stop and return, and the harness
//! checks that no task is left.
//!
//! Every run picks a random seed and prints it on standard error (shown
//! with a failure). To reproduce a failure:
//!
//! ```text
//! LIFECYCLE_PROPTEST_SEED=<seed> cargo test -p lifecycle-conformance \
//!     --test manager_model -- --exact <test>
//! ```
//!
//! where `<test>` is the failing test (`tokio_current_thread`,
//! `tokio_multi_thread`, `async_std`, `smol` or `virtual_time`); the exact command is
//! printed too. A failure on a multi-threaded executor may depend on timing
//! and need a few runs to show again.
//!
//! `LIFECYCLE_PROPTEST_CASES=<n>` changes the number of cases (1024 by
//! default) per executor.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{select, Either};
use lifecycle::{
    BoxFuture, Component, ComponentManager, FatalError, FatalHook, FatalSlot, Instant, Latch,
    ReadyHandle, Reported, Runtime, RuntimeExt, Scope, SharedRuntime, StartError, StopSource,
    StopToken, ThrowHandle, WorkerContext, WorkerResult,
};
use lifecycle_conformance::{lock, yield_now, DropProbe, ModelRun};
use proptest::prelude::*;
use proptest::sample::SizeRange;
use proptest::strategy::Union;

/// The most workers a case has.
const MAX_WORKERS: usize = 5;

/// How long a positive check waits for what the model says must happen.
/// Generous: it only turns a lost wakeup into a failure.
const STEP_LIMIT: Duration = Duration::from_secs(5);

lifecycle_conformance::model_conformance!(run_model, run_case);

// ---------------------------------------------------------------------------
// Scripts

/// What a worker is told to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Call its ready handle (an extra call if it did already).
    Ready,
    /// Do some work, then report whether its token is stopped.
    Work,
    /// Throw through its context, and keep running.
    Throw,
    /// Return an error.
    Fail,
    /// Return `Ok` on its own.
    Return,
    /// Wait until its token is stopped, then return `Ok`.
    AwaitStop,
}

/// One step of a case.
#[derive(Clone, Debug)]
enum Step {
    /// Commands delivered at once to distinct idle workers: each number
    /// picks one (modulo their count) among the idle workers not picked yet;
    /// commands left without a worker are skipped. With `parent_stop`, the
    /// parent is stopped right after they are delivered, while the workers
    /// carry them out.
    Batch {
        acts: Vec<(usize, Act)>,
        parent_stop: bool,
    },
    /// Every idle worker throws at once: through its context if its flag
    /// is `false`, by returning an error if `true`.
    Storm(Vec<bool>),
    /// Stop the parent's token.
    ParentStop,
    /// Call a worker's ready handle from outside the worker (worker number
    /// modulo the worker count).
    LateReady(usize),
    /// Throw through a worker's `ThrowHandle` from outside the worker
    /// (worker number modulo the worker count).
    HandleThrow(usize),
}

#[derive(Clone, Debug)]
struct Case {
    workers: usize,
    stop_before_start: bool,
    steps: Vec<Step>,
}

/// Acts and steps, with throws and stops as frequent as `temper` says: none
/// at 0 (so that workers get to become ready and to return on their own),
/// rare at 1, frequent at 2.
fn act(temper: u32) -> BoxedStrategy<Act> {
    let mut options = vec![
        (6, Just(Act::Ready).boxed()),
        (3, Just(Act::Work).boxed()),
        (2, Just(Act::Return).boxed()),
        (3, Just(Act::AwaitStop).boxed()),
    ];
    if temper > 0 {
        options.push((temper, Just(Act::Throw).boxed()));
        options.push((temper, Just(Act::Fail).boxed()));
    }
    Union::new_weighted(options).boxed()
}

fn step(temper: u32) -> BoxedStrategy<Step> {
    let stop_probability = [0.0, 0.05, 0.2][temper as usize];
    let batch = (
        prop::collection::vec((0..MAX_WORKERS, act(temper)), 1..=MAX_WORKERS),
        prop::bool::weighted(stop_probability),
    )
        .prop_map(|(acts, parent_stop)| Step::Batch { acts, parent_stop });
    let mut options = vec![
        (16, batch.boxed()),
        (2, (0..MAX_WORKERS).prop_map(Step::LateReady).boxed()),
    ];
    if temper > 0 {
        options.push((temper, Just(Step::ParentStop).boxed()));
        options.push((
            temper,
            prop::collection::vec(any::<bool>(), MAX_WORKERS)
                .prop_map(Step::Storm)
                .boxed(),
        ));
        options.push((temper, (0..MAX_WORKERS).prop_map(Step::HandleThrow).boxed()));
    }
    Union::new_weighted(options).boxed()
}

fn case() -> impl Strategy<Value = Case> {
    (0..3u32)
        .prop_flat_map(|temper| {
            (
                0..=MAX_WORKERS,
                prop::bool::weighted(if temper == 0 { 0.0 } else { 0.1 }),
                prop::collection::vec(step(temper), SizeRange::from(0..=32)),
            )
        })
        .prop_map(|(workers, stop_before_start, steps)| Case {
            workers,
            stop_before_start,
            steps,
        })
}

// ---------------------------------------------------------------------------
// The runner

/// What the cases of one run went through, printed at the end so that a
/// generator drifting into trivial cases shows.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    steps: AtomicUsize,
    ready: AtomicUsize,
    returned_on_their_own: AtomicUsize,
    parent_first: AtomicUsize,
    throw_first: AtomicUsize,
    racing_throws: AtomicUsize,
    late_throws: AtomicUsize,
    ready_after_return: AtomicUsize,
    ready_after_done: AtomicUsize,
    released: AtomicUsize,
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
            "{} cases, {} steps carried out; ready in {}; shut down by the parent in {}, \
             by a throw in {}, by every worker returning on its own in {}; \
             {} batches of racing first throws; {} throws after others; \
             {} ready calls after the worker returned, {} after done; \
             {} workers released by a stop",
            n(&self.cases),
            n(&self.steps),
            n(&self.ready),
            n(&self.parent_first),
            n(&self.throw_first),
            n(&self.returned_on_their_own),
            n(&self.racing_throws),
            n(&self.late_throws),
            n(&self.ready_after_return),
            n(&self.ready_after_done),
            n(&self.released),
        )
    }
}

/// Runs the cases of test `test` on `executor`, each through `run`.
fn run_model(test: &str, executor: &str, run: impl Fn(Case, Arc<Coverage>)) {
    let model = ModelRun {
        file: "manager_model",
        test,
        executor,
        default_cases: 1024,
    };
    lifecycle_conformance::run_model(model, case(), run);
}

/// Runs `future` for at most [`STEP_LIMIT`]; panics with `what` otherwise.
async fn within<F: Future>(rt: &SharedRuntime, what: impl fmt::Display, future: F) -> F::Output {
    lifecycle_conformance::within(rt, STEP_LIMIT, what, future).await
}

// ---------------------------------------------------------------------------
// Scripted workers

/// A command and where its answer goes.
struct Order {
    act: Act,
    /// The unique message of a throw or an error.
    message: String,
    reply: Arc<Reply>,
}

#[derive(Default)]
struct Reply {
    /// Set once the command is carried out (never for the acts that return).
    ack: Latch,
    answer: Mutex<Option<Answer>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Done,
    SawStopped(bool),
    Reported(Reported),
}

impl Reply {
    fn answer(&self, answer: Answer) {
        *lock(&self.answer) = Some(answer);
        self.ack.set();
    }
}

/// One order at a time; the bell is replaced by each post, under the lock,
/// so a reader that found the box empty always waits on the bell the next
/// post sets.
#[derive(Default)]
struct Mailbox {
    inner: Mutex<(Option<Order>, Latch)>,
}

impl Mailbox {
    fn post(&self, order: Order) {
        let bell = {
            let mut inner = lock(&self.inner);
            assert!(inner.0.is_none(), "the test posted to a busy worker");
            inner.0 = Some(order);
            std::mem::take(&mut inner.1)
        };
        bell.set();
    }

    async fn next(&self) -> Order {
        loop {
            let bell = {
                let mut inner = lock(&self.inner);
                if let Some(order) = inner.0.take() {
                    return order;
                }
                inner.1.clone()
            };
            bell.wait().await;
        }
    }
}

/// What a worker gets at start, kept by the test.
struct Handles {
    token: StopToken,
    ready: ReadyHandle,
    throw: ThrowHandle,
}

/// The test's side of one worker.
#[derive(Default)]
struct Rig {
    mailbox: Mailbox,
    handles: Mutex<Option<Arc<Handles>>>,
    /// Set once the worker function has run (in the worker's task, at its
    /// first poll) and `handles` is filled.
    called: Latch,
    /// Set once the worker's future is dropped.
    future_dropped: Latch,
    /// Set once the executor dropped the worker's task: its exit is fully
    /// recorded by the manager.
    task_gone: Latch,
    /// Whether the worker saw its token stopped while waiting on it.
    observed_stop: AtomicBool,
}

impl Rig {
    fn handles(&self) -> Arc<Handles> {
        lock(&self.handles).clone().expect("the worker was started")
    }

    async fn run(self: Arc<Self>, ctx: WorkerContext, ready: ReadyHandle) -> WorkerResult {
        let _dropped = DropProbe::on(&self.future_dropped);
        loop {
            let order = self.mailbox.next().await;
            match order.act {
                Act::Ready => {
                    ready.ready();
                    order.reply.answer(Answer::Done);
                }
                Act::Work => {
                    for _ in 0..3 {
                        yield_now().await;
                    }
                    order.reply.answer(Answer::SawStopped(ctx.is_stopped()));
                }
                Act::Throw => {
                    let reported = ctx.throw(FatalError::msg(order.message));
                    order.reply.answer(Answer::Reported(reported));
                }
                Act::Fail => return Err(FatalError::msg(order.message)),
                Act::Return => return Ok(()),
                Act::AwaitStop => {
                    ctx.stopped().await;
                    self.observed_stop.store(true, Release);
                    return Ok(());
                }
            }
        }
    }
}

/// The runtime the manager is started on: the harness's, plus a latch per
/// worker task, set once the executor has dropped it. The manager spawns
/// its workers' tasks in worker order, so the latches are handed over in
/// that order before the start.
struct Tracker {
    inner: SharedRuntime,
    next: Mutex<VecDeque<Latch>>,
}

impl Runtime for Tracker {
    fn spawn_detached(&self, task: BoxFuture) {
        let gone = lock(&self.next)
            .pop_front()
            .expect("the manager spawned more tasks than it has workers");
        self.inner.spawn_detached(Box::pin(Tracked {
            task,
            _gone: DropProbe::on(&gone),
        }));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        self.inner.sleep(duration)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }
}

/// Fields drop in order: the task, then the latch.
struct Tracked {
    task: BoxFuture,
    _gone: DropProbe,
}

impl Future for Tracked {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.task.as_mut().poll(cx)
    }
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Running, waiting for its next command.
    Idle,
    /// Running, waiting for its token to stop.
    AwaitingStop,
    Returned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShutdownCause {
    Parent,
    Throw,
    AllReturned,
}

#[derive(Debug)]
struct Model {
    called_ready: Vec<bool>,
    state: Vec<State>,
    parent_stopped: bool,
    /// The messages of the first batch that threw while the manager was live.
    first_batch: Vec<String>,
    /// Every message thrown, live or after done.
    thrown: Vec<String>,
    ready: bool,
    done: bool,
    /// What set the shutdown signal first.
    shutdown_cause: Option<ShutdownCause>,
}

impl Model {
    fn new(workers: usize, parent_stopped: bool) -> Self {
        let mut model = Model {
            called_ready: vec![false; workers],
            state: vec![State::Idle; workers],
            parent_stopped,
            first_batch: Vec::new(),
            thrown: Vec::new(),
            ready: false,
            done: false,
            shutdown_cause: None,
        };
        model.settle(false, false);
        model
    }

    /// Whether the workers were told to stop: the parent stopped, or a live
    /// throw.
    fn stop_cause(&self) -> bool {
        self.parent_stopped || !self.first_batch.is_empty()
    }

    fn shutdown(&self) -> bool {
        self.stop_cause() || self.done
    }

    /// Records throws of one batch, in the order they may have happened.
    fn throw(&mut self, messages: Vec<String>) {
        if messages.is_empty() {
            return;
        }
        assert!(!self.done, "only running workers throw in batches");
        self.thrown.extend(messages.iter().cloned());
        if self.first_batch.is_empty() {
            self.first_batch = messages;
        }
    }

    /// Derives the rest after a step. `by_parent` and `by_throw` say what
    /// the step did. Returns the workers that were waiting for the stop and
    /// now must return.
    fn settle(&mut self, by_parent: bool, by_throw: bool) -> Vec<usize> {
        let was_shutdown = self.shutdown_cause.is_some();
        if !self.done && self.called_ready.iter().all(|&called| called) {
            self.ready = true;
        }
        let mut released = Vec::new();
        if self.stop_cause() {
            for (index, state) in self.state.iter_mut().enumerate() {
                if *state == State::AwaitingStop {
                    *state = State::Returned;
                    released.push(index);
                }
            }
        }
        if self.state.iter().all(|&state| state == State::Returned) {
            self.done = true;
        }
        if !was_shutdown && self.shutdown() {
            self.shutdown_cause = Some(if self.parent_stopped && (by_parent || !by_throw) {
                ShutdownCause::Parent
            } else if by_throw {
                ShutdownCause::Throw
            } else {
                ShutdownCause::AllReturned
            });
        }
        released
    }
}

// ---------------------------------------------------------------------------
// One case

struct World {
    rt: SharedRuntime,
    manager: ComponentManager,
    rigs: Vec<Arc<Rig>>,
    parent: StopSource,
    slot: FatalSlot,
    hook_log: Arc<Mutex<Vec<String>>>,
    /// What the test took from the parent's slot.
    delivered: Vec<String>,
    model: Model,
    throws: usize,
    /// The step being run, for messages.
    at: String,
    coverage: Arc<Coverage>,
}

async fn run_case(rt: SharedRuntime, case: Case, coverage: Arc<Coverage>) {
    let rigs: Vec<Arc<Rig>> = (0..case.workers).map(|_| Arc::default()).collect();
    let tracker = Arc::new(Tracker {
        inner: rt.clone(),
        next: Mutex::new(rigs.iter().map(|rig| rig.task_gone.clone()).collect()),
    });
    let mut builder = ComponentManager::builder();
    for rig in &rigs {
        let rig = rig.clone();
        builder = builder.add_worker(move |ctx, ready| {
            let handles = Handles {
                token: ctx.token().clone(),
                ready: ready.clone(),
                throw: ctx.throw_handle(),
            };
            let previous = lock(&rig.handles).replace(Arc::new(handles));
            assert!(previous.is_none(), "a worker function was called twice");
            rig.called.set();
            rig.clone().run(ctx, ready)
        });
    }
    let manager = builder.build();

    let hook_log = Arc::new(Mutex::new(Vec::new()));
    let slot = FatalSlot::with_hook(FatalHook::new({
        let hook_log = hook_log.clone();
        move |error: &FatalError| lock(&hook_log).push(error.to_string())
    }));
    let parent = StopSource::new();
    if case.stop_before_start {
        parent.stop();
    }

    // Ordering watchers: what had happened when shutdown, then done, were
    // seen set.
    let at_shutdown = rt.spawn({
        let shutdown = manager.shutdown_signal();
        let slot = slot.clone();
        async move {
            shutdown.wait().await;
            slot.is_recorded()
        }
    });
    let at_done = rt.spawn({
        let (ready, shutdown, done) = (manager.ready(), manager.shutdown_signal(), manager.done());
        let slot = slot.clone();
        async move {
            done.wait().await;
            (ready.is_set(), shutdown.is_set(), slot.is_recorded())
        }
    });

    let scope = Scope::new(tracker.clone(), parent.token(), slot.clone());
    manager
        .start(scope.clone())
        .expect("the first start succeeds");
    assert!(manager.is_started());
    assert!(
        lock(&tracker.next).is_empty(),
        "the manager spawned fewer tasks than it has workers"
    );
    // The worker functions run in their tasks; the steps need their handles.
    for (worker, rig) in rigs.iter().enumerate() {
        let what = format!("worker {worker}'s function is called");
        within(&rt, what, rig.called.wait()).await;
    }

    let mut world = World {
        rt: rt.clone(),
        manager: manager.clone(),
        rigs,
        parent,
        slot,
        hook_log,
        delivered: Vec::new(),
        model: Model::new(case.workers, case.stop_before_start),
        throws: 0,
        at: "after start".into(),
        coverage,
    };
    world.check().await;

    for (index, step) in case.steps.iter().enumerate() {
        world.at = format!("after step {index} ({step:?})");
        world.step(step).await;
        world.check().await;
    }

    world.at = "after the final stop".into();
    world.finish().await;
    world.check().await;

    let recorded_at_shutdown = within(&rt, "the shutdown watcher ends", at_shutdown)
        .await
        .expect("the shutdown watcher ran");
    let (ready_at_done, shutdown_at_done, recorded_at_done) =
        within(&rt, "the done watcher ends", at_done)
            .await
            .expect("the done watcher ran");
    let model = &world.model;
    if model.shutdown_cause == Some(ShutdownCause::Throw) {
        assert!(
            recorded_at_shutdown,
            "the shutdown signal was set before the first error was delivered; {model:?}"
        );
    }
    assert!(shutdown_at_done, "done was set before the shutdown signal");
    if !model.first_batch.is_empty() {
        assert!(
            recorded_at_done,
            "done was set before the first error was delivered; {model:?}"
        );
    }
    assert_eq!(
        ready_at_done,
        manager.ready().is_set(),
        "ready must be set before done, and never after; {model:?}"
    );
    assert!(matches!(
        manager.start(scope),
        Err(StartError::AlreadyStarted)
    ));

    let coverage = &world.coverage;
    Coverage::add(&coverage.cases, 1);
    Coverage::add(&coverage.ready, usize::from(ready_at_done));
    Coverage::add(&coverage.late_throws, lock(&world.hook_log).len());
    Coverage::add(
        match model.shutdown_cause {
            Some(ShutdownCause::Parent) => &coverage.parent_first,
            Some(ShutdownCause::Throw) => &coverage.throw_first,
            Some(ShutdownCause::AllReturned) => &coverage.returned_on_their_own,
            None => unreachable!("every case ends shut down"),
        },
        1,
    );
}

impl World {
    fn message(&mut self, worker: usize) -> String {
        self.throws += 1;
        format!("worker {worker} throw {}", self.throws)
    }

    fn workers(&self) -> usize {
        self.rigs.len()
    }

    async fn step(&mut self, step: &Step) {
        let n = self.workers();
        match *step {
            Step::Batch {
                ref acts,
                parent_stop,
            } => self.batch(acts, parent_stop).await,
            Step::Storm(ref fails) => {
                let acts: Vec<(usize, Act)> = fails
                    .iter()
                    .map(|&fail| (0, if fail { Act::Fail } else { Act::Throw }))
                    .collect();
                self.batch(&acts, false).await;
            }
            Step::ParentStop => {
                Coverage::add(&self.coverage.steps, 1);
                self.parent.stop();
                self.model.parent_stopped = true;
                let released = self.model.settle(true, false);
                self.await_gone(&released, "after the parent's stop").await;
            }
            Step::LateReady(worker) if n > 0 => {
                let worker = worker % n;
                Coverage::add(&self.coverage.steps, 1);
                if !self.model.called_ready[worker] {
                    if self.model.done {
                        Coverage::add(&self.coverage.ready_after_done, 1);
                    } else if self.model.state[worker] == State::Returned {
                        Coverage::add(&self.coverage.ready_after_return, 1);
                    }
                }
                self.rigs[worker].handles().ready.ready();
                self.model.called_ready[worker] = true;
                self.model.settle(false, false);
            }
            Step::HandleThrow(worker) if n > 0 => {
                let worker = worker % n;
                Coverage::add(&self.coverage.steps, 1);
                let message = self.message(worker);
                let was_done = self.model.done;
                let first = !was_done && self.model.first_batch.is_empty();
                let reported = self.rigs[worker]
                    .handles()
                    .throw
                    .throw(FatalError::msg(message.clone()));
                let expected = if first {
                    Reported::First
                } else {
                    Reported::Unhandled
                };
                assert_eq!(
                    reported, expected,
                    "{}: a throw handle's throw (manager done before: {was_done})",
                    self.at
                );
                if was_done {
                    self.model.thrown.push(message);
                } else {
                    self.model.throw(vec![message]);
                }
                let released = self.model.settle(false, !was_done);
                self.await_gone(&released, "after a throw handle's throw")
                    .await;
            }
            Step::LateReady(_) | Step::HandleThrow(_) => {}
        }
    }

    async fn batch(&mut self, acts: &[(usize, Act)], parent_stop: bool) {
        let n = self.workers();
        let mut chosen: Vec<(usize, Act)> = Vec::new();
        for &(pick, act) in acts {
            let idle: Vec<usize> = (0..n)
                .filter(|&worker| {
                    self.model.state[worker] == State::Idle
                        && !chosen.iter().any(|&(other, _)| other == worker)
                })
                .collect();
            if !idle.is_empty() {
                chosen.push((idle[pick % idle.len()], act));
            }
        }
        if !chosen.is_empty() || parent_stop {
            Coverage::add(&self.coverage.steps, 1);
        }
        let stop_before = self.model.stop_cause();
        let throw_before = !self.model.first_batch.is_empty();

        let mut posted = Vec::new();
        for &(worker, act) in &chosen {
            let message = match act {
                Act::Throw | Act::Fail => self.message(worker),
                _ => String::new(),
            };
            let reply = Arc::new(Reply::default());
            self.rigs[worker].mailbox.post(Order {
                act,
                message: message.clone(),
                reply: reply.clone(),
            });
            posted.push((worker, act, message, reply));
        }
        if parent_stop {
            self.parent.stop();
            self.model.parent_stopped = true;
        }

        let mut messages = Vec::new();
        for (worker, act, message, _) in &posted {
            match act {
                Act::Ready => self.model.called_ready[*worker] = true,
                Act::Work => {}
                Act::Throw => messages.push(message.clone()),
                Act::Fail => {
                    messages.push(message.clone());
                    self.model.state[*worker] = State::Returned;
                }
                Act::Return => self.model.state[*worker] = State::Returned,
                Act::AwaitStop => self.model.state[*worker] = State::AwaitingStop,
            }
        }
        let threw = !messages.is_empty();
        if !throw_before && messages.len() > 1 {
            Coverage::add(&self.coverage.racing_throws, 1);
        }
        self.model.throw(messages);
        let released = self.model.settle(parent_stop, threw);
        let stop_after = self.model.stop_cause();

        let mut firsts = Vec::new();
        let mut fails = false;
        for (worker, act, message, reply) in &posted {
            let rig = &self.rigs[*worker];
            match act {
                Act::Ready | Act::Work | Act::Throw => {
                    let what = format!("{}: worker {worker} carries out {act:?}", self.at);
                    let acked = pin!(reply.ack.wait());
                    let gone = pin!(rig.task_gone.wait());
                    if let Either::Right(_) = within(&self.rt, what, select(acked, gone)).await {
                        panic!(
                            "{}: worker {worker}'s task ended while carrying out {act:?}; \
                             the parent got {:?}, the hook {:?}",
                            self.at,
                            self.slot.take().map(|error| error.to_string()),
                            lock(&self.hook_log),
                        );
                    }
                }
                Act::Fail | Act::Return => {
                    fails |= *act == Act::Fail;
                    let what = format!("{}: worker {worker}'s task is gone after {act:?}", self.at);
                    within(&self.rt, what, rig.task_gone.wait()).await;
                    continue;
                }
                // A waiting worker released by this very batch is awaited
                // with the others below.
                Act::AwaitStop => continue,
            }
            let answer = lock(&reply.answer).expect("answered before the ack");
            match answer {
                Answer::SawStopped(saw) => {
                    if stop_before {
                        assert!(
                            saw,
                            "{}: worker {worker} did not see its token stopped after a stop",
                            self.at
                        );
                    }
                    if !stop_after {
                        assert!(
                            !saw,
                            "{}: worker {worker} saw its token stopped with no stop and no error",
                            self.at
                        );
                    }
                }
                Answer::Reported(Reported::First) => firsts.push(message.clone()),
                Answer::Reported(Reported::Unhandled) | Answer::Done => {}
            }
        }
        self.await_gone(&released, "once its token is stopped")
            .await;

        // The throw that reported `First` is the one the parent received.
        if throw_before {
            assert!(
                firsts.is_empty(),
                "{}: a throw after the first reported First: {firsts:?}",
                self.at
            );
        } else if threw && !fails {
            assert_eq!(
                firsts.len(),
                1,
                "{}: the first batch of throws reported First {} times",
                self.at,
                firsts.len()
            );
        }
        assert!(firsts.len() <= 1, "{}: several firsts: {firsts:?}", self.at);
        if let Some(first) = firsts.pop() {
            self.take_delivered().await;
            assert_eq!(
                self.delivered,
                [first],
                "{}: the throw that reported First is not the delivered one",
                self.at
            );
        }
    }

    /// Waits until the given workers' tasks are gone ("promptly": bounded).
    async fn await_gone(&self, workers: &[usize], why: &str) {
        Coverage::add(&self.coverage.released, workers.len());
        for &worker in workers {
            let what = format!(
                "{}: worker {worker} waiting on its token returns {why}",
                self.at
            );
            within(&self.rt, what, self.rigs[worker].task_gone.wait()).await;
            assert!(
                self.rigs[worker].observed_stop.load(Acquire),
                "{}: worker {worker} returned without seeing the stop",
                self.at
            );
        }
    }

    /// Takes the parent's error, waiting for it if the model says one is due.
    async fn take_delivered(&mut self) {
        if self.delivered.is_empty() && !self.model.first_batch.is_empty() {
            let what = format!("{}: the parent receives the first error", self.at);
            if let Some(error) = within(&self.rt, what, self.slot.first()).await {
                self.delivered.push(error.to_string());
            }
        }
        if let Some(error) = self.slot.take() {
            self.delivered.push(error.to_string());
        }
    }

    /// Stops the parent and every worker still running; waits for them all.
    async fn finish(&mut self) {
        self.parent.stop();
        self.model.parent_stopped = true;
        for (worker, rig) in self.rigs.iter().enumerate() {
            if self.model.state[worker] == State::Idle {
                rig.mailbox.post(Order {
                    act: Act::AwaitStop,
                    message: String::new(),
                    reply: Arc::default(),
                });
                self.model.state[worker] = State::AwaitingStop;
            }
        }
        let released = self.model.settle(true, false);
        self.await_gone(&released, "after the final stop").await;
        assert!(self.model.done);
    }

    /// Checks the invariants against the model.
    async fn check(&mut self) {
        // Give wrong wakeups every chance to show before the negative checks.
        for _ in 0..3 {
            yield_now().await;
        }
        let at = self.at.clone();
        let rt = self.rt.clone();
        let (ready, shutdown, done) = (
            self.manager.ready(),
            self.manager.shutdown_signal(),
            self.manager.done(),
        );

        // 1. A stop, a live throw or the end of every worker: shutdown signal.
        if self.model.shutdown() {
            let what = format!("{at}: the shutdown signal is set; {:?}", self.model);
            within(&rt, what, shutdown.wait()).await;
        } else {
            assert!(
                !shutdown.is_set(),
                "{at}: shutdown signal with no stop, no error and workers running; {:?}",
                self.model
            );
        }

        // 2. and 5. Ready iff every worker called ready before done.
        if self.model.ready {
            let what = format!("{at}: ready is set; {:?}", self.model);
            within(&rt, what, ready.wait()).await;
        } else {
            assert!(
                !ready.is_set(),
                "{at}: ready is set but a worker did not call ready, or called it after done; {:?}",
                self.model
            );
        }

        // 3. and 6. Done iff every worker returned; done proves them gone.
        if self.model.done {
            let what = format!("{at}: done is set; {:?}", self.model);
            within(&rt, what, done.wait()).await;
        } else {
            assert!(
                !done.is_set(),
                "{at}: done is set while a worker is running; {:?}",
                self.model
            );
        }
        if done.is_set() {
            for (worker, rig) in self.rigs.iter().enumerate() {
                assert!(
                    rig.future_dropped.is_set(),
                    "{at}: done is set but worker {worker}'s future is not dropped"
                );
            }
        }

        for (worker, rig) in self.rigs.iter().enumerate() {
            let state = self.model.state[worker];
            if state != State::Returned {
                assert!(
                    !rig.future_dropped.is_set() && !rig.task_gone.is_set(),
                    "{at}: worker {worker} ({state:?}) is gone but never returned"
                );
            }
            // 4. A worker that saw the stop implies the shutdown signal.
            if rig.observed_stop.load(Acquire) {
                assert!(
                    shutdown.is_set() && self.model.stop_cause(),
                    "{at}: worker {worker} saw its token stopped with no stop and no error"
                );
            }
            // 8. Stopped promptly after a stop or a fatal error, never before.
            let token = rig.handles().token.clone();
            if self.model.shutdown() {
                let what = format!("{at}: worker {worker}'s token is stopped");
                within(&rt, what, token.stopped()).await;
            } else {
                assert!(
                    !token.is_stopped(),
                    "{at}: worker {worker}'s token is stopped with no stop and no error"
                );
            }
        }

        // 7. Exactly one error, of the first batch, reaches the parent; every
        // other one reaches the hook, once.
        self.take_delivered().await;
        if self.model.first_batch.is_empty() {
            assert!(
                self.delivered.is_empty() && !self.slot.is_recorded(),
                "{at}: the parent received {:?} but no worker threw while live; {:?}",
                self.delivered,
                self.model
            );
        } else {
            assert!(
                self.delivered.len() == 1 && self.model.first_batch.contains(&self.delivered[0]),
                "{at}: the parent received {:?}, expected one of the first batch {:?}",
                self.delivered,
                self.model.first_batch
            );
        }
        let hooked = lock(&self.hook_log).clone();
        assert_eq!(
            self.slot.unhandled_count(),
            hooked.len(),
            "{at}: unhandled count and hook calls differ"
        );
        let mut reached: Vec<&String> = self.delivered.iter().chain(&hooked).collect();
        let mut thrown: Vec<&String> = self.model.thrown.iter().collect();
        reached.sort();
        thrown.sort();
        assert_eq!(
            reached, thrown,
            "{at}: every error must reach the parent or the hook, once"
        );
    }
}
