//! A randomized property test of the restart loop, `run_component`: random
//! policies, handlers and scripts of instances, driven step by step by the
//! test, and a history of everything that happened, checked against the
//! loop's specification (`spec/component.md`, section 4) at the end of
//! every case.
//!
//! A case is:
//! - a restart policy: restarts at once or after a fixed backoff of 5, 10 or
//!   20 ms (factor 1, no jitter), and an intensity of 0 to 4 restarts within
//!   an hour (longer than any case, so that only the count matters) or none;
//! - a stop timeout: the default one ([`DEFAULT_STOP_TIMEOUT`]), a short
//!   one (`SHORT_STOP_TIMEOUT`), or none;
//! - the handler's script: the verdict of each call in turn (mostly
//!   `Restart`, sometimes `Stop`, `StopParents`, `Shutdown` or `SpinHalt`;
//!   `Restart` once the script runs out);
//! - the factory's script: what each call builds (once it runs out: a plain
//!   instance). Mostly a fresh instance; sometimes an error instead
//!   ("factory failed at attempt <n>"), or the previous instance again,
//!   whose `start` fails as it was started before. Each instance is a
//!   one-worker `ComponentManager`, ready at once or never, that waits for a
//!   command from the test or its stop token. Told to fail, it returns an
//!   error ("instance <n> failed"); told to finish, it returns `Ok`; told to
//!   throw twice, it throws "instance <n> threw first" and "instance <n>
//!   threw again" through its context, which stops it. Once stopped (by
//!   its own throw, the loop or the parent), it returns `Ok` at once,
//!   returns an error ("instance <n> failed while stopping"), or hangs until
//!   the test releases it (then returns `Ok`) or the loop aborts it.
//!   Readiness plays no part in the loop: the checks ignore it;
//! - rarely, the parent stopped before the loop runs;
//! - 0 to 8 steps. Before each, the test waits until the loop settles: an
//!   instance runs, uncommanded (the step commands it: fail, finish or
//!   throw twice; or stops the parent while it runs; or makes it fail and
//!   stops the parent at once, racing the failure; or makes it fail and
//!   stops the parent once the handler has answered, during the backoff
//!   that follows a `Restart`); or an instance hangs on its stop and only
//!   the test can end it (no stop timeout, or the default one on a real
//!   clock): the step releases it, after stopping the parent if it is a
//!   stop; or the loop ended (the remaining steps are skipped). After the
//!   steps the parent is stopped, hung instances are released, and the loop
//!   must end.
//!
//! Everything is recorded in one history, in order: the test's commands,
//! stops and releases; each factory call (with the time, and whether the
//! parent was stopped and the previous instance done and gone); each
//! worker's start, throws, errors, return, hang and the drop of its future;
//! each handler call (with the time, and whether the instance was done and
//! its worker gone); each error the fatal hook received; the end of the
//! loop. The checks, on that history and the loop's `RunOutcome`:
//! 1. one instance at a time: the factory is called for instance `n + 1`
//!    only once instance `n` is done and its worker's future is gone; each
//!    instance reports into a fresh fatal slot (its first throw is
//!    `Reported::First`, its second `Reported::Unhandled`);
//! 2. the handler is called at most once per instance, only once it is done
//!    and its worker gone, with its first error and its attempt number,
//!    never for an instance that reported no error (a clean exit, or a stop
//!    it obeyed quietly), and not while an instance hangs past a stop
//!    timeout. An instance's first error caused by a command while no stop
//!    was on its way must be taken (by the handler, or by the outcome if the
//!    instance then overran its stop timeout); an error racing the parent's
//!    stop, or reported because of it, may be taken (an error wins when both
//!    are there) or go to the hook, but on virtual time a failure commanded
//!    just before the stop is always there when the loop looks (the worker,
//!    woken first, runs first), and must be taken;
//! 3. restarts follow the policy: after a `Restart`, the n-th restart within
//!    the window is granted if the intensity allows n restarts and refused
//!    (the loop ends with `RestartsExhausted`) otherwise; a granted restart
//!    calls the factory no sooner than the backoff after the handler's call
//!    (exactly then on virtual time) unless the parent's stop came first: a
//!    stop before the handler's call always ends the loop as `Cancelled`
//!    without another factory call; one after it may, on a real clock, come
//!    before or after the restart, and on virtual time ends the loop if it
//!    came within the backoff and never if there was none. The verdict
//!    comes first, then the budget, then the parent: a `Restart` with the
//!    budget spent ends as `RestartsExhausted` even under a stopped parent;
//! 4. the outcome is exactly what the history and the scripts imply:
//!    `Completed` after a finish, `Cancelled` after the parent's stop,
//!    `Failed` with the error, the verdict and the attempt of a verdict other
//!    than `Restart`, `RestartsExhausted` with the error and the attempt,
//!    `FactoryFailed` with the factory's error, `StartFailed` for a reused
//!    instance, `StopTimedOut` (aborted, with the error being handled, if
//!    any) for an instance that hung past the stop timeout;
//! 5. every error an instance reported reaches exactly one of the handler,
//!    the outcome (`StopTimedOut`'s error) or the fatal hook: never lost,
//!    never twice; all but an instance's first always reach the hook, and
//!    the hook gets nothing else (a factory's error only is the outcome's);
//! 6. an instance hanging on its stop holds the loop: while the test holds
//!    it, the handler is not called, the factory is not called, the loop
//!    does not end, and the instance is neither done nor gone; with a short
//!    stop timeout (or the default one, on virtual time) the loop aborts it
//!    and ends with `StopTimedOut` no sooner than the timeout after the stop
//!    began (exactly then on virtual time);
//! 7. the factory is never called once the loop could see the parent's
//!    stop: never for a parent stopped before the loop, never after a handler
//!    call that followed the stop, and, on the one-thread executors (where
//!    the loop's check of the parent and the factory call are one poll),
//!    never with the parent stopped;
//! 8. liveness: the loop settles within a bounded wait before every step,
//!    and ends within a bounded wait of the parent's stop (on virtual time:
//!    at the very instant of its last cause, a stop, a release, a command,
//!    a handler or factory call, unless it ends by a stop timeout); when it
//!    has ended, every instance is done and its worker's future gone (and
//!    the harness finds no task left).
//!
//! Some checks depend on the executor (the test is told which one it runs
//! on): exact times only on virtual time, where the clock stands still
//! while anything can run; races resolved either way only where the loop
//! runs in parallel with the test.
//!
//! Every run picks a random seed and prints it on standard error (shown
//! with a failure, with the minimal case and its history). To reproduce a
//! failure:
//!
//! ```text
//! LIFECYCLE_PROPTEST_SEED=<seed> cargo test -p lifecycle-conformance \
//!     --test restart_model -- --exact <test>
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
use std::pin::pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{select, Either};
use lifecycle::{
    run_component, Component, ComponentManager, Failure, FatalError, FatalHook, Instant, Latch,
    ReadyHandle, Reported, RestartPolicy, RunOutcome, RuntimeExt, SharedRuntime, StartError,
    StopSource, StopToken, Verdict, WorkerContext, WorkerResult, DEFAULT_STOP_TIMEOUT,
};
use lifecycle_conformance::{let_others_run, lock, ModelRun};
use proptest::prelude::*;

/// The most steps a case has.
const MAX_STEPS: usize = 8;

