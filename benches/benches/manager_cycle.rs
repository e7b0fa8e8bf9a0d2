//! `manager_cycle`: the whole life of a one-worker [`ComponentManager`],
//! beside the same work done by hand on the executor.
//!
//! - `lifecycle`: build the manager, start it in a scope with a fresh
//!   `StopSource` and `FatalSlot`, wait until ready, stop the source, wait
//!   until done. The worker calls ready, then awaits its stop token.
//! - `bare`: a fresh `CancellationToken` and ready `oneshot`, a task spawned
//!   with the executor's own spawn that sends ready and awaits the token,
//!   ready awaited, the token cancelled, the task joined.
//!
//! On a tokio multi-thread runtime (the cycles run in a task of the runtime),
//! a tokio current-thread runtime and an owned smol executor (both driven by
//! the bench thread). One iteration is one cycle; see
//! [`lifecycle_benches::components`].
//!
//! [`ComponentManager`]: lifecycle::ComponentManager

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use lifecycle_benches::components::{bare_cycles, manager_cycles, Executor};

lifecycle_benches::bench_allocator!();

fn manager_cycle(c: &mut Criterion) {
    for executor in Executor::all() {
        let mut group = c.benchmark_group(format!("manager_cycle/{}", executor.name()));
        group.bench_function("lifecycle", |b| {
            b.iter_custom(|iters| manager_cycles(&executor, iters))
        });
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| bare_cycles(&executor, iters))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(2));
    targets = manager_cycle
}
criterion_main!(benches);
