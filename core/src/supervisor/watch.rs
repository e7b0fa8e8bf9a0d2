//! How the supervisor's run learns that an instance changed: one waker per
//! node, which queues the node and wakes the run, instead of a future per
//! thing to watch.
//!
//! An instance's ready and done signals are polled by the run itself,
//! with its node's waker, whenever the node is queued; its fatal slot,
//! which the run makes, keeps that waker from the start and wakes it with
//! the first error, so it is only read.
//! The wakers of all nodes share one allocation, made with the run, and
//! serve every instance a node ever has, so watching costs no allocation
//! per start or stop; a wake about an instance that is gone only makes the
//! run look at the node's current one, which finds nothing new.
//!
//! A node's waker is a hand-made `RawWaker` whose data pointer is the
//! node's entry in that allocation: `alloc::task::Wake` would need an
//! `Arc` per node.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::{self, ManuallyDrop};
use core::sync::atomic::Ordering::AcqRel;
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::component::Component;
use crate::fatal::{FatalError, FatalSlot};
use crate::latch::WaitOwned;
use crate::sync::{AtomicBool, Mutex};

/// The nodes woken since the run last looked, and the run's own waker.
#[derive(Default)]
struct Queue {
    woken: Vec<usize>,
    run: Option<Waker>,
}

/// What every node's waker points into: one allocation for all of them.
struct Shared {
    queue: Mutex<Queue>,
    nodes: Box<[Entry]>,
}

/// One node's waker: a `Waker`'s data pointer points at its entry.
struct Entry {
    node: usize,
    /// Whether the node is in the queue already: a burst of wakes queues it
    /// once.
    queued: AtomicBool,
    /// The `Shared` this entry is part of, whose strong count every waker
    /// of the entry holds one of.
    shared: *const Shared,
}

// SAFETY: `shared` is only read to reach the `Shared` the entry lives in
// (kept alive by the waker that reads it) and to adjust its reference
// count; everything else in the entry is `Send + Sync`.
unsafe impl Send for Entry {}
// SAFETY: as for `Send`.
unsafe impl Sync for Entry {}

impl Entry {
    /// Queues the node unless it is queued already. With `wake_run`,
    /// returns the run's waker if the run must be woken to see it (taken:
    /// the run registers again before it next sleeps); without, the run is
    /// the caller and its waker stays.
    fn enqueue(&self, shared: &Shared, wake_run: bool) -> Option<Waker> {
        // AcqRel: the release half publishes whatever the waking side did
        // before (a signal set) to the run's clearing swap; the acquire
        // half orders this against that swap, so a wake that finds the
        // node still queued happened before the run cleared it and looked.
        if self.queued.swap(true, AcqRel) {
            return None;
        }
        let mut queue = shared.queue.lock();
        queue.woken.push(self.node);
        if wake_run {
            queue.run.take()
        } else {
            None
        }
    }
}

/// The entry behind a waker's data pointer, and the `Shared` it is in.
///
/// # Safety
///
/// `data` comes from `raw_waker` and the waker it belongs to is alive (it
/// holds a strong count of the `Shared`).
unsafe fn entry<'a>(data: *const ()) -> (&'a Entry, &'a Shared) {
    // SAFETY: per the contract, `data` points at an entry of a live
    // `Shared`, whose `shared` pointer is that `Shared`.
    unsafe {
        let entry = &*data.cast::<Entry>();
        (entry, &*entry.shared)
    }
}

fn raw_waker(entry: &Entry) -> RawWaker {
    RawWaker::new(core::ptr::from_ref(entry).cast(), &VTABLE)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: called on a live waker (the `RawWaker` contract).
    let (entry, _) = unsafe { entry(data) };
    // SAFETY: `entry.shared` came from the `Arc` it is in (`new_cyclic`),
    // which the waker being cloned keeps alive; the new waker owns the
    // count added here.
    unsafe { Arc::increment_strong_count(entry.shared) };
    raw_waker(entry)
}

unsafe fn wake(data: *const ()) {
    // SAFETY: called on a live waker, which this consumes: woken first,
    // then its count released.
    unsafe {
        wake_by_ref(data);
        drop_waker(data);
    }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: called on a live waker.
    let (entry, shared) = unsafe { entry(data) };
    // Woken after the lock is released: a waker may do anything.
    if let Some(run) = entry.enqueue(shared, true) {
        run.wake();
    }
}

unsafe fn drop_waker(data: *const ()) {
    // SAFETY: called on a live waker, once; nothing of the entry is read
    // after its count is released, which may free it.
    unsafe {
        let shared = entry(data).0.shared;
        Arc::decrement_strong_count(shared);
    }
}

/// The wakers of every node and the queue they fill.
pub(super) struct Wakeups {
    shared: Arc<Shared>,
    /// The nodes taken from the queue and not yet looked at.
    batch: Vec<usize>,
    next: usize,
}

impl Wakeups {
    pub(super) fn new(nodes: usize) -> Wakeups {
        let shared = Arc::new_cyclic(|this| Shared {
            queue: Mutex::new(Queue::default()),
            nodes: (0..nodes)
                .map(|node| Entry {
                    node,
                    queued: AtomicBool::new(false),
                    shared: this.as_ptr(),
                })
                .collect(),
        });
        Wakeups {
            shared,
            batch: Vec::new(),
            next: 0,
        }
    }

    /// Queues `node` to be looked at, without waking the run: for a watch
    /// the run itself just began, which must be polled once to register.
    pub(super) fn schedule(&mut self, node: usize) {
        self.shared.nodes[node].enqueue(&self.shared, false);
    }

