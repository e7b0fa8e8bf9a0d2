//! The component contract on every executor, with the component manager as
//! the component: signals that exist before start, one start only, a start
//! that never blocks, independent managers from one builder, and the abort
//! of a worker that ignores its stop token.

use std::future::pending;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use lifecycle::{
    Component, ComponentManager, ComponentManagerBuilder, FatalSlot, Latch, SharedRuntime, Signal,
    StartError, StopSource,
};
use lifecycle_conformance::{conformance, let_others_run, scope, DropProbe, Events};

conformance!(
    signals_exist_before_start_and_stay_the_same,
    second_start_is_rejected_without_effect,
    second_start_after_done_is_rejected,
    start_never_blocks,
    builder_builds_independent_managers,
    hung_worker_keeps_done_unset_until_abort,
);

/// Workers that call ready, count their runs, and serve until stopped.
fn serving_workers(workers: usize, runs: &Arc<AtomicUsize>) -> ComponentManagerBuilder {
    (0..workers).fold(ComponentManager::builder(), |builder, _| {
        let runs = runs.clone();
        builder.add_worker(move |ctx, ready| {
            runs.fetch_add(1, SeqCst);
            async move {
                ready.ready();
                ctx.stopped().await;
                Ok(())
            }
        })
    })
}

fn signals(component: &impl Component) -> [Signal; 3] {
    [
        component.ready(),
        component.shutdown_signal(),
        component.done(),
    ]
}

fn assert_same_signals(before: &[Signal; 3], component: &impl Component, when: &str) {
    let now = signals(component);
    for ((name, before), now) in ["ready", "shutdown", "done"].iter().zip(before).zip(&now) {
        assert!(
            before.same_as(now),
            "the {name} signal {when} is not the one obtained before start"
        );
    }
}

async fn signals_exist_before_start_and_stay_the_same(rt: SharedRuntime) {
    let runs = Arc::new(AtomicUsize::new(0));
    let manager = serving_workers(2, &runs).build();
    let before = signals(&manager);
    assert!(
        before.iter().all(|signal| !signal.is_set()),
        "a manager that was not started has no signal set"
    );
    assert!(!manager.is_started());

    let stop = StopSource::new();
    let slot = FatalSlot::new();
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    assert!(manager.is_started());
    assert_same_signals(&before, &manager, "after start");

    // Waiters registered on the early signals see the manager's life.
    before[0].wait().await;
    assert_same_signals(&before, &manager, "once ready");
    stop.stop();
    before[2].wait().await;
    assert!(before[1].is_set(), "done without the shutdown signal");
    assert_same_signals(&before, &manager, "after done");

    // A clone is a handle to the same manager.
    assert_same_signals(&before, &manager.clone(), "of a clone");
}

async fn second_start_is_rejected_without_effect(rt: SharedRuntime) {
    let runs = Arc::new(AtomicUsize::new(0));
    let manager = serving_workers(2, &runs).build();
    let stop = StopSource::new();
    let slot = FatalSlot::new();
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    manager.ready().wait().await;

    // The second start brings a stopped token: were it used, the manager
    // would shut down.
    let other_stop = StopSource::new();
    other_stop.stop();
    let other_slot = FatalSlot::new();
    let second = manager.start(scope(&rt, &other_stop, &other_slot));
    assert!(
        matches!(second, Err(StartError::AlreadyStarted)),
        "a second start must fail with AlreadyStarted, got {second:?}"
    );
    let third = manager.clone().start(scope(&rt, &stop, &slot));
    assert!(
        matches!(third, Err(StartError::AlreadyStarted)),
        "a start through a clone must fail with AlreadyStarted, got {third:?}"
    );

    let_others_run(&rt).await;
    assert_eq!(runs.load(SeqCst), 2, "a rejected start ran workers again");
    assert!(
        !manager.shutdown_signal().is_set(),
        "a rejected start with a stopped token shut the manager down"
    );
    assert!(!manager.done().is_set());
    assert!(!slot.is_recorded() && !other_slot.is_recorded());
    assert!(manager.is_started());

    stop.stop();
    manager.done().wait().await;
    assert_eq!(runs.load(SeqCst), 2);
}

async fn second_start_after_done_is_rejected(rt: SharedRuntime) {
    let runs = Arc::new(AtomicUsize::new(0));
    let manager = serving_workers(1, &runs).build();
    let stop = StopSource::new();
    let slot = FatalSlot::new();
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    stop.stop();
    manager.done().wait().await;
    let before = signals(&manager);

    let fresh_stop = StopSource::new();
    let fresh_slot = FatalSlot::new();
    let again = manager.start(scope(&rt, &fresh_stop, &fresh_slot));
    assert!(
        matches!(again, Err(StartError::AlreadyStarted)),
        "a start after done must fail with AlreadyStarted, got {again:?}"
    );
    let_others_run(&rt).await;
    assert_eq!(
        runs.load(SeqCst),
        1,
        "a start after done ran the worker again"
    );
    assert_same_signals(&before, &manager, "after a rejected start");
    assert!(
        before.iter().all(Signal::is_set),
        "a done manager stays done"
    );
    assert!(!fresh_stop.is_stopped() && !fresh_slot.is_recorded());

    // Also when the manager never got as far as ready.
    let never_ready = ComponentManager::builder()
        .add_worker(|_ctx, _ready| async { Ok(()) })
        .build();
    never_ready.start(scope(&rt, &stop, &slot)).unwrap();
    never_ready.done().wait().await;
    assert!(matches!(
        never_ready.start(scope(&rt, &fresh_stop, &fresh_slot)),
        Err(StartError::AlreadyStarted)
    ));
    assert!(!never_ready.ready().is_set());
}

