//! The restartable start/stop service base on every executor: one scenario
//! per behaviour of the base (spec `service.md` §2 and §3), closure
//! services, the group helpers, and the stress contract (§4) for every
//! service type of the project.

use std::borrow::Borrow;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{join_all, select, Either};
use futures_util::FutureExt;
use lifecycle::{
    service_fn, start_all, stop_all, wait_all_started, FatalError, FatalSlot, Generation,
    JoinHandle, RuntimeExt, Scope, Service, ServiceFn, ServiceFuture, SharedRuntime, Signal,
    StartOutcome, StartStop, StopCause, StopSource, StopToken,
};
use lifecycle_conformance::{conformance, eventually, let_others_run, scope, yield_now};

conformance!(
    start_while_running_is_a_no_op,
    start_after_a_completed_stop_begins_a_new_generation,
    start_after_a_failed_start_really_starts,
    start_after_the_work_exited_on_its_own_begins_a_new_generation,
    start_during_a_stop_waits_for_it,
    start_with_a_stopped_parent_is_born_stopped,
    stop_without_start_and_after_stop_is_immediate,
    concurrent_stops_all_wait_for_the_generation,
    stop_after_a_failed_start_is_immediate_and_resets,
    stop_cause_is_service_stopped,
    stop_cause_after_a_parent_stop_is_the_parents,
    latches_asked_for_before_start_are_adopted,
    latches_asked_for_while_running_are_the_current_generations,
    latches_after_a_failed_start_are_set,
    latches_after_a_completed_stop_belong_to_the_next_generation,
    stopped_unchecked_never_preallocates,
    stale_handles_never_touch_the_next_generation,
    finalize_true_resets_to_idle,
    finalize_false_then_start_is_a_no_op_until_the_work_exits,
    finalize_false_then_stop_completes,
    dropped_guard_abandons_the_stop_without_deadlock,
    open_stop_holds_start_and_stop_but_not_queries,
    queued_stop_does_not_stop_a_newer_generation,
    queued_stop_completes_an_abandoned_stop,
    stop_within_times_out_and_abandons_the_stop,
    work_that_panics_ends_its_generation,
    detached_work_ends_its_generation_and_its_panic_is_reported,
    closure_is_called_on_every_start,
    closure_start_error_is_returned_and_the_service_restarts,
    start_all_starts_in_order,
    start_all_of_nothing_is_ok,
    start_all_returns_the_first_error_and_rolls_back,
    start_all_rolls_back_only_what_it_started,
    start_all_rolls_back_concurrently,
    stop_all_stops_concurrently_and_tolerates_never_started,
    stop_all_stops_a_large_group_concurrently,
    wait_all_started_counts_a_failed_start,
    wait_all_started_dropped_leaves_nothing_behind,
    stress_on_the_base,
    stress_on_a_closure_service,
);

/// The part of one generation's work the test drives.
struct Work {
    /// The generation's scope token, as the work saw it.
    token: StopToken,
    /// Set by the test: the work exits on its own, as if its job were done.
    exit: Signal,
    exit_latch: lifecycle::Latch,
    /// Set by the test: a work told to hold keeps running after its stop
    /// until this is set.
    release: lifecycle::Latch,
}

/// A service on the [`StartStop`] base whose work the test scripts: it
/// records each generation, can fail its next start, and can make its next
/// generation's work ignore the stop until released.
#[derive(Default)]
struct Scripted {
    base: StartStop,
    works: Mutex<Vec<Arc<Work>>>,
    fail_next_start: Mutex<bool>,
    hold_next: Mutex<bool>,
    start_calls: AtomicUsize,
}

impl Scripted {
    fn generations(&self) -> usize {
        self.works.lock().unwrap().len()
    }

    /// Generation `number` (from 1).
    fn work(&self, number: usize) -> Arc<Work> {
        self.works.lock().unwrap()[number - 1].clone()
    }

    fn fail_next_start(&self) {
        *self.fail_next_start.lock().unwrap() = true;
    }

    fn hold_next(&self) {
        *self.hold_next.lock().unwrap() = true;
    }
}

