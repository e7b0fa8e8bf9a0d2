// The runtime of the crate's doc examples, included by each with
// `# mod support { include!("doc_threads.rs"); } use support::Threads;`
// (the path relative to the file of the example). It is not a module of
// the crate: a doc example sees only the public API, and no executor is a
// dependency of the core.
//
// Every task runs on a thread of its own, driven by `block_on`. No timer
// ever fires: the examples need none, and a sleeping thread left behind
// would outlive the example, which Miri reports.

/// Runs each task on a thread of its own; its timers never fire.
pub struct Threads;

impl lifecycle::Runtime for Threads {
    fn spawn_detached(&self, task: lifecycle::BoxFuture) {
        std::thread::spawn(move || futures_executor::block_on(task));
    }

    fn sleep(&self, _: std::time::Duration) -> lifecycle::BoxFuture {
        Box::pin(std::future::pending())
    }

    fn now(&self) -> lifecycle::Instant {
        lifecycle::Instant::default()
    }
}
