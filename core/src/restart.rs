//! [`run_component`]: run a component, restarting it on failure as its error
//! handler and [`RestartPolicy`] decide.

use core::fmt;
use core::future::{poll_fn, Future};
use core::pin::{pin, Pin};
use core::task::Poll;
use core::time::Duration;

use crate::component::{Component, StartError};
use crate::fatal::{FatalError, FatalHook, FatalSlot};
use crate::latch::Signal;
use crate::policy::{PolicyError, RestartBudget, RestartPolicy};
use crate::runtime::{RuntimeExt, SharedRuntime};
use crate::scope::Scope;
use crate::stop::{StopCause, StopToken, Stopped};
use crate::trace;
use crate::wait::wait_error_or_done;

/// What an error handler decides about a failed instance.
///
/// # Example: a handler
///
/// ```
/// use lifecycle::{Failure, Verdict};
///
/// #[derive(Debug)]
/// struct BadConfig;
/// impl std::fmt::Display for BadConfig {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("bad config")
///     }
/// }
/// impl std::error::Error for BadConfig {}
///
/// fn handler(failure: &Failure) -> Verdict {
///     if failure.error.downcast_ref::<BadConfig>().is_some() {
///         Verdict::Shutdown // a restart cannot fix the configuration
///     } else if failure.attempt >= 10 {
///         Verdict::Stop
///     } else {
///         Verdict::Restart
///     }
/// }
/// # let _ = handler;
/// assert_eq!(Verdict::StopParents.to_string(), "stop parents");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Build a fresh instance and start it (subject to the restart policy).
    Restart,
    /// Stop this component (and, under a supervisor, its dependents).
    Stop,
    /// Stop this component and what it depends on, transitively, and so
    /// everything depending on any of those (under a supervisor).
    StopParents,
    /// Stop everything (under a supervisor) and return the error.
    Shutdown,
    /// Stop everything and wait for a terminate request (under a supervisor).
    SpinHalt,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Restart => "restart",
            Verdict::Stop => "stop",
            Verdict::StopParents => "stop parents",
            Verdict::Shutdown => "shutdown",
            Verdict::SpinHalt => "spin-halt",
        })
    }
}

/// A failed instance, as its error handler sees it; see [`Verdict`] for a
/// handler.
///
/// # Example
///
/// A handler that gives a component three attempts, then stops:
///
/// ```
/// use lifecycle::{run_component, ComponentManager, FatalError, Failure, RestartPolicy, RunOutcome, StopSource, Verdict};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// let factory = || {
///     Ok::<_, FatalError>(
///         ComponentManager::builder()
///             .add_worker(|_, _| async { Err(FatalError::msg("bad config")) })
///             .build(),
///     )
/// };
/// let handler = |failure: &Failure| {
///     assert_eq!(failure.error.to_string(), "bad config");
///     if failure.attempt < 3 { Verdict::Restart } else { Verdict::Stop }
/// };
/// let parent = StopSource::new();
/// let outcome = futures_executor::block_on(
///     run_component(factory, handler)
///         .policy(RestartPolicy::immediate())
///         .run(Arc::new(Threads), parent.token()),
/// );
/// assert!(matches!(outcome, RunOutcome::Failed { verdict: Verdict::Stop, attempt: 3, .. }), "{outcome:?}");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Failure {
    /// The instance's first fatal error.
    pub error: FatalError,
    /// Which instance failed: 1 for the first, 2 after one restart, ...
    pub attempt: u32,
}