impl Service for Scripted {
    fn start<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> ServiceFuture<'a, Result<StartOutcome, FatalError>> {
        Box::pin(async move {
            self.start_calls.fetch_add(1, SeqCst);
            let Some(generation) = self.base.begin(scope).await else {
                return Ok(StartOutcome::AlreadyRunning);
            };
            if std::mem::take(&mut *self.fail_next_start.lock().unwrap()) {
                // Dropping the handles ends the generation.
                drop(generation);
                return Err(FatalError::msg("setup failed"));
            }
            let exit = lifecycle::Latch::new();
            let work = Arc::new(Work {
                token: generation.scope.token().clone(),
                exit: exit.signal(),
                exit_latch: exit,
                release: lifecycle::Latch::new(),
            });
            let hold = std::mem::take(&mut *self.hold_next.lock().unwrap());
            self.works.lock().unwrap().push(work.clone());
            drop(generation.spawn(move |scope, started| async move {
                started.set();
                let stopped = scope.token().stopped();
                let exit = work.exit.wait();
                select(std::pin::pin!(stopped), std::pin::pin!(exit)).await;
                if hold {
                    work.release.wait().await;
                }
            }));
            Ok(StartOutcome::Started)
        })
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

fn parent(rt: &SharedRuntime) -> (StopSource, Scope) {
    let stop = StopSource::new();
    let scope = scope(rt, &stop, &FatalSlot::new());
    (stop, scope)
}

async fn start_while_running_is_a_no_op(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_first_parent, first) = parent(&rt);
    let (second_parent, second) = parent(&rt);
    assert_eq!(service.start(&first).await.unwrap(), StartOutcome::Started);
    service.started().wait().await;
    assert_eq!(
        service.start(&second).await.unwrap(),
        StartOutcome::AlreadyRunning
    );
    let_others_run(&rt).await;
    assert_eq!(
        service.generations(),
        1,
        "a second start made a second task"
    );

    // The running generation is not in the second caller's scope.
    second_parent.stop();
    let_others_run(&rt).await;
    assert!(!service.work(1).token.is_stopped());
    assert!(service.base.is_running());
    service.stop().await;
}

async fn start_after_a_completed_stop_begins_a_new_generation(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    service.stop().await;
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    service.started().wait().await;
    assert_eq!(service.generations(), 2);
    assert!(
        !service.work(1).token.same_as(&service.work(2).token),
        "a new generation has a new scope"
    );
    assert!(service.work(1).token.is_stopped());
    assert!(!service.work(2).token.is_stopped());
    service.stop().await;
}

async fn start_after_a_failed_start_really_starts(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.fail_next_start();
    let error = service.start(&scope).await.unwrap_err();
    assert_eq!(error.to_string(), "setup failed");
    assert!(!service.base.is_running(), "a failed start left it running");

    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    service.started().wait().await;
    assert_eq!(service.generations(), 1, "the work of the restart runs");
    assert!(service.base.is_running());
    service.stop().await;
    assert!(service.work(1).token.is_stopped());
}

async fn start_after_the_work_exited_on_its_own_begins_a_new_generation(rt: SharedRuntime) {
    let service = Scripted::default();
    let (first_parent, first) = parent(&rt);
    service.start(&first).await.unwrap();
    let stopped = service.stopped();
    first_parent.stop(); // the work sees its parent stop and exits
    stopped.wait().await;
    assert!(!service.base.is_running());

    let (_second_parent, second) = parent(&rt);
    assert_eq!(service.start(&second).await.unwrap(), StartOutcome::Started);
    service.started().wait().await;
    assert_eq!(service.generations(), 2);
    assert!(!service.work(2).token.is_stopped());

    // Also when the work returns by itself, its parent still running.
    let stopped = service.stopped();
    service.work(2).exit_latch.set();
    stopped.wait().await;
    assert_eq!(service.start(&second).await.unwrap(), StartOutcome::Started);
    assert_eq!(service.generations(), 3);
    assert!(
        service.work(2).token.is_stopped(),
        "the exited generation's scope is stopped when the next begins"
    );
    service.stop().await;
}

async fn start_during_a_stop_waits_for_it(rt: SharedRuntime) {
    let service = Arc::new(Scripted::default());
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    service.started().wait().await;

    let stopping = rt.spawn({
        let service = service.clone();
        async move { service.stop().await }
    });
    eventually(&rt, "the stop began", || service.work(1).token.is_stopped()).await;
    let starting = rt.spawn({
        let (service, scope) = (service.clone(), scope.clone());
        async move { service.start(&scope).await }
    });
    let_others_run(&rt).await;
    assert!(!starting.is_finished(), "a start did not wait for the stop");
    assert_eq!(service.generations(), 1);

    service.work(1).release.set();
    stopping.await.unwrap();
    assert_eq!(starting.await.unwrap().unwrap(), StartOutcome::Started);
    assert_eq!(service.generations(), 2);
    service.stop().await;
}

