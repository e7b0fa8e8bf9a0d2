//! Loom models of the latch, the stop token and the component manager's
//! ready/done counting.
//!
//! Run with
//! `LOOM_MAX_PREEMPTIONS=4 RUSTFLAGS="--cfg loom" cargo test -p lifecycle --test loom --release`
//! (unbounded, the manager models take hours; the largest is held to
//! `LARGEST_MODEL_PREEMPTIONS`).
//! Under `cfg(loom)` the crate's atomics and locks are loom's, so every
//! interleaving of their operations is explored.

#![cfg(loom)]

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use lifecycle::{Latch, StopCause, StopSource};
use loom::cell::UnsafeCell;
use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn latch_publishes_writes_made_before_set() {
    loom::model(|| {
        let latch = Latch::new();
        let data = Arc::new(UnsafeCell::new(0));
        let setter = {
            let (latch, data) = (latch.clone(), data.clone());
            thread::spawn(move || {
                // SAFETY: the only write, made before `set`; the reader reads
                // only after observing the latch set, and loom checks that
                // this is a happens-before edge.
                data.with_mut(|value| unsafe { *value = 42 });
                latch.set();
            })
        };
        block_on(latch.wait());
        // SAFETY: the latch is set, so the write above happened before this.
        let seen = data.with(|value| unsafe { *value });
        assert_eq!(seen, 42);
        setter.join().unwrap();
    });
}