/// Why [`run_component`] returned.
///
/// # Example: an exit code
///
/// ```
/// use lifecycle::{RunOutcome, Verdict};
///
/// fn exit_code(outcome: &RunOutcome) -> i32 {
///     match outcome {
///         _ if outcome.is_clean() => 0,
///         RunOutcome::Failed { verdict: Verdict::Shutdown, .. } => 1,
///         RunOutcome::RestartsExhausted { .. } => 3,
///         _ => 2,
///     }
/// }
/// assert_eq!(exit_code(&RunOutcome::Completed), 0);
/// assert_eq!(exit_code(&RunOutcome::Cancelled), 0);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RunOutcome {
    /// The instance finished without an error: no restart.
    Completed,
    /// The parent token stopped; the instance (if any) is done.
    Cancelled,
    /// The handler decided something other than [`Verdict::Restart`].
    Failed {
        /// The instance's first fatal error.
        error: FatalError,
        /// What the handler decided.
        verdict: Verdict,
        /// Which instance failed.
        attempt: u32,
    },
    /// The handler asked for a restart but the policy's budget is spent.
    RestartsExhausted {
        /// The last instance's first fatal error.
        error: FatalError,
        /// Which instance failed last.
        attempt: u32,
    },
    /// The factory could not build an instance (the handler is not asked: a
    /// restart would not help).
    FactoryFailed {
        /// The factory's error.
        error: FatalError,
        /// Which instance was being built.
        attempt: u32,
    },
    /// `start` failed, e.g. the factory handed back an instance that was
    /// started before.
    StartFailed {
        /// The start error.
        error: StartError,
        /// Which instance failed to start.
        attempt: u32,
    },
    /// An instance was told to stop and was not done within the stop
    /// timeout; it was aborted.
    StopTimedOut {
        /// Which instance overran.
        attempt: u32,
        /// The stop timeout it overran.
        timeout: Duration,
        /// Whether the instance was done after the abort (within another
        /// stop timeout); `false` means a task is stuck and was abandoned.
        aborted: bool,
        /// The fatal error that was being handled, if the stop followed one.
        error: Option<FatalError>,
    },
    /// The restart policy has a bad setting; nothing was started.
    InvalidPolicy(PolicyError),
}

impl RunOutcome {
    /// Whether the loop ended without a failure: [`Completed`] or
    /// [`Cancelled`].
    ///
    /// [`Completed`]: RunOutcome::Completed
    /// [`Cancelled`]: RunOutcome::Cancelled
    ///
    /// # Example
    ///
    /// A cancelled loop is clean; one whose restarts ran out is not:
    ///
    /// ```
    /// use lifecycle::{FatalError, RunOutcome};
    ///
    /// assert!(RunOutcome::Completed.is_clean() && RunOutcome::Cancelled.is_clean());
    /// let exhausted = RunOutcome::RestartsExhausted { error: FatalError::msg("flaky"), attempt: 4 };
    /// assert!(!exhausted.is_clean());
    /// ```
    pub fn is_clean(&self) -> bool {
        matches!(self, RunOutcome::Completed | RunOutcome::Cancelled)
    }

    /// The fatal error behind the outcome, if there is one.
    ///
    /// # Example
    ///
    /// A failure carries its error; a stop that overran carries one only if
    /// it was handling one:
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle::{FatalError, RunOutcome, Verdict};
    ///
    /// let error = FatalError::msg("port in use");
    /// let failed = RunOutcome::Failed { error: error.clone(), verdict: Verdict::Stop, attempt: 1 };
    /// assert!(failed.error().is_some_and(|e| e.same_as(&error)));
    ///
    /// // An instance the parent's stop could not end in time: no error behind it.
    /// let timeout = Duration::from_secs(5);
    /// let overran = RunOutcome::StopTimedOut { attempt: 1, timeout, aborted: true, error: None };
    /// assert!(overran.error().is_none());
    /// assert!(RunOutcome::Cancelled.error().is_none());
    /// ```
    pub fn error(&self) -> Option<&FatalError> {
        match self {
            RunOutcome::Failed { error, .. }
            | RunOutcome::RestartsExhausted { error, .. }
            | RunOutcome::FactoryFailed { error, .. } => Some(error),
            RunOutcome::StopTimedOut { error, .. } => error.as_ref(),
            _ => None,
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunOutcome::Completed => f.write_str("completed"),
            RunOutcome::Cancelled => f.write_str("cancelled by the parent"),
            RunOutcome::Failed {
                error,
                verdict,
                attempt,
            } => write!(f, "instance {attempt} failed ({verdict}): {error}"),
            RunOutcome::RestartsExhausted { error, attempt } => write!(
                f,
                "restart budget exhausted after instance {attempt} failed: {error}"
            ),
            RunOutcome::FactoryFailed { error, attempt } => {
                write!(f, "could not build instance {attempt}: {error}")
            }
            RunOutcome::StartFailed { error, attempt } => {
                write!(f, "instance {attempt} did not start: {error}")
            }
            RunOutcome::StopTimedOut {
                attempt,
                timeout,
                aborted,
                ..
            } => {
                let fate = if *aborted {
                    "aborted"
                } else {
                    "abandoned: a task did not yield after the abort"
                };
                write!(
                    f,
                    "instance {attempt} was not done within {timeout:?} of being stopped; {fate}"
                )
            }
            RunOutcome::InvalidPolicy(error) => error.fmt(f),
        }
    }
}

