//! `turns`: the goals' ratios from lifecycle and bare rounds taken in turn.
//!
//! Each lifecycle round is followed by its bare round on the same executor,
//! and each phase's ratio, and the whole round's, is that of the two
//! medians (see [`lifecycle_benches::turns`]): steadier than criterion's
//! lines on a busy host, where a line measured a minute after another can
//! be 30% slower for reasons of its own.
//!
//! - `components_10k`: 10,000 one-worker managers against 10,000 tasks
//!   with a child token each (the `components_10k` bench's rounds, timed
//!   by phase), 40 rounds of each;
//! - `supervisor`: the 1,000-node DAG against 1,000 such tasks (the
//!   `supervisor` bench's rounds), 200 rounds of each.
//!
//! `cargo bench -p lifecycle-benches --bench turns [-- NAME]` prints one
//! markdown table; `NAME` keeps the rows whose round or executor contains
//! it.

use std::time::Duration;

use lifecycle_benches::components::{
    bare_components_phases, components_phases, one_worker, BareStop, Executor, COMPONENTS,
};
use lifecycle_benches::supervisors::{dag_supervisor, supervisor_round, LAYERS, NODES, WIDTH};
use lifecycle_benches::turns::Turns;

lifecycle_benches::bench_allocator!();

fn main() {
    // `cargo bench` passes `--bench`; anything else is a filter.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let wanted = |round: &str, executor: &Executor| {
        filter
            .as_deref()
            .is_none_or(|name| round.contains(name) || executor.name().contains(name))
    };
    println!("| round | executor | phase | lifecycle (per unit) | bare (per unit) | ratio |");
    println!("|---|---|---|---|---|---|");
    let builder = one_worker();
    for executor in Executor::all() {
        if wanted("components_10k", &executor) {
            let turns = Turns::take(
                40,
                || components_phases(&executor, COMPONENTS),
                || bare_components_phases(&executor, COMPONENTS, BareStop::ChildTokens),
            );
            print_rows("components_10k", &executor, &turns, COMPONENTS);
        }
        if wanted("supervisor", &executor) {
            let turns = Turns::take(
                200,
                || supervisor_round(&executor, dag_supervisor(&builder, LAYERS, WIDTH)),
                || bare_components_phases(&executor, NODES, BareStop::ChildTokens),
            );
            print_rows("supervisor", &executor, &turns, NODES);
        }
    }
}

fn print_rows(round: &str, executor: &Executor, turns: &Turns, units: usize) {
    let per_unit = |time: Duration| time.as_nanos() as f64 / units as f64;
    for ((phase, ours), (_, theirs)) in turns.lifecycle.named().into_iter().zip(turns.bare.named())
    {
        let (ours, theirs) = (per_unit(ours), per_unit(theirs));
        println!(
            "| {round} | {} | {phase} | {ours:.0} ns | {theirs:.0} ns | {:.2} |",
            executor.name(),
            ours / theirs
        );
    }
}