/// The longest scripts of verdicts and of instances.
const MAX_SCRIPT: usize = 10;

/// The window of the restart intensity: longer than any case, so that only
/// the count of restarts matters.
const WINDOW: Duration = Duration::from_secs(3600);

/// The short stop timeout, at which an instance hanging on its stop is
/// aborted.
const SHORT_STOP_TIMEOUT: Duration = Duration::from_millis(10);

/// How long the loop may take to settle, or to end after the parent's
/// stop, on a real clock: it takes milliseconds, so this only turns a hang
/// into a failure (with the history); short enough for a hanging case to
/// shrink.
const LIMIT: Duration = Duration::from_secs(3);

/// The same on virtual time, where waiting costs nothing: longer than the
/// default stop timeout, which a hanging instance runs into there.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(10);

lifecycle_conformance::model_conformance!(run_model, run_case);

// ---------------------------------------------------------------------------
// Cases

/// What the test tells a running instance to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Return an error.
    Fail,
    /// Return `Ok`.
    Finish,
    /// Throw two errors through the worker context (the first stops it).
    ThrowTwice,
}

/// One step of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Command the running instance.
    Command(Act),
    /// Stop the parent while the instance runs (or hangs).
    Stop,
    /// Make the instance fail and stop the parent at once.
    RacingFail,
    /// Make the instance fail, and stop the parent once the handler has
    /// answered: during the backoff, if it said `Restart`.
    StopInBackoff,
}

impl Step {
    fn stops(self) -> bool {
        !matches!(self, Step::Command(_))
    }
}

/// What a factory call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// A fresh instance.
    Fresh,
    /// An error.
    Error,
    /// The previous instance again (a fresh one for the first call).
    Reused,
}

/// What an instance does once stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnStop {
    /// Return `Ok` at once.
    Return,
    /// Return an error at once.
    Fail,
    /// Go on until released by the test or aborted by the loop.
    Hang,
}

/// What one factory call builds.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Plan {
    build: Build,
    /// The instance calls its ready handle at once (else never).
    ready: bool,
    on_stop: OnStop,
}

impl Plan {
    const PLAIN: Plan = Plan {
        build: Build::Fresh,
        ready: true,
        on_stop: OnStop::Return,
    };
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.build {
            Build::Fresh => {}
            Build::Error => return f.write_str("factory error"),
            Build::Reused => return f.write_str("the previous instance again"),
        }
        let ready = if self.ready { "ready" } else { "never ready" };
        write!(f, "{ready}, on stop {:?}", self.on_stop)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopTimeout {
    Default,
    Short,
    Unbounded,
}

/// What the executor a case runs on allows the checks to rely on.
#[derive(Clone, Copy, Debug)]
struct Executor {
    /// The loop may run at the same time as the test (tokio multi-thread,
    /// async-std).
    parallel: bool,
    /// The clock is virtual: it stands still while anything can run.
    virtual_clock: bool,
}

impl Executor {
    fn of(label: &str) -> Executor {
        Executor {
            parallel: matches!(label, "tokio multi-thread" | "async-std"),
            virtual_clock: label == "virtual time",
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    /// The delay before every restart (zero: at once).
    backoff: Duration,
    /// At most this many restarts within `WINDOW` (`None`: unlimited).
    intensity: Option<u32>,
    stop_timeout: StopTimeout,
    /// The handler's answers, in turn; `Restart` once they run out.
    verdicts: Vec<Verdict>,
    /// What each factory call builds, in turn; `Plan::PLAIN` once they run
    /// out.
    plans: Vec<Plan>,
    steps: Vec<Step>,
    stopped_before: bool,
    executor: Executor,
}

impl Case {
    fn policy(&self) -> RestartPolicy {
        let policy = RestartPolicy::immediate().backoff(self.backoff, self.backoff);
        match self.intensity {
            Some(restarts) => policy.intensity(restarts, WINDOW),
            None => policy,
        }
    }

    fn verdict(&self, call: usize) -> Verdict {
        self.verdicts.get(call).copied().unwrap_or(Verdict::Restart)
    }

    fn plan(&self, attempt: u32) -> Plan {
        let plan = self
            .plans
            .get(attempt as usize - 1)
            .copied()
            .unwrap_or(Plan::PLAIN);
        if attempt == 1 && plan.build == Build::Reused {
            Plan {
                build: Build::Fresh,
                ..plan
            }
        } else {
            plan
        }
    }

    fn stop_timeout(&self) -> Option<Duration> {
        match self.stop_timeout {
            StopTimeout::Default => Some(DEFAULT_STOP_TIMEOUT),
            StopTimeout::Short => Some(SHORT_STOP_TIMEOUT),
            StopTimeout::Unbounded => None,
        }
    }

    /// Whether an instance hanging on its stop waits for the test: no stop
    /// timeout, or the default one on a real clock (too long to wait for).
    fn holds_hangs(&self) -> bool {
        match self.stop_timeout {
            StopTimeout::Unbounded => true,
            StopTimeout::Default => !self.executor.virtual_clock,
            StopTimeout::Short => false,
        }
    }

    fn limit(&self) -> Duration {
        if self.executor.virtual_clock {
            VIRTUAL_LIMIT
        } else {
            LIMIT
        }
    }
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        36 => Just(Verdict::Restart),
        2 => Just(Verdict::Stop),
        1 => Just(Verdict::StopParents),
        1 => Just(Verdict::Shutdown),
        1 => Just(Verdict::SpinHalt),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        prop_oneof![
            60 => Just(Build::Fresh),
            2 => Just(Build::Error),
            2 => Just(Build::Reused),
        ],
        prop::bool::weighted(0.85),
        prop_oneof![
            5 => Just(OnStop::Return),
            2 => Just(OnStop::Fail),
            3 => Just(OnStop::Hang),
        ],
    )
        .prop_map(|(build, ready, on_stop)| Plan {
            build,
            ready,
            on_stop,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => Just(Step::Command(Act::Fail)),
        7 => Just(Step::Command(Act::ThrowTwice)),
        1 => Just(Step::Command(Act::Finish)),
        1 => Just(Step::Stop),
        1 => Just(Step::RacingFail),
        1 => Just(Step::StopInBackoff),
    ]
}

fn case(executor: Executor) -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            5 => Just(Duration::ZERO),
            3 => Just(Duration::from_millis(5)),
            1 => Just(Duration::from_millis(10)),
            1 => Just(Duration::from_millis(20)),
        ],
        prop_oneof![1 => Just(None), 3 => (0..=4u32).prop_map(Some)],
        prop_oneof![
            1 => Just(StopTimeout::Default),
            2 => Just(StopTimeout::Short),
            2 => Just(StopTimeout::Unbounded),
        ],
        prop::collection::vec(verdict(), 0..=MAX_SCRIPT),
        prop::collection::vec(plan(), 0..=MAX_SCRIPT),
        prop::collection::vec(step(), 0..=MAX_STEPS),
        prop::bool::weighted(0.03),
    )
        .prop_map(
            move |(backoff, intensity, stop_timeout, verdicts, plans, steps, stopped_before)| {
                Case {
                    backoff,
                    intensity,
                    stop_timeout,
                    verdicts,
                    plans,
                    steps,
                    stopped_before,
                    executor,
                }
            },
        )
}

// ---------------------------------------------------------------------------
// The runner