async fn start_with_a_stopped_parent_is_born_stopped(rt: SharedRuntime) {
    let service = Scripted::default();
    let (stop, scope) = parent(&rt);
    stop.stop();
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    let work = service.work(1);
    assert!(work.token.is_stopped(), "not born stopped");
    assert!(matches!(work.token.cause(), Some(StopCause::ParentStopped)));
    service.stopped().wait().await; // the generation ends by itself
    assert!(service.started().is_set());
    assert!(!service.base.is_running());
    service.stop().await;
}

async fn stop_without_start_and_after_stop_is_immediate(rt: SharedRuntime) {
    let service = Scripted::default();
    service.stop().await;
    service.stop().await;
    assert_eq!(service.generations(), 0);
    assert!(service.base.stop_init().await.is_none());

    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    service.stop().await;
    service.stop().await;
    assert!(!service.base.is_running());
}

async fn concurrent_stops_all_wait_for_the_generation(rt: SharedRuntime) {
    let service = Arc::new(Scripted::default());
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    let stopped = service.stopped();
    let stops: Vec<_> = (0..3)
        .map(|_| {
            let service = service.clone();
            let stopped = stopped.clone();
            rt.spawn(async move {
                service.stop().await;
                assert!(stopped.is_set(), "a stop returned before the work exited");
            })
        })
        .collect();
    let_others_run(&rt).await;
    assert!(
        stops.iter().all(|stop| !stop.is_finished()),
        "a stop returned while the work holds"
    );
    service.work(1).release.set();
    for stop in stops {
        stop.await.unwrap();
    }
    assert!(!service.base.is_running());
}

async fn stop_after_a_failed_start_is_immediate_and_resets(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.fail_next_start();
    service.start(&scope).await.unwrap_err();
    let stopped_before = service.stopped();
    service.stop().await;
    assert!(stopped_before.is_set());
    assert!(
        !service.stopped().same_as(&stopped_before),
        "not reset to idle: the stopped latch is still the failed generation's"
    );
}