/// Runs the component that `factory` builds until it completes, the parent
/// token stops, or `handler` decides something other than a restart.
///
/// Returns a [`RestartLoop`] to configure (policy, stop timeout, hook) and
/// [`run`](RestartLoop::run). The handler runs only after the failed
/// instance is done, once per instance (later errors of the same instance go
/// to the hook, and so does every error an instance throws while a parent
/// stop shuts it down: a cancelled run has no handler to ask).
///
/// One round of the loop:
///
/// ```text
///  parent stopped? ──yes──▶ Cancelled
///        │ no
///  factory() ──Err──▶ FactoryFailed
///        │ Ok(instance)
///  start(instance, fresh child scope, fresh fatal slot) ──Err──▶ StartFailed
///        │
///  wait for: first fatal error (preferred) │ done │ parent stop
///        │                                   │        └─▶ stop, wait done ─▶ Cancelled
///        │                                   └─▶ Completed
///  stop instance, wait until done, then handler(error)
///        ├─ Restart ─▶ budget left? ─no─▶ RestartsExhausted
///        │               └─yes─▶ sleep backoff (or Cancelled) ─▶ next round
///        └─ Stop / StopParents / Shutdown / SpinHalt ─▶ Failed { verdict }
/// ```
///
/// Every wait for done is bounded by the stop timeout: an instance that
/// overruns it is aborted ([`Component::abort`]) and the loop ends with
/// [`RunOutcome::StopTimedOut`] naming the instance. The instance's scope is
/// stopped on every exit path.
///
/// # Example
///
/// ```
/// use lifecycle::{run_component, ComponentManager, FatalError, RestartPolicy, RunOutcome, StopSource, Verdict};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// # let runtime = Arc::new(Threads);
/// let mut built = 0;
/// let factory = move || {
///     built += 1;
///     let fail = built < 3; // the first two instances fail
///     Ok::<_, FatalError>(
///         ComponentManager::builder()
///             .add_worker(move |_ctx, ready| async move {
///                 ready.ready();
///                 if fail {
///                     Err(FatalError::msg("flaky"))
///                 } else {
///                     Ok(()) // the third completes cleanly
///                 }
///             })
///             .build(),
///     )
/// };
/// let stop = StopSource::new();
/// let outcome = run_component(factory, |_failure| Verdict::Restart)
///     .policy(RestartPolicy::immediate())
///     .run(runtime, stop.token())
///     .await;
/// assert!(matches!(outcome, RunOutcome::Completed));
/// # });
/// ```
pub fn run_component<F, C, H>(factory: F, handler: H) -> RestartLoop<F, H>
where
    F: FnMut() -> Result<C, FatalError>,
    C: Component,
    H: FnMut(&Failure) -> Verdict,
{
    RestartLoop {
        factory,
        handler,
        policy: RestartPolicy::default(),
        stop_timeout: Some(DEFAULT_STOP_TIMEOUT),
        hook: FatalHook::default(),
    }
}

