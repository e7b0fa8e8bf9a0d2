//! The supervisor benchmark's shared code: a [`Supervisor`] over a layered
//! DAG of one-worker managers, and its round split in two timed phases
//! (start to ready, stop to done), beside the bare round of
//! [`components`](crate::components) split the same way.
//!
//! A supervisor's [`run`](Supervisor::run) consumes it, so every round
//! needs a fresh one: [`dag_supervisor`] builds it before the round, outside
//! the timing, and the `supervisor` bench times that build on its own.

use std::time::{Duration, Instant};

use lifecycle::{Component, ComponentManagerBuilder, Node, StopSource, Supervisor, SupervisorEnd};

use crate::components::{
    bare_components_phases, one_worker, BareStop, Executor, PhaseClock, Phases,
};

/// How many layers [`dag_supervisor`] stacks in the `supervisor` bench.
pub const LAYERS: usize = 10;

/// How many nodes each layer has in the `supervisor` bench.
pub const WIDTH: usize = 100;

/// How many nodes the `supervisor` bench's supervisor has: [`LAYERS`] times
/// [`WIDTH`].
pub const NODES: usize = LAYERS * WIDTH;

/// The name of node `index` of layer `layer` (both from 0).
fn node_name(layer: usize, index: usize) -> String {
    format!("l{layer}n{index}")
}

/// A supervisor of `layers` layers of `width` nodes, every node a manager
/// built from `builder`. Node `i` of every layer but the first depends on
/// nodes `i` and `(i + 1) % width` of the layer above, so every node but
/// those of the last layer has two dependents, and start and stop both go
/// through the layers one after the other. Every node has the defaults of
/// [`Node::new`] (among them the default stop timeout).
pub fn dag_supervisor(
    builder: &ComponentManagerBuilder,
    layers: usize,
    width: usize,
) -> Supervisor {
    let mut supervisor = Supervisor::builder();
    for layer in 0..layers {
        for index in 0..width {
            let builder = builder.clone();
            let mut node = Node::new(node_name(layer, index), move || Ok(builder.build()));
            if layer > 0 {
                node = node.depends_on([
                    node_name(layer - 1, index),
                    node_name(layer - 1, (index + 1) % width),
                ]);
            }
            supervisor = supervisor.node(node);
        }
    }
    supervisor.build().expect("the layered graph is valid")
}

/// One round of `supervisor` on `executor`: its run spawned as a task of
/// the executor under a fresh parent [`StopSource`], its ready latch
/// awaited, the parent stopped, the run's task joined. Each phase is timed
/// inside the round. Panics unless the run ends because its parent stopped,
/// cleanly.
pub fn supervisor_round(executor: &Executor, supervisor: Supervisor) -> Phases {
    let runtime = executor.runtime();
    let spawner = executor.spawner();
    executor.run(async move {
        let parent = StopSource::new();
        let ready = Component::ready(&supervisor);
        let mut clock = PhaseClock::start();
        let run = spawner.spawn(supervisor.run(runtime, parent.token()));
        ready.wait().await;
        clock.ready();
        parent.stop();
        let outcome = run.await;
        let phases = clock.phases();
        assert!(
            matches!(outcome.end, SupervisorEnd::ParentStopped) && outcome.is_clean(),
            "unexpected outcome: {outcome}"
        );
        phases
    })
}

/// `iters` rounds of [`supervisor_round`] on `executor`, each over a fresh
/// supervisor of [`LAYERS`] by [`WIDTH`] nodes built before the round;
/// returns the sum of their phases.
pub fn supervisor_rounds(executor: &Executor, iters: u64) -> Phases {
    let builder = one_worker();
    (0..iters)
        .map(|_| supervisor_round(executor, dag_supervisor(&builder, LAYERS, WIDTH)))
        .sum()
}

/// `iters` rounds of [`bare_components_phases`] with [`NODES`] tasks on `executor`;
/// returns the sum of their phases.
pub fn bare_rounds(executor: &Executor, iters: u64, stop: BareStop) -> Phases {
    (0..iters)
        .map(|_| bare_components_phases(executor, NODES, stop))
        .sum()
}

/// The time of `iters` builds of the bench's supervisor ([`dag_supervisor`]
/// of [`LAYERS`] by [`WIDTH`]), each supervisor dropped outside the timing.
pub fn builds(iters: u64) -> Duration {
    let builder = one_worker();
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            let supervisor = dag_supervisor(&builder, LAYERS, WIDTH);
            let elapsed = start.elapsed();
            drop(supervisor);
            elapsed
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_completes_on_every_executor() {
        let builder = one_worker();
        for executor in Executor::all() {
            supervisor_round(&executor, dag_supervisor(&builder, 3, 4));
            supervisor_round(&executor, dag_supervisor(&builder, LAYERS, WIDTH));
        }
        assert!(builds(1) > Duration::ZERO);
    }
}