/// What the cases of one run went through, printed at the end so that a
/// generator drifting into trivial cases shows.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    instances: AtomicUsize,
    steps: AtomicUsize,
    skipped: AtomicUsize,
    handled: AtomicUsize,
    restarts: AtomicUsize,
    restarts_after_backoff: AtomicUsize,
    hooked: AtomicUsize,
    never_ready_failed: AtomicUsize,
    held: AtomicUsize,
    stops_running: AtomicUsize,
    stops_racing: AtomicUsize,
    stops_in_backoff: AtomicUsize,
    stops_while_hung: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    failed: AtomicUsize,
    exhausted: AtomicUsize,
    factory_failed: AtomicUsize,
    start_failed: AtomicUsize,
    timed_out: AtomicUsize,
}

impl Coverage {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts one finished case from its history and outcome.
    fn count(&self, case: &Case, events: &[Event], outcome: &RunOutcome) {
        Coverage::add(&self.cases, 1);
        let count = |test: &dyn Fn(&Event) -> bool| events.iter().filter(|e| test(e)).count();
        Coverage::add(
            &self.instances,
            count(&|e| matches!(e, Event::Built { reused: false, .. })),
        );
        Coverage::add(
            &self.handled,
            count(&|e| matches!(e, Event::Handled { .. })),
        );
        Coverage::add(&self.hooked, count(&|e| matches!(e, Event::Hooked { .. })));
        let restarts = count(&|e| matches!(e, Event::Built { attempt, .. } if *attempt > 1))
            + count(&|e| matches!(e, Event::FactoryFailed { attempt, .. } if *attempt > 1));
        Coverage::add(&self.restarts, restarts);
        if !case.backoff.is_zero() {
            Coverage::add(&self.restarts_after_backoff, restarts);
        }
        let never_ready_failed = events
            .iter()
            .filter(|e| match e {
                Event::Handled { attempt, .. } => !case.plan(*attempt).ready,
                _ => false,
            })
            .count();
        Coverage::add(&self.never_ready_failed, never_ready_failed);
        // The last handler call said Restart, yet the loop was cancelled
        // without building again: the stop came during the backoff.
        let last_handled = events.iter().rev().find_map(|e| match e {
            Event::Handled {
                attempt, verdict, ..
            } => Some((*attempt, *verdict)),
            _ => None,
        });
        let built = count(&|e| matches!(e, Event::Built { .. } | Event::FactoryFailed { .. }));
        if matches!(outcome, RunOutcome::Cancelled)
            && !case.backoff.is_zero()
            && last_handled.is_some_and(|(attempt, verdict)| {
                verdict == Verdict::Restart && attempt as usize == built
            })
        {
            Coverage::add(&self.stops_in_backoff, 1);
        }
        Coverage::add(
            match outcome {
                RunOutcome::Completed => &self.completed,
                RunOutcome::Cancelled => &self.cancelled,
                RunOutcome::Failed { .. } => &self.failed,
                RunOutcome::RestartsExhausted { .. } => &self.exhausted,
                RunOutcome::FactoryFailed { .. } => &self.factory_failed,
                RunOutcome::StartFailed { .. } => &self.start_failed,
                _ => &self.timed_out,
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
            "{} cases, {} instances, {} steps carried out, {} skipped (the loop had ended); \
             {} handler calls, {} of never-ready instances; {} restarts, {} after a backoff; \
             {} errors to the hook; {} hung instances held; parent stops: {} while an \
             instance ran, {} racing a failure, {} ending a backoff, {} while an instance \
             hung; ended Completed {}, Cancelled {}, Failed {}, RestartsExhausted {}, \
             FactoryFailed {}, StartFailed {}, StopTimedOut {}",
            n(&self.cases),
            n(&self.instances),
            n(&self.steps),
            n(&self.skipped),
            n(&self.handled),
            n(&self.never_ready_failed),
            n(&self.restarts),
            n(&self.restarts_after_backoff),
            n(&self.hooked),
            n(&self.held),
            n(&self.stops_running),
            n(&self.stops_racing),
            n(&self.stops_in_backoff),
            n(&self.stops_while_hung),
            n(&self.completed),
            n(&self.cancelled),
            n(&self.failed),
            n(&self.exhausted),
            n(&self.factory_failed),
            n(&self.start_failed),
            n(&self.timed_out),
        )
    }
}

/// Runs the cases of test `test` on `executor`, each through `run`.
fn run_model(test: &str, executor: &str, run: impl Fn(Case, Arc<Coverage>)) {
    let model = ModelRun {
        file: "restart_model",
        test,
        executor,
        default_cases: 256,
    };
    lifecycle_conformance::run_model(model, case(Executor::of(executor)), run);
}

// ---------------------------------------------------------------------------
// The history

/// What made an instance report an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// A command of the test.
    Command,
    /// Its stop (`OnStop::Fail`).
    Stop,
}

/// One thing that happened, in the order it was recorded.
#[derive(Clone, Debug)]
enum Event {
    /// The test commanded instance `attempt`; `racing` if the parent's stop
    /// follows at once.
    Command {
        attempt: u32,
        act: Act,
        racing: bool,
        at: Instant,
    },
    /// The test stopped the parent (recorded once done; `at` was read just
    /// before).
    ParentStop { at: Instant },
    /// The test released instance `attempt`, hanging on its stop.
    Release { attempt: u32, at: Instant },
    /// The factory built instance `attempt` (`reused`: handed back the
    /// previous one).
    Built {
        attempt: u32,
        at: Instant,
        reused: bool,
        parent_stopped: bool,
        previous_gone: bool,
    },
    /// The factory returned an error for attempt `attempt`.
    FactoryFailed {
        attempt: u32,
        at: Instant,
        parent_stopped: bool,
        previous_gone: bool,
    },
    /// Instance `attempt`'s worker started.
    Started { attempt: u32 },
    /// It threw `message` through its context (`at`: just before).
    Threw {
        attempt: u32,
        message: String,
        reported: Reported,
        at: Instant,
    },
    /// It returned the error `message`.
    Failed {
        attempt: u32,
        message: String,
        cause: Cause,
        at: Instant,
    },
    /// It returned `Ok`.
    Returned { attempt: u32 },
    /// It saw its stop and hangs.
    Hanging { attempt: u32 },
    /// Its worker's future is gone (returned, or dropped by an abort).
    Gone { attempt: u32 },
    /// The handler was called for attempt `attempt`, with `message`, and
    /// answered `verdict`; `done` and `gone` tell the instance's state then.
    Handled {
        attempt: u32,
        message: String,
        verdict: Verdict,
        at: Instant,
        done: bool,
        gone: bool,
    },
    /// The fatal hook received `message`.
    Hooked { message: String },
    /// The loop returned.
    Ended { at: Instant },
}

impl Event {
    /// The instance (or attempt) the event is about, if any.
    fn attempt(&self) -> Option<u32> {
        match self {
            Event::Command { attempt, .. }
            | Event::Release { attempt, .. }
            | Event::Built { attempt, .. }
            | Event::FactoryFailed { attempt, .. }
            | Event::Started { attempt }
            | Event::Threw { attempt, .. }
            | Event::Failed { attempt, .. }
            | Event::Returned { attempt }
            | Event::Hanging { attempt }
            | Event::Gone { attempt }
            | Event::Handled { attempt, .. } => Some(*attempt),
            Event::ParentStop { .. } | Event::Hooked { .. } | Event::Ended { .. } => None,
        }
    }

