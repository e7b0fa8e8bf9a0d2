//! The restart loop on every executor: the acceptance scenarios of
//! `run_component` (handler calls, outcomes, the restart sequence), start
//! errors, the restart policy (backoff, intensity, validation) and the stop
//! timeout.

use std::future::{pending, Future};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle::{
    run_component, Component, ComponentManager, Failure, FatalError, FatalSlot, Instant, Latch,
    PolicyError, RestartPolicy, RunOutcome, RuntimeExt, Scope, SharedRuntime, StartError,
    StopSource, Verdict, WorkerContext, WorkerResult,
};
use lifecycle_conformance::{
    conformance, eventually, serve_until_stopped, yield_now, Counter, DropProbe, Events,
    ManualComponent,
};

conformance!(
    startup_error_reaches_the_handler_once_and_is_returned_on_stop,
    one_handler_call_per_instance_despite_a_second_throw,
    two_workers_throwing_at_once_make_one_handler_call,
    clean_exit_completes_without_the_handler,
    parent_stop_cancels_and_the_instance_is_done,
    parent_stop_cancels_an_instance_that_stops_at_once,
    error_thrown_while_cancelled_goes_to_the_hook,
    factory_error_is_returned_without_the_handler,
    restart_then_stop_sequence,
    parent_stopped_before_the_loop_cancels_without_the_factory,
    handler_runs_after_the_failed_instance_is_done,
    every_other_verdict_ends_the_loop_with_it,
    start_errors_are_returned_at_once,
    backoff_delays_the_next_start,
    intensity_limits_the_restarts,
    immediate_policy_restarts_many_times,
    invalid_policy_is_reported_by_field,
    stop_timeout_aborts_an_instance_ignoring_the_stop,
    stop_timeout_on_a_parent_stop,
    stop_timeout_with_a_component_that_cannot_abort,
    error_after_an_abandoned_stop_goes_to_the_hook,
    error_after_a_clean_exit_goes_to_the_hook,
    parent_stop_during_the_backoff_cancels,
    instance_scope_is_released_on_every_exit,
    error_wins_over_a_simultaneous_parent_stop,
);

/// Long enough never to elapse during a test.
const FOREVER: Duration = Duration::from_secs(3600);

/// The latest instance a factory built, for the scenario to look at.
#[derive(Clone, Default)]
struct Latest(Arc<Mutex<Option<ComponentManager>>>);

impl Latest {
    fn keep(&self, manager: &ComponentManager) -> ComponentManager {
        *self.0.lock().unwrap() = Some(manager.clone());
        manager.clone()
    }

    fn get(&self) -> ComponentManager {
        self.0.lock().unwrap().clone().expect("no instance built")
    }

    /// A factory that builds each instance with `make` and keeps it.
    fn factory(
        &self,
        mut make: impl FnMut() -> ComponentManager + Send + 'static,
    ) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
        let latest = self.clone();
        move || Ok(latest.keep(&make()))
    }

    /// Waits until an instance is built and ready, and returns it.
    async fn ready(&self, rt: &SharedRuntime) -> ComponentManager {
        eventually(rt, "the instance was built", || {
            self.0.lock().unwrap().is_some()
        })
        .await;
        let instance = self.get();
        instance.ready().wait().await;
        instance
    }
}

/// A handler that counts its calls in `handled` and always restarts.
fn restarts_counted(handled: &Counter) -> impl FnMut(&Failure) -> Verdict + Clone + Send + 'static {
    let handled = handled.clone();
    move |_: &Failure| {
        handled.next();
        Verdict::Restart
    }
}

/// A handler that records each failure's error in `handled` and answers
/// `verdict`.
fn recording(
    handled: &Events,
    verdict: Verdict,
) -> impl FnMut(&Failure) -> Verdict + Clone + Send + 'static {
    let handled = handled.clone();
    move |failure: &Failure| {
        handled.push(failure.error.to_string());
        verdict
    }
}

/// A handler that restarts the first `restarts` instances and stops the next.
fn restart_until(restarts: u32) -> impl FnMut(&Failure) -> Verdict + Send + 'static {
    move |failure: &Failure| {
        if failure.attempt <= restarts {
            Verdict::Restart
        } else {
            Verdict::Stop
        }
    }
}

/// A factory that counts its calls in `built` and builds instance `n`
/// (from 1) with `make(n)`.
fn counted(
    built: &Counter,
    mut make: impl FnMut(u32) -> ComponentManager + Send + 'static,
) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    let built = built.clone();
    move || Ok(make(built.next()))
}

/// A factory that hands back the same `instance` on every call.
fn same_instance<C: Clone + Send + 'static>(
    instance: &C,
) -> impl FnMut() -> Result<C, FatalError> + Send + 'static {
    let instance = instance.clone();
    move || Ok(instance.clone())
}

