//! Helpers for the unit tests: wakers that count and a thread-per-task runtime.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use core::task::Waker;
use core::time::Duration;
use std::time::Instant as StdInstant;

use futures_util::task::ArcWake;

use crate::{BoxFuture, Instant, Runtime};

/// A waker that counts how often it was woken.
#[derive(Default)]
pub(crate) struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let counter = Arc::new(Self::default());
        let waker = futures_util::task::waker(counter.clone());
        (counter, waker)
    }

    pub(crate) fn wakes(&self) -> usize {
        self.wakes.load(SeqCst)
    }
}

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.wakes.fetch_add(1, SeqCst);
    }
}

/// Runs every task on a thread of its own: enough to exercise the task
/// wrapper, and supported by Miri.
pub(crate) struct Threads {
    origin: StdInstant,
}

impl Threads {
    pub(crate) fn new() -> Self {
        Self {
            origin: StdInstant::now(),
        }
    }
}

impl Runtime for Threads {
    fn spawn_detached(&self, task: BoxFuture) {
        std::thread::spawn(move || futures_executor::block_on(task));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        let timer = crate::Latch::new();
        let fire = timer.clone();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            fire.set();
        });
        Box::pin(timer.wait_owned())
    }

    fn now(&self) -> Instant {
        Instant::from_origin(self.origin.elapsed())
    }
}

/// A runtime that drops every task it is given without polling it, like an
/// executor shutting down.
pub(crate) struct Dropper;

impl Runtime for Dropper {
    fn spawn_detached(&self, task: BoxFuture) {
        drop(task);
    }

    fn sleep(&self, _duration: Duration) -> BoxFuture {
        Box::pin(core::future::pending())
    }

    fn now(&self) -> Instant {
        Instant::default()
    }
}