    /// When the event happened, if it tells.
    fn at(&self) -> Option<Instant> {
        match self {
            Event::Command { at, .. }
            | Event::ParentStop { at }
            | Event::Release { at, .. }
            | Event::Built { at, .. }
            | Event::FactoryFailed { at, .. }
            | Event::Threw { at, .. }
            | Event::Failed { at, .. }
            | Event::Handled { at, .. }
            | Event::Ended { at } => Some(*at),
            Event::Started { .. }
            | Event::Returned { .. }
            | Event::Hanging { .. }
            | Event::Gone { .. }
            | Event::Hooked { .. } => None,
        }
    }
}

/// A time as milliseconds since the clock's origin.
struct Ms(Instant);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.0.since_origin().as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Command {
                attempt,
                act,
                racing,
                at,
            } => {
                let racing = if *racing {
                    ", the parent's stop racing it"
                } else {
                    ""
                };
                write!(
                    f,
                    "test: instance {attempt}, {act:?} at {}{racing}",
                    Ms(*at)
                )
            }
            Event::ParentStop { at } => write!(f, "test: parent stopped at {}", Ms(*at)),
            Event::Release { attempt, at } => {
                write!(f, "test: instance {attempt} released at {}", Ms(*at))
            }
            Event::Built {
                attempt,
                at,
                reused,
                parent_stopped,
                previous_gone,
            } => {
                let what = if *reused {
                    "handed back the previous instance as"
                } else {
                    "built"
                };
                write!(f, "factory: {what} instance {attempt} at {}", Ms(*at))?;
                write_factory_call(f, *parent_stopped, *previous_gone)
            }
            Event::FactoryFailed {
                attempt,
                at,
                parent_stopped,
                previous_gone,
            } => {
                write!(f, "factory: error for attempt {attempt} at {}", Ms(*at))?;
                write_factory_call(f, *parent_stopped, *previous_gone)
            }
            Event::Started { attempt } => write!(f, "instance {attempt}: started"),
            Event::Threw {
                attempt,
                message,
                reported,
                at,
            } => write!(
                f,
                "instance {attempt}: threw {message:?} at {} ({reported:?})",
                Ms(*at)
            ),
            Event::Failed {
                attempt,
                message,
                cause,
                at,
            } => write!(
                f,
                "instance {attempt}: returned {message:?} at {} ({cause:?})",
                Ms(*at)
            ),
            Event::Returned { attempt } => write!(f, "instance {attempt}: returned Ok"),
            Event::Hanging { attempt } => write!(f, "instance {attempt}: hangs on its stop"),
            Event::Gone { attempt } => write!(f, "instance {attempt}: worker gone"),
            Event::Handled {
                attempt,
                message,
                verdict,
                at,
                done,
                gone,
            } => write!(
                f,
                "handler: attempt {attempt}, {message:?}, at {} (done {done}, gone {gone}) \
                 -> {verdict}",
                Ms(*at)
            ),
            Event::Hooked { message } => write!(f, "hook: {message:?}"),
            Event::Ended { at } => write!(f, "the loop ended at {}", Ms(*at)),
        }
    }
}

/// What a factory call found: the parent stopped, the previous instance
/// not done and gone.
fn write_factory_call(
    f: &mut fmt::Formatter<'_>,
    parent_stopped: bool,
    previous_gone: bool,
) -> fmt::Result {
    if parent_stopped {
        f.write_str(", the parent stopped")?;
    }
    if !previous_gone {
        f.write_str(", the previous instance NOT done and gone")?;
    }
    Ok(())
}

/// The history of a case: events in order, and a bell rung by every push
/// (replaced under the lock, so a waiter that found nothing always waits
/// on the bell the next push rings).
#[derive(Default)]
struct History {
    inner: Mutex<(Vec<Event>, Latch)>,
}

impl History {
    fn push(&self, event: Event) {
        let bell = {
            let mut inner = lock(&self.inner);
            inner.0.push(event);
            std::mem::take(&mut inner.1)
        };
        bell.set();
    }

    fn snapshot(&self) -> Vec<Event> {
        lock(&self.inner).0.clone()
    }

    fn find(&self, test: impl Fn(&Event) -> bool) -> Option<Event> {
        lock(&self.inner).0.iter().find(|e| test(e)).cloned()
    }

    /// Waits until `found` finds something in the history.
    async fn until<T>(&self, mut found: impl FnMut(&[Event]) -> Option<T>) -> T {
        loop {
            let bell = {
                let inner = lock(&self.inner);
                if let Some(found) = found(&inner.0) {
                    return found;
                }
                inner.1.clone()
            };
            bell.wait().await;
        }
    }
}

// ---------------------------------------------------------------------------
// Instances

/// The test's side of one instance.
struct Rig {
    attempt: u32,
    plan: Plan,
    history: Arc<History>,
    command: Mutex<Option<Act>>,
    /// Set once `command` is.
    commanded: Latch,
    release: Latch,
    /// Set once the worker's future is gone.
    gone: Latch,
}

impl Rig {
    fn command(&self, act: Act) {
        *lock(&self.command) = Some(act);
        self.commanded.set();
    }

    fn fail(&self, message: String, cause: Cause, at: Instant) -> WorkerResult {
        self.history.push(Event::Failed {
            attempt: self.attempt,
            message: message.clone(),
            cause,
            at,
        });
        Err(FatalError::msg(message))
    }

    fn returned(&self) -> WorkerResult {
        self.history.push(Event::Returned {
            attempt: self.attempt,
        });
        Ok(())
    }
}

/// Records the end of a worker's future, however it ends.
struct GoneOnDrop(Arc<Rig>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.gone.set();
        self.0.history.push(Event::Gone {
            attempt: self.0.attempt,
        });
    }
}

/// A one-worker manager run by `rig`.
fn instance(rig: Arc<Rig>) -> ComponentManager {
    ComponentManager::builder()
        .add_worker(move |ctx, ready| {
            // Made with the future, so that a future dropped before it ever
            // ran is seen gone too.
            let gone = GoneOnDrop(rig.clone());
            work(rig.clone(), ctx, ready, gone)
        })
        .build()
}

async fn work(
    rig: Arc<Rig>,
    ctx: WorkerContext,
    ready: ReadyHandle,
    gone: GoneOnDrop,
) -> WorkerResult {
    let _gone = gone;
    let attempt = rig.attempt;
    let rt = ctx.runtime().clone();
    if rig.plan.ready {
        ready.ready();
    }
    rig.history.push(Event::Started { attempt });
    // A command wins over the stop: a command the test gave before its
    // stop is always carried out.
    // (`select` polls its first future first.)
    let commanded = matches!(
        select(pin!(rig.commanded.wait()), pin!(ctx.stopped())).await,
        Either::Left(_)
    );
    if commanded {
        let act = lock(&rig.command).expect("the command is set before its latch");
        match act {
            Act::Fail => {
                let message = format!("instance {attempt} failed");
                return rig.fail(message, Cause::Command, rt.now());
            }
            Act::Finish => return rig.returned(),
            Act::ThrowTwice => {
                for which in ["first", "again"] {
                    let message = format!("instance {attempt} threw {which}");
                    let at = rt.now();
                    let reported = ctx.throw(FatalError::msg(message.clone()));
                    rig.history.push(Event::Threw {
                        attempt,
                        message,
                        reported,
                        at,
                    });
                }
            }
        }
    }
    ctx.stopped().await;
    match rig.plan.on_stop {
        OnStop::Return => rig.returned(),
        OnStop::Fail => {
            let message = format!("instance {attempt} failed while stopping");
            rig.fail(message, Cause::Stop, rt.now())
        }
        OnStop::Hang => {
            rig.history.push(Event::Hanging { attempt });
            rig.release.wait().await;
            rig.returned()
        }
    }
}