/// How long an instance gets to be done after being told to stop, by
/// default: 5 s, as Erlang/OTP gives a worker.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A configured restart loop; see [`run_component`].
///
/// # Example
///
/// A component that fails at every start, under a budget of two restarts
/// in a minute:
///
/// ```
/// use std::time::Duration;
/// use lifecycle::{run_component, ComponentManager, FatalError, RestartPolicy, RunOutcome, StopSource, Verdict};
/// # use std::sync::Arc;
/// # mod support { include!("doc_threads.rs"); } use support::Threads;
/// let factory = || {
///     Ok::<_, FatalError>(
///         ComponentManager::builder()
///             .add_worker(|_, _| async { Err(FatalError::msg("port in use")) })
///             .build(),
///     )
/// };
/// let restarts = run_component(factory, |_| Verdict::Restart)
///     .policy(RestartPolicy::immediate().intensity(2, Duration::from_secs(60)))
///     .stop_timeout(Duration::from_secs(1));
///
/// let parent = StopSource::new();
/// let outcome = futures_executor::block_on(restarts.run(Arc::new(Threads), parent.token()));
/// assert!(matches!(outcome, RunOutcome::RestartsExhausted { .. }), "{outcome:?}");
/// assert_eq!(outcome.error().map(|e| e.to_string()).as_deref(), Some("port in use"));
/// ```
pub struct RestartLoop<F, H> {
    factory: F,
    handler: H,
    policy: RestartPolicy,
    stop_timeout: Option<Duration>,
    hook: FatalHook,
}

impl<F, H> fmt::Debug for RestartLoop<F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestartLoop")
            .field("policy", &self.policy)
            .field("stop_timeout", &self.stop_timeout)
            .finish_non_exhaustive()
    }
}