#[test]
fn latch_wakes_every_waiter() {
    loom::model(|| {
        let latch = Latch::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let latch = latch.clone();
                thread::spawn(move || block_on(latch.wait()))
            })
            .collect();
        assert!(latch.set());
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn latch_waiter_dropped_during_set() {
    loom::model(|| {
        let latch = Latch::new();
        let dropper = {
            let latch = latch.clone();
            thread::spawn(move || {
                let mut wait = pin!(latch.wait());
                let _ = poll_once(wait.as_mut());
                // dropped here, racing with `set`
            })
        };
        assert!(latch.set());
        dropper.join().unwrap();
        // A new waiter still completes at once.
        block_on(latch.wait());
    });
}

#[test]
fn parent_and_child_stops_race_to_one_cause() {
    loom::model(|| {
        let root = StopSource::new();
        let child = root.child();
        let parent_stopper = {
            let root = root.clone();
            thread::spawn(move || root.stop())
        };
        let child_won = child.stop_with(StopCause::Timeout);
        assert!(
            parent_stopper.join().unwrap(),
            "nothing else stops the root"
        );
        let cause = child.token().cause();
        if child_won {
            assert!(matches!(cause, Some(StopCause::Timeout)));
        } else {
            assert!(matches!(cause, Some(StopCause::ParentStopped)));
        }
    });
}

#[test]
fn a_child_created_during_a_parent_stop_ends_up_stopped() {
    loom::model(|| {
        let root = StopSource::new();
        let stopper = {
            let root = root.clone();
            thread::spawn(move || root.stop())
        };
        let child = root.token().child();
        let token = child.token();
        block_on(token.stopped());
        assert!(matches!(token.cause(), Some(StopCause::ParentStopped)));
        stopper.join().unwrap();
    });
}

#[test]
fn a_child_dropped_during_a_parent_stop() {
    loom::model(|| {
        let root = StopSource::new();
        let child = root.child();
        let dropper = thread::spawn(move || drop(child));
        root.stop();
        dropper.join().unwrap();
        // The root's list is consistent: new children are born stopped.
        assert!(root.child().is_stopped());
    });
}

#[test]
fn a_chain_dropped_from_its_leaf_during_a_stop_of_its_root() {
    // The leaf holds the only handle on the middle node, so its drop
    // unlinks the middle node from the root and drops it too, while the
    // root's stop may be upgrading the middle node from its child list:
    // loom checks the unlink and the stop's visits for races on the nodes'
    // guarded state.
    loom::model(|| {
        let root = StopSource::new();
        let leaf = root.child().child();
        let dropper = thread::spawn(move || drop(leaf));
        root.stop();
        dropper.join().unwrap();
        assert!(root.child().is_stopped());
    });
}

#[test]
fn a_child_never_stops_its_parent() {
    loom::model(|| {
        let root = StopSource::new();
        let child = root.child();
        let waiter = {
            let token = child.token();
            thread::spawn(move || block_on(token.stopped()))
        };
        child.stop();
        waiter.join().unwrap();
        assert!(!root.is_stopped());
    });
}

#[test]
fn waiters_on_a_grandchild_are_woken_by_the_root() {
    loom::model(|| {
        let root = StopSource::new();
        let grandchild = root.child().child();
        let waiter = {
            let token = grandchild.token();
            thread::spawn(move || block_on(token.stopped()))
        };
        root.stop();
        waiter.join().unwrap();
        assert!(matches!(
            grandchild.token().origin_cause(),
            Some(StopCause::Requested)
        ));
    });
}

/// Runs every task on a loom thread of its own.
struct LoomThreads;

impl lifecycle::Runtime for LoomThreads {
    fn spawn_detached(&self, task: lifecycle::BoxFuture) {
        thread::spawn(move || block_on(task));
    }

    fn sleep(&self, _duration: std::time::Duration) -> lifecycle::BoxFuture {
        Box::pin(std::future::pending())
    }

    fn now(&self) -> lifecycle::Instant {
        lifecycle::Instant::default()
    }
}

fn scope(stop: &StopSource, fatal: &lifecycle::FatalSlot) -> lifecycle::Scope {
    lifecycle::Scope::new(
        std::sync::Arc::new(LoomThreads),
        stop.token(),
        fatal.clone(),
    )
}

#[test]
fn manager_is_ready_before_done_when_both_workers_return() {
    use lifecycle::{Component, ComponentManager};
    loom::model(|| {
        let returned = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let worker = {
            let returned = returned.clone();
            move |_ctx, ready: lifecycle::ReadyHandle| {
                let returned = returned.clone();
                async move {
                    ready.ready();
                    returned.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            }
        };
        let manager = ComponentManager::builder()
            .add_worker(worker.clone())
            .add_worker(worker)
            .build();
        let (stop, fatal) = (StopSource::new(), lifecycle::FatalSlot::new());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.done().wait());
        assert!(manager.ready().is_set(), "ready is set before done");
        assert!(manager.shutdown_signal().is_set());
        assert_eq!(
            returned.load(loom::sync::atomic::Ordering::Relaxed),
            2,
            "done proves every worker returned"
        );
        assert!(
            !stop.is_stopped(),
            "workers returning never stop the parent"
        );
    });
}

#[test]
fn manager_started_while_its_parent_stops_shuts_down() {
    use lifecycle::{Component, ComponentManager};
    loom::model(|| {
        // Start attaches the manager's scope under the parent's token while
        // another thread stops the parent: whichever comes first, the
        // worker sees its stop and the manager gets done.
        let manager = ComponentManager::builder()
            .add_worker(|ctx, _ready| async move {
                ctx.stopped().await;
                Ok(())
            })
            .build();
        let (stop, fatal) = (StopSource::new(), lifecycle::FatalSlot::new());
        let stopper = {
            let stop = stop.clone();
            thread::spawn(move || stop.stop())
        };
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.done().wait());
        stopper.join().unwrap();
        assert!(manager.shutdown_signal().is_set());
    });
}

#[test]
fn manager_never_readies_after_done() {
    use lifecycle::{Component, ComponentManager};
    loom::model(|| {
        // Worker 0 hands its ready handle out and returns without calling
        // it; worker 1 calls its own and returns. A thread that is not a
        // worker calls the handed-out handle, racing with done: ready may
        // be set before done or never, but never after.
        let handed_out = Arc::new(loom::sync::Mutex::new(None::<lifecycle::ReadyHandle>));
        let manager = ComponentManager::builder()
            .add_worker({
                let handed_out = handed_out.clone();
                move |_ctx, ready| {
                    let handed_out = handed_out.clone();
                    async move {
                        *handed_out.lock().unwrap() = Some(ready);
                        Ok(())
                    }
                }
            })
            .add_worker(|_ctx, ready: lifecycle::ReadyHandle| async move {
                ready.ready();
                Ok(())
            })
            .build();
        let (stop, fatal) = (StopSource::new(), lifecycle::FatalSlot::new());
        manager.start(scope(&stop, &fatal)).unwrap();
        let late_caller = {
            let handed_out = handed_out.clone();
            thread::spawn(move || {
                if let Some(ready) = handed_out.lock().unwrap().take() {
                    ready.ready();
                }
            })
        };
        block_on(manager.done().wait());
        let ready_at_done = manager.ready().is_set();
        late_caller.join().unwrap();
        assert_eq!(
            manager.ready().is_set(),
            ready_at_done,
            "ready set after done"
        );
        // Break the cycle handle -> manager -> worker closure -> handle.
        handed_out.lock().unwrap().take();
    });
}

