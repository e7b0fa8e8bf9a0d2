//! The component manager on every executor: when ready, shutdown signal and
//! done are set, how fatal errors (returned, thrown, from sub-tasks, panics)
//! reach the parent, and the hard order "error delivered, then shutdown
//! signal, then done", with ready before done.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lifecycle::{
    Component, ComponentManager, FatalError, FatalHook, FatalSlot, JoinHandle, Latch, ReadyHandle,
    Reported, RuntimeExt, SharedRuntime, Signal, StopCause, StopSource, ThrowHandle, WorkerContext,
    WorkerPanic, WorkerResult,
};
use lifecycle_conformance::{
    conformance, eventually, let_others_run, scope, serve_until_stopped, when_set, yield_now,
    DropProbe, Events, WhenSet,
};

conformance!(
    ready_waits_for_every_worker,
    extra_ready_calls_are_ignored,
    worker_returning_without_ready_keeps_ready_unset,
    ready_handle_called_after_its_worker_returned,
    zero_workers_are_ready_shut_down_and_done_at_start,
    workers_returning_on_their_own_end_the_manager,
    parent_stop_shuts_the_manager_down,
    parent_stopped_before_start,
    first_fatal_error_stops_the_siblings,
    simultaneous_errors_deliver_exactly_one,
    throw_through_the_worker_context,
    throw_handle_from_a_sub_task,
    panicking_worker_is_a_fatal_error,
    worker_function_panicking_before_its_future_is_a_fatal_error,
    done_implies_every_worker_returned,
    error_shutdown_done_and_ready_are_ordered,
    error_shutdown_done_order_over_a_thousand_runs,
    ready_racing_done_is_set_before_done_or_never,
);

/// A hook that only counts: for runs that expect errors to reach it and do
/// not need their text.
fn counting_hook() -> (FatalHook, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let hook = FatalHook::new({
        let count = count.clone();
        move |_: &FatalError| {
            count.fetch_add(1, SeqCst);
        }
    });
    (hook, count)
}

/// Records, at the moment done is set, whether the shutdown signal (and
/// ready, when `ready_expected`) was set already.
struct DoneWatch {
    guard: WhenSet,
    seen: Arc<Mutex<Option<bool>>>,
}

impl DoneWatch {
    fn new(manager: &ComponentManager, ready_expected: bool) -> Self {
        let seen = Arc::new(Mutex::new(None));
        let guard = when_set(&manager.done(), {
            let (shutdown, ready, seen) =
                (manager.shutdown_signal(), manager.ready(), seen.clone());
            move || {
                let ordered = shutdown.is_set() && (!ready_expected || ready.is_set());
                *seen.lock().unwrap() = Some(ordered);
            }
        });
        Self { guard, seen }
    }

    async fn assert_ordered(&self) {
        self.guard.ran().wait().await;
        assert_eq!(
            *self.seen.lock().unwrap(),
            Some(true),
            "when done was set, the shutdown signal (or ready) was not set yet"
        );
    }
}

/// Starts `manager` under a fresh parent token, reporting to `slot`, and
/// returns the parent's stop source.
fn start(rt: &SharedRuntime, manager: &ComponentManager, slot: &FatalSlot) -> StopSource {
    let stop = StopSource::new();
    manager.start(scope(rt, &stop, slot)).unwrap();
    stop
}

/// Sets `gate` once every worker of `manager` is ready, then waits until the
/// manager is done.
async fn open_when_ready(manager: &ComponentManager, gate: &Latch) {
    manager.ready().wait().await;
    gate.set();
    manager.done().wait().await;
}

/// The future of a worker a helper below makes. Boxed: a function cannot
/// name the type of a closure's `async` block in its return type.
type WorkerFuture = BoxFuture<'static, WorkerResult>;

/// A worker that calls ready, waits for `gate` and then ends as `then`
/// does: with its result, or with its panic.
fn gated_worker(
    gate: &Latch,
    then: impl Fn() -> WorkerResult + Send + Sync + 'static,
) -> impl Fn(WorkerContext, ReadyHandle) -> WorkerFuture + Send + Sync + 'static {
    let gate = gate.clone();
    let then = Arc::new(then);
    move |_ctx, ready| {
        let (gate, then) = (gate.clone(), then.clone());
        Box::pin(async move {
            ready.ready();
            gate.wait().await;
            then()
        })
    }
}

/// A worker that waits for `gate`, then calls ready and serves until
/// stopped.
fn ready_once_opened(
    gate: &Latch,
) -> impl Fn(WorkerContext, ReadyHandle) -> WorkerFuture + Send + Sync + 'static {
    let gate = gate.clone();
    move |ctx, ready| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.wait().await;
            serve_until_stopped(ctx, ready).await
        })
    }
}

