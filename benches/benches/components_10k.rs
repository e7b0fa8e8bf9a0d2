//! `components_10k`: 10,000 one-worker [`ComponentManager`]s at once, beside
//! 10,000 bare tasks doing the same by hand.
//!
//! - `lifecycle`: build and start 10,000 managers, each in a scope under one
//!   root `StopSource` with its own `FatalSlot`; wait until every one is
//!   ready; stop the root; wait until every one is done.
//! - `bare/shared_token`: spawn 10,000 tasks with the executor's own spawn,
//!   each with a ready `oneshot` and a clone of one root `CancellationToken`;
//!   await every ready; cancel the root; join every task.
//! - `bare/child_tokens`: the same, each task owning a child token of the
//!   root: a stop scope per task, as each manager has.
//!
//! One iteration is one round of 10,000; the whole round is timed, from the
//! first build to the last done. The throughput criterion prints is
//! components per second; time per component is the round divided by
//! 10,000. See [`lifecycle_benches::components`].
//!
//! [`ComponentManager`]: lifecycle::ComponentManager

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lifecycle_benches::components::{
    bare_components_round, components_round, BareStop, Executor, COMPONENTS,
};

lifecycle_benches::bench_allocator!();

fn components_10k(c: &mut Criterion) {
    for executor in Executor::all() {
        let mut group = c.benchmark_group(format!("components_10k/{}", executor.name()));
        // A round takes milliseconds: few, equally long samples.
        group
            .throughput(Throughput::Elements(COMPONENTS as u64))
            .sample_size(20)
            .sampling_mode(SamplingMode::Flat);
        group.bench_function("lifecycle", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| components_round(&executor, COMPONENTS))
                    .sum()
            })
        });
        for (name, stop) in [
            ("bare/shared_token", BareStop::SharedToken),
            ("bare/child_tokens", BareStop::ChildTokens),
        ] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| bare_components_round(&executor, COMPONENTS, stop))
                        .sum()
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(3));
    targets = components_10k
}
criterion_main!(benches);