/// A one-worker manager whose worker calls ready and then runs `body`.
fn one_worker<B, Fut>(body: B) -> ComponentManager
where
    B: Fn(WorkerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = WorkerResult> + Send + 'static,
{
    ComponentManager::builder()
        .add_worker(move |ctx, ready| {
            let body = body(ctx);
            async move {
                ready.ready();
                body.await
            }
        })
        .build()
}

/// A [`one_worker`] manager whose worker sets `returned` when it returns,
/// or when its future is dropped unfinished (an abort).
fn probed_worker<B, Fut>(returned: &Latch, body: B) -> ComponentManager
where
    B: Fn(WorkerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = WorkerResult> + Send + 'static,
{
    let returned = returned.clone();
    one_worker(move |ctx| {
        // Made with the future, not when it is first polled: a future
        // dropped before it ever ran sets `returned` too.
        let probe = DropProbe::on(&returned);
        let body = body(ctx);
        async move {
            let _probe = probe;
            body.await
        }
    })
}

/// A one-worker manager whose worker calls ready and then fails.
fn failing_manager(message: String) -> ComponentManager {
    one_worker(move |_ctx| {
        let message = message.clone();
        async move { Err(FatalError::msg(message)) }
    })
}

fn error_text(outcome: &RunOutcome) -> Option<String> {
    outcome.error().map(ToString::to_string)
}

async fn startup_error_reaches_the_handler_once_and_is_returned_on_stop(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Events::new();
    let factory = counted(&built, |_| {
        // Fails during startup, before calling ready.
        ComponentManager::builder()
            .add_worker(|_ctx, _ready| async { Err(FatalError::msg("startup failed")) })
            .build()
    });
    let handler = {
        let handled = handled.clone();
        move |failure: &Failure| {
            handled.push(format!("{} {}", failure.attempt, failure.error));
            Verdict::Stop
        }
    };
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(
            outcome,
            RunOutcome::Failed {
                verdict: Verdict::Stop,
                attempt: 1,
                ..
            }
        ),
        "expected Failed with Stop, got {outcome:?}"
    );
    assert_eq!(error_text(&outcome).as_deref(), Some("startup failed"));
    assert!(!outcome.is_clean());
    assert_eq!(handled.snapshot(), ["1 startup failed"]);
    assert_eq!(built.get(), 1);
    assert!(!stop.is_stopped(), "the loop stopped its parent's token");
}

async fn one_handler_call_per_instance_despite_a_second_throw(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Events::new();
    let hooked = Events::new();
    let factory = counted(&built, |n| {
        one_worker(move |ctx| async move {
            ctx.throw(FatalError::msg(format!("first {n}")));
            ctx.stopped().await;
            // Throws again while shutting down.
            Err(FatalError::msg(format!("second {n}")))
        })
    });
    let handler = {
        let (handled, mut verdict) = (handled.clone(), restart_until(1));
        move |failure: &Failure| {
            handled.push(failure.error.to_string());
            verdict(failure)
        }
    };
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .hook(hooked.hook())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(
            outcome,
            RunOutcome::Failed {
                verdict: Verdict::Stop,
                attempt: 2,
                ..
            }
        ),
        "got {outcome:?}"
    );
    assert_eq!(error_text(&outcome).as_deref(), Some("first 2"));
    assert_eq!(
        handled.snapshot(),
        ["first 1", "first 2"],
        "one handler call per instance, with its first error"
    );
    assert_eq!(
        hooked.snapshot(),
        ["second 1", "second 2"],
        "the errors thrown while shutting down go to the hook"
    );
    assert_eq!(built.get(), 2);
}

async fn two_workers_throwing_at_once_make_one_handler_call(rt: SharedRuntime) {
    let handled = Events::new();
    let hooked = Events::new();
    let latest = Latest::default();
    let factory = latest.factory(|| {
        let gate = Latch::new();
        let builder = (0..2).fold(ComponentManager::builder(), |builder, index| {
            let gate = gate.clone();
            builder.add_worker(move |_ctx, ready| {
                let gate = gate.clone();
                async move {
                    ready.ready();
                    gate.wait().await;
                    Err(FatalError::msg(format!("boom {index}")))
                }
            })
        });
        // The third worker opens the gate once both are in.
        builder
            .add_worker(move |_ctx, ready| {
                let gate = gate.clone();
                async move {
                    ready.ready();
                    gate.set();
                    Ok(())
                }
            })
            .build()
    });
    let handler = recording(&handled, Verdict::Stop);
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .hook(hooked.hook())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::Failed { attempt: 1, .. }),
        "got {outcome:?}"
    );
    let handled = handled.snapshot();
    assert_eq!(handled.len(), 1, "handler calls: {handled:?}");
    let mut all = hooked.snapshot();
    assert_eq!(all.len(), 1, "the other error was not hooked: {all:?}");
    all.extend(handled);
    all.sort();
    assert_eq!(all, ["boom 0", "boom 1"]);
    assert!(latest.get().done().is_set());
}

async fn clean_exit_completes_without_the_handler(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Counter::default();
    let latest = Latest::default();
    let factory = counted(&built, {
        let latest = latest.clone();
        move |_| {
            latest.keep(&one_worker(|_ctx| async {
                yield_now().await;
                Ok(())
            }))
        }
    });
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(matches!(outcome, RunOutcome::Completed), "got {outcome:?}");
    assert!(outcome.is_clean() && outcome.error().is_none());
    assert_eq!(handled.get(), 0, "a clean exit called the handler");
    assert_eq!(built.get(), 1, "a clean exit was restarted");
    assert!(latest.get().done().is_set());
    assert!(!stop.is_stopped());
}