impl<F, C, H> RestartLoop<F, H>
where
    F: FnMut() -> Result<C, FatalError>,
    C: Component,
    H: FnMut(&Failure) -> Verdict,
{
    /// The restart policy (default: [`RestartPolicy::default`]).
    pub fn policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How long a stopped instance gets to be done before it is aborted
    /// (default: [`DEFAULT_STOP_TIMEOUT`]).
    ///
    /// # Example
    ///
    /// A worker that ignores its stop while a sibling's failure is handled is
    /// aborted once the timeout runs out, and the loop ends naming the instance:
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle::{run_component, ComponentManager, FatalError, RunOutcome, StopSource, Verdict};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::sync::Arc;
    /// # // Timers fire at once here: the stop timeout runs out without a wait.
    /// # struct Threads;
    /// # impl Runtime for Threads {
    /// #     fn spawn_detached(&self, task: BoxFuture) {
    /// #         std::thread::spawn(move || futures_executor::block_on(task));
    /// #     }
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// let factory = || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|_, _| async { Err(FatalError::msg("upstream gone")) })
    ///             .add_worker(|_, _| std::future::pending()) // never looks at its stop
    ///             .build(),
    ///     )
    /// };
    /// let parent = StopSource::new();
    /// let outcome = futures_executor::block_on(
    ///     run_component(factory, |_| Verdict::Restart)
    ///         .stop_timeout(Duration::from_secs(1))
    ///         .run(Arc::new(Threads), parent.token()),
    /// );
    /// assert!(matches!(outcome, RunOutcome::StopTimedOut { attempt: 1, .. }), "{outcome:?}");
    /// assert_eq!(outcome.error().map(|e| e.to_string()).as_deref(), Some("upstream gone"));
    /// ```
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = Some(timeout);
        self
    }

    /// Waits for stopped instances however long they take.
    ///
    /// # Example
    ///
    /// A worker that takes a moment to flush after its sibling failed is
    /// waited for, even on a runtime whose timers fire at once (where any
    /// stop timeout would run out first):
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle::{run_component, ComponentManager, FatalError, RunOutcome, StopSource, Verdict};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::sync::Arc;
    /// # // Timers fire at once here: a stop timeout would run out without a wait.
    /// # struct Immediate;
    /// # impl Runtime for Immediate {
    /// #     fn spawn_detached(&self, task: BoxFuture) {
    /// #         std::thread::spawn(move || futures_executor::block_on(task));
    /// #     }
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::ready(())) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// let factory = || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|_, _| async { Err(FatalError::msg("upstream gone")) })
    ///             .add_worker(|ctx, _| async move {
    ///                 ctx.stopped().await;
    ///                 std::thread::sleep(Duration::from_millis(10)); // flushes its buffer
    ///                 Ok(())
    ///             })
    ///             .build(),
    ///     )
    /// };
    /// let parent = StopSource::new();
    /// let outcome = futures_executor::block_on(
    ///     run_component(factory, |_| Verdict::Stop)
    ///         .no_stop_timeout()
    ///         .run(Arc::new(Immediate), parent.token()),
    /// );
    /// // Not `StopTimedOut`: the handler was asked once the flush was done.
    /// assert!(matches!(outcome, RunOutcome::Failed { verdict: Verdict::Stop, attempt: 1, .. }), "{outcome:?}");
    /// ```
    pub fn no_stop_timeout(mut self) -> Self {
        self.stop_timeout = None;
        self
    }

    /// Where each instance's errors after its first go (default:
    /// [`FatalHook::default`]).
    ///
    /// # Example
    ///
    /// The handler gets an instance's first error; the hook gets the error the
    /// instance returns after it:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lifecycle::{run_component, ComponentManager, FatalError, FatalHook, RunOutcome, StopSource, Verdict};
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// let late = Arc::new(Mutex::new(Vec::new()));
    /// let hook = FatalHook::new({
    ///     let late = late.clone();
    ///     move |err: &FatalError| late.lock().unwrap().push(err.to_string())
    /// });
    /// let factory = || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|ctx, _| async move {
    ///                 ctx.throw(FatalError::msg("connection reset"));
    ///                 Err(FatalError::msg("write failed"))
    ///             })
    ///             .build(),
    ///     )
    /// };
    /// let parent = StopSource::new();
    /// let outcome = futures_executor::block_on(
    ///     run_component(factory, |_| Verdict::Stop)
    ///         .hook(hook)
    ///         .run(Arc::new(Threads), parent.token()),
    /// );
    /// assert_eq!(outcome.error().map(|e| e.to_string()).as_deref(), Some("connection reset"));
    /// assert_eq!(*late.lock().unwrap(), ["write failed"]);
    /// ```
    pub fn hook(mut self, hook: FatalHook) -> Self {
        self.hook = hook;
        self
    }

    /// Runs the loop on `runtime` until it ends; stopping `parent` stops the
    /// current instance and ends the loop with [`RunOutcome::Cancelled`].
    ///
    /// # Example
    ///
    /// A server runs until the process's shutdown stops its parent; the
    /// loop then stops the instance, waits until it is done, and returns:
    ///
    /// ```
    /// use lifecycle::{run_component, ComponentManager, FatalError, Latch, RunOutcome};
    /// use lifecycle::{StopSource, Verdict};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// let serving = Latch::new();
    /// let server = ComponentManager::builder().add_worker({
    ///     let serving = serving.clone();
    ///     move |ctx, ready| {
    ///         serving.set(); // an instance runs
    ///         async move {
    ///             ready.ready();
    ///             ctx.stopped().await;
    ///             Ok(())
    ///         }
    ///     }
    /// });
    /// let factory = move || Ok::<_, FatalError>(server.build()); // a fresh instance each time
    ///
    /// let shutdown = StopSource::new();
    /// let run = run_component(factory, |_| Verdict::Restart)
    ///     .run(Arc::new(Threads), shutdown.token());
    /// let sigterm = async {
    ///     serving.wait().await;
    ///     shutdown.stop();
    /// };
    /// let (outcome, ()) = futures_executor::block_on(futures_util::future::join(run, sigterm));
    /// assert!(matches!(outcome, RunOutcome::Cancelled), "{outcome:?}");
    /// assert!(outcome.is_clean());
    /// ```
    pub async fn run(self, runtime: SharedRuntime, parent: StopToken) -> RunOutcome {
        let outcome = self.run_instances(runtime, parent).await;
        trace::restart_ended(&outcome);
        outcome
    }

    async fn run_instances(mut self, runtime: SharedRuntime, parent: StopToken) -> RunOutcome {
        if let Err(error) = self.policy.validate() {
            return RunOutcome::InvalidPolicy(error);
        }
        let seed = runtime.now().since_origin().as_nanos() as u64;
        let mut budget = RestartBudget::new(self.policy.clone(), seed);
        let mut attempt: u32 = 0;
        // One waiter on the parent for the whole loop: it registers once
        // and stays registered across instances, rather than registering
        // and unregistering with every instance.
        let mut parent_stopped = pin!(parent.stopped());
        loop {
            if parent.is_stopped() {
                return RunOutcome::Cancelled;
            }
            attempt = attempt.saturating_add(1);
            trace::restart_starting(attempt);
            let instance = match (self.factory)() {
                Ok(instance) => instance,
                Err(error) => return RunOutcome::FactoryFailed { error, attempt },
            };
            let scope = parent.child();
            let slot = FatalSlot::with_hook(self.hook.clone());
            let _closed_when_let_go = ClosedOnDrop(&slot);
            let started = budget.now(&runtime);
            let start = instance.start(Scope::new(runtime.clone(), scope.token(), slot.clone()));
            if let Err(error) = start {
                scope.stop();
                return RunOutcome::StartFailed { error, attempt };
            }
            let done = instance.done();

            let error = match first_of(&slot, &done, &parent, parent_stopped.as_mut()).await {
                Ended::Done => {
                    scope.stop();
                    return RunOutcome::Completed;
                }
                Ended::ParentStopped => {
                    // The parent's stop reaches the instance through `scope`.
                    // What the instance throws while it shuts down is its
                    // first error (nothing takes the slot), and a cancelled
                    // run has no handler to give it to: the slot's closing
                    // sends it to the hook, as every error thrown during a
                    // stop goes.
                    let overrun = self.stop(&runtime, &instance, &done, attempt, None).await;
                    return overrun.unwrap_or(RunOutcome::Cancelled);
                }
                Ended::Error(error) => error,
            };

            scope.stop_with(StopCause::Fatal(error.clone()));
            if let Some(overrun) = self
                .stop(&runtime, &instance, &done, attempt, Some(&error))
                .await
            {
                return overrun;
            }
            drop(instance);

            let failure = Failure { error, attempt };
            let verdict = (self.handler)(&failure);
            trace::restart_failed(attempt, &failure.error, verdict);
            match verdict {
                Verdict::Restart => {}
                verdict => {
                    return RunOutcome::Failed {
                        error: failure.error,
                        verdict,
                        attempt,
                    }
                }
            }
            let Some(delay) = budget.restart(started, budget.now(&runtime)) else {
                return RunOutcome::RestartsExhausted {
                    error: failure.error,
                    attempt,
                };
            };
            trace::restart_backoff(attempt + 1, delay);
            if !delay.is_zero() && !sleep_unless_stopped(&runtime, delay, &parent).await {
                return RunOutcome::Cancelled;
            }
        }
    }

    /// Waits until a stopped instance is done, aborting it at the stop
    /// timeout. Returns the outcome that ends the loop if it overran.
    async fn stop(
        &self,
        runtime: &SharedRuntime,
        instance: &C,
        done: &Signal,
        attempt: u32,
        error: Option<&FatalError>,
    ) -> Option<RunOutcome> {
        if done.is_set() {
            return None; // the common case: no timer needed
        }
        let Some(timeout) = self.stop_timeout else {
            done.wait().await;
            return None;
        };
        if runtime.timeout(timeout, done.wait()).await.is_ok() {
            return None;
        }
        instance.abort();
        let aborted = runtime.timeout(timeout, done.wait()).await.is_ok();
        Some(RunOutcome::StopTimedOut {
            attempt,
            timeout,
            aborted,
            error: error.cloned(),
        })
    }
}

