//! `allocations`: heap allocations and bytes per component, counted by a
//! counting global allocator, for the same rounds the timing benches run.
//!
//! Not a criterion bench: it runs each round once (after a warm-up round, so
//! that the executor's lazily grown queues are in place) and prints tables.
//! Everything runs on executors driven by the bench thread (tokio
//! current-thread, an owned smol executor), so no other thread allocates
//! while counting.
//!
//! - `components`: 10,000 one-worker managers at once, from the first build
//!   to the last done, divided by 10,000, beside the bare round (10,000 tasks
//!   with a ready `oneshot` and a token of one root `CancellationToken`). The
//!   live column is the heap held per component once all are ready.
//! - `cycle`: one manager cycle, phase by phase, beside one bare cycle.
//! - `restart`: per restart of `run_component`, beside the bare restart loop.
//! - `supervisor`: the 1,000-node DAG of the `supervisor` bench, per node,
//!   phase by phase (build, start to ready, stop to done), beside the bare
//!   round with a child token per task split at the same moment.
//! - `service`: one start/stop cycle of a restartable service (hand-written
//!   on `StartStop`, and with `service_fn`), phase by phase, beside one bare
//!   cycle; and a group of 1,000 services through `start_all`,
//!   `wait_all_started` and `stop_all`, per service, beside the bare round
//!   with a child token per task.
//!
//! An allocation is a call of `alloc`, `alloc_zeroed` or `realloc`; its bytes
//! are the size asked for (for `realloc`, the new size).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize};
use std::sync::{Arc, Mutex};

use lifecycle::{Component, FatalSlot, Scope, Service, StopSource, SupervisorEnd};
use lifecycle_benches::components::{
    bare_components, bare_components_with, bare_cycle, bare_restart_loop, components_with,
    manager_cycle, one_worker, restart_loop, BareStop, Executor, StopWait, COMPONENTS,
};
use lifecycle_benches::services::{
    group, service_cycle, trivial_fn, trivial_services, ServiceScope, Trivial, SERVICES,
};
use lifecycle_benches::supervisors::{dag_supervisor, LAYERS, NODES, WIDTH};

/// The system allocator, counting.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// While set, the size of each allocation is also written to `SIZES`, in
/// order: the phase-by-phase table lists them.
static TRACING: AtomicBool = AtomicBool::new(false);
static SIZES: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static TRACED: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn count(size: usize) {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size, Relaxed);
        LIVE.fetch_add(size as isize, Relaxed);
        if TRACING.load(Relaxed) {
            let index = TRACED.fetch_add(1, Relaxed);
            if let Some(slot) = SIZES.get(index) {
                slot.store(size, Relaxed);
            }
        }
    }
}

/// Starts writing allocation sizes down.
fn start_tracing() {
    TRACED.store(0, Relaxed);
    TRACING.store(true, Relaxed);
}

/// Stops writing allocation sizes down; returns them, in order.
fn stop_tracing() -> Vec<usize> {
    TRACING.store(false, Relaxed);
    let traced = TRACED.load(Relaxed).min(SIZES.len());
    SIZES[..traced]
        .iter()
        .map(|size| size.load(Relaxed))
        .collect()
}

// SAFETY: every method forwards to `System` with the caller's arguments,
// unchanged, and only updates counters besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller upholds `alloc_zeroed`'s contract for `layout`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        Self::count(new_size);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`,
        // and the caller upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters at one moment.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    allocations: usize,
    bytes: usize,
    live: isize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        allocations: ALLOCATIONS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
        live: LIVE.load(Relaxed),
    }
}

/// What was allocated between two snapshots.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    allocations: usize,
    bytes: usize,
}

impl Counted {
    fn since(before: Snapshot) -> Self {
        let after = snapshot();
        Self {
            allocations: after.allocations - before.allocations,
            bytes: after.bytes - before.bytes,
        }
    }
}