async fn parent_stop_cancels_and_the_instance_is_done(rt: SharedRuntime) {
    let handled = Counter::default();
    let latest = Latest::default();
    let returned = Latch::new();
    let factory = latest.factory({
        let returned = returned.clone();
        move || {
            probed_worker(&returned, |ctx| async move {
                ctx.stopped().await;
                Ok(())
            })
        }
    });
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(factory, handler)
            .policy(RestartPolicy::immediate())
            .run(rt.clone(), stop.token()),
    );
    let instance = latest.ready(&rt).await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(matches!(outcome, RunOutcome::Cancelled), "got {outcome:?}");
    assert!(outcome.is_clean());
    assert!(
        instance.done().is_set(),
        "Cancelled returned before the instance was done"
    );
    assert!(returned.is_set());
    assert_eq!(handled.get(), 0);
}

async fn parent_stop_cancels_an_instance_that_stops_at_once(rt: SharedRuntime) {
    // The instance is done as soon as its scope stops, before the loop gets
    // to look: the parent's stop is still what ended the run.
    let component = ManualComponent::done_on_stop();
    let handled = Counter::default();
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(component.factory(), handler)
            .policy(RestartPolicy::immediate())
            .run(rt.clone(), stop.token()),
    );
    component.started().await;
    component.ready_latch().set();
    stop.stop();
    assert!(component.done().is_set());
    let outcome = run.await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Cancelled),
        "a parent stop ended the run as {outcome:?}"
    );
    assert_eq!(component.start_calls(), 1);
    assert_eq!(handled.get(), 0);
}

async fn error_thrown_while_cancelled_goes_to_the_hook(rt: SharedRuntime) {
    // The instance's errors come only after the parent's stop, as it shuts
    // down: the run is cancelled, and neither error is lost. Mostly the
    // loop sees the stop first, and both go to the hook; on a parallel
    // executor the first error can be there by the time it looks, and an
    // error wins over a stop (`error_wins_over_a_simultaneous_parent_stop`):
    // the handler has that one.
    let handled = Events::new();
    let hooked = Events::new();
    let latest = Latest::default();
    let factory = latest.factory(|| {
        ["flush failed", "close failed"]
            .into_iter()
            .fold(ComponentManager::builder(), |builder, message| {
                builder.add_worker(move |ctx, ready| async move {
                    ready.ready();
                    ctx.stopped().await;
                    Err(FatalError::msg(message))
                })
            })
            .build()
    });
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(factory, recording(&handled, Verdict::Restart))
            .policy(RestartPolicy::immediate())
            .hook(hooked.hook())
            .run(rt.clone(), stop.token()),
    );
    // Both workers wait for the stop before they throw.
    latest.ready(&rt).await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(matches!(outcome, RunOutcome::Cancelled), "got {outcome:?}");
    let (handled, hooked) = (handled.snapshot(), hooked.snapshot());
    assert!(handled.len() <= 1, "one handler call at most: {handled:?}");
    let mut reached = [handled, hooked].concat();
    reached.sort();
    assert_eq!(
        reached,
        ["close failed", "flush failed"],
        "every error thrown while shutting down reaches the handler or the hook"
    );
}

async fn factory_error_is_returned_without_the_handler(rt: SharedRuntime) {
    // On the first instance.
    let handled = Counter::default();
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let outcome = run_component(
        || Err::<ComponentManager, _>(FatalError::msg("no configuration")),
        handler,
    )
    .run(rt.clone(), stop.token())
    .await;
    assert!(
        matches!(outcome, RunOutcome::FactoryFailed { attempt: 1, .. }),
        "got {outcome:?}"
    );
    assert_eq!(error_text(&outcome).as_deref(), Some("no configuration"));
    assert_eq!(handled.get(), 0, "a factory error reached the handler");

    // On a restart: the handler saw the instance's failure, not the
    // factory's.
    let built = Counter::default();
    let handled = Events::new();
    let factory = {
        let built = built.clone();
        move || match built.next() {
            1 => Ok(failing_manager("instance failed".into())),
            _ => Err(FatalError::msg("cannot rebuild")),
        }
    };
    let handler = recording(&handled, Verdict::Restart);
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::FactoryFailed { attempt: 2, .. }),
        "got {outcome:?}"
    );
    assert_eq!(error_text(&outcome).as_deref(), Some("cannot rebuild"));
    assert_eq!(handled.snapshot(), ["instance failed"]);
    assert_eq!(built.get(), 2);
}

