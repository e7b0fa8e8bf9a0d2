//! Loom models of the latch and the stop token.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p lifecycle --test loom --release`.
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
