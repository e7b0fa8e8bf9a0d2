//! `reads`: the cost of asking "is it set?" without waiting.
//!
//! `Latch::is_set` and `StopToken::is_stopped`, unset and set, beside
//! tokio-util's `CancellationToken::is_cancelled` and two floors: a bare
//! `AtomicBool::load(Acquire)`, and the same load through an `Arc` (every
//! handle here is one `Arc` away from its state). The handle goes through
//! `black_box` on every iteration, so each read really loads.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use lifecycle::{Latch, StopSource};
use tokio_util::sync::CancellationToken;

lifecycle_benches::bench_allocator!();

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("reads");

    for set in [false, true] {
        let state = if set { "set" } else { "unset" };

        let flag = AtomicBool::new(set);
        group.bench_function(format!("AtomicBool::load/{state}"), |b| {
            b.iter(|| black_box(&flag).load(Acquire))
        });

        let shared = Arc::new(AtomicBool::new(set));
        group.bench_function(format!("Arc<AtomicBool>::load/{state}"), |b| {
            b.iter(|| black_box(&shared).load(Acquire))
        });

        let latch = Latch::new();
        if set {
            latch.set();
        }
        group.bench_function(format!("Latch::is_set/{state}"), |b| {
            b.iter(|| black_box(&latch).is_set())
        });

        let source = StopSource::new();
        let token = source.token();
        if set {
            source.stop();
        }
        group.bench_function(format!("StopToken::is_stopped/{state}"), |b| {
            b.iter(|| black_box(&token).is_stopped())
        });

        let cancellation = CancellationToken::new();
        if set {
            cancellation.cancel();
        }
        group.bench_function(format!("CancellationToken::is_cancelled/{state}"), |b| {
            b.iter(|| black_box(&cancellation).is_cancelled())
        });
    }

    group.finish();
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(2));
    targets = reads
}
criterion_main!(benches);