    /// The next queued node, or `Pending` with the run's waker registered
    /// for the next wake.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        if self.next == self.batch.len() {
            self.batch.clear();
            self.next = 0;
            let mut queue = self.shared.queue.lock();
            if queue.woken.is_empty() {
                match &mut queue.run {
                    Some(run) if run.will_wake(cx.waker()) => {}
                    run => *run = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            // Swapped, not drained: both vectors keep their capacity.
            mem::swap(&mut queue.woken, &mut self.batch);
        }
        let node = self.batch[self.next];
        self.next += 1;
        // AcqRel: see `enqueue`. Cleared before the node is looked at, so a
        // wake from now on queues it again.
        self.shared.nodes[node].queued.swap(false, AcqRel);
        Poll::Ready(node)
    }

    /// Runs `f` with the waker that queues `node`, lent without a count of
    /// its own: `self` keeps what it points at alive meanwhile, and
    /// whoever keeps it clones it, which takes a count.
    pub(super) fn with_waker<R>(&self, node: usize, f: impl FnOnce(&Waker) -> R) -> R {
        // SAFETY: the vtable's functions are sound for a pointer to an
        // entry of a live `Shared` (see each); `self.shared` keeps this one
        // alive for the whole call, and `ManuallyDrop` keeps the lent
        // waker from releasing a count it never took.
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(&self.shared.nodes[node])) });
        f(&waker)
    }
}

/// What a look at an instance found, most urgent first.
pub(super) enum Seen {
    /// Its first fatal error.
    Error(FatalError),
    /// Done; with the error it reported just before, if the watch had not
    /// seen it yet.
    Done(Option<FatalError>),
    /// Ready.
    Ready,
}

/// The waits on one instance's signals, polled by the run. The fatal slot
/// needs no wait: the run made it with the node's waker as its watcher.
pub(super) struct InstanceWatch {
    /// Whether the slot's error was seen (or taken by someone else).
    error_seen: bool,
    /// `None` once ready was seen.
    ready: Option<WaitOwned>,
    done: WaitOwned,
}

impl InstanceWatch {
    pub(super) fn new(component: &dyn Component) -> InstanceWatch {
        InstanceWatch {
            error_seen: false,
            ready: Some(component.ready().wait_owned()),
            done: component.done().wait_owned(),
        }
    }

    /// Looks at the instance: the error in `slot` first, then done, then
    /// ready (when `want_ready`), registering `cx`'s waker on whatever is
    /// not there yet. `cx` must carry the same waker every time (the
    /// node's, which `slot` was made with).
    pub(super) fn poll(
        &mut self,
        slot: &FatalSlot,
        want_ready: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Seen> {
        // The slot wakes the node once its first error is recorded.
        if !self.error_seen && slot.is_recorded() {
            self.error_seen = true;
            // `None`: someone else took it.
            if let Some(error) = slot.take() {
                return Poll::Ready(Seen::Error(error));
            }
        }
        if self.done.poll_same_waker(cx).is_ready() {
            return Poll::Ready(Seen::Done(slot.take()));
        }
        if want_ready {
            if let Some(ready) = &mut self.ready {
                if ready.poll_same_waker(cx).is_ready() {
                    self.ready = None;
                    return Poll::Ready(Seen::Ready);
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Wakeups;
    use alloc::sync::Arc;
    use alloc::task::Wake;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use core::task::{Context, Poll, Waker};

    /// Counts how often the run is woken.
    #[derive(Default)]
    struct Run(AtomicUsize);

    impl Wake for Run {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn drain(wakeups: &mut Wakeups, cx: &mut Context<'_>) -> Vec<usize> {
        let mut nodes = Vec::new();
        while let Poll::Ready(node) = wakeups.poll_next(cx) {
            nodes.push(node);
        }
        nodes
    }

    #[test]
    fn a_node_is_queued_once_per_look_and_wakes_the_run_once() {
        let run = Arc::new(Run::default());
        let run_waker = Waker::from(run.clone());
        let mut cx = Context::from_waker(&run_waker);
        let mut wakeups = Wakeups::new(3);
        assert!(drain(&mut wakeups, &mut cx).is_empty()); // registers the run
        let kept: Vec<Waker> = (0..3)
            .map(|node| wakeups.with_waker(node, Waker::clone))
            .collect();
        kept[2].wake_by_ref();
        kept[2].wake_by_ref();
        let consumed = kept[0].clone();
        consumed.wake();
        assert_eq!(run.0.load(Relaxed), 1);
        assert_eq!(drain(&mut wakeups, &mut cx), [2, 0]);
        // Looked at: a new wake queues it again.
        kept[2].wake_by_ref();
        assert_eq!(run.0.load(Relaxed), 2);
        assert_eq!(drain(&mut wakeups, &mut cx), [2]);
        // The run polls its own nodes without being woken.
        wakeups.schedule(1);
        assert_eq!(run.0.load(Relaxed), 2);
        assert_eq!(drain(&mut wakeups, &mut cx), [1]);
    }

    #[test]
    fn wakers_outlive_the_run() {
        let wakeups = Wakeups::new(2);
        let kept = wakeups.with_waker(1, Waker::clone);
        let same = wakeups.with_waker(1, |lent| kept.will_wake(lent));
        assert!(same);
        drop(wakeups);
        // Waking a gone run's node only queues it; the last waker frees
        // what they shared.
        kept.wake_by_ref();
        let other = kept.clone();
        drop(kept);
        other.wake();
    }
}