async fn stop_cause_is_service_stopped(rt: SharedRuntime) {
    let service = Scripted::default();
    let (stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    service.stop().await;
    let token = &service.work(1).token;
    assert!(matches!(token.cause(), Some(StopCause::ServiceStopped)));
    assert!(!stop.is_stopped(), "the service's stop reached its parent");
}

async fn stop_cause_after_a_parent_stop_is_the_parents(rt: SharedRuntime) {
    let service = Scripted::default();
    let (stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    stop.stop_with(StopCause::Timeout);
    service.stop().await;
    let token = &service.work(1).token;
    assert!(matches!(token.cause(), Some(StopCause::ParentStopped)));
    assert!(matches!(token.origin_cause(), Some(StopCause::Timeout)));
}

async fn latches_asked_for_before_start_are_adopted(rt: SharedRuntime) {
    let service = Scripted::default();
    let (started, stopped) = (service.started(), service.stopped());
    assert!(
        started.same_as(&service.started()),
        "asked twice: two latches"
    );
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    assert!(started.same_as(&service.started()));
    assert!(stopped.same_as(&service.stopped()));
    started.wait().await;
    service.stop().await;
    assert!(stopped.is_set());
}

async fn latches_asked_for_while_running_are_the_current_generations(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    let (started, stopped) = (service.started(), service.stopped());
    started.wait().await;
    assert!(!stopped.is_set());
    service.stop().await;
    assert!(stopped.is_set());
}

async fn latches_after_a_failed_start_are_set(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    let early = service.started();
    service.fail_next_start();
    service.start(&scope).await.unwrap_err();
    assert!(
        early.is_set(),
        "waiters on the failed start are not released"
    );
    assert!(service.started().is_set(), "set, though the start failed");
    assert!(service.stopped().is_set());
}

async fn latches_after_a_completed_stop_belong_to_the_next_generation(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    service.stop().await;
    let (started, stopped) = (service.started(), service.stopped());
    assert!(!started.is_set() && !stopped.is_set(), "fresh latches");
    service.start(&scope).await.unwrap();
    started.wait().await;
    assert!(!stopped.is_set());
    service.stop().await;
    assert!(stopped.is_set());
}

async fn stopped_unchecked_never_preallocates(rt: SharedRuntime) {
    let service = Scripted::default();
    assert!(
        service.base.stopped_unchecked().is_none(),
        "before the first start"
    );
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    let current = service.base.stopped_unchecked().unwrap();
    assert!(current.same_as(&service.stopped()));
    service.stop().await;
    let last = service.base.stopped_unchecked().unwrap();
    assert!(
        last.same_as(&current),
        "after a stop: the last generation's"
    );
    assert!(last.is_set());
    let next = service.stopped(); // asked for: the next generation's
    assert!(service.base.stopped_unchecked().unwrap().same_as(&next));
}

async fn stale_handles_never_touch_the_next_generation(rt: SharedRuntime) {
    let base = StartStop::new();
    let (_stop, scope) = parent(&rt);
    let first = base.begin(&scope).await.unwrap();
    let stale_started = first.started.clone();
    let stale_stopped = first.stopped.clone();
    first.stopped.set();
    drop(first);

    let second = base.begin(&scope).await.unwrap();
    let (started, stopped) = (base.started(), base.stopped());
    stale_started.set();
    stale_stopped.set();
    drop(stale_stopped);
    assert!(
        !started.is_set() && !stopped.is_set(),
        "a handle of the first generation signalled the second"
    );
    assert!(base.is_running());
    second.started.set();
    drop(second);
    base.stop().await;
    assert!(stopped.is_set());
}

async fn finalize_true_resets_to_idle(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    let guard = service.base.stop_init().await.unwrap();
    assert!(
        service.work(1).token.is_stopped(),
        "stop_init stops the scope"
    );
    guard.stopped().wait().await;
    guard.finalize(true);
    assert!(service.base.stop_init().await.is_none(), "not idle");
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    service.stop().await;
}

async fn finalize_false_then_start_is_a_no_op_until_the_work_exits(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    service.started().wait().await;
    let guard = service.base.stop_init().await.unwrap();
    guard.finalize(false); // say, our deadline passed

    assert_eq!(
        service.start(&scope).await.unwrap(),
        StartOutcome::AlreadyRunning,
        "the old work still runs"
    );
    assert!(
        service.work(1).token.is_stopped(),
        "the scope stays stopped"
    );

    let stopped = service.stopped();
    service.work(1).release.set();
    stopped.wait().await;
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    assert_eq!(service.generations(), 2, "not a real restart");
    service.stop().await;
}

async fn finalize_false_then_stop_completes(rt: SharedRuntime) {
    let service = Arc::new(Scripted::default());
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    let stopped = service.stopped();
    service.base.stop_init().await.unwrap().finalize(false);

    let stopping = rt.spawn({
        let service = service.clone();
        async move { service.stop().await }
    });
    let_others_run(&rt).await;
    assert!(!stopping.is_finished());
    service.work(1).release.set();
    stopping.await.unwrap();
    assert!(stopped.is_set());
    assert!(!service.base.is_running());
    assert!(
        service.base.stop_init().await.is_none(),
        "not reset to idle"
    );
}

async fn dropped_guard_abandons_the_stop_without_deadlock(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    drop(service.base.stop_init().await.unwrap());
    // Not stuck: start answers (a no-op, the work still runs), and a new
    // stop can be opened.
    assert_eq!(
        service.start(&scope).await.unwrap(),
        StartOutcome::AlreadyRunning
    );
    let guard = service.base.stop_init().await.unwrap();
    service.work(1).release.set();
    guard.stopped().wait().await;
    guard.finalize(true);
    assert!(!service.base.is_running());
}

async fn open_stop_holds_start_and_stop_but_not_queries(rt: SharedRuntime) {
    let service = Arc::new(Scripted::default());
    let (_stop, scope) = parent(&rt);
    service.start(&scope).await.unwrap();
    service.started().wait().await;
    let stopped = service.stopped();
    let guard = service.base.stop_init().await.unwrap();

    let starting = rt.spawn({
        let (service, scope) = (service.clone(), scope.clone());
        async move { service.start(&scope).await }
    });
    let stopping = rt.spawn({
        let service = service.clone();
        async move { service.stop().await }
    });
    // Queries answer at once, with the generation being stopped.
    assert!(service.started().is_set());
    assert!(service.stopped().same_as(&stopped));
    assert!(service.base.stopped_unchecked().unwrap().same_as(&stopped));
    stopped.wait().await;
    assert!(!service.base.is_running());
    let_others_run(&rt).await;
    assert!(
        !starting.is_finished(),
        "a start did not wait for the open stop"
    );
    assert!(
        !stopping.is_finished(),
        "a stop did not wait for the open stop"
    );

    guard.finalize(true);
    stopping.await.unwrap();
    assert_eq!(starting.await.unwrap().unwrap(), StartOutcome::Started);
    assert_eq!(
        service.generations(),
        2,
        "the waiting start began no generation"
    );
    service.stop().await;
}

/// A stop and a start both wait behind an open stop; the start wins the
/// race once it closes. The stop was for the generation that was stopping:
/// it returns without stopping the one the start began.
async fn queued_stop_does_not_stop_a_newer_generation(rt: SharedRuntime) {
    let base = StartStop::new();
    let (_stop, scope) = parent(&rt);
    let first = base.begin(&scope).await.unwrap();
    first.started.set();
    let first_token = first.scope.token().clone();
    let guard = base.stop_init().await.unwrap();

    let mut stop = std::pin::pin!(base.stop());
    assert!(
        stop.as_mut().now_or_never().is_none(),
        "a stop did not wait for the open stop"
    );
    let mut start = std::pin::pin!(base.begin(&scope));
    assert!(
        start.as_mut().now_or_never().is_none(),
        "a start did not wait for the open stop"
    );

    drop(first); // the work exits
    guard.stopped().wait().await;
    guard.finalize(true);

    // Polled first, the start begins the next generation...
    let second = start
        .now_or_never()
        .expect("the stop closed: the start returns")
        .expect("idle: a new generation");
    assert!(!second.scope.token().same_as(&first_token));
    second.started.set();
    // ...and the stop, issued before it, leaves it alone.
    assert!(
        stop.now_or_never().is_some(),
        "the queued stop is stopping the newer generation"
    );
    assert!(
        !second.scope.token().is_stopped(),
        "the queued stop stopped the newer generation"
    );
    assert!(base.is_running());

    drop(second);
    base.stop().await;
    assert!(!base.is_running());
}

/// A stop waiting behind an open stop that is abandoned stops the same
/// generation itself, and returns once its work has exited.
async fn queued_stop_completes_an_abandoned_stop(rt: SharedRuntime) {
    let base = StartStop::new();
    let (_stop, scope) = parent(&rt);
    let first = base.begin(&scope).await.unwrap();
    first.started.set();
    let stopped = base.stopped();
    let guard = base.stop_init().await.unwrap();

    let mut stop = std::pin::pin!(base.stop());
    assert!(
        stop.as_mut().now_or_never().is_none(),
        "a stop did not wait for the open stop"
    );
    guard.finalize(false); // say, its deadline passed; the work still runs

    assert!(
        stop.as_mut().now_or_never().is_none(),
        "a stop returned while the work still runs"
    );
    assert!(
        format!("{base:?}").contains("\"stopping\""),
        "the queued stop did not open a stop of the generation"
    );
    assert!(matches!(
        first.scope.token().cause(),
        Some(StopCause::ServiceStopped)
    ));

    drop(first); // the work exits
    assert!(stop.now_or_never().is_some(), "the queued stop returns");
    assert!(stopped.is_set());
    assert!(!base.is_running());
    assert!(base.stop_init().await.is_none(), "not reset to idle");
}

async fn stop_within_times_out_and_abandons_the_stop(rt: SharedRuntime) {
    let service = Scripted::default();
    let (_stop, scope) = parent(&rt);
    service.hold_next();
    service.start(&scope).await.unwrap();
    let stopped = service.stopped();
    let timeout = Duration::from_millis(30);
    let elapsed = service.stop_within(rt.as_ref(), timeout).await.unwrap_err();
    assert_eq!(elapsed.duration(), timeout);
    assert!(
        service.work(1).token.is_stopped(),
        "the scope stays stopped"
    );
    // Abandoned as finalize(false): bookkeeping stays.
    assert_eq!(
        service.start(&scope).await.unwrap(),
        StartOutcome::AlreadyRunning
    );
    // The base's own deadline on the generation's runtime: the same.
    assert!(service.base.stop_within(timeout).await.is_err());

    service.work(1).release.set();
    service
        .base
        .stop_within(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(stopped.is_set());
    assert!(service.base.stop_within(timeout).await.is_ok(), "idle");
}

async fn work_that_panics_ends_its_generation(rt: SharedRuntime) {
    let base = StartStop::new();
    let (_stop, scope) = parent(&rt);
    let generation = base.begin(&scope).await.unwrap();
    let work = generation.spawn(|_scope, _started| async move {
        yield_now().await;
        panic!("work failed");
    });
    assert!(work.await.is_err());
    base.stopped().wait().await;
    assert!(base.started().is_set());
    assert!(base.begin(&scope).await.is_some(), "not restartable");
    base.stop().await;
}

async fn detached_work_ends_its_generation_and_its_panic_is_reported(rt: SharedRuntime) {
    let base = StartStop::new();
    let (stop, fatal) = (StopSource::new(), FatalSlot::new());
    let scope = scope(&rt, &stop, &fatal);

    // Served until stopped: the stop returns once the work has exited.
    let exited = Arc::new(AtomicUsize::new(0));
    let generation = base.begin(&scope).await.unwrap();
    generation.spawn_detached({
        let exited = exited.clone();
        |scope, started| async move {
            started.set();
            scope.token().stopped().await;
            exited.fetch_add(1, SeqCst);
        }
    });
    base.started().wait().await;
    let stopped = base.stopped();
    base.stop().await;
    assert!(stopped.is_set());
    assert_eq!(exited.load(SeqCst), 1, "the stop returned before the work");

    // A panic ends the generation, reported before it ends.
    let generation = base.begin(&scope).await.unwrap();
    let stopped = base.stopped();
    generation.spawn_detached(|_scope, _started| async move {
        yield_now().await;
        panic!("work failed");
    });
    stopped.wait().await;
    assert!(base.started().is_set());
    let error = fatal.take().expect("the panic is reported");
    assert_eq!(error.to_string(), "service work panicked: work failed");
    assert!(base.begin(&scope).await.is_some(), "not restartable");
    base.stop().await;
}

/// A closure service whose work serves until stopped; counts the calls of
/// its closure and the generations it began.
fn counted_closure_service(
    calls: &Arc<AtomicUsize>,
    generations: &Arc<AtomicUsize>,
) -> ServiceFn<impl Fn(Option<Generation>) -> ServiceFuture<'static, Result<(), FatalError>>> {
    let (calls, generations) = (calls.clone(), generations.clone());
    service_fn(move |generation: Option<Generation>| {
        calls.fetch_add(1, SeqCst);
        let generations = generations.clone();
        Box::pin(async move {
            if let Some(generation) = generation {
                generations.fetch_add(1, SeqCst);
                drop(generation.spawn(|scope, started| async move {
                    started.set();
                    scope.token().stopped().await;
                }));
            }
            Ok(())
        }) as ServiceFuture<'static, _>
    })
}

async fn closure_is_called_on_every_start(rt: SharedRuntime) {
    let (calls, generations) = Default::default();
    let service = counted_closure_service(&calls, &generations);
    let (_stop, scope) = parent(&rt);
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    assert_eq!(
        service.start(&scope).await.unwrap(),
        StartOutcome::AlreadyRunning
    );
    service.started().wait().await;
    service.stop().await;
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    service.stop().await;
    assert_eq!(calls.load(SeqCst), 3, "called on every start");
    assert_eq!(generations.load(SeqCst), 2);
}

async fn closure_start_error_is_returned_and_the_service_restarts(rt: SharedRuntime) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let service = service_fn({
        let attempts = attempts.clone();
        move |generation: Option<Generation>| {
            let first = attempts.fetch_add(1, SeqCst) == 0;
            async move {
                let generation = generation.expect("never running here");
                if first {
                    return Err(FatalError::msg("port in use"));
                }
                drop(generation.spawn(|scope, started| async move {
                    started.set();
                    scope.token().stopped().await;
                }));
                Ok(())
            }
        }
    });
    let (_stop, scope) = parent(&rt);
    let error = service.start(&scope).await.unwrap_err();
    assert_eq!(error.to_string(), "port in use");
    assert!(service.started().is_set() && service.stopped().is_set());
    assert_eq!(service.start(&scope).await.unwrap(), StartOutcome::Started);
    service.started().wait().await;
    assert!(service.base().is_running());
    service.stop().await;
}

async fn start_all_starts_in_order(rt: SharedRuntime) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let services: Vec<_> = (0..3)
        .map(|index| {
            let order = order.clone();
            service_fn(move |generation: Option<Generation>| {
                order.lock().unwrap().push(index);
                async move {
                    drop(generation);
                    Ok(())
                }
            })
        })
        .collect();
    let (_stop, scope) = parent(&rt);
    start_all(&services, &scope).await.unwrap();
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    stop_all(&services).await;
}