async fn restart_then_stop_sequence(rt: SharedRuntime) {
    let events = Events::new();
    let built = Counter::default();
    let instances: Arc<Mutex<Vec<ComponentManager>>> = Arc::default();
    let factory = counted(&built, {
        let (events, instances) = (events.clone(), instances.clone());
        move |n| {
            let events = events.clone();
            let manager = ComponentManager::builder()
                .add_worker(move |ctx, ready| {
                    let events = events.clone();
                    async move {
                        events.push(format!("start {n}"));
                        ready.ready();
                        yield_now().await;
                        ctx.throw(FatalError::msg(format!("failure {n}")));
                        ctx.stopped().await;
                        events.push(format!("stop {n}"));
                        Ok(())
                    }
                })
                .build();
            instances.lock().unwrap().push(manager.clone());
            manager
        }
    });
    let handler = {
        let events = events.clone();
        move |failure: &Failure| {
            if failure.attempt == 1 {
                events.push("restart");
                Verdict::Restart
            } else {
                Verdict::Stop
            }
        }
    };
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    if let RunOutcome::Failed {
        verdict: Verdict::Stop,
        attempt: 2,
        error,
    } = &outcome
    {
        assert_eq!(error.to_string(), "failure 2");
        events.push("error");
    } else {
        panic!("expected instance 2 to fail with Stop, got {outcome:?}");
    }
    assert_eq!(
        events.snapshot(),
        ["start 1", "stop 1", "restart", "start 2", "stop 2", "error"]
    );
    let instances = instances.lock().unwrap();
    assert_eq!(instances.len(), 2);
    assert!(
        !instances[0].done().same_as(&instances[1].done()),
        "a restart reused the failed instance"
    );
    assert!(instances.iter().all(|i| i.done().is_set()));
}

async fn parent_stopped_before_the_loop_cancels_without_the_factory(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Counter::default();
    let factory = counted(&built, |_| failing_manager("unexpected".into()));
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    stop.stop();
    let outcome = run_component(factory, handler)
        .run(rt.clone(), stop.token())
        .await;
    assert!(matches!(outcome, RunOutcome::Cancelled), "got {outcome:?}");
    assert_eq!(
        built.get(),
        0,
        "the factory was called for a stopped parent"
    );
    assert_eq!(handled.get(), 0);
}

async fn handler_runs_after_the_failed_instance_is_done(rt: SharedRuntime) {
    let latest = Latest::default();
    let returned: Arc<Mutex<Vec<Latch>>> = Arc::default();
    let seen = Events::new();
    let factory = latest.factory({
        let returned = returned.clone();
        move || {
            let probes = [Latch::new(), Latch::new()];
            returned.lock().unwrap().extend(probes.iter().cloned());
            let [thrower, slow] = probes;
            ComponentManager::builder()
                .add_worker(move |ctx, ready| {
                    let probe = DropProbe::on(&thrower);
                    async move {
                        let _probe = probe;
                        ready.ready();
                        ctx.throw(FatalError::msg("failed"));
                        ctx.stopped().await;
                        Ok(())
                    }
                })
                .add_worker(move |ctx, ready| {
                    let probe = DropProbe::on(&slow);
                    async move {
                        let _probe = probe;
                        ready.ready();
                        ctx.stopped().await;
                        // Takes its time to shut down.
                        ctx.runtime().sleep(Duration::from_millis(10)).await;
                        yield_now().await;
                        Ok(())
                    }
                })
                .build()
        }
    });
    let handler = {
        let (latest, returned, seen) = (latest.clone(), returned.clone(), seen.clone());
        let mut verdict = restart_until(2);
        move |failure: &Failure| {
            let instance = latest.get();
            let all_returned = returned.lock().unwrap().iter().all(Latch::is_set);
            seen.push(format!(
                "attempt {} done {} returned {all_returned}",
                failure.attempt,
                instance.done().is_set()
            ));
            verdict(failure)
        }
    };
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::Failed { attempt: 3, .. }),
        "got {outcome:?}"
    );
    assert_eq!(
        seen.snapshot(),
        [
            "attempt 1 done true returned true",
            "attempt 2 done true returned true",
            "attempt 3 done true returned true",
        ],
        "the handler ran before the failed instance was done"
    );
}

async fn every_other_verdict_ends_the_loop_with_it(rt: SharedRuntime) {
    for verdict in [
        Verdict::Stop,
        Verdict::StopParents,
        Verdict::Shutdown,
        Verdict::SpinHalt,
    ] {
        let built = Counter::default();
        let factory = counted(&built, move |_| {
            failing_manager(format!("failed for {verdict}"))
        });
        let stop = StopSource::new();
        let outcome = run_component(factory, move |_: &Failure| verdict)
            .policy(RestartPolicy::immediate())
            .run(rt.clone(), stop.token())
            .await;
        match &outcome {
            RunOutcome::Failed {
                verdict: returned,
                attempt: 1,
                error,
            } => {
                assert_eq!(*returned, verdict);
                assert_eq!(error.to_string(), format!("failed for {verdict}"));
            }
            other => panic!("{verdict}: expected Failed, got {other:?}"),
        }
        assert_eq!(built.get(), 1, "{verdict} restarted the component");
        assert!(!stop.is_stopped());
    }
}