/// The most preemptions the largest manager model explores, whatever
/// `LOOM_MAX_PREEMPTIONS` allows above it: three threads and the fatal
/// slot's, the stop's and the counts' atomics make each preemption more
/// costly by about eight times (four take 9 to 15 minutes on two cores,
/// three one minute). The ordering bugs the model was checked against
/// show within two.
const LARGEST_MODEL_PREEMPTIONS: usize = 3;

/// Explores `model` as `loom::model` does, with at most `most` preemptions.
fn model_within(most: usize, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.map_or(most, |set| set.min(most)));
    builder.check(model);
}

#[test]
fn manager_reports_the_first_error_before_its_shutdown_signal() {
    use lifecycle::{Component, ComponentManager, FatalError};
    model_within(LARGEST_MODEL_PREEMPTIONS, || {
        let manager = ComponentManager::builder()
            .add_worker(|_ctx, _ready| async { Err(FatalError::msg("first")) })
            .add_worker(|ctx: lifecycle::WorkerContext, _ready| async move {
                ctx.stopped().await;
                Ok(())
            })
            .build();
        let (stop, fatal) = (StopSource::new(), lifecycle::FatalSlot::new());
        manager.start(scope(&stop, &fatal)).unwrap();
        block_on(manager.shutdown_signal().wait());
        assert!(
            fatal.is_recorded(),
            "the error is delivered before shutdown"
        );
        block_on(manager.done().wait());
        assert_eq!(fatal.take().map(|e| e.to_string()), Some("first".into()));
        assert!(!manager.ready().is_set());
    });
}

// ---------------------------------------------------------------------------
// The service base's generation state machine. The models drive generations
// by hand (`begin`, then the handles from loom threads), so nothing is ever
// spawned.

/// A runtime the service models never spawn on: a spawn is a bug in the
/// model.
struct NoTasks;

impl lifecycle::Runtime for NoTasks {
    fn spawn_detached(&self, _task: lifecycle::BoxFuture) {
        panic!("the service models spawn no task");
    }

    fn sleep(&self, _duration: std::time::Duration) -> lifecycle::BoxFuture {
        Box::pin(std::future::pending())
    }

    fn now(&self) -> lifecycle::Instant {
        lifecycle::Instant::default()
    }
}

fn service_scope(parent: &StopSource) -> lifecycle::Scope {
    lifecycle::Scope::new(
        std::sync::Arc::new(NoTasks),
        parent.token(),
        lifecycle::FatalSlot::new(),
    )
}

#[test]
fn service_concurrent_begins_begin_one_generation() {
    use lifecycle::StartStop;
    loom::model(|| {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        // Asked for before the start: the generation that begins adopts them.
        let (started, stopped) = (base.started(), base.stopped());
        let other = {
            let (base, scope) = (base.clone(), scope.clone());
            thread::spawn(move || block_on(base.begin(&scope)))
        };
        // Asked for during the begins: the same latches, before and after.
        let querier = {
            let (base, started, stopped) = (base.clone(), started.clone(), stopped.clone());
            thread::spawn(move || {
                assert!(base.stopped().same_as(&stopped));
                assert!(base.started().same_as(&started));
            })
        };
        let mine = block_on(base.begin(&scope));
        let theirs = other.join().unwrap();
        querier.join().unwrap();
        let generation = match (mine, theirs) {
            (Some(generation), None) | (None, Some(generation)) => generation,
            (mine, theirs) => panic!(
                "exactly one of two concurrent begins begins a generation: {:?} and {:?}",
                mine.is_some(),
                theirs.is_some()
            ),
        };
        assert!(base.is_running());
        assert!(base.started().same_as(&started) && base.stopped().same_as(&stopped));
        generation.started.set();
        assert!(started.is_set() && !stopped.is_set());
        // The work's last stopped handle goes: the generation ends.
        drop(generation);
        assert!(stopped.is_set() && !base.is_running());
        block_on(base.stop());
        assert!(block_on(base.stop_init()).is_none(), "idle after the stop");
    });
}