/// Counts one run of `round` on `executor`, measured inside the executor
/// (after a warm-up run that grows the executor's queues), so that only the
/// round itself is counted.
fn count<F>(executor: &Executor, round: impl Fn() -> F + Send + 'static) -> Counted
where
    F: Future<Output = ()> + Send + 'static,
{
    executor.run(async move {
        round().await;
        let next = round();
        let before = snapshot();
        next.await;
        Counted::since(before)
    })
}

/// A callback a component round calls once everything is ready.
type AtReady = Box<dyn FnOnce() + Send>;

/// As [`count`], for a round of [`COMPONENTS`] components; also returns the
/// live heap per component once all are ready.
fn count_components<F>(
    executor: &Executor,
    round: impl Fn(AtReady) -> F + Send + 'static,
) -> (Counted, f64)
where
    F: Future<Output = ()> + Send + 'static,
{
    executor.run(async move {
        round(Box::new(|| {})).await;
        let at_ready = Arc::new(Mutex::new(None));
        let record = at_ready.clone();
        let next = round(Box::new(move || {
            let now = snapshot();
            *record.lock().expect("not poisoned") = Some(now);
        }));
        let before = snapshot();
        next.await;
        let counted = Counted::since(before);
        let at_ready = at_ready
            .lock()
            .expect("not poisoned")
            .expect("the round calls at_ready");
        let live = (at_ready.live - before.live) as f64 / COMPONENTS as f64;
        (counted, live)
    })
}

/// Allocation sizes as `a + b + c`.
fn sizes(traced: &[usize]) -> String {
    let list: Vec<String> = traced.iter().map(usize::to_string).collect();
    list.join(" + ")
}

fn per(counted: Counted, n: usize) -> (f64, f64) {
    (
        counted.allocations as f64 / n as f64,
        counted.bytes as f64 / n as f64,
    )
}

fn components(executor: &Executor) {
    let runtime = executor.runtime();
    let spawner = executor.spawner();
    // Shared through an `Arc`: cloning a builder allocates.
    let builder = Arc::new(one_worker());
    let managed = count_components(executor, move |at_ready| {
        let (builder, runtime) = (builder.clone(), runtime.clone());
        async move { components_with(&builder, &runtime, COMPONENTS, at_ready).await }
    });
    let mut rows = vec![("lifecycle", managed)];
    for (name, stop) in [
        ("bare/shared_token", BareStop::SharedToken),
        ("bare/child_tokens", BareStop::ChildTokens),
    ] {
        let spawner = spawner.clone();
        let bare = count_components(executor, move |at_ready| {
            let spawner = spawner.clone();
            async move { bare_components_with(&spawner, COMPONENTS, stop, at_ready).await }
        });
        rows.push((name, bare));
    }
    println!(
        "\ncomponents ({COMPONENTS} at once) on {}, per component:",
        executor.name()
    );
    println!("| round | allocations | bytes | live bytes when all ready |");
    println!("|---|---|---|---|");
    for (name, (counted, live)) in rows {
        let (allocations, bytes) = per(counted, COMPONENTS);
        println!("| {name} | {allocations:.2} | {bytes:.0} | {live:.0} |");
    }
}

fn cycle(executor: &Executor) {
    let runtime = executor.runtime();
    let spawner = executor.spawner();
    // Shared through an `Arc`: cloning a builder allocates.
    let builder = Arc::new(one_worker());
    let managed = count(executor, {
        let (builder, runtime) = (builder.clone(), runtime.clone());
        move || {
            let (builder, runtime) = (builder.clone(), runtime.clone());
            async move { manager_cycle(&builder, &runtime).await }
        }
    });
    let bare = count(executor, {
        let spawner = spawner.clone();
        move || {
            let spawner = spawner.clone();
            async move { bare_cycle(&spawner).await }
        }
    });
    let bare_sizes = executor.run(async move {
        bare_cycle(&spawner).await; // warm-up
        start_tracing();
        bare_cycle(&spawner).await;
        stop_tracing()
    });

    // The managed cycle again, phase by phase, as `manager_cycle` does it,
    // with the size of every allocation.
    let phases = executor.run(async move {
        manager_cycle(&builder, &runtime).await; // warm-up
        let mut phases = Vec::with_capacity(8);
        let mut mark = |name: &'static str| phases.push((name, stop_tracing()));
        start_tracing();
        let manager = builder.build();
        mark("build");
        start_tracing();
        let stop = StopSource::new();
        let fatal = FatalSlot::new();
        mark("StopSource::new, FatalSlot::new (the caller's)");
        start_tracing();
        manager
            .start(Scope::new(runtime.clone(), stop.token(), fatal))
            .expect("a fresh manager starts");
        mark("start");
        start_tracing();
        manager.ready().wait().await;
        mark("wait ready (the worker's first poll)");
        start_tracing();
        stop.stop();
        manager.done().wait().await;
        mark("stop, wait done");
        start_tracing();
        drop(manager);
        drop(stop);
        mark("drop");
        phases
    });

    println!("\none cycle on {}:", executor.name());
    println!("| cycle | allocations | bytes |");
    println!("|---|---|---|");
    println!(
        "| lifecycle | {} | {} |",
        managed.allocations, managed.bytes
    );
    println!("| bare | {} | {} |", bare.allocations, bare.bytes);
    println!(
        "\nthe bare cycle's allocations on {}: {}",
        executor.name(),
        sizes(&bare_sizes)
    );
    print_phases(
        &format!("the lifecycle cycle by phase on {}", executor.name()),
        phases,
    );
}

fn restart(executor: &Executor) {
    const RESTARTS: u64 = 10_000;
    let mut rows = Vec::new();
    for (name, stop_wait) in [
        ("lifecycle", StopWait::DefaultTimeout),
        ("lifecycle/no_stop_timeout", StopWait::NoTimeout),
    ] {
        let runtime = executor.runtime();
        let counted = count(executor, move || {
            let runtime = runtime.clone();
            async move {
                restart_loop(runtime, RESTARTS, stop_wait).await;
            }
        });
        rows.push((name, counted));
    }
    let spawner = executor.spawner();
    let bare = count(executor, move || {
        let spawner = spawner.clone();
        async move {
            bare_restart_loop(&spawner, RESTARTS).await;
        }
    });
    rows.push(("bare", bare));
    println!("\nrestarts on {}, per restart:", executor.name());
    println!("| loop | allocations | bytes |");
    println!("|---|---|---|");
    for (name, counted) in rows {
        let (allocations, bytes) = per(counted, RESTARTS as usize);
        println!("| {name} | {allocations:.2} | {bytes:.0} |");
    }
}

/// What one supervisor round allocates in each phase.
#[derive(Clone, Copy, Debug, Default)]
struct SupervisorPhases {
    build: Counted,
    start: Counted,
    stop: Counted,
}

fn supervisor(executor: &Executor) {
    let runtime = executor.runtime();
    let spawner = executor.spawner();
    let managed = executor.run({
        let spawner = spawner.clone();
        async move {
            let builder = one_worker();
            let mut phases = SupervisorPhases::default();
            // The first round warms up; the second is counted.
            for _ in 0..2 {
                let before = snapshot();
                let supervisor = dag_supervisor(&builder, LAYERS, WIDTH);
                phases.build = Counted::since(before);
                let parent = StopSource::new();
                let ready = Component::ready(&supervisor);
                let before = snapshot();
                let run = spawner.spawn(supervisor.run(runtime.clone(), parent.token()));
                ready.wait().await;
                phases.start = Counted::since(before);
                let before = snapshot();
                parent.stop();
                let outcome = run.await;
                phases.stop = Counted::since(before);
                assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
            }
            phases
        }
    });
    let bare = executor.run(async move {
        let mut counted = (Counted::default(), Counted::default());
        for _ in 0..2 {
            let mut at_ready = None;
            let before = snapshot();
            bare_components_with(&spawner, NODES, BareStop::ChildTokens, || {
                at_ready = Some(snapshot());
            })
            .await;
            let at_ready = at_ready.expect("every task sent ready");
            let start = Counted {
                allocations: at_ready.allocations - before.allocations,
                bytes: at_ready.bytes - before.bytes,
            };
            counted = (start, Counted::since(at_ready));
        }
        counted
    });
    println!(
        "\nsupervisor ({NODES} nodes in a DAG) on {}, per node:",
        executor.name()
    );
    println!(
        "| phase | supervisor: allocations | bytes | bare, child tokens: allocations | bytes |"
    );
    println!("|---|---|---|---|---|");
    let (build, build_bytes) = per(managed.build, NODES);
    println!("| build | {build:.2} | {build_bytes:.0} | | |");
    for (name, lifecycle, bare) in [
        ("start to ready", managed.start, bare.0),
        ("stop to done", managed.stop, bare.1),
    ] {
        let (allocations, bytes) = per(lifecycle, NODES);
        let (bare_allocations, bare_bytes) = per(bare, NODES);
        println!(
            "| {name} | {allocations:.2} | {bytes:.0} | {bare_allocations:.2} | {bare_bytes:.0} |"
        );
    }
}

fn service(executor: &Executor) {
    let scope = ServiceScope::on(executor).scope;
    let trivial = Arc::new(Trivial::new());
    let closure = Arc::new(trivial_fn());
    let mut rows = Vec::new();
    {
        let (trivial, scope) = (trivial.clone(), scope.clone());
        let counted = count(executor, move || {
            let (trivial, scope) = (trivial.clone(), scope.clone());
            async move { service_cycle(&*trivial, &scope).await }
        });
        rows.push(("lifecycle", counted));
    }
    {
        let scope = scope.clone();
        let counted = count(executor, move || {
            let (closure, scope) = (closure.clone(), scope.clone());
            async move { service_cycle(&*closure, &scope).await }
        });
        rows.push(("lifecycle/service_fn", counted));
    }
    let spawner = executor.spawner();
    let bare = count(executor, move || {
        let spawner = spawner.clone();
        async move { bare_cycle(&spawner).await }
    });
    rows.push(("bare", bare));

    // The hand-written service's cycle again, phase by phase, as
    // `service_cycle` does it, with the size of every allocation.
    let phases = executor.run({
        let scope = scope.clone();
        async move {
            service_cycle(&*trivial, &scope).await; // warm-up
            let mut phases = Vec::with_capacity(4);
            let mut mark = |name: &'static str| phases.push((name, stop_tracing()));
            start_tracing();
            trivial.start(&scope).await.expect("the service starts");
            mark("start (begin, spawn)");
            start_tracing();
            trivial.started().wait().await;
            mark("wait started (the work's first poll)");
            start_tracing();
            trivial.stop().await;
            mark("stop");
            phases
        }
    });

    let services = trivial_services(SERVICES);
    let grouped = count(executor, move || {
        let (services, scope) = (services.clone(), scope.clone());
        async move { group(&services, &scope).await }
    });
    let spawner = executor.spawner();
    let bare_group = count(executor, move || {
        let spawner = spawner.clone();
        async move { bare_components(&spawner, SERVICES, BareStop::ChildTokens).await }
    });

    println!("\none service cycle on {}:", executor.name());
    println!("| cycle | allocations | bytes |");
    println!("|---|---|---|");
    for (name, counted) in rows {
        println!("| {name} | {} | {} |", counted.allocations, counted.bytes);
    }
    print_phases(
        &format!("the service cycle by phase on {}", executor.name()),
        phases,
    );
    println!(
        "\nservice groups ({SERVICES} at once) on {}, per service:",
        executor.name()
    );
    println!("| round | allocations | bytes |");
    println!("|---|---|---|");
    for (name, counted) in [("lifecycle", grouped), ("bare/child_tokens", bare_group)] {
        let (allocations, bytes) = per(counted, SERVICES);
        println!("| {name} | {allocations:.2} | {bytes:.0} |");
    }
}

/// Prints `phases` as a table under `title`: each phase's allocations,
/// their bytes and their sizes in order.
fn print_phases(title: &str, phases: Vec<(&str, Vec<usize>)>) {
    println!("\n{title}:");
    println!("| phase | allocations | bytes | sizes, in order |");
    println!("|---|---|---|---|");
    for (name, traced) in phases {
        println!(
            "| {name} | {} | {} | {} |",
            traced.len(),
            traced.iter().sum::<usize>(),
            sizes(&traced)
        );
    }
}

fn main() {
    for executor in [Executor::tokio_current_thread(), Executor::smol()] {
        components(&executor);
        cycle(&executor);
        restart(&executor);
        supervisor(&executor);
        service(&executor);
    }
}