async fn start_all_of_nothing_is_ok(rt: SharedRuntime) {
    let (_stop, scope) = parent(&rt);
    let none: [Scripted; 0] = [];
    start_all(&none, &scope).await.unwrap();
    stop_all(&none).await;
    wait_all_started(&none).await;
}

async fn start_all_returns_the_first_error_and_rolls_back(rt: SharedRuntime) {
    let services: Vec<Scripted> = (0..4).map(|_| Scripted::default()).collect();
    services[2].fail_next_start();
    let (_stop, scope) = parent(&rt);
    let error = start_all(&services, &scope).await.unwrap_err();
    assert_eq!(error.to_string(), "setup failed", "not the service's error");
    for (index, service) in services.iter().take(2).enumerate() {
        assert!(
            service.work(1).token.is_stopped() && !service.base.is_running(),
            "service {index} was not rolled back"
        );
    }
    assert_eq!(
        services[3].start_calls.load(SeqCst),
        0,
        "started past the error"
    );
}

async fn start_all_rolls_back_only_what_it_started(rt: SharedRuntime) {
    let services: Vec<Scripted> = (0..3).map(|_| Scripted::default()).collect();
    let (_stop, scope) = parent(&rt);
    services[0].start(&scope).await.unwrap(); // running before the call
    services[2].fail_next_start();
    start_all(&services, &scope).await.unwrap_err();
    assert!(
        services[0].base.is_running(),
        "a service running before the call was stopped"
    );
    assert!(!services[1].base.is_running(), "not rolled back");
    services[0].stop().await;
}

