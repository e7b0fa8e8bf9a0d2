//! `supervisor`: a [`Supervisor`] of 1,000 one-worker managers in a layered
//! DAG, started and stopped, beside 1,000 bare tasks doing the same by hand.
//!
//! The graph: 10 layers of 100 nodes; node `i` of layers 2 to 10 depends on
//! nodes `i` and `(i + 1) % 100` of the layer above. Every node has the
//! defaults of `Node::new` and builds a manager with one worker that calls
//! ready and awaits its stop token.
//!
//! - `lifecycle/start_to_ready`: from spawning the supervisor's `run` as a
//!   task of the executor until its ready latch is set (every node ready;
//!   the layers start one after the other).
//! - `lifecycle/stop_to_done`: from stopping the run's parent `StopSource`
//!   until the run's task has returned (every node done, dependents before
//!   their dependencies, and the run's state dropped).
//! - `bare/shared_token/*`, `bare/child_tokens/*`: the round of
//!   `components_10k` with 1,000 tasks, split the same way: from the first
//!   spawn until every task has sent ready, and from cancelling the root
//!   token until every task is joined.
//! - `supervisor_build/lifecycle`: building the supervisor (1,000 nodes,
//!   their names and dependencies, the graph's validation), which every
//!   round does before its clock starts.
//!
//! One iteration is one round of 1,000; the two phases of a line come from
//! separate rounds. The throughput criterion prints is nodes per second;
//! time per node is the figure divided by 1,000. On a tokio multi-thread
//! runtime (the round runs in a task of the runtime, the supervisor's run
//! in another), a tokio current-thread runtime and an owned smol executor
//! (both driven by the bench thread). See [`lifecycle_benches::supervisors`].
//!
//! [`Supervisor`]: lifecycle::Supervisor

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lifecycle_benches::components::{BareStop, Executor, Phase};
use lifecycle_benches::supervisors::{bare_rounds, builds, supervisor_rounds, NODES};

lifecycle_benches::bench_allocator!();

fn supervisor(c: &mut Criterion) {
    for executor in Executor::all() {
        let mut group = c.benchmark_group(format!("supervisor/{}", executor.name()));
        // A round takes milliseconds: few, equally long samples.
        group
            .throughput(Throughput::Elements(NODES as u64))
            .sample_size(20)
            .sampling_mode(SamplingMode::Flat);
        for phase in Phase::BOTH {
            group.bench_function(format!("lifecycle/{}", phase.name()), |b| {
                b.iter_custom(|iters| supervisor_rounds(&executor, iters).of(phase))
            });
            for (name, stop) in [
                ("bare/shared_token", BareStop::SharedToken),
                ("bare/child_tokens", BareStop::ChildTokens),
            ] {
                group.bench_function(format!("{name}/{}", phase.name()), |b| {
                    b.iter_custom(|iters| bare_rounds(&executor, iters, stop).of(phase))
                });
            }
        }
        group.finish();
    }
}

fn supervisor_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("supervisor_build");
    group
        .throughput(Throughput::Elements(NODES as u64))
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat);
    group.bench_function("lifecycle", |b| b.iter_custom(builds));
    group.finish();
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(3));
    targets = supervisor, supervisor_build
}
criterion_main!(benches);