async fn start_errors_are_returned_at_once(rt: SharedRuntime) {
    // The factory hands back an instance that was started elsewhere (and is
    // still running: were the loop to wait for it, it would wait forever).
    let running = ComponentManager::builder()
        .add_worker(serve_until_stopped)
        .build();
    let elsewhere = StopSource::new();
    running
        .start(Scope::new(rt.clone(), elsewhere.token(), FatalSlot::new()))
        .unwrap();
    let handled = Counter::default();
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let outcome = run_component(same_instance(&running), handler.clone())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(
            outcome,
            RunOutcome::StartFailed {
                error: StartError::AlreadyStarted,
                attempt: 1
            }
        ),
        "got {outcome:?}"
    );
    assert_eq!(handled.get(), 0);
    assert!(
        !running.shutdown_signal().is_set(),
        "the loop stopped an instance it did not start"
    );
    elsewhere.stop();
    running.done().wait().await;

    // The factory hands back the instance that just failed.
    let reused = failing_manager("failed once".into());
    let outcome = run_component(same_instance(&reused), handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(
            outcome,
            RunOutcome::StartFailed {
                error: StartError::AlreadyStarted,
                attempt: 2
            }
        ),
        "got {outcome:?}"
    );
    assert_eq!(handled.get(), 1);

    // A component whose start fails.
    let refusing = ManualComponent::failing_to_start(FatalError::msg("port in use"));
    let outcome = run_component(same_instance(&refusing), |_: &Failure| Verdict::Restart)
        .run(rt.clone(), stop.token())
        .await;
    match &outcome {
        RunOutcome::StartFailed {
            error: StartError::Failed(error),
            attempt: 1,
        } => assert_eq!(error.to_string(), "port in use"),
        other => panic!("expected StartFailed with the start's error, got {other:?}"),
    }
    assert_eq!(refusing.start_calls(), 1);
}

/// When each instance of a [`Stamps::factory`] started and failed, on the
/// runtime's clock.
#[derive(Clone, Default)]
struct Stamps(Arc<Mutex<Vec<Stamp>>>);

/// When instance `n` did something ("start", "fail").
type Stamp = (u32, &'static str, Instant);

impl Stamps {
    /// Instances that note their start, are ready, run for `runs_for` of
    /// their number (a zero: one yield), note their failure and fail.
    fn factory(
        &self,
        runs_for: impl Fn(u32) -> Duration + Clone + Send + Sync + 'static,
    ) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
        let stamps = self.clone();
        counted(&Counter::default(), move |n| {
            let (stamps, runs_for) = (stamps.clone(), runs_for.clone());
            ComponentManager::builder()
                .add_worker(move |ctx, ready| {
                    let (stamps, run) = (stamps.clone(), runs_for(n));
                    async move {
                        stamps.note(n, "start", ctx.runtime().now());
                        ready.ready();
                        if run.is_zero() {
                            yield_now().await;
                        } else {
                            ctx.runtime().sleep(run).await;
                        }
                        stamps.note(n, "fail", ctx.runtime().now());
                        Err(FatalError::msg(format!("failure {n}")))
                    }
                })
                .build()
        })
    }

    fn note(&self, n: u32, what: &'static str, at: Instant) {
        self.0.lock().unwrap().push((n, what, at));
    }

    /// From instance `failed`'s failure to the next instance's start.
    fn gap_after(&self, failed: u32) -> Duration {
        let stamps = self.0.lock().unwrap();
        let at = |n: u32, what: &str| {
            stamps
                .iter()
                .find(|(i, w, _)| *i == n && *w == what)
                .map(|(_, _, t)| *t)
                .unwrap_or_else(|| panic!("no {what} of instance {n}: {stamps:?}"))
        };
        at(failed + 1, "start").saturating_duration_since(at(failed, "fail"))
    }
}

async fn backoff_delays_the_next_start(rt: SharedRuntime) {
    const INITIAL: Duration = Duration::from_millis(20);
    let stamps = Stamps::default();
    let policy = RestartPolicy::default()
        .backoff(INITIAL, Duration::from_secs(1))
        .factor(2.0)
        .jitter(0.0)
        .unlimited();
    let stop = StopSource::new();
    let outcome = run_component(stamps.factory(|_| Duration::ZERO), restart_until(2))
        .policy(policy)
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::Failed { attempt: 3, .. }),
        "got {outcome:?}"
    );
    // The first delay is `INITIAL`, the next twice as long.
    for (failed, delay) in [(1, INITIAL), (2, INITIAL * 2)] {
        let gap = stamps.gap_after(failed);
        assert!(
            gap >= delay,
            "instance {} started {gap:?} after instance {failed} failed, before the {delay:?} backoff",
            failed + 1
        );
    }
}

/// On virtual time only: the test bounds a delay from above, which a real
/// clock on a busy machine cannot promise.
#[test]
fn a_stable_run_resets_the_backoff() {
    lifecycle_conformance::virtual_time(stable_run_resets_the_backoff);
}