/// A closure service whose work, once told to stop, sets `told` and then
/// holds until `other` is set: two of them, each the other's `other`, stop
/// only if both are told to stop before either has to be done.
fn holding_service(
    told: &lifecycle::Latch,
    other: &lifecycle::Latch,
) -> ServiceFn<impl Fn(Option<Generation>) -> ServiceFuture<'static, Result<(), FatalError>>> {
    let (told, other) = (told.clone(), other.clone());
    service_fn(move |generation: Option<Generation>| {
        let (told, other) = (told.clone(), other.clone());
        Box::pin(async move {
            if let Some(generation) = generation {
                drop(generation.spawn(|scope, started| async move {
                    started.set();
                    scope.token().stopped().await;
                    told.set();
                    other.wait().await;
                }));
            }
            Ok(())
        }) as ServiceFuture<'static, _>
    })
}

async fn start_all_rolls_back_concurrently(rt: SharedRuntime) {
    // The third fails to start: the first two are stopped together. Each
    // holds its stop until the other's has begun, so a rollback that
    // stopped one and waited for it before the next would wait for ever.
    let (first_told, second_told) = (lifecycle::Latch::new(), lifecycle::Latch::new());
    let first = holding_service(&first_told, &second_told);
    let second = holding_service(&second_told, &first_told);
    let error = FatalError::msg("port in use");
    let broken = service_fn({
        let error = error.clone();
        move |generation: Option<Generation>| {
            let error = error.clone();
            async move {
                drop(generation);
                Err(error)
            }
        }
    });
    let services: [&dyn Service; 3] = [&first, &second, &broken];
    let (_stop, scope) = parent(&rt);
    let returned = start_all(&services, &scope).await.unwrap_err();
    assert!(
        returned.same_as(&error),
        "not the service's error: {returned}"
    );
    assert!(first_told.is_set() && second_told.is_set());
    for (index, service) in [&first, &second].into_iter().enumerate() {
        assert!(
            !service.base().is_running(),
            "service {index} was not rolled back"
        );
    }
}