/// Begins a generation of `base` whose work, on a thread of its own,
/// returns once the generation's scope is stopped; returns the token of
/// that scope, the generation's stopped latch and the work's thread.
fn begin_work_until_stopped(
    base: &lifecycle::StartStop,
    scope: &lifecycle::Scope,
) -> (
    lifecycle::StopToken,
    lifecycle::Signal,
    thread::JoinHandle<()>,
) {
    let generation = block_on(base.begin(scope)).unwrap();
    let stopped = base.stopped();
    let token = generation.scope.token().clone();
    let handle = generation.stopped;
    let work = {
        let token = token.clone();
        thread::spawn(move || {
            block_on(token.stopped());
            handle.set();
        })
    };
    (token, stopped, work)
}

#[test]
fn service_begin_during_a_stop_waits_for_it() {
    use lifecycle::StartStop;
    loom::model(|| {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        let (token1, stopped1, work) = begin_work_until_stopped(&base, &scope);
        let stopper = {
            let base = base.clone();
            thread::spawn(move || block_on(base.stop()))
        };
        // Before the stop: a no-op while the work runs. During or after it:
        // waits for it, then begins the next generation.
        let second = block_on(base.begin(&scope));
        if second.is_some() {
            assert!(
                stopped1.is_set(),
                "a generation began while the last one's work ran"
            );
        }
        stopper.join().unwrap();
        work.join().unwrap();
        assert!(stopped1.is_set(), "the stop returned before the work ended");
        assert!(matches!(token1.cause(), Some(StopCause::ServiceStopped)));
        match second {
            Some(generation) => {
                assert!(base.is_running());
                let stopped2 = base.stopped();
                assert!(!stopped2.same_as(&stopped1) && !stopped2.is_set());
                assert!(
                    !generation.scope.token().is_stopped(),
                    "the stop of the last generation stopped the next one"
                );
                drop(generation);
                block_on(base.stop());
                assert!(stopped2.is_set());
            }
            None => {
                assert!(!base.is_running());
                let last = base.stopped_unchecked().expect("the last generation's");
                assert!(last.same_as(&stopped1));
            }
        }
        assert!(block_on(base.stop_init()).is_none(), "idle at the end");
    });
}

#[test]
fn service_stale_handles_never_touch_the_next_generation_after_a_stop() {
    use lifecycle::{Generation, StartStop};
    loom::model(|| {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        let Generation {
            scope: scope1,
            started: started1,
            stopped: stopped1,
        } = block_on(base.begin(&scope)).unwrap();
        // Generation 1's handles, called late and twice, racing with its
        // stop and the next start. Its work ends with the first stopped
        // call, so the stop can complete.
        let stale = thread::spawn(move || {
            started1.set();
            stopped1.set();
            started1.set();
            stopped1.set();
        });
        block_on(base.stop());
        let generation2 = block_on(base.begin(&scope)).expect("idle after the stop");
        let (started2, stopped2) = (base.started(), base.stopped());
        assert!(!started2.is_set() && !stopped2.is_set());
        stale.join().unwrap();
        assert!(
            !started2.is_set() && !stopped2.is_set(),
            "a stale handle set the next generation's latch"
        );
        assert!(base.is_running());
        assert!(!generation2.scope.token().is_stopped());
        assert!(matches!(
            scope1.token().cause(),
            Some(StopCause::ServiceStopped)
        ));
        drop(generation2);
        block_on(base.stop());
    });
}

#[test]
fn service_stale_handles_never_touch_the_next_generation_after_an_exit() {
    use lifecycle::{Generation, StartStop};
    loom::model(|| {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        let Generation {
            scope: scope1,
            started: started1,
            stopped: stopped1,
        } = block_on(base.begin(&scope)).unwrap();
        let exited1 = base.stopped();
        // The work exits on its own (no stop), then its handles are called
        // again, racing with the start that begins the next generation.
        let work = thread::spawn(move || {
            stopped1.set();
            started1.set();
            stopped1.set();
        });
        block_on(exited1.wait());
        let generation2 = block_on(base.begin(&scope)).expect("the last work exited");
        let (started2, stopped2) = (base.started(), base.stopped());
        work.join().unwrap();
        assert!(
            !started2.is_set() && !stopped2.is_set(),
            "a stale handle set the next generation's latch"
        );
        assert!(base.is_running());
        // The restart stopped the exited generation's scope, and only that.
        assert!(matches!(
            scope1.token().cause(),
            Some(StopCause::ServiceStopped)
        ));
        assert!(!generation2.scope.token().is_stopped());
        drop(generation2);
        block_on(base.stop());
    });
}