async fn stable_run_resets_the_backoff(rt: SharedRuntime) {
    const INITIAL: Duration = Duration::from_millis(100);
    const STABLE: Duration = Duration::from_secs(1);
    let stamps = Stamps::default();
    // The third instance runs well past the stable period before it
    // fails; the others fail at once.
    let runs_for = |n| if n == 3 { STABLE * 2 } else { Duration::ZERO };
    let policy = RestartPolicy::default()
        .backoff(INITIAL, Duration::from_secs(10))
        .factor(2.0)
        .jitter(0.0)
        .reset_after(STABLE)
        .unlimited();
    let stop = StopSource::new();
    let outcome = run_component(stamps.factory(runs_for), restart_until(3))
        .policy(policy)
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::Failed { attempt: 4, .. }),
        "got {outcome:?}"
    );
    // Growing while the instances fail at once...
    assert_eq!(stamps.gap_after(1), INITIAL);
    assert_eq!(stamps.gap_after(2), INITIAL * 2);
    // ...and back to the first delay after a stable run, not 4x.
    assert_eq!(
        stamps.gap_after(3),
        INITIAL,
        "the stable run did not reset the backoff"
    );
}

async fn intensity_limits_the_restarts(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Counter::default();
    let factory = counted(&built, |n| failing_manager(format!("failure {n}")));
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate().intensity(2, FOREVER))
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::RestartsExhausted { attempt: 3, .. }),
        "got {outcome:?}"
    );
    assert_eq!(error_text(&outcome).as_deref(), Some("failure 3"));
    assert_eq!(built.get(), 3, "two restarts allowed: three instances");
    assert_eq!(handled.get(), 3);

    // `never`: the first failure spends the budget.
    let built = Counter::default();
    let factory = counted(&built, |_| failing_manager("failed".into()));
    let outcome = run_component(factory, |_: &Failure| Verdict::Restart)
        .policy(RestartPolicy::never())
        .run(rt.clone(), stop.token())
        .await;
    assert!(
        matches!(outcome, RunOutcome::RestartsExhausted { attempt: 1, .. }),
        "got {outcome:?}"
    );
    assert_eq!(built.get(), 1);
}

async fn immediate_policy_restarts_many_times(rt: SharedRuntime) {
    const FAILURES: u32 = 200;
    let built = Counter::default();
    let handled = Counter::default();
    let factory = counted(&built, |n| {
        if n <= FAILURES {
            failing_manager(format!("failure {n}"))
        } else {
            one_worker(|_ctx| async { Ok(()) })
        }
    });
    let handler = {
        let handled = handled.clone();
        move |failure: &Failure| {
            assert_eq!(failure.attempt, handled.next());
            Verdict::Restart
        }
    };
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .run(rt.clone(), stop.token())
        .await;
    assert!(matches!(outcome, RunOutcome::Completed), "got {outcome:?}");
    assert_eq!(built.get(), FAILURES + 1);
    assert_eq!(handled.get(), FAILURES);
}

async fn invalid_policy_is_reported_by_field(rt: SharedRuntime) {
    let cases = [
        (RestartPolicy::default().factor(0.5), "factor"),
        (RestartPolicy::default().factor(f64::NAN), "factor"),
        (RestartPolicy::default().jitter(1.5), "jitter"),
        (RestartPolicy::default().jitter(-0.1), "jitter"),
        (
            RestartPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1)),
            "initial",
        ),
    ];
    for (policy, field) in cases {
        let built = Counter::default();
        let factory = counted(&built, |_| failing_manager("unexpected".into()));
        let stop = StopSource::new();
        let outcome = run_component(factory, |_: &Failure| Verdict::Restart)
            .policy(policy.clone())
            .run(rt.clone(), stop.token())
            .await;
        let RunOutcome::InvalidPolicy(error) = &outcome else {
            panic!("{policy:?}: expected InvalidPolicy, got {outcome:?}");
        };
        let named = matches!(
            (error, field),
            (PolicyError::Factor(_), "factor")
                | (PolicyError::Jitter(_), "jitter")
                | (PolicyError::InitialAboveMax { .. }, "initial")
        );
        assert!(
            named,
            "{policy:?}: expected an error naming {field}, got {error:?}"
        );
        assert!(
            outcome.to_string().contains(field),
            "the message does not name {field}: {outcome}"
        );
        assert_eq!(built.get(), 0, "an invalid policy built an instance");
    }
}

async fn stop_timeout_aborts_an_instance_ignoring_the_stop(rt: SharedRuntime) {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let latest = Latest::default();
    let dropped = Latch::new();
    let handled = Counter::default();
    let factory = latest.factory({
        let dropped = dropped.clone();
        move || {
            probed_worker(&dropped, |ctx| async move {
                ctx.throw(FatalError::msg("stuck"));
                // Ignores the stop that follows.
                pending::<()>().await;
                Ok(())
            })
        }
    });
    let handler = restarts_counted(&handled);
    let stop = StopSource::new();
    let outcome = run_component(factory, handler)
        .policy(RestartPolicy::immediate())
        .stop_timeout(TIMEOUT)
        .run(rt.clone(), stop.token())
        .await;
    match &outcome {
        RunOutcome::StopTimedOut {
            attempt: 1,
            timeout,
            aborted: true,
            error: Some(error),
        } => {
            assert_eq!(*timeout, TIMEOUT);
            assert_eq!(error.to_string(), "stuck");
        }
        other => panic!("expected StopTimedOut for instance 1, aborted, got {other:?}"),
    }
    assert!(!outcome.is_clean());
    assert!(
        latest.get().done().is_set(),
        "the aborted instance is not done"
    );
    assert!(dropped.is_set(), "the hung worker was not dropped");
    assert_eq!(
        handled.get(),
        0,
        "the handler ran for an instance that overran"
    );
}