/// A task that releases the held first work of every service once all of
/// their stops have begun: a `stop_all` that stopped one service at a time
/// would wait for it forever.
fn release_once_all_stopping<S: Borrow<Scripted>>(
    rt: &SharedRuntime,
    services: &[S],
) -> JoinHandle<()> {
    let works: Vec<_> = services
        .iter()
        .map(|service| service.borrow().work(1))
        .collect();
    let rt = rt.clone();
    rt.clone().spawn(async move {
        eventually(&rt, "every stop began", || {
            works.iter().all(|work| work.token.is_stopped())
        })
        .await;
        for work in &works {
            work.release.set();
        }
    })
}

async fn stop_all_stops_concurrently_and_tolerates_never_started(rt: SharedRuntime) {
    // Each held work is released only once every service's stop has begun:
    // a sequential stop_all would wait forever on the first.
    let services: Vec<Arc<Scripted>> = (0..3).map(|_| Arc::default()).collect();
    let never_started = Arc::new(Scripted::default());
    let (_stop, scope) = parent(&rt);
    for service in &services {
        service.hold_next();
        service.start(&scope).await.unwrap();
    }
    let releaser = release_once_all_stopping(&rt, &services);
    let mut all: Vec<Arc<Scripted>> = services.clone();
    all.push(never_started);
    stop_all(&all).await;
    releaser.await.unwrap();
    assert!(services.iter().all(|service| !service.base.is_running()));
}