/// Closes an instance's slot when the loop lets go of the instance, on
/// every way out of its turn: nothing reads the slot after that, so what
/// the instance still reports (while it shuts down after a parent stop, a
/// callback it left behind after a clean exit, or as one that overran and
/// outlives the loop) goes to the hook, as every later error does, and so
/// does anything still in it.
struct ClosedOnDrop<'a>(&'a FatalSlot);

impl Drop for ClosedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_to_hook();
    }
}

/// What ended an instance's run.
enum Ended {
    Error(FatalError),
    Done,
    ParentStopped,
}

/// Waits for the instance's first fatal error, its done, or the parent's
/// stop; an error wins over the others, and a stopped parent over done.
/// `stopped` is the loop's one waiter on `parent`, kept across instances.
async fn first_of(
    slot: &FatalSlot,
    done: &Signal,
    parent: &StopToken,
    mut stopped: Pin<&mut Stopped<'_>>,
) -> Ended {
    let mut error_or_done = pin!(wait_error_or_done(slot, done));
    poll_fn(|cx| {
        if let Poll::Ready(error) = error_or_done.as_mut().poll(cx) {
            return Poll::Ready(match error {
                Some(error) => Ended::Error(error),
                // The parent's stop reaches the instance through its scope,
                // so an instance done because of it is a cancellation.
                None if parent.is_stopped() => Ended::ParentStopped,
                None => Ended::Done,
            });
        }
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(slot.take().map_or(Ended::ParentStopped, Ended::Error));
        }
        Poll::Pending
    })
    .await
}