async fn stop_timeout_on_a_parent_stop(rt: SharedRuntime) {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let latest = Latest::default();
    let dropped = Latch::new();
    let factory = latest.factory({
        let dropped = dropped.clone();
        move || {
            probed_worker(&dropped, |_ctx| async {
                pending::<()>().await;
                Ok(())
            })
        }
    });
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(factory, |_: &Failure| Verdict::Restart)
            .stop_timeout(TIMEOUT)
            .run(rt.clone(), stop.token()),
    );
    let instance = latest.ready(&rt).await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(
        matches!(
            outcome,
            RunOutcome::StopTimedOut {
                attempt: 1,
                aborted: true,
                error: None,
                ..
            }
        ),
        "got {outcome:?}"
    );
    assert!(instance.done().is_set());
    assert!(dropped.is_set());
}

async fn stop_timeout_with_a_component_that_cannot_abort(rt: SharedRuntime) {
    const TIMEOUT: Duration = Duration::from_millis(20);
    let component = ManualComponent::new();
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(component.factory(), |_: &Failure| Verdict::Restart)
            .stop_timeout(TIMEOUT)
            .run(rt.clone(), stop.token()),
    );
    let scope = component.started().await;
    scope.throw(FatalError::msg("gave up"));
    let outcome = run.await.unwrap();
    assert!(
        matches!(
            outcome,
            RunOutcome::StopTimedOut {
                attempt: 1,
                aborted: false,
                error: Some(_),
                ..
            }
        ),
        "got {outcome:?}"
    );
    assert_eq!(component.abort_calls(), 1);
    assert!(
        scope.token().is_stopped(),
        "the instance's scope was not stopped"
    );
    assert!(!stop.is_stopped());

    // The same component, but its abort works.
    let component = ManualComponent::done_on_abort();
    let run = rt.spawn(
        run_component(component.factory(), |_: &Failure| Verdict::Restart)
            .stop_timeout(TIMEOUT)
            .run(rt.clone(), stop.token()),
    );
    component.started().await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(
        matches!(
            outcome,
            RunOutcome::StopTimedOut {
                attempt: 1,
                aborted: true,
                error: None,
                ..
            }
        ),
        "got {outcome:?}"
    );
    assert_eq!(component.abort_calls(), 1);
}

async fn error_after_an_abandoned_stop_goes_to_the_hook(rt: SharedRuntime) {
    // An instance that neither stops nor aborts outlives the loop; what it
    // reports afterwards has no reader left, and must reach the hook rather
    // than wait in the slot for ever.
    const TIMEOUT: Duration = Duration::from_millis(20);
    let hooked = Events::new();
    let component = ManualComponent::new();
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(component.factory(), |_: &Failure| Verdict::Restart)
            .stop_timeout(TIMEOUT)
            .hook(hooked.hook())
            .run(rt.clone(), stop.token()),
    );
    let scope = component.started().await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(
        matches!(
            outcome,
            RunOutcome::StopTimedOut {
                aborted: false,
                error: None,
                ..
            }
        ),
        "got {outcome:?}"
    );
    scope.throw(FatalError::msg("flush failed after the loop"));
    assert_eq!(hooked.snapshot(), ["flush failed after the loop"]);
}

async fn error_after_a_clean_exit_goes_to_the_hook(rt: SharedRuntime) {
    // An instance that ended cleanly leaves the loop with nothing to read
    // its slot: a callback it left behind that fails afterwards must reach
    // the hook, not wait in the slot as a first error nobody takes.
    let hooked = Events::new();
    let component = ManualComponent::new();
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(component.factory(), |_: &Failure| Verdict::Restart)
            .hook(hooked.hook())
            .run(rt.clone(), stop.token()),
    );
    let scope = component.started().await;
    component.ready_latch().set();
    component.done_latch().set();
    let outcome = run.await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed), "got {outcome:?}");
    scope.throw(FatalError::msg("late callback failed"));
    assert_eq!(hooked.snapshot(), ["late callback failed"]);
}

async fn parent_stop_during_the_backoff_cancels(rt: SharedRuntime) {
    let built = Counter::default();
    let handled = Latch::new();
    let factory = counted(&built, |_| failing_manager("failed".into()));
    let handler = {
        let handled = handled.clone();
        move |_: &Failure| {
            handled.set();
            Verdict::Restart
        }
    };
    // A backoff far longer than the scenario may run: the loop must end on
    // the parent's stop, not on the delay.
    let policy = RestartPolicy::default()
        .backoff(FOREVER, FOREVER)
        .jitter(0.0)
        .unlimited();
    let stop = StopSource::new();
    let run = rt.spawn(
        run_component(factory, handler)
            .policy(policy)
            .run(rt.clone(), stop.token()),
    );
    handled.wait().await;
    // Give the loop time to be inside its sleep.
    rt.sleep(Duration::from_millis(10)).await;
    stop.stop();
    let outcome = run.await.unwrap();
    assert!(matches!(outcome, RunOutcome::Cancelled), "got {outcome:?}");
    assert_eq!(built.get(), 1, "an instance was built after the stop");
}