async fn stop_all_stops_a_large_group_concurrently(rt: SharedRuntime) {
    // More services than `stop_all` joins under one waker, every work held
    // until all stops have begun.
    let services: Vec<Scripted> = (0..100).map(|_| Scripted::default()).collect();
    let (_stop, scope) = parent(&rt);
    for service in &services {
        service.hold_next();
    }
    start_all(&services, &scope).await.unwrap();
    let releaser = release_once_all_stopping(&rt, &services);
    stop_all(&services).await;
    releaser.await.unwrap();
    assert!(services.iter().all(|service| !service.base.is_running()));
}

async fn wait_all_started_counts_a_failed_start(rt: SharedRuntime) {
    let services: Vec<Scripted> = (0..3).map(|_| Scripted::default()).collect();
    let all_started = wait_all_started(&services);
    services[1].fail_next_start();
    let (_stop, scope) = parent(&rt);
    for service in &services {
        let _ = service.start(&scope).await;
    }
    all_started.await;
    stop_all(&services).await;
}

async fn wait_all_started_dropped_leaves_nothing_behind(rt: SharedRuntime) {
    let services: Vec<Scripted> = (0..3).map(|_| Scripted::default()).collect();
    let waiting = wait_all_started(&services);
    match select(std::pin::pin!(waiting), rt.sleep(Duration::from_millis(10))).await {
        Either::Left(_) => panic!("completed though nothing started"),
        Either::Right(_) => {}
    }
    // The harness checks that no task is left; the preallocated latches
    // have no waiter left either, so a start still works as usual.
    let (_stop, scope) = parent(&rt);
    start_all(&services, &scope).await.unwrap();
    wait_all_started(&services).await;
    stop_all(&services).await;
}

const STRESS_TASKS: usize = 10;
const STRESS_ROUNDS: usize = 50;
const STRESS_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Ten tasks, fifty rounds each of start and stop with a 5 s deadline, on
/// one service, freely interleaved: no error (but the service's own start
/// error), no stop past its deadline; the harness then checks that no task
/// is left.
async fn stress<S: Service + 'static>(rt: SharedRuntime, service: Arc<S>) {
    let (_stop, scope) = parent(&rt);
    let tasks: Vec<_> = (0..STRESS_TASKS)
        .map(|_| {
            let (rt, service, scope) = (rt.clone(), service.clone(), scope.clone());
            rt.clone().spawn(async move {
                for _ in 0..STRESS_ROUNDS {
                    service.start(&scope).await.unwrap();
                    service
                        .stop_within(rt.as_ref(), STRESS_STOP_DEADLINE)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in join_all(tasks).await {
        task.unwrap();
    }
    service.stop().await;
}

async fn stress_on_the_base(rt: SharedRuntime) {
    let service = Arc::new(Scripted::default());
    stress(rt, service.clone()).await;
    assert!(!service.base.is_running());
    assert!(service.generations() >= 1);
}

async fn stress_on_a_closure_service(rt: SharedRuntime) {
    let (calls, generations) = Default::default();
    let service = Arc::new(counted_closure_service(&calls, &generations));
    stress(rt, service.clone()).await;
    assert!(!service.base().is_running());
    assert_eq!(calls.load(SeqCst), STRESS_TASKS * STRESS_ROUNDS);
}
