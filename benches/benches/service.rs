//! `service`: a restartable [`Service`] on the [`StartStop`] base, started
//! and stopped again and again, beside the same work done by hand on the
//! executor.
//!
//! Every service and the scope it starts in (the executor's binding, the
//! token of a root `StopSource` that is never stopped, a `FatalSlot`) are
//! made once per executor, outside the timing, and reused by every
//! iteration. The service's work sets its started handle and awaits its
//! generation scope's token.
//!
//! `service_cycle`: one iteration is one cycle.
//!
//! - `lifecycle`: a service written by hand on the base; its start begins a
//!   generation (a child stop scope of the given scope, fresh latches) and
//!   spawns the work with `Generation::spawn_detached`. The cycle:
//!   `start(&scope)`, wait for the `started()` latch, `stop()`, which stops
//!   the generation's scope and returns once the work has exited.
//! - `lifecycle/service_fn`: the same service made with `service_fn`.
//! - `bare`: a fresh `CancellationToken` and ready `oneshot`, a task spawned
//!   with the executor's own spawn that sends ready and awaits the token,
//!   ready awaited, the token cancelled, the task joined (the bare cycle of
//!   `manager_cycle`).
//!
//! `service_group`: one iteration is one round of 1,000, timed from the
//! first start to the last stop; the throughput criterion prints is services
//! per second, and time per service is the round divided by 1,000.
//!
//! - `lifecycle`: 1,000 hand-written services, `start_all` (one start after
//!   the other), `wait_all_started`, `stop_all` (concurrent stops).
//! - `bare/child_tokens`: 1,000 tasks spawned with the executor's own spawn,
//!   each with a ready `oneshot` and its own child token of one root
//!   `CancellationToken` (a stop scope per task, as each generation has);
//!   every ready awaited; the root cancelled; every task joined (the
//!   `bare/child_tokens` round of `components_10k`).
//!
//! On a tokio multi-thread runtime (the rounds run in a task of the
//! runtime), a tokio current-thread runtime and an owned smol executor (both
//! driven by the bench thread). See [`lifecycle_benches::services`].
//!
//! [`Service`]: lifecycle::Service
//! [`StartStop`]: lifecycle::StartStop

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lifecycle_benches::components::{bare_components_round, bare_cycles, BareStop, Executor};
use lifecycle_benches::services::{
    group_round, service_cycles, trivial_fn, trivial_services, ServiceScope, Trivial, SERVICES,
};

lifecycle_benches::bench_allocator!();

fn service_cycle(c: &mut Criterion) {
    for executor in Executor::all() {
        let scope = ServiceScope::on(&executor);
        let trivial = Arc::new(Trivial::new());
        let closure = Arc::new(trivial_fn());
        let mut group = c.benchmark_group(format!("service_cycle/{}", executor.name()));
        group.bench_function("lifecycle", |b| {
            b.iter_custom(|iters| service_cycles(&executor, &trivial, &scope.scope, iters))
        });
        group.bench_function("lifecycle/service_fn", |b| {
            b.iter_custom(|iters| service_cycles(&executor, &closure, &scope.scope, iters))
        });
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| bare_cycles(&executor, iters))
        });
        group.finish();
    }
}

fn service_group(c: &mut Criterion) {
    for executor in Executor::all() {
        let scope = ServiceScope::on(&executor);
        let services = trivial_services(SERVICES);
        let mut group = c.benchmark_group(format!("service_group/{}", executor.name()));
        // A round takes about a millisecond: few, equally long samples.
        group
            .throughput(Throughput::Elements(SERVICES as u64))
            .sample_size(50)
            .sampling_mode(SamplingMode::Flat);
        group.bench_function("lifecycle", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| group_round(&executor, &services, &scope.scope))
                    .sum()
            })
        });
        group.bench_function("bare/child_tokens", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| bare_components_round(&executor, SERVICES, BareStop::ChildTokens))
                    .sum()
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = lifecycle_benches::criterion_config(Duration::from_secs(2));
    targets = service_cycle, service_group
}
criterion_main!(benches);
