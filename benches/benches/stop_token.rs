//! `stop_token`: stop a token that 1, 1,000 or 10,000 tasks are waiting on,
//! beside tokio-util's `CancellationToken`.
//!
//! Each iteration spawns the waiters on a tokio multi-thread runtime and waits
//! until every one of them has been polled once (registered, pending); only
//! then does the clock start. The timed part is firing the signal from a task
//! on the runtime and running every waiter to completion, up to the moment the
//! last one returns. See [`lifecycle_benches::fan_out`].
//!
//! - `shared/N`: every waiter awaits `stopped()` (`cancelled()`) on a clone of
//!   the same token.
//! - `child/N`: every waiter owns its own child (`StopSource::child`,
//!   `CancellationToken::child_token`) and awaits that: the tree shape of
//!   components under a supervisor. Stopping the root stops every child.
//!
//! The throughput criterion prints is waiters per second; time per waiter is
//! the iteration time divided by N.

use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use lifecycle_benches::{
    fan_out, multi_thread_runtime, ChildCancellationToken, ChildStopToken, SharedCancellationToken,
    SharedStopToken, Signal,
};
use tokio::runtime::Runtime;

lifecycle_benches::bench_allocator!();

const WAITERS: [usize; 3] = [1, 1_000, 10_000];

fn bench<S: Signal>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &Runtime,
    name: &str,
    waiters: usize,
) {
    group.bench_with_input(BenchmarkId::new(name, waiters), &waiters, |b, &n| {
        b.iter_custom(|iters| (0..iters).map(|_| fan_out::<S>(runtime, n)).sum())
    });
}

fn fan_outs(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    for shape in ["shared", "child"] {
        let mut group = c.benchmark_group(format!("stop_token/{shape}"));
        for waiters in WAITERS {
            group.throughput(Throughput::Elements(waiters as u64));
            // A round of 10,000 waiters takes milliseconds, plus as much
            // again of untimed setup: few, equally long samples.
            if waiters >= 1_000 {
                group.sample_size(20).sampling_mode(SamplingMode::Flat);
            } else {
                group.sample_size(50).sampling_mode(SamplingMode::Auto);
            }
            if shape == "shared" {
                bench::<SharedStopToken>(&mut group, &runtime, "lifecycle::StopToken", waiters);
                bench::<SharedCancellationToken>(
                    &mut group,
                    &runtime,
                    "CancellationToken",
                    waiters,
                );
            } else {
                bench::<ChildStopToken>(&mut group, &runtime, "lifecycle::StopToken", waiters);
                bench::<ChildCancellationToken>(&mut group, &runtime, "CancellationToken", waiters);
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(3));
    targets = fan_outs
}
criterion_main!(benches);