/// A two-phase stop abandoned (by `finalize(false)`, or by dropping its
/// guard) races with a start and then another stop on the main thread, while
/// the work returns once its scope is stopped.
fn abandoned_stop_races_a_begin_and_a_stop(drop_guard: bool) {
    use lifecycle::StartStop;
    loom::model(move || {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        let (token1, stopped1, work) = begin_work_until_stopped(&base, &scope);
        // Given up at once, as when its deadline passes.
        let abandoner = {
            let base = base.clone();
            thread::spawn(move || {
                // None if the stop on the main thread completed first.
                if let Some(guard) = block_on(base.stop_init()) {
                    if drop_guard {
                        drop(guard);
                    } else {
                        guard.finalize(false);
                    }
                }
            })
        };
        // A start: a no-op while the work runs, else a new generation.
        // Its generation fails at setup (the handles are dropped), so the
        // stop below completes whichever generation it finds.
        let second = block_on(base.begin(&scope));
        if second.is_some() {
            assert!(
                stopped1.is_set(),
                "a generation began while the last one's work ran"
            );
            assert!(matches!(token1.cause(), Some(StopCause::ServiceStopped)));
        }
        drop(second);
        block_on(base.stop());
        assert!(!base.is_running());
        abandoner.join().unwrap();
        work.join().unwrap();
        assert!(stopped1.is_set());
        assert!(matches!(token1.cause(), Some(StopCause::ServiceStopped)));
        // The abandoned stop may close after the stop above: then the
        // generation is back, exited, and one more stop completes it.
        block_on(base.stop());
        assert!(block_on(base.stop_init()).is_none(), "idle at the end");
    });
}

#[test]
fn service_stop_abandoned_by_finalize_races_a_begin_and_a_stop() {
    abandoned_stop_races_a_begin_and_a_stop(false);
}

#[test]
fn service_stop_abandoned_by_drop_races_a_begin_and_a_stop() {
    abandoned_stop_races_a_begin_and_a_stop(true);
}

/// A start issued while a two-phase stop is open waits for it to close,
/// then begins the next generation; the work ends racing with the start.
fn begin_behind_an_open_stop(did_stop: bool) {
    use lifecycle::{Generation, StartStop};
    loom::model(move || {
        let base = Arc::new(StartStop::new());
        let parent = StopSource::new();
        let scope = service_scope(&parent);
        let Generation {
            scope: scope1,
            started: _started1,
            stopped: stopped1_handle,
        } = block_on(base.begin(&scope)).unwrap();
        let stopped1 = base.stopped();
        let guard = block_on(base.stop_init()).expect("a generation to stop");
        let starter = {
            let (base, scope) = (base.clone(), scope.clone());
            thread::spawn(move || block_on(base.begin(&scope)))
        };
        let work = thread::spawn(move || stopped1_handle.set());
        block_on(guard.stopped().wait());
        guard.finalize(did_stop);
        let second = starter
            .join()
            .unwrap()
            .expect("the start waited for the stop, then began");
        work.join().unwrap();
        assert!(stopped1.is_set());
        assert!(matches!(
            scope1.token().cause(),
            Some(StopCause::ServiceStopped)
        ));
        let stopped2 = base.stopped();
        assert!(!stopped2.same_as(&stopped1) && !stopped2.is_set());
        assert!(!second.scope.token().is_stopped());
        drop(second);
        block_on(base.stop());
        assert!(stopped2.is_set() && !base.is_running());
    });
}

#[test]
fn service_begin_behind_a_completed_two_phase_stop() {
    begin_behind_an_open_stop(true);
}

#[test]
fn service_begin_behind_an_abandoned_two_phase_stop() {
    begin_behind_an_open_stop(false);
}
