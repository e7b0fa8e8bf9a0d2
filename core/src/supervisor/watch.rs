//! How the supervisor's run learns that an instance changed: one waker per
//! node, which queues the node and wakes the run, instead of a future per
//! thing to watch.
//!
//! An instance's ready and done signals and its fatal slot are polled by
//! the run itself, with its node's waker, whenever the node is queued. The
//! waker is made once per node and serves every instance the node ever
//! has, so watching costs no allocation per start or stop; a wake about an
//! instance that is gone only makes the run look at the node's current
//! one, which finds nothing new.

use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::mem;
use core::sync::atomic::Ordering::AcqRel;
use core::task::{Context, Poll, Waker};

use crate::component::Component;
use crate::fatal::{FatalError, FatalSlot, FirstOwned};
use crate::latch::WaitOwned;
use crate::sync::{AtomicBool, Mutex};

/// The nodes woken since the run last looked, and the run's own waker.
#[derive(Default)]
struct Queue {
    woken: Vec<usize>,
    run: Option<Waker>,
}

/// One node's waker.
struct NodeWaker {
    node: usize,
    /// Whether the node is in the queue already: a burst of wakes queues it
    /// once.
    queued: AtomicBool,
    queue: Arc<Mutex<Queue>>,
}

impl NodeWaker {
    /// Queues the node unless it is queued already; returns whether the
    /// run must be woken to see it.
    fn enqueue(&self) -> Option<Waker> {
        // AcqRel: the release half publishes whatever the waking side did
        // before (a signal set) to the run's clearing swap; the acquire
        // half orders this against that swap, so a wake that finds the
        // node still queued happened before the run cleared it and looked.
        if self.queued.swap(true, AcqRel) {
            return None;
        }
        let mut queue = self.queue.lock();
        queue.woken.push(self.node);
        queue.run.take()
    }
}

impl Wake for NodeWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Woken after the lock is released: a waker may do anything.
        if let Some(run) = self.enqueue() {
            run.wake();
        }
    }
}

/// A node's waker, and the same as a `Waker` to register.
struct NodeSlot {
    node: Arc<NodeWaker>,
    waker: Waker,
}

/// The wakers of every node and the queue they fill.
pub(super) struct Wakeups {
    queue: Arc<Mutex<Queue>>,
    wakers: Vec<Option<NodeSlot>>,
    /// The nodes taken from the queue and not yet looked at.
    batch: Vec<usize>,
    next: usize,
}

impl Wakeups {
    pub(super) fn new(nodes: usize) -> Wakeups {
        Wakeups {
            queue: Arc::new(Mutex::new(Queue::default())),
            wakers: (0..nodes).map(|_| None).collect(),
            batch: Vec::new(),
            next: 0,
        }
    }

    /// The node's waker, made on first use.
    fn slot(&mut self, node: usize) -> &NodeSlot {
        let queue = &self.queue;
        self.wakers[node].get_or_insert_with(|| {
            let node = Arc::new(NodeWaker {
                node,
                queued: AtomicBool::new(false),
                queue: queue.clone(),
            });
            NodeSlot {
                waker: Waker::from(node.clone()),
                node,
            }
        })
    }

    /// Queues `node` to be looked at, without waking the run: for a watch
    /// the run itself just began, which must be polled once to register.
    pub(super) fn schedule(&mut self, node: usize) {
        // The run is awake: it is the caller.
        let _ = self.slot(node).node.enqueue();
    }

    /// The next queued node, or `Pending` with the run's waker registered
    /// for the next wake.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        if self.next == self.batch.len() {
            self.batch.clear();
            self.next = 0;
            let mut queue = self.queue.lock();
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
        if let Some(slot) = &self.wakers[node] {
            // AcqRel: see `enqueue`. Cleared before the node is looked at,
            // so a wake from now on queues it again.
            slot.node.queued.swap(false, AcqRel);
        }
        Poll::Ready(node)
    }

    /// The waker that queues `node`.
    pub(super) fn waker(&mut self, node: usize) -> &Waker {
        &self.slot(node).waker
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

/// The waits on one instance's signals, polled by the run.
pub(super) struct InstanceWatch {
    /// `None` once the error was seen (or taken by someone else).
    error: Option<FirstOwned>,
    /// `None` once ready was seen.
    ready: Option<WaitOwned>,
    done: WaitOwned,
}

impl InstanceWatch {
    pub(super) fn new(component: &dyn Component, slot: &FatalSlot) -> InstanceWatch {
        InstanceWatch {
            error: Some(slot.first_owned()),
            ready: Some(component.ready().wait_owned()),
            done: component.done().wait_owned(),
        }
    }

    /// Looks at the instance: the error first, then done, then ready (when
    /// `want_ready`), registering `cx`'s waker on whatever is not there yet.
    /// `cx` must carry the same waker every time (the node's).
    pub(super) fn poll(
        &mut self,
        slot: &FatalSlot,
        want_ready: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Seen> {
        if let Some(error) = &mut self.error {
            match error.poll_same_waker(cx) {
                Poll::Ready(Some(error)) => {
                    self.error = None;
                    return Poll::Ready(Seen::Error(error));
                }
                Poll::Ready(None) => self.error = None,
                Poll::Pending => {}
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