/// An instance the factory handed out.
#[derive(Clone)]
struct Instance {
    rig: Arc<Rig>,
    manager: ComponentManager,
}

impl Instance {
    fn done_and_gone(&self) -> bool {
        self.manager.done().is_set() && self.rig.gone.is_set()
    }
}

/// What the factory and the handler share with the test.
struct Shared {
    rt: SharedRuntime,
    case: Case,
    history: Arc<History>,
    /// What each factory call returned, by attempt: `None` for an error.
    built: Mutex<Vec<Option<Instance>>>,
    handler_calls: AtomicUsize,
    parent: StopToken,
}

impl Shared {
    fn instance(&self, attempt: u32) -> Option<Instance> {
        lock(&self.built)
            .get(attempt.checked_sub(1)? as usize)
            .cloned()
            .flatten()
    }
}

fn factory(
    shared: Arc<Shared>,
) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    move || {
        let mut built = lock(&shared.built);
        let attempt = built.len() as u32 + 1;
        let plan = shared.case.plan(attempt);
        let previous = built.last().cloned().flatten();
        let previous_gone = previous.as_ref().is_none_or(Instance::done_and_gone);
        let parent_stopped = shared.parent.is_stopped();
        let at = shared.rt.now();
        let instance = match (plan.build, previous) {
            (Build::Error, _) => {
                built.push(None);
                shared.history.push(Event::FactoryFailed {
                    attempt,
                    at,
                    parent_stopped,
                    previous_gone,
                });
                return Err(FatalError::msg(format!(
                    "factory failed at attempt {attempt}"
                )));
            }
            (Build::Reused, Some(previous)) => previous,
            _ => {
                let rig = Arc::new(Rig {
                    attempt,
                    plan,
                    history: shared.history.clone(),
                    command: Mutex::new(None),
                    commanded: Latch::new(),
                    release: Latch::new(),
                    gone: Latch::new(),
                });
                let manager = instance(rig.clone());
                Instance { rig, manager }
            }
        };
        let manager = instance.manager.clone();
        built.push(Some(instance));
        shared.history.push(Event::Built {
            attempt,
            at,
            reused: plan.build == Build::Reused,
            parent_stopped,
            previous_gone,
        });
        Ok(manager)
    }
}

fn handler(shared: Arc<Shared>) -> impl FnMut(&Failure) -> Verdict + Send + 'static {
    move |failure: &Failure| {
        let call = shared.handler_calls.fetch_add(1, SeqCst);
        let verdict = shared.case.verdict(call);
        let (done, gone) = shared
            .instance(failure.attempt)
            .map_or((false, false), |instance| {
                (instance.manager.done().is_set(), instance.rig.gone.is_set())
            });
        shared.history.push(Event::Handled {
            attempt: failure.attempt,
            message: failure.error.to_string(),
            verdict,
            at: shared.rt.now(),
            done,
            gone,
        });
        verdict
    }
}

// ---------------------------------------------------------------------------
// Driving a case

/// Where the loop has come to rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    /// Instance `n` runs, uncommanded, and the parent is not stopped.
    Running(u32),
    /// Instance `n` hangs on its stop and only the test can end it.
    Hung(u32),
    Ended,
}

/// Where the loop is at rest as `events` show it, if it is.
fn rest(case: &Case, events: &[Event]) -> Option<Rest> {
    if events.iter().any(|e| matches!(e, Event::Ended { .. })) {
        return Some(Rest::Ended);
    }
    let latest = events.iter().rev().find_map(|e| match e {
        Event::Built {
            attempt,
            reused: false,
            ..
        } => Some(Some(*attempt)),
        Event::Built { .. } | Event::FactoryFailed { .. } => Some(None),
        _ => None,
    });
    let n = latest.flatten()?;
    let of_n = events.iter().filter(|e| e.attempt() == Some(n));
    let (mut started, mut touched, mut hanging, mut released) = (false, false, false, false);
    for event in of_n {
        match event {
            Event::Started { .. } => started = true,
            Event::Hanging { .. } => hanging = true,
            Event::Release { .. } => released = true,
            Event::Command { .. }
            | Event::Threw { .. }
            | Event::Failed { .. }
            | Event::Returned { .. } => touched = true,
            _ => {}
        }
    }
    if hanging && !released && case.holds_hangs() {
        return Some(Rest::Hung(n));
    }
    let stopped = events.iter().any(|e| matches!(e, Event::ParentStop { .. }));
    (started && !touched && !hanging && !stopped).then_some(Rest::Running(n))
}

struct World {
    rt: SharedRuntime,
    case: Case,
    shared: Arc<Shared>,
    parent: StopSource,
    coverage: Arc<Coverage>,
}

async fn run_case(rt: SharedRuntime, case: Case, coverage: Arc<Coverage>) {
    let parent = StopSource::new();
    let history = Arc::new(History::default());
    let shared = Arc::new(Shared {
        rt: rt.clone(),
        case: case.clone(),
        history: history.clone(),
        built: Mutex::default(),
        handler_calls: AtomicUsize::new(0),
        parent: parent.token(),
    });
    let world = World {
        rt: rt.clone(),
        case: case.clone(),
        shared: shared.clone(),
        parent,
        coverage: coverage.clone(),
    };
    if case.stopped_before {
        world.stop_parent();
    }

    let hook = FatalHook::new({
        let history = history.clone();
        move |error: &FatalError| {
            history.push(Event::Hooked {
                message: error.to_string(),
            })
        }
    });
    let restarts = run_component(factory(shared.clone()), handler(shared.clone()))
        .policy(case.policy())
        .hook(hook);
    let restarts = match case.stop_timeout {
        StopTimeout::Default => restarts,
        StopTimeout::Short => restarts.stop_timeout(SHORT_STOP_TIMEOUT),
        StopTimeout::Unbounded => restarts.no_stop_timeout(),
    };
    let run = rt.spawn({
        let (rt, token, history) = (rt.clone(), world.parent.token(), history.clone());
        async move {
            let outcome = restarts.run(rt.clone(), token).await;
            let at = rt.now();
            history.push(Event::Ended { at });
            (outcome, at)
        }
    });

    let mut carried_out = 0;
    for (index, &step) in case.steps.iter().enumerate() {
        match world
            .settle(&format!("before step {index} ({step:?})"))
            .await
        {
            Rest::Ended => break,
            Rest::Running(n) => world.apply(step, n).await,
            Rest::Hung(n) => {
                world.hold(n).await;
                if step.stops() {
                    world.stop_parent();
                    Coverage::add(&coverage.stops_while_hung, 1);
                }
                world.release(n);
            }
        }
        carried_out += 1;
    }
    Coverage::add(&coverage.steps, carried_out);
    Coverage::add(&coverage.skipped, case.steps.len() - carried_out);

    // The end: stop the parent, release what hangs, and the loop must end.
    let last = world.settle("after the steps").await;
    if last != Rest::Ended {
        if let Rest::Hung(_) = last {
            Coverage::add(&coverage.stops_while_hung, 1);
        }
        world.stop_parent();
    }
    loop {
        match world.settle("after the parent's stop").await {
            Rest::Ended => break,
            Rest::Hung(n) => {
                world.hold(n).await;
                world.release(n);
            }
            Rest::Running(n) => world.report(
                &format!("invariant 8: instance {n} runs after the parent's stop"),
                None,
            ),
        }
    }
    let (outcome, end) = match rt.timeout(case.limit(), run).await {
        Ok(Ok(ended)) => ended,
        Ok(Err(error)) => world.report(&format!("the loop's task failed: {error}"), None),
        Err(_) => world.report(
            "invariant 8: the loop recorded its end but did not return",
            None,
        ),
    };

    // 8. Every instance done and its worker gone.
    for (index, instance) in lock(&shared.built).iter().enumerate() {
        if instance.as_ref().is_some_and(|it| !it.done_and_gone()) {
            world.report(
                &format!(
                    "invariant 8: the loop ended, but instance {} is not done and gone",
                    index + 1
                ),
                Some(&outcome),
            );
        }
    }
    let events = history.snapshot();
    if let Err(violation) = check(&case, &events, &outcome, end) {
        world.report(&violation, Some(&outcome));
    }
    coverage.count(&case, &events, &outcome);
}

