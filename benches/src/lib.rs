//! Shared helpers of the lifecycle benchmarks.
//!
//! Every benchmark puts a lifecycle primitive beside a baseline and runs both
//! through the same code, so that the only difference between two lines of a
//! group is the primitive. This crate holds that common code:
//!
//! - [`Signal`]: a one-shot broadcast signal with many waiters, implemented for
//!   [`StopSource`] and tokio-util's [`CancellationToken`], each in two shapes
//!   (every waiter on the same token, or every waiter on its own child);
//! - [`fan_out`]: one timed round of "stop the signal, wait until every waiter
//!   has finished", with the waiters spawned and registered beforehand;
//! - [`multi_thread_runtime`]: the tokio runtime the timed rounds run on;
//! - [`components`]: the component manager and restart loop rounds, each
//!   beside the same work done by hand on the executor, on tokio
//!   (multi-thread and current-thread) and smol;
//! - [`services`]: a restartable service on the `StartStop` base, started and
//!   stopped alone and in a group, measured against the bare rounds of
//!   [`components`];
//! - [`supervisors`]: a supervisor of 1,000 nodes in a layered DAG, started
//!   and stopped, timed phase by phase beside the bare round of
//!   [`components`] split the same way;
//! - [`turns`]: lifecycle and bare rounds taken in turn, compared by their
//!   medians, for ratios that a busy host does not move.
//!
//! Every timing bench allocates through the system allocator, or through
//! mimalloc with the `mimalloc` feature: [`bench_allocator!`] installs it.
//! The `allocations` bench installs its own counting allocator instead.

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lifecycle::StopSource;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Installs the benches' global allocator: mimalloc with the `mimalloc`
/// feature, the system allocator (Rust's default) without it. Each timing
/// bench calls it once at its top level.
#[macro_export]
macro_rules! bench_allocator {
    () => {
        #[cfg(feature = "mimalloc")]
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;
    };
}

#[cfg(feature = "mimalloc")]
#[doc(hidden)]
pub use mimalloc::MiMalloc;

pub mod components;
pub mod services;
pub mod supervisors;
pub mod turns;

/// A tokio multi-thread runtime with one worker per core (two on the machine
/// the figures in the README come from).
pub fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("building the tokio runtime")
}

/// A one-shot broadcast signal that any number of tasks wait for: the shape
/// shared by [`StopSource`] and [`CancellationToken`].
pub trait Signal: Send + Sync + Sized + 'static {
    /// A fresh, unfired signal.
    fn new() -> Self;

    /// A future for one waiting task, completing once the signal fires. It
    /// owns whatever it needs (a token, a child scope) and drops it when done,
    /// inside the timed region, as a component would.
    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static;

    /// Fires the signal, waking every waiter.
    fn fire(&self);
}

/// Every waiter awaits [`StopToken::stopped`](lifecycle::StopToken::stopped)
/// on a clone of the same token.
#[derive(Debug)]
pub struct SharedStopToken(StopSource);

impl Signal for SharedStopToken {
    fn new() -> Self {
        Self(StopSource::new())
    }

    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.0.token();
        async move { token.stopped().await }
    }

    fn fire(&self) {
        self.0.stop();
    }
}

/// Every waiter owns a child of the root ([`StopSource::child`]) and awaits
/// its own token: the shape of a tree of components.
#[derive(Debug)]
pub struct ChildStopToken(StopSource);

impl Signal for ChildStopToken {
    fn new() -> Self {
        Self(StopSource::new())
    }

    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let scope = self.0.child();
        let token = scope.token();
        async move {
            token.stopped().await;
            drop(scope);
        }
    }

    fn fire(&self) {
        self.0.stop();
    }
}

/// Every waiter awaits [`CancellationToken::cancelled`] on a clone of the same
/// token.
#[derive(Debug)]
pub struct SharedCancellationToken(CancellationToken);

impl Signal for SharedCancellationToken {
    fn new() -> Self {
        Self(CancellationToken::new())
    }

    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.0.clone();
        async move { token.cancelled().await }
    }

    fn fire(&self) {
        self.0.cancel();
    }
}

/// Every waiter owns a child token ([`CancellationToken::child_token`]) and
/// awaits it.
#[derive(Debug)]
pub struct ChildCancellationToken(CancellationToken);

impl Signal for ChildCancellationToken {
    fn new() -> Self {
        Self(CancellationToken::new())
    }

    fn waiter(&self) -> impl Future<Output = ()> + Send + 'static {
        let token = self.0.child_token();
        async move { token.cancelled().await }
    }

    fn fire(&self) {
        self.0.cancel();
    }
}

/// One round of fan-out: the time from firing a fresh `S` to the moment the
/// last of `waiters` waiting tasks has finished.
///
/// Untimed setup: the signal is created, the waiters are spawned on `runtime`
/// and each has been polled once (so it is registered and pending) before the
/// clock starts. The signal is fired from a task on the runtime, as a
/// component would stop its children, and the clock stops when the last
/// waiter has returned (its waiter future already dropped).
pub fn fan_out<S: Signal>(runtime: &Runtime, waiters: usize) -> Duration {
    assert!(waiters > 0, "a fan-out needs waiters");
    let signal = S::new();
    let polled = Arc::new(AtomicUsize::new(0));
    let remaining = Arc::new(AtomicUsize::new(waiters));
    let (end_tx, end_rx) = mpsc::sync_channel::<Instant>(1);
    for _ in 0..waiters {
        let waiter = signal.waiter();
        let polled = polled.clone();
        let remaining = remaining.clone();
        let end_tx = end_tx.clone();
        runtime.spawn(async move {
            {
                let mut waiter = pin!(waiter);
                let mut first = true;
                poll_fn(|cx| {
                    let poll = waiter.as_mut().poll(cx);
                    if first {
                        first = false;
                        polled.fetch_add(1, Release);
                    }
                    poll
                })
                .await;
            }
            if remaining.fetch_sub(1, AcqRel) == 1 {
                let _ = end_tx.send(Instant::now());
            }
        });
    }
    drop(end_tx);
    while polled.load(Acquire) < waiters {
        std::thread::yield_now();
    }
    let (start_tx, start_rx) = mpsc::sync_channel::<Instant>(1);
    runtime.spawn(async move {
        let start = Instant::now();
        signal.fire();
        let _ = start_tx.send(start);
    });
    // Wait for the end first: the stopper's send must not wake this thread
    // while the waiters run.
    let end = end_rx.recv().expect("the last waiter reports the end");
    let start = start_rx.recv().expect("the stopper reports the start");
    end.saturating_duration_since(start)
}

/// The criterion settings every bench shares: `measure` per benchmark after
/// a one-second warm-up, short enough that the whole suite runs in a few
/// minutes on two cores.
pub fn criterion_config(measure: std::time::Duration) -> criterion::Criterion {
    criterion::Criterion::default()
        .measurement_time(measure)
        .warm_up_time(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completes<S: Signal>() {
        let runtime = multi_thread_runtime();
        for waiters in [1, 100] {
            assert!(fan_out::<S>(&runtime, waiters) > Duration::ZERO);
        }
    }

    #[test]
    fn every_signal_completes_its_fan_out() {
        completes::<SharedStopToken>();
        completes::<ChildStopToken>();
        completes::<SharedCancellationToken>();
        completes::<ChildCancellationToken>();
    }
}
