//! `Flag`: the one waiting mechanism of the crate.
//!
//! A flag is a boolean that goes from unset to set exactly once, a list of the
//! wakers of tasks waiting for that, and some extra state `S` that its owner
//! wants guarded by the same lock (a stop token keeps its cause and children
//! there). Latches, stop tokens and fatal slots are all built on it.
//!
//! Invariants:
//! - `set` is only ever written under the lock, once, from `false` to `true`,
//!   and the waiter list is drained in the same critical section. So a waiter
//!   that finds the flag unset *under the lock* is guaranteed to be drained and
//!   woken by the setter later, and nothing is ever inserted after the drain.
//! - Reading the flag needs no lock: one `Acquire` load, paired with the
//!   `Release` store in [`Flag::set`], so whatever the setter wrote before
//!   setting is visible to anyone who sees the flag set.
//! - Wakers are woken after the lock is released, all at once. Waking under
//!   the lock (as `event-listener` does) makes every woken task contend for
//!   that lock on its next poll; with thousands of waiters that made fan-out
//!   several times slower than tokio-util's `CancellationToken`.

use alloc::boxed::Box;
use core::task::{Context, Poll, Waker};

use slab::Slab;

use crate::sync::{AtomicBool, Mutex};
use core::sync::atomic::Ordering::{Acquire, Release};

// `repr(C)` keeps the flag, the lock and the first waiter on one cache line:
// stopping a fan-out of children touches exactly these per child.
#[repr(C)]
pub(crate) struct Flag<S = ()> {
    set: AtomicBool,
    locked: Mutex<Locked<S>>,
}

#[repr(C)]
struct Locked<S> {
    waiters: Waiters,
    state: S,
}

/// The wakers of the waiting tasks. Most flags have one or two waiters (a
/// child scope: its worker and its manager's shutdown mirror; a task's
/// outcome: its joiner), so the first two live inline: no allocation to
/// register them, no cache miss or free to wake them. More spill into a
/// boxed slab, allocated only then. Keys 0 and 1 are the inline slots, key
/// `k + 2` is slot `k` of the slab.
#[derive(Default)]
struct Waiters {
    inline: [Option<Waker>; INLINE],
    rest: Option<Box<Slab<Waker>>>,
}

const INLINE: usize = 2;

impl Waiters {
    fn get_mut(&mut self, key: usize) -> Option<&mut Waker> {
        match key.checked_sub(INLINE) {
            None => self.inline[key].as_mut(),
            Some(k) => self.rest.as_mut()?.get_mut(k),
        }
    }

    fn insert(&mut self, waker: Waker) -> usize {
        if let Some(key) = self.inline.iter().position(Option::is_none) {
            self.inline[key] = Some(waker);
            return key;
        }
        self.rest.get_or_insert_with(Box::default).insert(waker) + INLINE
    }

    fn remove(&mut self, key: usize) {
        match key.checked_sub(INLINE) {
            None => self.inline[key] = None,
            Some(k) => {
                if let Some(rest) = &mut self.rest {
                    rest.try_remove(k);
                }
            }
        }
    }

    fn wake_all(self) {
        let rest = self
            .rest
            .into_iter()
            .flat_map(|rest| rest.into_iter().map(|(_, waker)| waker));
        for waker in self.inline.into_iter().flatten().chain(rest) {
            waker.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let inline = self.inline.iter().filter(|slot| slot.is_some()).count();
        inline + self.rest.as_ref().map_or(0, |rest| rest.len())
    }
}

impl Flag<()> {
    /// Sets a flag that guards nothing; returns whether this call set it.
    pub(crate) fn raise(&self) -> bool {
        self.set(|()| ()).is_some()
    }
}

/// A waiter's place in the list: `None` until first registered.
pub(crate) type WaitKey = Option<usize>;

impl<S> Flag<S> {
    pub(crate) fn new(state: S) -> Self {
        Self {
            set: AtomicBool::new(false),
            locked: Mutex::new(Locked {
                waiters: Waiters::default(),
                state,
            }),
        }
    }

    /// One atomic load. `Acquire` pairs with the `Release` in `set`.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Acquire)
    }

    /// Sets the flag and wakes every waiter, unless it was set already.
    ///
    /// `update` runs under the lock just before the flag becomes visible as set,
    /// so what it writes into the guarded state is published together with the
    /// flag. Returns `None` if the flag was already set (`update` not called).
    pub(crate) fn set<R>(&self, update: impl FnOnce(&mut S) -> R) -> Option<R> {
        if self.is_set() {
            return None; // sticky: no need for the lock
        }
        let (result, waiters) = {
            let mut locked = self.locked.lock();
            // Relaxed would do under the lock, but `Acquire` keeps the reasoning
            // local: every read of the flag is an acquire.
            if self.set.load(Acquire) {
                return None;
            }
            let result = update(&mut locked.state);
            // Release: publishes `update`'s writes and everything the caller did
            // before `set` to whoever loads `true`.
            self.set.store(true, Release);
            (result, core::mem::take(&mut locked.waiters))
        };
        waiters.wake_all();
        Some(result)
    }

    /// Runs `f` under the lock with the flag's current value.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(bool, &mut S) -> R) -> R {
        let mut locked = self.locked.lock();
        let is_set = self.set.load(Acquire);
        f(is_set, &mut locked.state)
    }

    /// The body of every wait future: ready once the flag is set, otherwise
    /// registers (or refreshes) the task's waker under `key`.
    pub(crate) fn poll_wait(&self, key: &mut WaitKey, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            // If we were registered, the setter drained our entry already.
            *key = None;
            return Poll::Ready(());
        }
        let mut locked = self.locked.lock();
        if self.is_set() {
            *key = None;
            return Poll::Ready(());
        }
        match key.and_then(|k| locked.waiters.get_mut(k)) {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
            }
            None => *key = Some(locked.waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Unregisters a waiter that is dropped before the flag was set, so that
    /// dropped waiters never accumulate.
    pub(crate) fn cancel_wait(&self, key: &mut WaitKey) {
        let Some(k) = key.take() else { return };
        if self.is_set() {
            return; // drained by the setter
        }
        let mut locked = self.locked.lock();
        if !self.is_set() {
            locked.waiters.remove(k);
        }
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.locked.lock().waiters.len()
    }
}

/// Anything that owns a [`Flag`]: lets one waiter type serve latches, stop
/// tokens and fatal slots, borrowed or owned.
pub(crate) trait HasFlag {
    type State;
    fn flag(&self) -> &Flag<Self::State>;
}

impl<S> HasFlag for Flag<S> {
    type State = S;
    fn flag(&self) -> &Flag<S> {
        self
    }
}

/// A future that completes once the flag behind `P` is set; unregisters itself
/// when dropped early. `P` is a reference or an `Arc`.
pub(crate) struct Waiter<P>
where
    P: core::ops::Deref,
    P::Target: HasFlag,
{
    holder: P,
    key: WaitKey,
}

impl<P> Waiter<P>
where
    P: core::ops::Deref,
    P::Target: HasFlag,
{
    pub(crate) fn new(holder: P) -> Self {
        Self { holder, key: None }
    }

    pub(crate) fn holder(&self) -> &P::Target {
        &self.holder
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.holder.flag().poll_wait(&mut self.key, cx)
    }
}

impl<P> Drop for Waiter<P>
where
    P: core::ops::Deref,
    P::Target: HasFlag,
{
    fn drop(&mut self) {
        self.holder.flag().cancel_wait(&mut self.key);
    }
}