async fn start_never_blocks(rt: SharedRuntime) {
    // Every worker waits for a gate that opens only once `start` has
    // returned: a start that waited for its workers (to be ready, to run)
    // would never return.
    const WORKERS: usize = 50;
    let gate = Latch::new();
    let entered = Arc::new(AtomicUsize::new(0));
    let builder = (0..WORKERS).fold(ComponentManager::builder(), |builder, _| {
        let gate = gate.clone();
        let entered = entered.clone();
        builder.add_worker(move |ctx, ready| {
            let gate = gate.clone();
            let entered = entered.clone();
            async move {
                entered.fetch_add(1, SeqCst);
                gate.wait().await;
                ready.ready();
                ctx.stopped().await;
                Ok(())
            }
        })
    });
    let manager = builder.build();
    assert_eq!(manager.worker_count(), WORKERS);
    let stop = StopSource::new();
    let slot = FatalSlot::new();
    assert!(manager.start(scope(&rt, &stop, &slot)).is_ok());
    assert!(
        !manager.ready().is_set(),
        "ready before any worker was let in"
    );
    gate.set();
    manager.ready().wait().await;
    assert_eq!(entered.load(SeqCst), WORKERS);
    stop.stop();
    manager.done().wait().await;

    // A manager whose only worker never gets as far as ready: start still
    // returns at once.
    let stuck = ComponentManager::builder()
        .add_worker(|ctx, _ready| async move {
            ctx.stopped().await;
            Ok(())
        })
        .build();
    let stop = StopSource::new();
    assert!(stuck.start(scope(&rt, &stop, &slot)).is_ok());
    stop.stop();
    stuck.done().wait().await;
    assert!(!stuck.ready().is_set());
}

async fn builder_builds_independent_managers(rt: SharedRuntime) {
    let events = Events::new();
    let builder = ComponentManager::builder()
        .add_worker({
            let events = events.clone();
            move |ctx, ready| {
                let events = events.clone();
                async move {
                    events.push("a");
                    ready.ready();
                    ctx.stopped().await;
                    Ok(())
                }
            }
        })
        .add_worker({
            let events = events.clone();
            move |ctx, ready| {
                let events = events.clone();
                async move {
                    events.push("b");
                    ready.ready();
                    ctx.stopped().await;
                    Ok(())
                }
            }
        });
    let first = builder.build();
    let second = builder.build();
    assert_eq!(first.worker_count(), 2);
    assert!(
        !first.ready().same_as(&second.ready()),
        "two builds share a signal"
    );

    let (stop_first, stop_second) = (StopSource::new(), StopSource::new());
    let slot = FatalSlot::new();
    first.start(scope(&rt, &stop_first, &slot)).unwrap();
    assert!(!second.is_started(), "starting one build started the other");
    second.start(scope(&rt, &stop_second, &slot)).unwrap();
    first.ready().wait().await;
    second.ready().wait().await;
    assert_eq!(
        events.count("a"),
        2,
        "each manager runs every worker afresh"
    );
    assert_eq!(
        events.count("b"),
        2,
        "each manager runs every worker afresh"
    );

    stop_first.stop();
    first.done().wait().await;
    let_others_run(&rt).await;
    assert!(
        !second.shutdown_signal().is_set(),
        "stopping one build shut the other down"
    );

    // The builder is still usable after building.
    let third = builder.build();
    third.start(scope(&rt, &stop_first, &slot)).unwrap();
    third.done().wait().await;
    assert_eq!(events.count("a"), 3);

    stop_second.stop();
    second.done().wait().await;
}

async fn hung_worker_keeps_done_unset_until_abort(rt: SharedRuntime) {
    let hung_dropped = Latch::new();
    let polite_returned = Latch::new();
    let manager = ComponentManager::builder()
        .add_worker({
            let hung_dropped = hung_dropped.clone();
            move |_ctx, ready| {
                let probe = DropProbe::on(&hung_dropped);
                async move {
                    let _probe = probe;
                    ready.ready();
                    // Ignores its stop token.
                    pending::<()>().await;
                    Ok(())
                }
            }
        })
        .add_worker({
            let polite_returned = polite_returned.clone();
            move |ctx, ready| {
                let probe = DropProbe::on(&polite_returned);
                async move {
                    let _probe = probe;
                    ready.ready();
                    ctx.stopped().await;
                    Ok(())
                }
            }
        })
        .build();
    let stop = StopSource::new();
    let slot = FatalSlot::new();
    manager.start(scope(&rt, &stop, &slot)).unwrap();
    manager.ready().wait().await;

    stop.stop();
    manager.shutdown_signal().wait().await;
    polite_returned.wait().await;
    let_others_run(&rt).await;
    assert!(
        !manager.done().is_set(),
        "done while a worker ignoring its stop token still runs"
    );
    assert!(!hung_dropped.is_set());

    manager.abort();
    manager.done().wait().await;
    assert!(
        hung_dropped.is_set(),
        "done before the aborted worker's future was dropped"
    );
    // Aborting again, after done, changes nothing.
    manager.abort();
    assert!(manager.done().is_set());
}
