//! Loom models of the latch, the stop token and the component manager's
//! ready/done counting.
//!
//! Run with
//! `LOOM_MAX_PREEMPTIONS=4 RUSTFLAGS="--cfg loom" cargo test -p lifecycle --test loom --release`
//! (unbounded, the manager models take hours).
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

#[test]
fn manager_reports_the_first_error_before_its_shutdown_signal() {
    use lifecycle::{Component, ComponentManager, FatalError};
    loom::model(|| {
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