impl World {
    /// Waits until the loop is at rest (see [`Rest`]).
    async fn settle(&self, what: &str) -> Rest {
        let case = &self.case;
        let waited = self.rt.timeout(
            case.limit(),
            self.shared.history.until(|events| rest(case, events)),
        );
        match waited.await {
            Ok(rest) => rest,
            Err(_) => self.report(
                &format!(
                    "invariant 8: the loop did not settle {what} within {:?}",
                    case.limit()
                ),
                None,
            ),
        }
    }

    fn rig(&self, n: u32) -> Arc<Rig> {
        self.shared
            .instance(n)
            .expect("a running instance was built")
            .rig
    }

    fn command(&self, n: u32, act: Act, racing: bool) {
        self.shared.history.push(Event::Command {
            attempt: n,
            act,
            racing,
            at: self.rt.now(),
        });
        self.rig(n).command(act);
    }

    /// Stops the parent, once.
    fn stop_parent(&self) {
        if self.parent.is_stopped() {
            return;
        }
        let at = self.rt.now();
        self.parent.stop();
        self.shared.history.push(Event::ParentStop { at });
    }

    async fn apply(&self, step: Step, n: u32) {
        match step {
            Step::Command(act) => self.command(n, act, false),
            Step::Stop => {
                self.stop_parent();
                Coverage::add(&self.coverage.stops_running, 1);
            }
            Step::RacingFail => {
                self.command(n, Act::Fail, true);
                self.stop_parent();
                Coverage::add(&self.coverage.stops_racing, 1);
            }
            Step::StopInBackoff => {
                self.command(n, Act::Fail, false);
                let handled = self.shared.history.until(|events| {
                    events
                        .iter()
                        .any(|e| match e {
                            Event::Handled { attempt, .. } => *attempt == n,
                            Event::Ended { .. } => true,
                            _ => false,
                        })
                        .then_some(())
                });
                if self.rt.timeout(self.case.limit(), handled).await.is_err() {
                    self.report(
                        &format!(
                            "invariant 8: instance {n} failed and the loop neither called \
                             the handler nor ended within {:?}",
                            self.case.limit()
                        ),
                        None,
                    );
                }
                self.stop_parent();
            }
        }
    }

    /// Holds instance `n`, hanging on its stop, for a while: the loop must
    /// wait for it (invariant 6).
    async fn hold(&self, n: u32) {
        let_others_run(&self.rt).await;
        let moved = self.shared.history.find(|e| match e {
            Event::Handled { attempt, .. } => *attempt == n,
            Event::Built { attempt, .. } | Event::FactoryFailed { attempt, .. } => *attempt > n,
            Event::Ended { .. } => true,
            _ => false,
        });
        if let Some(event) = moved {
            self.report(
                &format!(
                    "invariant 6: instance {n} hangs on its stop, yet the loop went on: {event}"
                ),
                None,
            );
        }
        let instance = self.shared.instance(n).expect("a hung instance was built");
        if instance.manager.done().is_set() || instance.rig.gone.is_set() {
            self.report(
                &format!("invariant 6: instance {n} hangs, yet it is done or gone"),
                None,
            );
        }
        Coverage::add(&self.coverage.held, 1);
    }

    fn release(&self, n: u32) {
        self.shared.history.push(Event::Release {
            attempt: n,
            at: self.rt.now(),
        });
        self.rig(n).release.set();
    }

    /// Fails the case: the violation, the case, the outcome if the loop
    /// ended, and the history.
    fn report(&self, violation: &str, outcome: Option<&RunOutcome>) -> ! {
        let outcome = outcome.map_or("none: the loop has not ended".into(), |o| format!("{o:?}"));
        panic!(
            "{violation}\ncase: {:#?}\noutcome: {outcome}\nhistory:\n{}",
            self.case,
            render(&self.shared.history.snapshot())
        );
    }
}

fn render(events: &[Event]) -> String {
    let mut lines = String::new();
    for (at, event) in events.iter().enumerate() {
        lines += &format!("  {at:3}: {event}\n");
    }
    lines
}

// ---------------------------------------------------------------------------
// The checks

/// An error an instance reported.
struct Reporting {
    message: String,
    cause: Cause,
    at: Instant,
}

/// A handler call.
struct Handling {
    event: usize,
    message: String,
    verdict: Verdict,
    at: Instant,
    done: bool,
    gone: bool,
}

/// What the history tells of one factory call and its instance.
struct Turn {
    attempt: u32,
    at: Instant,
    /// `None` for a factory error; `Some(true)` for a reused instance.
    reused: Option<bool>,
    parent_stopped: bool,
    previous_gone: bool,
    errors: Vec<Reporting>,
    /// A `Fail` command raced the parent's stop.
    racing: bool,
    finished: bool,
    hanging: bool,
    handled: Vec<Handling>,
}