/// Takes the ready handle a worker handed over in `kept`.
fn take_handle(kept: &Mutex<Option<ReadyHandle>>, missing: &str) -> ReadyHandle {
    kept.lock().unwrap().take().expect(missing)
}

/// Fails, naming the first few, if any of `runs` runs found a violation.
fn assert_no_failed_runs(failed: &[(usize, Vec<String>)], runs: usize) {
    assert!(
        failed.is_empty(),
        "{} of {runs} runs broke the order: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

fn message(error: Option<FatalError>) -> Option<String> {
    error.map(|error| error.to_string())
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

async fn ready_waits_for_every_worker(rt: SharedRuntime) {
    let gates: Vec<Latch> = (0..3).map(|_| Latch::new()).collect();
    let builder = gates
        .iter()
        .fold(ComponentManager::builder(), |builder, gate| {
            builder.add_worker(ready_once_opened(gate))
        });
    let manager = builder.build();
    let stop = start(&rt, &manager, &FatalSlot::new());

    for (index, gate) in gates.iter().enumerate() {
        let_others_run(&rt).await;
        assert!(
            !manager.ready().is_set(),
            "ready before worker {index} called its ready handle"
        );
        gate.set();
    }
    manager.ready().wait().await;
    assert!(!manager.shutdown_signal().is_set() && !manager.done().is_set());

    stop.stop();
    manager.done().wait().await;
}

async fn extra_ready_calls_are_ignored(rt: SharedRuntime) {
    let eager_called = Latch::new();
    let late_gate = Latch::new();
    let manager = ComponentManager::builder()
        .add_worker({
            let eager_called = eager_called.clone();
            move |ctx, ready| {
                let eager_called = eager_called.clone();
                async move {
                    ready.ready();
                    ready.ready();
                    let copy = ready.clone();
                    drop(ready);
                    copy.ready();
                    copy.clone().ready();
                    eager_called.set();
                    ctx.stopped().await;
                    copy.ready();
                    Ok(())
                }
            }
        })
        .add_worker(ready_once_opened(&late_gate))
        .build();
    let slot = FatalSlot::new();
    let stop = start(&rt, &manager, &slot);

    eager_called.wait().await;
    let_others_run(&rt).await;
    assert!(
        !manager.ready().is_set(),
        "one worker calling ready several times made the manager ready"
    );
    late_gate.set();
    manager.ready().wait().await;

    stop.stop();
    manager.done().wait().await;
    assert!(manager.ready().is_set());
    assert!(!slot.is_recorded());
}

async fn worker_returning_without_ready_keeps_ready_unset(rt: SharedRuntime) {
    let quitter_returned = Latch::new();
    let server_saw_stop = Arc::new(Mutex::new(None));
    let manager = ComponentManager::builder()
        .add_worker({
            let server_saw_stop = server_saw_stop.clone();
            move |ctx, ready| {
                let server_saw_stop = server_saw_stop.clone();
                async move {
                    ready.ready();
                    ctx.stopped().await;
                    *server_saw_stop.lock().unwrap() = Some(ctx.is_stopped());
                    Ok(())
                }
            }
        })
        .add_worker({
            let quitter_returned = quitter_returned.clone();
            move |_ctx, _ready| {
                let probe = DropProbe::on(&quitter_returned);
                async move {
                    let _probe = probe;
                    yield_now().await;
                    Ok(())
                }
            }
        })
        .build();
    let slot = FatalSlot::new();
    let stop = start(&rt, &manager, &slot);

    quitter_returned.wait().await;
    let_others_run(&rt).await;
    assert!(
        !manager.ready().is_set(),
        "ready although a worker returned without calling ready"
    );
    assert!(
        !manager.shutdown_signal().is_set(),
        "one worker returning on its own shut the manager down while another runs"
    );
    assert!(!manager.done().is_set());
    assert!(server_saw_stop.lock().unwrap().is_none());

    stop.stop();
    manager.done().wait().await;
    let_others_run(&rt).await;
    assert!(
        !manager.ready().is_set(),
        "ready was set at or after done although a worker never called ready"
    );

    // A lone worker returning without ready: shutdown and done, never ready.
    let lone = ComponentManager::builder()
        .add_worker(|_ctx, _ready| async { Ok(()) })
        .build();
    let watch = DoneWatch::new(&lone, false);
    let stop = start(&rt, &lone, &slot);
    lone.done().wait().await;
    watch.assert_ordered().await;
    assert!(lone.shutdown_signal().is_set());
    let_others_run(&rt).await;
    assert!(!lone.ready().is_set());
    assert!(!stop.is_stopped());
}

async fn ready_handle_called_after_its_worker_returned(rt: SharedRuntime) {
    let kept: Arc<Mutex<Option<ReadyHandle>>> = Arc::default();
    let returned = Latch::new();
    let builder = ComponentManager::builder()
        .add_worker({
            let kept = kept.clone();
            let returned = returned.clone();
            move |_ctx, ready| {
                let kept = kept.clone();
                let probe = DropProbe::on(&returned);
                async move {
                    let _probe = probe;
                    // Hands its ready handle to someone else and returns.
                    *kept.lock().unwrap() = Some(ready);
                    Ok(())
                }
            }
        })
        .add_worker(serve_until_stopped);

    let manager = builder.build();
    let slot = FatalSlot::new();
    let stop = start(&rt, &manager, &slot);
    returned.wait().await;
    let handle = take_handle(&kept, "the worker kept no handle");
    let_others_run(&rt).await;
    assert!(!manager.ready().is_set());
    handle.ready();
    assert!(
        manager.ready().is_set(),
        "a ready handle called after its worker returned did not count"
    );
    stop.stop();
    manager.done().wait().await;

    // Called only once the manager is done: ready stays unset.
    let manager = builder.build();
    let stop = start(&rt, &manager, &slot);
    eventually(&rt, "the first worker handed its ready handle over", || {
        kept.lock().unwrap().is_some()
    })
    .await;
    let handle = take_handle(&kept, "the worker kept no handle");
    stop.stop();
    manager.done().wait().await;
    handle.ready();
    handle.ready();
    let_others_run(&rt).await;
    assert!(
        !manager.ready().is_set(),
        "a ready handle called after done set ready"
    );
}

async fn zero_workers_are_ready_shut_down_and_done_at_start(rt: SharedRuntime) {
    let manager = ComponentManager::builder().build();
    assert_eq!(manager.worker_count(), 0);
    assert!(!manager.ready().is_set() && !manager.shutdown_signal().is_set());
    assert!(!manager.done().is_set());

    let slot = FatalSlot::new();
    let stop = start(&rt, &manager, &slot);
    // Right after start, without awaiting anything.
    assert!(manager.ready().is_set(), "zero workers: not ready at start");
    assert!(
        manager.shutdown_signal().is_set(),
        "zero workers: no shutdown signal at start"
    );
    assert!(manager.done().is_set(), "zero workers: not done at start");
    assert!(
        !stop.is_stopped(),
        "an empty manager stopped its parent's token"
    );
    assert!(!slot.is_recorded());
    manager.done().wait().await;
}

async fn workers_returning_on_their_own_end_the_manager(rt: SharedRuntime) {
    let builder = (0..3_u64).fold(ComponentManager::builder(), |builder, index| {
        builder.add_worker(move |ctx, ready| async move {
            ready.ready();
            for _ in 0..index {
                yield_now().await;
            }
            if index == 2 {
                ctx.runtime().sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    });
    let manager = builder.build();
    let (hook, hooked) = counting_hook();
    let slot = FatalSlot::with_hook(hook);
    let watch = DoneWatch::new(&manager, true);
    let stop = start(&rt, &manager, &slot);

    manager.done().wait().await;
    watch.assert_ordered().await;
    assert!(manager.shutdown_signal().is_set());
    assert!(manager.ready().is_set());
    assert!(
        !stop.is_stopped(),
        "workers returning on their own stopped the parent's token"
    );
    assert!(stop.token().cause().is_none());
    assert!(!slot.is_recorded(), "a clean end reported a fatal error");
    assert_eq!(hooked.load(SeqCst), 0);
}

async fn parent_stop_shuts_the_manager_down(rt: SharedRuntime) {
    let saw_stop = Arc::new(AtomicUsize::new(0));
    let causes = Events::new();
    let builder = (0..2).fold(ComponentManager::builder(), |builder, _| {
        let saw_stop = saw_stop.clone();
        let causes = causes.clone();
        builder.add_worker(move |ctx, ready| {
            let saw_stop = saw_stop.clone();
            let causes = causes.clone();
            async move {
                ready.ready();
                ctx.stopped().await;
                saw_stop.fetch_add(1, SeqCst);
                let origin = ctx.token().origin_cause();
                causes.push(format!("{}", matches!(origin, Some(StopCause::Requested))));
                Ok(())
            }
        })
    });
    let manager = builder.build();
    let slot = FatalSlot::new();
    let watch = DoneWatch::new(&manager, true);
    let stop = start(&rt, &manager, &slot);
    manager.ready().wait().await;
    let_others_run(&rt).await;
    assert!(!manager.shutdown_signal().is_set());
    assert_eq!(saw_stop.load(SeqCst), 0, "a worker saw a stop before it");

    stop.stop();
    manager.shutdown_signal().wait().await;
    manager.done().wait().await;
    watch.assert_ordered().await;
    assert_eq!(saw_stop.load(SeqCst), 2);
    assert_eq!(
        causes.snapshot(),
        ["true", "true"],
        "the workers' token does not trace back to the parent's stop"
    );
    assert!(
        !slot.is_recorded(),
        "a parent stop is not a fatal error of the manager"
    );
}

async fn parent_stopped_before_start(rt: SharedRuntime) {
    let entered_stopped = Events::new();
    let builder = (0..2).fold(ComponentManager::builder(), |builder, _| {
        let entered_stopped = entered_stopped.clone();
        builder.add_worker(move |ctx, ready| {
            let entered_stopped = entered_stopped.clone();
            async move {
                entered_stopped.push(format!("{}", ctx.is_stopped()));
                ready.ready();
                ctx.stopped().await;
                Ok(())
            }
        })
    });
    let manager = builder.build();
    let stop = StopSource::new();
    stop.stop();
    let slot = FatalSlot::new();
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    assert!(
        manager.shutdown_signal().is_set(),
        "a manager started with a stopped token is not shut down right after start"
    );
    manager.done().wait().await;
    assert_eq!(
        entered_stopped.snapshot(),
        ["true", "true"],
        "the workers did not see a stopped token"
    );
    assert!(!slot.is_recorded());
}

async fn first_fatal_error_stops_the_siblings(rt: SharedRuntime) {
    let gate = Latch::new();
    let sibling_causes = Events::new();
    let builder = ComponentManager::builder()
        .add_worker(gated_worker(&gate, || Err(FatalError::msg("first"))));
    let builder = (1..3).fold(builder, |builder, index| {
        let sibling_causes = sibling_causes.clone();
        builder.add_worker(move |ctx, ready| {
            let sibling_causes = sibling_causes.clone();
            async move {
                ready.ready();
                ctx.stopped().await;
                let cause = ctx.token().cause();
                let cause = cause.as_ref().and_then(StopCause::fatal_error);
                sibling_causes.push(message(cause.cloned()).unwrap_or_default());
                Err(FatalError::msg(format!("late {index}")))
            }
        })
    });
    let manager = builder.build();
    let hooked = Events::new();
    let slot = FatalSlot::with_hook(hooked.hook());
    let watch = DoneWatch::new(&manager, true);
    let stop = start(&rt, &manager, &slot);
    open_when_ready(&manager, &gate).await;
    watch.assert_ordered().await;
    assert!(manager.shutdown_signal().is_set());
    assert_eq!(
        sibling_causes.snapshot(),
        ["first", "first"],
        "the siblings were not stopped by the first error"
    );
    assert_eq!(message(slot.take()).as_deref(), Some("first"));
    assert!(slot.take().is_none(), "the parent got a second error");
    assert_eq!(sorted(hooked.snapshot()), ["late 1", "late 2"]);
    assert_eq!(slot.unhandled_count(), 2);
    assert!(
        !stop.is_stopped(),
        "a worker's error stopped the parent's token"
    );
}

async fn simultaneous_errors_deliver_exactly_one(rt: SharedRuntime) {
    const WORKERS: usize = 4;
    for _ in 0..20 {
        let gate = Latch::new();
        let builder = (0..WORKERS).fold(ComponentManager::builder(), |builder, index| {
            builder.add_worker(gated_worker(&gate, move || {
                Err(FatalError::msg(format!("boom {index}")))
            }))
        });
        let manager = builder.build();
        let hooked = Events::new();
        let slot = FatalSlot::with_hook(hooked.hook());
        let _stop = start(&rt, &manager, &slot);
        open_when_ready(&manager, &gate).await;

        let first = message(slot.take()).expect("no error reached the parent");
        assert!(slot.take().is_none(), "the parent got two errors");
        assert_eq!(slot.unhandled_count(), WORKERS - 1);
        let mut all = hooked.snapshot();
        all.push(first);
        let expected: Vec<String> = (0..WORKERS).map(|i| format!("boom {i}")).collect();
        assert_eq!(sorted(all), expected, "an error was lost or reported twice");
    }
}

async fn throw_through_the_worker_context(rt: SharedRuntime) {
    let gate = Latch::new();
    let seen = Events::new();
    let slot = FatalSlot::with_hook(FatalHook::new(|_| {}));
    let manager = ComponentManager::builder()
        .add_worker({
            let gate = gate.clone();
            let seen = seen.clone();
            let slot = slot.clone();
            move |ctx, ready| {
                let (gate, seen, slot) = (gate.clone(), seen.clone(), slot.clone());
                async move {
                    ready.ready();
                    gate.wait().await;
                    let reported = ctx.throw(FatalError::msg("thrown"));
                    // Checked right after the throw returns.
                    seen.push(format!("{reported:?}"));
                    seen.push(format!("recorded {}", slot.is_recorded()));
                    seen.push(format!("stopped {}", ctx.is_stopped()));
                    let again = ctx.throw(FatalError::msg("thrown again"));
                    seen.push(format!("{again:?}"));
                    // A throw does not end the worker: it shuts down as usual.
                    ctx.stopped().await;
                    seen.push("returned");
                    Ok(())
                }
            }
        })
        .add_worker(serve_until_stopped)
        .build();
    let _stop = start(&rt, &manager, &slot);
    open_when_ready(&manager, &gate).await;

    assert_eq!(
        seen.snapshot(),
        [
            "First",
            "recorded true",
            "stopped true",
            "Unhandled",
            "returned"
        ]
    );
    assert_eq!(message(slot.take()).as_deref(), Some("thrown"));
    assert_eq!(slot.unhandled_count(), 1);
}

async fn throw_handle_from_a_sub_task(rt: SharedRuntime) {
    let gate = Latch::new();
    let seen = Events::new();
    let kept: Arc<Mutex<Option<ThrowHandle>>> = Arc::default();
    let manager = ComponentManager::builder()
        .add_worker({
            let gate = gate.clone();
            let seen = seen.clone();
            move |ctx, ready| {
                let (gate, seen) = (gate.clone(), seen.clone());
                async move {
                    ready.ready();
                    let throw = ctx.throw_handle();
                    let sub_task = ctx.runtime().spawn(async move {
                        gate.wait().await;
                        throw.throw(FatalError::msg("from a sub-task"))
                    });
                    ctx.stopped().await;
                    match sub_task.await {
                        Ok(reported) => seen.push(format!("{reported:?}")),
                        Err(error) => seen.push(format!("sub-task failed: {error}")),
                    }
                    Ok(())
                }
            }
        })
        .add_worker({
            let kept = kept.clone();
            move |ctx, ready| {
                *kept.lock().unwrap() = Some(ctx.throw_handle());
                async move {
                    ready.ready();
                    ctx.stopped().await;
                    Ok(())
                }
            }
        })
        .build();
    let hooked = Events::new();
    let slot = FatalSlot::with_hook(hooked.hook());
    let _stop = start(&rt, &manager, &slot);
    open_when_ready(&manager, &gate).await;

    assert_eq!(seen.snapshot(), ["First"]);
    assert_eq!(message(slot.take()).as_deref(), Some("from a sub-task"));
    assert!(hooked.is_empty());

    // A handle kept past done: its throw goes to the hook.
    let handle = kept.lock().unwrap().take().expect("no handle kept");
    assert_eq!(
        handle.throw(FatalError::msg("after done")),
        Reported::Unhandled
    );
    assert_eq!(hooked.snapshot(), ["after done"]);
    assert!(slot.take().is_none());
    assert!(manager.done().is_set());
}

async fn panicking_worker_is_a_fatal_error(rt: SharedRuntime) {
    let gate = Latch::new();
    let sibling_stopped = Latch::new();
    let manager = ComponentManager::builder()
        .add_worker(serve_until_stopped)
        .add_worker(gated_worker(&gate, || panic!("kaboom {}", 7)))
        .add_worker({
            let sibling_stopped = sibling_stopped.clone();
            move |ctx, ready| {
                let sibling_stopped = sibling_stopped.clone();
                async move {
                    ready.ready();
                    ctx.stopped().await;
                    sibling_stopped.set();
                    Ok(())
                }
            }
        })
        .build();
    let hooked = Events::new();
    let slot = FatalSlot::with_hook(hooked.hook());
    let stop = start(&rt, &manager, &slot);
    open_when_ready(&manager, &gate).await;

    assert!(
        sibling_stopped.is_set(),
        "a panic did not stop the siblings"
    );
    let error = assert_worker_panic(slot.take(), 1, "kaboom 7");
    assert!(error.to_string().contains("kaboom 7"));
    assert!(hooked.is_empty());

    // A panic while shutting down, after a first error, reaches the hook.
    let manager = ComponentManager::builder()
        .add_worker(|_ctx, ready| async move {
            ready.ready();
            Err(FatalError::msg("first"))
        })
        .add_worker(|ctx, ready| async move {
            ready.ready();
            ctx.stopped().await;
            panic!("panicked while shutting down");
        })
        .build();
    let slot = FatalSlot::with_hook(hooked.hook());
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    manager.done().wait().await;
    assert_eq!(message(slot.take()).as_deref(), Some("first"));
    let late = hooked.snapshot();
    assert_eq!(late.len(), 1, "the late panic was lost: {late:?}");
    assert!(late[0].contains("panicked while shutting down"), "{late:?}");
}

/// Asserts that the parent received worker `worker`'s panic with
/// `message`; returns the error.
fn assert_worker_panic(received: Option<FatalError>, worker: usize, message: &str) -> FatalError {
    let error = received.expect("the panic did not reach the parent");
    assert_eq!(
        error.downcast_ref::<WorkerPanic>(),
        Some(&WorkerPanic {
            worker,
            message: message.into()
        }),
        "the fatal error is not the worker's panic: {error}"
    );
    error
}

/// A worker function that panics while making its future (before any
/// `async` block): the same worker panic, from its task, never out of
/// `start` and never a manager that cannot finish.
async fn worker_function_panicking_before_its_future_is_a_fatal_error(rt: SharedRuntime) {
    let manager = ComponentManager::builder()
        .add_worker(serve_until_stopped)
        .add_worker(
            |_ctx, _ready| -> std::future::Ready<lifecycle::WorkerResult> {
                panic!("no config file")
            },
        )
        .build();
    let stop = StopSource::new();
    let hooked = Events::new();
    let slot = FatalSlot::with_hook(hooked.hook());
    assert!(manager.start(scope(&rt, &stop, &slot)).is_ok());
    manager.done().wait().await;

    assert_worker_panic(slot.take(), 1, "no config file");
    assert!(
        !manager.ready().is_set(),
        "the panicking worker never called ready"
    );
    assert!(hooked.is_empty());
}

/// Probes, one per worker, set when the worker's future is dropped.
fn probes(count: usize) -> Vec<Latch> {
    (0..count).map(|_| Latch::new()).collect()
}

async fn done_implies_every_worker_returned(rt: SharedRuntime) {
    const WORKERS: usize = 5;
    // How the manager ends: a parent stop, a fatal error, or the workers
    // returning on their own.
    for ending in ["stop", "error", "return"] {
        // Set when a worker's body returns, and when its future is dropped.
        let returned = probes(WORKERS);
        let dropped = probes(WORKERS);
        let builder = returned.iter().zip(&dropped).enumerate().fold(
            ComponentManager::builder(),
            |builder, (index, (returned, dropped))| {
                let (returned, dropped) = (returned.clone(), dropped.clone());
                builder.add_worker(move |ctx, ready| {
                    let returned = DropProbe::on(&returned);
                    let body = async move {
                        let _returned = returned;
                        ready.ready();
                        if ending == "error" && index == 0 {
                            return Err(FatalError::msg("boom"));
                        }
                        if ending != "return" {
                            ctx.stopped().await;
                        }
                        // Each worker takes its own time to shut down.
                        for _ in 0..index {
                            yield_now().await;
                        }
                        ctx.runtime()
                            .sleep(Duration::from_millis(index as u64))
                            .await;
                        Ok(())
                    };
                    DropProbe::on(&dropped).hold(body)
                })
            },
        );
        let manager = builder.build();
        let alive = |probes: &[Latch]| probes.iter().filter(|p| !p.is_set()).count();
        // Checked at the moment done is set, and by a task woken by done.
        let at_done = Arc::new(Mutex::new(None));
        let on_done = when_set(&manager.done(), {
            let (returned, dropped, at_done) = (returned.clone(), dropped.clone(), at_done.clone());
            move || *at_done.lock().unwrap() = Some((alive(&returned), alive(&dropped)))
        });
        let watcher = rt.spawn({
            let done = manager.done();
            let (returned, dropped) = (returned.clone(), dropped.clone());
            async move {
                done.wait().await;
                (alive(&returned), alive(&dropped))
            }
        });
        let stop = start(&rt, &manager, &FatalSlot::new());
        manager.ready().wait().await;
        if ending == "stop" {
            stop.stop();
        }
        manager.done().wait().await;
        on_done.ran().wait().await;
        assert_eq!(
            *at_done.lock().unwrap(),
            Some((0, 0)),
            "done ({ending}) was set while (workers running, worker futures alive)"
        );
        assert_eq!(
            watcher.await,
            Ok((0, 0)),
            "a task woken by done ({ending}) saw (workers running, worker futures alive)"
        );
    }
}

/// What an observer of one manager run found wrong, checked at the moment it
/// sees each signal set.
#[derive(Default)]
struct Violations(Mutex<Vec<String>>);

impl Violations {
    fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.0.lock().unwrap().push(what.to_owned());
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The signals, the parent's slot and the worker probes of one run.
#[derive(Clone)]
struct Observed {
    ready: Signal,
    shutdown: Signal,
    done: Signal,
    slot: FatalSlot,
    returned: Vec<Latch>,
    violations: Arc<Violations>,
    /// Whether ready was set when done was first seen set, by each observer.
    ready_at_done: Arc<Mutex<Vec<bool>>>,
}

impl Observed {
    fn new(manager: &ComponentManager, slot: &FatalSlot, returned: &[Latch]) -> Self {
        Self {
            ready: manager.ready(),
            shutdown: manager.shutdown_signal(),
            done: manager.done(),
            slot: slot.clone(),
            returned: returned.to_vec(),
            violations: Arc::default(),
            ready_at_done: Arc::default(),
        }
    }

    /// Checks made once done is seen set. Reads go against the order the
    /// manager sets things in, so a reversed order shows.
    fn at_done(&self) {
        self.violations
            .check(self.shutdown.is_set(), "done before the shutdown signal");
        self.violations.check(
            self.slot.is_recorded(),
            "done before the error reached the parent",
        );
        self.violations.check(
            self.returned.iter().all(Latch::is_set),
            "done before every worker returned",
        );
        let ready = self.ready.is_set();
        self.ready_at_done.lock().unwrap().push(ready);
    }

    /// Checks made once the shutdown signal is seen set (this run's only
    /// cause of shutdown is the error).
    fn at_shutdown(&self) {
        self.violations.check(
            self.slot.is_recorded(),
            "shutdown signal before the error reached the parent",
        );
    }

    /// Checks run by the thread that sets each signal, at the moment it sets
    /// it: exact, whatever the scheduling.
    fn watch_synchronously(&self) -> SyncWatches {
        let this = self.clone();
        let shutdown = when_set(&self.shutdown, move || this.at_shutdown());
        let this = self.clone();
        let done = when_set(&self.done, move || this.at_done());
        SyncWatches { shutdown, done }
    }

    /// Observers, spawned before the manager starts: one waiting for each
    /// signal, and one polling all of them in a loop.
    fn spawn_observers(&self, rt: &SharedRuntime) -> Vec<JoinHandle<()>> {
        let on_shutdown = rt.spawn({
            let this = self.clone();
            async move {
                this.shutdown.wait().await;
                this.at_shutdown();
            }
        });
        let on_done = rt.spawn({
            let this = self.clone();
            async move {
                this.done.wait().await;
                this.at_done();
            }
        });
        let polling = rt.spawn({
            let this = self.clone();
            async move {
                loop {
                    let done = this.done.is_set();
                    if this.shutdown.is_set() {
                        this.at_shutdown();
                    }
                    if done {
                        this.at_done();
                        return;
                    }
                    yield_now().await;
                }
            }
        });
        vec![on_shutdown, on_done, polling]
    }

    /// Joins the observers and returns every violation, including "ready set
    /// after done".
    async fn finish(&self, observers: Vec<JoinHandle<()>>) -> Vec<String> {
        for observer in observers {
            observer.await.unwrap();
        }
        let ready_now = self.ready.is_set();
        let at_done = self.ready_at_done.lock().unwrap().clone();
        let mut violations = self.violations.take();
        if ready_now && at_done.contains(&false) {
            violations.push("ready set after done".to_owned());
        }
        violations
    }
}

/// The synchronous checks of one run. (Ready gets none of its own: a check
/// run when ready is set could only ask whether done is set yet, and the
/// thread that set ready may run its callbacks after others have moved on.
/// "Ready before done" is checked from done's side: ready is recorded at
/// done and compared with ready at the end.)
struct SyncWatches {
    shutdown: WhenSet,
    done: WhenSet,
}

impl SyncWatches {
    /// Waits, once done is set, until both checks have run: the thread that
    /// set a signal runs its check a moment after others can see it.
    async fn settle(&self) {
        self.shutdown.ran().wait().await;
        self.done.ran().wait().await;
    }
}

/// One run: worker 0 throws, worker 1 (sometimes never ready) throws again
/// while shutting down, worker 2 shuts down cleanly. `variant` varies the
/// interleaving.
async fn observed_run(rt: &SharedRuntime, variant: usize) -> Vec<String> {
    let returned = probes(3);
    let (hook, hooked) = counting_hook();
    let slot = FatalSlot::with_hook(hook);
    let calls_ready = variant % 3 != 0;
    let throws_late = variant % 2 == 0;
    let manager = ComponentManager::builder()
        .add_worker({
            let probe = returned[0].clone();
            move |_ctx, ready| {
                let probe = DropProbe::on(&probe);
                async move {
                    let _probe = probe;
                    ready.ready();
                    for _ in 0..variant % 4 {
                        yield_now().await;
                    }
                    Err(FatalError::msg("boom"))
                }
            }
        })
        .add_worker({
            let probe = returned[1].clone();
            move |ctx, ready| {
                let probe = DropProbe::on(&probe);
                async move {
                    let _probe = probe;
                    if calls_ready {
                        ready.ready();
                    }
                    ctx.stopped().await;
                    if throws_late {
                        Err(FatalError::msg("late"))
                    } else {
                        Ok(())
                    }
                }
            }
        })
        .add_worker({
            let probe = returned[2].clone();
            move |ctx, ready| {
                let probe = DropProbe::on(&probe);
                async move {
                    let _probe = probe;
                    yield_now().await;
                    ready.ready();
                    ctx.stopped().await;
                    Ok(())
                }
            }
        })
        .build();
    let observed = Observed::new(&manager, &slot, &returned);
    let watches = observed.watch_synchronously();
    let observers = observed.spawn_observers(rt);
    let stop = start(rt, &manager, &slot);
    manager.done().wait().await;
    watches.settle().await;
    let mut violations = observed.finish(observers).await;
    drop(watches);
    if message(slot.take()).as_deref() != Some("boom") {
        violations.push("the parent did not get the first error".to_owned());
    }
    if hooked.load(SeqCst) != usize::from(throws_late) {
        violations.push(format!(
            "{} errors reached the hook, expected {}",
            hooked.load(SeqCst),
            usize::from(throws_late)
        ));
    }
    if calls_ready != manager.ready().is_set() {
        violations.push(format!(
            "ready is {} although every worker calling ready is {calls_ready}",
            manager.ready().is_set()
        ));
    }
    if stop.is_stopped() {
        violations.push("the parent's token was stopped".to_owned());
    }
    violations
}

async fn error_shutdown_done_and_ready_are_ordered(rt: SharedRuntime) {
    for variant in 0..12 {
        let violations = observed_run(&rt, variant).await;
        assert!(violations.is_empty(), "variant {variant}: {violations:?}");
    }
}

async fn error_shutdown_done_order_over_a_thousand_runs(rt: SharedRuntime) {
    const RUNS: usize = 1_000;
    let mut failed = Vec::new();
    for run in 0..RUNS {
        let violations = observed_run(&rt, run).await;
        if !violations.is_empty() {
            failed.push((run, violations));
        }
    }
    assert_no_failed_runs(&failed, RUNS);
}

async fn ready_racing_done_is_set_before_done_or_never(rt: SharedRuntime) {
    // The last ready call races with the last worker returning: either ready
    // is never set, or it is set before done.
    const RUNS: usize = 1_000;
    let mut failed = Vec::new();
    for run in 0..RUNS {
        let kept: Arc<Mutex<Option<ReadyHandle>>> = Arc::default();
        let handed = Latch::new();
        let gate = Latch::new();
        let manager = ComponentManager::builder()
            .add_worker({
                let (kept, handed, gate) = (kept.clone(), handed.clone(), gate.clone());
                move |_ctx, ready| {
                    *kept.lock().unwrap() = Some(ready);
                    handed.set();
                    let gate = gate.clone();
                    async move {
                        gate.wait().await;
                        Ok(())
                    }
                }
            })
            .add_worker(gated_worker(&gate, || Ok(())))
            .build();
        let violations = Arc::new(Violations::default());
        let ready_at_done = Arc::new(Mutex::new(None));
        let on_done = when_set(&manager.done(), {
            let (ready, shutdown) = (manager.ready(), manager.shutdown_signal());
            let (violations, ready_at_done) = (violations.clone(), ready_at_done.clone());
            move || {
                violations.check(shutdown.is_set(), "done before the shutdown signal");
                *ready_at_done.lock().unwrap() = Some(ready.is_set());
            }
        });
        let _stop = start(&rt, &manager, &FatalSlot::new());
        handed.wait().await;
        let handle = take_handle(&kept, "no ready handle handed over");
        if run % 3 == 0 {
            gate.set();
            handle.ready();
        } else {
            let caller = rt.spawn(async move {
                if run % 3 == 2 {
                    yield_now().await;
                }
                handle.ready();
            });
            gate.set();
            caller.await.unwrap();
        }
        manager.done().wait().await;
        on_done.ran().wait().await;
        drop(on_done);
        let mut found = violations.take();
        let ready_at_done = ready_at_done.lock().unwrap().expect("done was not seen");
        if manager.ready().is_set() && !ready_at_done {
            found.push("ready set after done".to_owned());
        }
        if !found.is_empty() {
            failed.push((run, found));
        }
    }
    assert_no_failed_runs(&failed, RUNS);
}