/// Sleeps for `delay` unless `parent` stops first. Returns whether the sleep
/// ran to its end.
async fn sleep_unless_stopped(
    runtime: &SharedRuntime,
    delay: Duration,
    parent: &StopToken,
) -> bool {
    runtime.timeout(delay, parent.stopped()).await.is_err()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::Threads;
    use crate::{ComponentManager, StopSource};
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use futures_executor::block_on;

    fn failing_then_clean(fail_first: u32) -> impl FnMut() -> Result<ComponentManager, FatalError> {
        let mut built = 0;
        move || {
            built += 1;
            let fail = built <= fail_first;
            Ok(ComponentManager::builder()
                .add_worker(move |_ctx, ready| async move {
                    ready.ready();
                    if fail {
                        Err(FatalError::msg("flaky"))
                    } else {
                        Ok(())
                    }
                })
                .build())
        }
    }

    #[test]
    fn restarts_until_a_clean_exit() {
        let mut attempts = Vec::new();
        let outcome = block_on(
            run_component(failing_then_clean(2), |failure| {
                attempts.push(failure.attempt);
                Verdict::Restart
            })
            .policy(RestartPolicy::immediate())
            .run(Arc::new(Threads::new()), StopSource::new().token()),
        );
        assert!(matches!(outcome, RunOutcome::Completed));
        assert_eq!(attempts, [1, 2]);
    }

    #[test]
    fn a_verdict_other_than_restart_ends_the_loop_with_the_error() {
        let outcome = block_on(
            run_component(failing_then_clean(5), |_| Verdict::Shutdown)
                .run(Arc::new(Threads::new()), StopSource::new().token()),
        );
        match outcome {
            RunOutcome::Failed {
                error,
                verdict,
                attempt,
            } => {
                assert_eq!(alloc::string::ToString::to_string(&error), "flaky");
                assert_eq!((verdict, attempt), (Verdict::Shutdown, 1));
            }
            other => panic!("unexpected outcome: {other}"),
        }
    }

    #[test]
    fn a_stopped_parent_is_cancelled_without_building() {
        let stop = StopSource::new();
        stop.stop();
        let outcome = block_on(
            run_component(
                || -> Result<ComponentManager, FatalError> { panic!("the factory must not run") },
                |_| Verdict::Restart,
            )
            .run(Arc::new(Threads::new()), stop.token()),
        );
        assert!(matches!(outcome, RunOutcome::Cancelled));
    }

    #[test]
    fn an_invalid_policy_starts_nothing() {
        let outcome = block_on(
            run_component(failing_then_clean(0), |_| Verdict::Restart)
                .policy(RestartPolicy::default().factor(0.0))
                .run(Arc::new(Threads::new()), StopSource::new().token()),
        );
        assert!(matches!(
            outcome,
            RunOutcome::InvalidPolicy(PolicyError::Factor(_))
        ));
    }
}
