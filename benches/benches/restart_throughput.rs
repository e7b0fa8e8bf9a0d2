//! `restart_throughput`: how fast [`run_component`] restarts a component
//! that fails at once, beside a restart loop written by hand.
//!
//! - `lifecycle`: `run_component` with `RestartPolicy::immediate()` and the
//!   default stop timeout, over one-worker managers whose worker calls ready
//!   and returns an error; the handler counts the restarts and returns
//!   `Verdict::Restart` until the count is reached, then `Verdict::Stop`.
//! - `lifecycle/no_stop_timeout`: the same with `no_stop_timeout()`: each
//!   wait for done is not raced against a timer.
//! - `bare`: spawn a task with the executor's own spawn that sends ready on
//!   a `oneshot` and returns the error, join it, count, and again.
//!
//! One iteration is one restart: an instance built, started, failed,
//! stopped, done and handled. On a tokio current-thread runtime (the goal's
//! executor) and a tokio multi-thread runtime. The throughput criterion
//! prints is restarts per second. See [`lifecycle_benches::components`].
//!
//! [`run_component`]: lifecycle::run_component

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lifecycle_benches::components::{bare_restarts_round, restarts_round, Executor, StopWait};

lifecycle_benches::bench_allocator!();

fn restart_throughput(c: &mut Criterion) {
    for executor in [
        Executor::tokio_current_thread(),
        Executor::tokio_multi_thread(),
    ] {
        let mut group = c.benchmark_group(format!("restart_throughput/{}", executor.name()));
        group.throughput(Throughput::Elements(1));
        group.bench_function("lifecycle", |b| {
            b.iter_custom(|iters| restarts_round(&executor, iters, StopWait::DefaultTimeout))
        });
        group.bench_function("lifecycle/no_stop_timeout", |b| {
            b.iter_custom(|iters| restarts_round(&executor, iters, StopWait::NoTimeout))
        });
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| bare_restarts_round(&executor, iters))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(2));
    targets = restart_throughput
}
criterion_main!(benches);