/// The turns of a history.
fn turns(events: &[Event]) -> Result<Vec<Turn>, String> {
    let mut turns: Vec<Turn> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let new = match event {
            Event::Built {
                attempt,
                at,
                reused,
                parent_stopped,
                previous_gone,
            } => Some((
                *attempt,
                *at,
                Some(*reused),
                *parent_stopped,
                *previous_gone,
            )),
            Event::FactoryFailed {
                attempt,
                at,
                parent_stopped,
                previous_gone,
            } => Some((*attempt, *at, None, *parent_stopped, *previous_gone)),
            _ => None,
        };
        if let Some((attempt, at, reused, parent_stopped, previous_gone)) = new {
            turns.push(Turn {
                attempt,
                at,
                reused,
                parent_stopped,
                previous_gone,
                errors: Vec::new(),
                racing: false,
                finished: false,
                hanging: false,
                handled: Vec::new(),
            });
            continue;
        }
        let Some(attempt) = event.attempt() else {
            continue;
        };
        let Some(turn) = turns.get_mut(attempt as usize - 1) else {
            return Err(format!(
                "invariant 2 (the attempt number): event {index} ({event}) names attempt \
                 {attempt}, which the factory never saw"
            ));
        };
        match event {
            Event::Command { act, racing, .. } => {
                turn.racing |= *racing;
                turn.finished |= *act == Act::Finish;
            }
            Event::Threw {
                message,
                reported,
                at,
                ..
            } => {
                // 1. A fresh slot per instance.
                let expected = if turn.errors.is_empty() {
                    Reported::First
                } else {
                    Reported::Unhandled
                };
                if *reported != expected {
                    return Err(format!(
                        "invariant 1 (a fresh fatal slot per instance): event {index} ({event}) \
                         was reported {reported:?}, expected {expected:?}"
                    ));
                }
                turn.errors.push(Reporting {
                    message: message.clone(),
                    cause: Cause::Command,
                    at: *at,
                });
            }
            Event::Failed {
                message, cause, at, ..
            } => turn.errors.push(Reporting {
                message: message.clone(),
                cause: *cause,
                at: *at,
            }),
            Event::Hanging { .. } => turn.hanging = true,
            Event::Handled {
                message,
                verdict,
                at,
                done,
                gone,
                ..
            } => turn.handled.push(Handling {
                event: index,
                message: message.clone(),
                verdict: *verdict,
                at: *at,
                done: *done,
                gone: *gone,
            }),
            _ => {}
        }
    }
    Ok(turns)
}

/// A `RunOutcome`, as the checks compare it.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Completed,
    Cancelled,
    Failed {
        error: String,
        verdict: Verdict,
        attempt: u32,
    },
    RestartsExhausted {
        error: String,
        attempt: u32,
    },
    FactoryFailed {
        error: String,
        attempt: u32,
    },
    /// `StartError::AlreadyStarted`.
    StartFailed {
        attempt: u32,
    },
    /// Aborted in time.
    StopTimedOut {
        attempt: u32,
        timeout: Duration,
        error: Option<String>,
    },
    Other(String),
}

impl Outcome {
    fn of(outcome: &RunOutcome) -> Outcome {
        match outcome {
            RunOutcome::Completed => Outcome::Completed,
            RunOutcome::Cancelled => Outcome::Cancelled,
            RunOutcome::Failed {
                error,
                verdict,
                attempt,
            } => Outcome::Failed {
                error: error.to_string(),
                verdict: *verdict,
                attempt: *attempt,
            },
            RunOutcome::RestartsExhausted { error, attempt } => Outcome::RestartsExhausted {
                error: error.to_string(),
                attempt: *attempt,
            },
            RunOutcome::FactoryFailed { error, attempt } => Outcome::FactoryFailed {
                error: error.to_string(),
                attempt: *attempt,
            },
            RunOutcome::StartFailed {
                error: StartError::AlreadyStarted,
                attempt,
            } => Outcome::StartFailed { attempt: *attempt },
            RunOutcome::StopTimedOut {
                attempt,
                timeout,
                aborted: true,
                error,
            } => Outcome::StopTimedOut {
                attempt: *attempt,
                timeout: *timeout,
                error: error.as_ref().map(ToString::to_string),
            },
            other => Outcome::Other(format!("{other:?}")),
        }
    }
}

/// What follows a turn.
enum Next {
    /// The loop ends with this outcome: no further factory call.
    End(Outcome),
    /// The factory is called again, `delay` after `after`.
    Restart { after: Instant, delay: Duration },
    /// Either, as the parent's stop and the restart race: a factory call
    /// `delay` after `after`, or the loop ends `Cancelled`.
    Either { after: Instant, delay: Duration },
}

/// Checks that `to` is `wait` after `from`: at least, or exactly on
/// virtual time.
fn waited(
    case: &Case,
    what: &str,
    from: Instant,
    to: Instant,
    wait: Duration,
) -> Result<(), String> {
    let gap = to.saturating_duration_since(from);
    let wrong = if case.executor.virtual_clock {
        gap != wait || to < from
    } else {
        gap < wait
    };
    if wrong {
        let bound = if case.executor.virtual_clock {
            "exactly"
        } else {
            "at least"
        };
        return Err(format!(
            "{what} {gap:?} after {}, not {bound} {wait:?} after it",
            Ms(from)
        ));
    }
    Ok(())
}

/// Checks the history and the outcome of a finished case against the
/// invariants of the module docs.
fn check(case: &Case, events: &[Event], outcome: &RunOutcome, end: Instant) -> Result<(), String> {
    let turns = turns(events)?;
    let stop = events.iter().enumerate().find_map(|(index, e)| match e {
        Event::ParentStop { at } => Some((index, *at)),
        _ => None,
    });
    let seen = Outcome::of(outcome);
    let timed_out_with = |attempt: u32| match &seen {
        Outcome::StopTimedOut {
            attempt: overran,
            error: Some(error),
            ..
        } if *overran == attempt => Some(error.clone()),
        _ => None,
    };

    let expected = if case.stopped_before {
        // 7. Never a factory call for a parent stopped before the loop.
        if !turns.is_empty() {
            return Err(
                "invariant 7: the parent was stopped before the loop, yet the factory was \
                 called"
                    .into(),
            );
        }
        Outcome::Cancelled
    } else {
        let mut restarts = 0;
        let mut calls = 0;
        let mut expected = None;
        for (index, turn) in turns.iter().enumerate() {
            let n = turn.attempt;
            if n as usize != index + 1 {
                return Err(format!(
                    "invariant 1: factory call {} was numbered {n}",
                    index + 1
                ));
            }
            // 1. One instance at a time.
            if !turn.previous_gone {
                return Err(format!(
                    "invariant 1: the factory was called for attempt {n} before instance {} \
                     was done and its worker gone",
                    n - 1
                ));
            }
            // 7. Not with the parent stopped, on one thread.
            if turn.parent_stopped && !case.executor.parallel {
                return Err(format!(
                    "invariant 7: the factory was called for attempt {n} with the parent \
                     stopped"
                ));
            }
            let next = match turn.reused {
                None => Next::End(Outcome::FactoryFailed {
                    error: format!("factory failed at attempt {n}"),
                    attempt: n,
                }),
                Some(true) => Next::End(Outcome::StartFailed { attempt: n }),
                Some(false) => {
                    instance_turn(case, turn, stop, &timed_out_with, &mut restarts, &mut calls)?
                }
            };
            let after = turns.get(index + 1);
            match (next, after) {
                (Next::End(outcome), None) => {
                    expected = Some(outcome);
                    break;
                }
                (Next::End(outcome), Some(_)) => {
                    return Err(format!(
                        "invariant 3 or 4: after attempt {n} the loop should have ended with \
                         {outcome:?}, yet it called the factory again"
                    ))
                }
                (Next::Restart { after, delay } | Next::Either { after, delay }, Some(next)) => {
                    let what = format!("invariant 3: the factory was called for attempt {}", n + 1);
                    waited(case, &what, after, next.at, delay)?;
                }
                (Next::Restart { .. }, None) => {
                    return Err(format!(
                        "invariant 3: the handler said Restart for attempt {n}, the budget \
                         allowed it and no stop prevented it, yet the factory was not called \
                         again"
                    ))
                }
                (Next::Either { .. }, None) => {
                    expected = Some(Outcome::Cancelled);
                    break;
                }
            }
        }
        expected.ok_or("invariant 4: the loop ended, but no factory call ended it")?
    };

    // 4. The outcome.
    if seen != expected {
        return Err(format!(
            "invariant 4: the loop ended with {seen:?}, expected {expected:?}"
        ));
    }

    // 6. The timing of a stop timeout.
    if let Outcome::StopTimedOut {
        attempt,
        timeout,
        error,
    } = &seen
    {
        let turn = &turns[*attempt as usize - 1];
        let (from, since) = match error {
            Some(_) => (turn.errors[0].at, "its first error"),
            None => (
                stop.expect("checked: a stop timeout without an error follows a stop")
                    .1,
                "the parent's stop",
            ),
        };
        let what = format!("invariant 6: instance {attempt} was aborted ({since} at)");
        waited(case, &what, from, end, *timeout)?;
    }

    // 8. On virtual time, the loop ends at once after what ended it: no
    // timer runs out first (but the stop timeout, checked above).
    if case.executor.virtual_clock && !matches!(seen, Outcome::StopTimedOut { .. }) {
        let last = events
            .iter()
            .take_while(|e| !matches!(e, Event::Ended { .. }))
            .filter_map(Event::at)
            .max();
        if let Some(last) = last.filter(|last| *last != end) {
            return Err(format!(
                "invariant 8: the loop ended at {}, not at once after its last cause, at {}",
                Ms(end),
                Ms(last)
            ));
        }
    }

    // 5. Every error reaches the handler, the outcome or the hook, once.
    let mut reported: Vec<&str> = turns
        .iter()
        .flat_map(|turn| &turn.errors)
        .map(|error| error.message.as_str())
        .collect();
    let taken = turns
        .iter()
        .flat_map(|turn| &turn.handled)
        .map(|handling| handling.message.as_str());
    let hooked = events.iter().filter_map(|e| match e {
        Event::Hooked { message } => Some(message.as_str()),
        _ => None,
    });
    let timed_out = match &seen {
        Outcome::StopTimedOut {
            error: Some(error), ..
        } => Some(error.as_str()),
        _ => None,
    };
    let mut reached: Vec<&str> = taken.chain(hooked).chain(timed_out).collect();
    reported.sort_unstable();
    reached.sort_unstable();
    if reported != reached {
        return Err(format!(
            "invariant 5: the instances reported {reported:?}, but the handler, the outcome \
             and the hook received {reached:?}: every error must reach one of them, once"
        ));
    }
    Ok(())
}

