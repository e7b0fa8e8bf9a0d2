//! `latch`: set one [`Latch`] and wake its one waiter, beside tokio's `Notify`.
//!
//! - `same_thread`: the primitive alone. A fresh signal, its wait future
//!   polled once with a no-op waker (so it registers), the signal set, the
//!   future polled again (ready). `Latch` is a shared handle (one `Arc`), so
//!   the baseline is an `Arc<Notify>`; it is woken with `notify_waiters` (the
//!   broadcast, like a latch) and, on another line, with `notify_one`.
//! - `multi_thread`: two tasks on a tokio multi-thread runtime play ping-pong
//!   through fresh signals, each setting the one the other waits on; one
//!   iteration is a round trip, two set-and-wake handoffs. `Notify` uses
//!   `notify_one`: its stored permit is what makes a set that comes before the
//!   wait still complete the wait, as a latch is sticky; `notify_waiters`
//!   would lose that wakeup.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lifecycle::Latch;
use lifecycle_benches::multi_thread_runtime;
use tokio::sync::Notify;

lifecycle_benches::bench_allocator!();

fn same_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("latch/same_thread");
    let mut cx = Context::from_waker(Waker::noop());

    group.bench_function("lifecycle::Latch", |b| {
        b.iter(|| {
            let latch = Latch::new();
            let mut wait = pin!(latch.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            black_box(latch.set());
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        })
    });

    group.bench_function("tokio::Notify (notify_waiters)", |b| {
        b.iter(|| {
            let notify = Arc::new(Notify::new());
            let mut wait = pin!(notify.notified());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            notify.notify_waiters();
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        })
    });

    group.bench_function("tokio::Notify (notify_one)", |b| {
        b.iter(|| {
            let notify = Arc::new(Notify::new());
            let mut wait = pin!(notify.notified());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            notify.notify_one();
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        })
    });

    group.finish();
}

/// The operations the ping-pong needs from a signal.
trait PingPong: Send + Sync + 'static {
    fn fresh() -> Self;
    fn set(&self);
    fn wait(&self) -> impl Future<Output = ()> + Send + '_;
}

impl PingPong for Latch {
    fn fresh() -> Self {
        Latch::new()
    }
    fn set(&self) {
        Latch::set(self);
    }
    fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        Latch::wait(self)
    }
}

impl PingPong for Notify {
    fn fresh() -> Self {
        Notify::new()
    }
    fn set(&self) {
        self.notify_one();
    }
    fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        self.notified()
    }
}

/// `iters` round trips through fresh signals, allocated before the clock
/// starts; the time is taken inside the task that starts each round trip.
fn ping_pong<S: PingPong>(runtime: &tokio::runtime::Runtime, iters: u64) -> Duration {
    let rounds: Arc<Vec<(S, S)>> = Arc::new((0..iters).map(|_| (S::fresh(), S::fresh())).collect());
    let pong_rounds = rounds.clone();
    let ponger = runtime.spawn(async move {
        for (ping, pong) in pong_rounds.iter() {
            ping.wait().await;
            pong.set();
        }
    });
    let pinger = runtime.spawn(async move {
        let start = Instant::now();
        for (ping, pong) in rounds.iter() {
            ping.set();
            pong.wait().await;
        }
        start.elapsed()
    });
    runtime.block_on(async {
        let elapsed = pinger.await.expect("pinger");
        ponger.await.expect("ponger");
        elapsed
    })
}

fn multi_thread(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = c.benchmark_group("latch/multi_thread");
    group.measurement_time(Duration::from_secs(3));

    group.bench_function("lifecycle::Latch", |b| {
        b.iter_custom(|iters| ping_pong::<Latch>(&runtime, iters))
    });
    group.bench_function("tokio::Notify (notify_one)", |b| {
        b.iter_custom(|iters| ping_pong::<Notify>(&runtime, iters))
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(2));
    targets = same_thread, multi_thread
}
criterion_main!(benches);