async fn instance_scope_is_released_on_every_exit(rt: SharedRuntime) {
    /// Runs the loop on `component` until `drive` has done its part, and
    /// returns the outcome and whether the instance's scope was stopped.
    async fn run_once(
        rt: &SharedRuntime,
        component: ManualComponent,
        verdict: Verdict,
        policy: RestartPolicy,
        drive: impl FnOnce(&ManualComponent),
    ) -> (RunOutcome, bool) {
        let stop = StopSource::new();
        let run = rt.spawn(
            run_component(component.factory(), move |_: &Failure| verdict)
                .policy(policy)
                .run(rt.clone(), stop.token()),
        );
        component.started().await;
        drive(&component);
        let outcome = run.await.unwrap();
        let released = component.scope().unwrap().token().is_stopped();
        assert!(!stop.is_stopped(), "the loop stopped its parent's token");
        (outcome, released)
    }

    // Completed: the instance finished on its own.
    let immediate = RestartPolicy::immediate;
    let (outcome, released) = run_once(
        &rt,
        ManualComponent::new(),
        Verdict::Stop,
        immediate(),
        |c| {
            c.ready_latch().set();
            c.shutdown_latch().set();
            c.done_latch().set();
        },
    )
    .await;
    assert!(matches!(outcome, RunOutcome::Completed), "got {outcome:?}");
    assert!(released, "Completed left the instance's scope running");

    // Failed: the instance threw and the handler said Stop.
    let throw = |c: &ManualComponent| {
        c.scope().unwrap().throw(FatalError::msg("failed"));
    };
    let done_on_stop = ManualComponent::done_on_stop;
    let (outcome, released) =
        run_once(&rt, done_on_stop(), Verdict::Stop, immediate(), throw).await;
    assert!(
        matches!(outcome, RunOutcome::Failed { .. }),
        "got {outcome:?}"
    );
    assert!(released, "Failed left the instance's scope running");

    // StartFailed: the instance could not start.
    let refusing = ManualComponent::failing_to_start(FatalError::msg("refused"));
    let (outcome, released) = run_once(&rt, refusing, Verdict::Stop, immediate(), |_| {}).await;
    assert!(
        matches!(outcome, RunOutcome::StartFailed { .. }),
        "got {outcome:?}"
    );
    assert!(released, "StartFailed left the instance's scope running");

    // RestartsExhausted: the instance threw, the handler said Restart, and
    // the budget allows none.
    let no_restarts = immediate().intensity(0, FOREVER);
    let (outcome, released) =
        run_once(&rt, done_on_stop(), Verdict::Restart, no_restarts, throw).await;
    assert!(
        matches!(outcome, RunOutcome::RestartsExhausted { attempt: 1, .. }),
        "got {outcome:?}"
    );
    assert!(
        released,
        "RestartsExhausted left the instance's scope running"
    );
}

async fn error_wins_over_a_simultaneous_parent_stop(rt: SharedRuntime) {
    for verdict in [Verdict::Stop, Verdict::Restart] {
        let first = ManualComponent::done_on_stop();
        let built: Arc<Mutex<Vec<ManualComponent>>> = Arc::default();
        let handled = Events::new();
        let stop = StopSource::new();
        let factory = {
            let (first, built) = (first.clone(), built.clone());
            move || {
                let mut built = built.lock().unwrap();
                let instance = if built.is_empty() {
                    first.clone()
                } else {
                    ManualComponent::done_on_stop()
                };
                built.push(instance.clone());
                Ok::<_, FatalError>(instance)
            }
        };
        let handler = recording(&handled, verdict);
        let run = rt.spawn(
            run_component(factory, handler)
                .policy(RestartPolicy::immediate())
                .run(rt.clone(), stop.token()),
        );
        let scope = first.started().await;
        // The error first, the parent's stop right after: on a single thread
        // both are there when the loop looks.
        scope.throw(FatalError::msg("failed"));
        stop.stop();
        let outcome = run.await.unwrap();
        assert_eq!(
            handled.snapshot(),
            ["failed"],
            "{verdict}: the error did not reach the handler once"
        );
        if verdict == Verdict::Restart {
            // Restarted or not before the stop landed, the stop ends it.
            assert!(
                matches!(outcome, RunOutcome::Cancelled),
                "a restart under a stopped parent must end as Cancelled, got {outcome:?}"
            );
        } else {
            assert!(
                matches!(
                    outcome,
                    RunOutcome::Failed {
                        verdict: Verdict::Stop,
                        ..
                    }
                ),
                "got {outcome:?}"
            );
            assert_eq!(built.lock().unwrap().len(), 1);
        }
        assert!(built.lock().unwrap().iter().all(|c| c.done().is_set()));
    }
}