/// What follows the turn of instance `turn.attempt` (checks 2, 3 and 6 on
/// the way): `restarts` granted so far, `calls` of the handler so far.
fn instance_turn(
    case: &Case,
    turn: &Turn,
    stop: Option<(usize, Instant)>,
    timed_out_with: &dyn Fn(u32) -> Option<String>,
    restarts: &mut u32,
    calls: &mut usize,
) -> Result<Next, String> {
    let n = turn.attempt;
    let first = turn.errors.first();
    let timed_out = timed_out_with(n);
    if turn.handled.len() > 1 {
        return Err(format!(
            "invariant 2: the handler was called {} times for instance {n}",
            turn.handled.len()
        ));
    }
    let handled = turn.handled.first();
    let took = handled.is_some() || timed_out.is_some();
    // 2. An error is taken when it must be, and only when there is one.
    let Some(first) = first else {
        if took {
            return Err(format!(
                "invariant 2: instance {n} reported no error, yet the handler or the outcome \
                 has one"
            ));
        }
        // 4. No error: a finish, or the parent's stop.
        if turn.finished {
            return Ok(Next::End(Outcome::Completed));
        }
        if stop.is_none() {
            return Err(format!(
                "invariant 4: instance {n} was neither finished nor stopped, and reported no \
                 error, yet the loop is over"
            ));
        }
        return Ok(Next::End(stopped_end(case, turn)));
    };
    if !took {
        // On virtual time a raced failure is there when the loop looks: the
        // worker, commanded before the stop, is woken and runs first.
        if first.cause == Cause::Command && (!turn.racing || case.executor.virtual_clock) {
            return Err(format!(
                "invariant 2: instance {n}'s first error, {:?}, came from a command with no \
                 stop on its way (or, on virtual time, before the stop), yet neither the \
                 handler nor the outcome has it",
                first.message
            ));
        }
        // Raced by the parent's stop, or caused by it: cancelled.
        if stop.is_none() {
            return Err(format!(
                "invariant 2: instance {n}'s first error {:?} was not taken, yet the parent \
                 was never stopped",
                first.message
            ));
        }
        return Ok(Next::End(stopped_end(case, turn)));
    }
    let Some(handling) = handled else {
        // 6. Taken by the stop timeout.
        if !turn.hanging || case.holds_hangs() {
            return Err(format!(
                "invariant 6: the loop timed out stopping instance {n}, which did not hang \
                 past a stop timeout"
            ));
        }
        return Ok(Next::End(Outcome::StopTimedOut {
            attempt: n,
            timeout: case.stop_timeout().expect("a stop timeout that aborts"),
            error: Some(first.message.clone()),
        }));
    };
    // 2. The handler: the first error, once done and gone.
    if handling.message != first.message {
        return Err(format!(
            "invariant 2: the handler got {:?} for instance {n}, whose first error is {:?}",
            handling.message, first.message
        ));
    }
    if !handling.done || !handling.gone {
        return Err(format!(
            "invariant 2: the handler was called for instance {n} before it was done and its \
             worker gone (done {}, gone {})",
            handling.done, handling.gone
        ));
    }
    if turn.hanging && !case.holds_hangs() {
        return Err(format!(
            "invariant 6: instance {n} hung past its stop timeout, yet the handler was called"
        ));
    }
    let verdict = case.verdict(*calls);
    *calls += 1;
    if handling.verdict != verdict {
        return Err(format!(
            "invariant 2: handler call {calls} answered {}, its script says {verdict}",
            handling.verdict
        ));
    }
    // 3. The verdict, then the budget, then the parent's stop.
    if verdict != Verdict::Restart {
        return Ok(Next::End(Outcome::Failed {
            error: first.message.clone(),
            verdict,
            attempt: n,
        }));
    }
    if case.intensity == Some(*restarts) {
        return Ok(Next::End(Outcome::RestartsExhausted {
            error: first.message.clone(),
            attempt: n,
        }));
    }
    *restarts += 1;
    let (after, delay) = (handling.at, case.backoff);
    Ok(match stop {
        None => Next::Restart { after, delay },
        // 7. The loop looks at the parent after the handler.
        Some((stopped, _)) if stopped < handling.event => Next::End(Outcome::Cancelled),
        Some((_, stopped_at)) if case.executor.virtual_clock => {
            if delay.is_zero() || stopped_at > after + delay {
                Next::Restart { after, delay }
            } else if stopped_at < after + delay {
                Next::End(Outcome::Cancelled)
            } else {
                Next::Either { after, delay }
            }
        }
        Some(_) => Next::Either { after, delay },
    })
}

/// How the loop ends after the parent's stop reached instance `turn`
/// without an error taken: aborted if it hung past a stop timeout, else
/// cancelled.
fn stopped_end(case: &Case, turn: &Turn) -> Outcome {
    match case.stop_timeout() {
        Some(timeout) if turn.hanging && !case.holds_hangs() => Outcome::StopTimedOut {
            attempt: turn.attempt,
            timeout,
            error: None,
        },
        _ => Outcome::Cancelled,
    }
}
