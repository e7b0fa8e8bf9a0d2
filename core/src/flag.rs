//! `Flag`: the one waiting mechanism of the crate.
//!
//! A flag is a bit that goes from unset to set exactly once, and the wakers
//! of the tasks waiting for that. A [`Guarded`] flag also guards some state
//! `S` of its owner with the flag's lock (a stop node keeps its cause and
//! children there, a task its outcome, a fatal slot its error). Latches,
//! stop tokens, fatal slots and task outcomes are all built on it.
//!
//! A flag's synchronisation is one byte, two bits:
//!
//! ```text
//!   SET     the flag is set; never cleared
//!   LOCKED  a thread holds the lock on the waiter list (and a Guarded's state)
//!
//!   unset ──lock──▶ unset+LOCKED ──unlock──▶ unset
//!                        │ set: drain the waiters, then unlock and set in one store
//!                        ▼
//!   set ──lock──▶ set+LOCKED ──unlock──▶ set      (Guarded state only)
//! ```
//!
//! Invariants:
//! - `SET` is only ever written by the lock holder, in the store that
//!   releases the lock, after draining the waiter list. So a waiter that
//!   finds the flag unset *under the lock* is guaranteed to be drained and
//!   woken by the setter later, and nothing is ever inserted after the drain.
//! - While `LOCKED` is in the byte, only its holder writes the byte (others
//!   only try to swap `LOCKED` in when it is clear). So the holder knows the
//!   byte's value and releases with a plain store: a lock and unlock cost
//!   one atomic read-modify-write, setting the flag included. This is why
//!   the flag has a lock of its own rather than a `Mutex` beside a bit.
//! - Reading the flag needs no lock: one `Acquire` load, paired with the
//!   `Release` store that sets it, so whatever the setter wrote before
//!   setting is visible to anyone who sees the flag set.
//! - Wakers are woken after the lock is released, all at once. Waking under
//!   the lock (as `event-listener` does) makes every woken task contend for
//!   that lock on its next poll; with thousands of waiters that made fan-out
//!   several times slower than tokio-util's `CancellationToken`.
//! - The lock is a spin lock ([`Backoff`]): nothing but a waker's `clone`
//!   or `drop` and the owner's own bookkeeping runs under it.

use alloc::boxed::Box;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::task::{Context, Poll, Waker};

use slab::Slab;

#[cfg(not(loom))]
use crate::sync::Backoff;
use crate::sync::{AtomicU8, UnsafeCell};

const SET: u8 = 0b01;
#[cfg_attr(loom, allow(dead_code))] // under loom the lock is a loom mutex
const LOCKED: u8 = 0b10;

// `repr(C)` keeps the state byte and the first waiter on one cache line:
// stopping a fan-out of children touches exactly these per child.
#[repr(C)]
pub(crate) struct Flag {
    state: AtomicU8,
    waiters: UnsafeCell<Waiters>,
    /// Loom cannot explore a spin (every turn is another branch), so under
    /// loom this is the lock and `LOCKED` stays clear; `SET` is published
    /// the same way.
    #[cfg(loom)]
    queue: loom::sync::Mutex<()>,
}

// SAFETY: the waiter list is only reached through a `Lock`, which holds the
// `LOCKED` bit, so one thread at a time touches it; wakers are `Send` and
// `Sync`.
unsafe impl Sync for Flag {}

/// The wakers of the waiting tasks. Most flags have one waiter (a stop
/// node: its worker; a latch or a task's outcome: whoever waits for it), so
/// the first lives inline: no allocation to register it, no cache miss or
/// free to wake it. More spill into a boxed slab, allocated only then. Key
/// 0 is the inline slot, key `k + 1` is slot `k` of the slab.
#[derive(Default)]
struct Waiters {
    first: Option<Waker>,
    rest: Option<Box<Slab<Waker>>>,
}

impl Waiters {
    fn get_mut(&mut self, key: usize) -> Option<&mut Waker> {
        match key.checked_sub(1) {
            None => self.first.as_mut(),
            Some(k) => self.rest.as_mut()?.get_mut(k),
        }
    }

    fn insert(&mut self, waker: Waker) -> usize {
        if self.first.is_none() {
            self.first = Some(waker);
            return 0;
        }
        self.rest.get_or_insert_with(Box::default).insert(waker) + 1
    }

    fn remove(&mut self, key: usize) -> Option<Waker> {
        match key.checked_sub(1) {
            None => self.first.take(),
            Some(k) => self.rest.as_mut()?.try_remove(k),
        }
    }

    fn wake_all(self) {
        let rest = self
            .rest
            .into_iter()
            .flat_map(|rest| rest.into_iter().map(|(_, waker)| waker));
        for waker in self.first.into_iter().chain(rest) {
            waker.wake();
        }
    }

    #[cfg(all(test, not(loom)))]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }
}

/// The held lock of a flag; releases it when dropped.
struct Lock<'a> {
    flag: &'a Flag,
    /// The byte to store on release: as it was when locked, plus `SET` once
    /// this holder has set the flag.
    release: u8,
    /// Under loom, the lock itself; released after the byte is stored
    /// (fields drop after `drop`).
    #[cfg(loom)]
    _queued: loom::sync::MutexGuard<'a, ()>,
}

impl Lock<'_> {
    fn is_set(&self) -> bool {
        self.release & SET != 0
    }

    fn with_waiters<R>(&mut self, f: impl FnOnce(&mut Waiters) -> R) -> R {
        self.flag.waiters.with_mut(|waiters| {
            // SAFETY: this guard holds `LOCKED`, every access to the list
            // goes through a guard, and `&mut self` lets one reference out
            // at a time.
            f(unsafe { &mut *waiters })
        })
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        // Release: publishes everything written under the lock (and before
        // a set) to the next holder's `Acquire` and to readers of `SET`.
        self.flag.state.store(self.release, Release);
    }
}

/// A waiter's place in the list: `None` until first registered.
pub(crate) type WaitKey = Option<usize>;

/// The key of a flag's first waiter. A flag that only ever has one waiter
/// (a task's abort flag, waited on by that task) lets it use this key
/// instead of keeping one: its waker is always in the first slot.
pub(crate) const SOLE_WAITER: WaitKey = Some(0);

impl Flag {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
            waiters: UnsafeCell::new(Waiters {
                first: None,
                rest: None,
            }),
            #[cfg(loom)]
            queue: loom::sync::Mutex::new(()),
        }
    }

    /// One atomic load. `Acquire` pairs with the `Release` store that sets
    /// the flag.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.state.load(Acquire) & SET != 0
    }

    #[cfg(not(loom))]
    fn lock(&self) -> Lock<'_> {
        let mut backoff = Backoff::default();
        // Relaxed: only a guess at the byte for the exchange below.
        let mut current = self.state.load(Relaxed);
        loop {
            if current & LOCKED != 0 {
                backoff.snooze();
                // Relaxed: a guess again; the exchange acquires.
                current = self.state.load(Relaxed);
                continue;
            }
            // Acquire: pairs with the previous holder's releasing store, so
            // its writes under the lock are visible to ours. Relaxed on
            // failure: nothing is read then but the new guess.
            match self
                .state
                .compare_exchange_weak(current, current | LOCKED, Acquire, Relaxed)
            {
                Ok(_) => {
                    return Lock {
                        flag: self,
                        release: current,
                    }
                }
                Err(actual) => current = actual,
            }
        }
    }

    #[cfg(loom)]
    fn lock(&self) -> Lock<'_> {
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Lock {
            flag: self,
            // Relaxed: only holders write the byte, and the mutex orders them.
            release: self.state.load(Relaxed),
            _queued: queued,
        }
    }

    /// Sets a flag that guards nothing; returns whether this call set it.
    pub(crate) fn raise(&self) -> bool {
        self.set_with(|| ()).is_some()
    }

    /// Sets the flag and wakes every waiter, unless it was set already.
    /// `update` runs under the lock, before the flag becomes visible as set.
    /// Returns `None` if the flag was already set (`update` not called).
    fn set_with<R>(&self, update: impl FnOnce() -> R) -> Option<R> {
        if self.is_set() {
            return None; // sticky: no need for the lock
        }
        let (result, waiters) = {
            let mut lock = self.lock();
            if lock.is_set() {
                return None;
            }
            let result = update();
            let waiters = lock.with_waiters(core::mem::take);
            lock.release |= SET;
            (result, waiters)
        };
        waiters.wake_all();
        Some(result)
    }

    /// The body of every wait future: ready once the flag is set, otherwise
    /// registers (or refreshes) the task's waker under `key`.
    pub(crate) fn poll_wait(&self, key: &mut WaitKey, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            // If we were registered, the setter drained our entry already.
            *key = None;
            return Poll::Ready(());
        }
        let mut lock = self.lock();
        if lock.is_set() {
            *key = None;
            return Poll::Ready(());
        }
        lock.with_waiters(|waiters| match key.and_then(|k| waiters.get_mut(k)) {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
            }
            None => *key = Some(waiters.insert(cx.waker().clone())),
        });
        Poll::Pending
    }

    /// Unregisters a waiter that is dropped before the flag was set, so that
    /// dropped waiters never accumulate.
    pub(crate) fn cancel_wait(&self, key: &mut WaitKey) {
        let Some(k) = key.take() else { return };
        if self.is_set() {
            return; // drained by the setter
        }
        let removed = {
            let mut lock = self.lock();
            if lock.is_set() {
                return;
            }
            lock.with_waiters(|waiters| waiters.remove(k))
        };
        drop(removed); // after the lock: a waker's drop is foreign code
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiter_count(&self) -> usize {
        self.lock().with_waiters(|waiters| waiters.len())
    }
}

/// A [`Flag`] that also guards state `S` of its owner with its lock.
#[repr(C)]
pub(crate) struct Guarded<S> {
    flag: Flag,
    state: UnsafeCell<S>,
}

// SAFETY: `state` is only reached under the flag's lock, so sharing a
// `Guarded` shares `S` as a `Mutex<S>` would: it must only be `Send`.
unsafe impl<S: Send> Sync for Guarded<S> {}

impl<S> Guarded<S> {
    pub(crate) fn new(state: S) -> Self {
        Self {
            flag: Flag::new(),
            state: UnsafeCell::new(state),
        }
    }

    pub(crate) fn flag(&self) -> &Flag {
        &self.flag
    }

    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.flag.is_set()
    }

    /// Sets the flag and wakes every waiter, unless it was set already.
    ///
    /// `update` runs under the lock just before the flag becomes visible as
    /// set, so what it writes into the state is published together with the
    /// flag. Returns `None` if the flag was already set (`update` not called).
    pub(crate) fn set<R>(&self, update: impl FnOnce(&mut S) -> R) -> Option<R> {
        self.flag.set_with(|| {
            self.state.with_mut(|state| {
                // SAFETY: `set_with` runs this under the flag's lock, and the
                // reference does not outlive the closure.
                update(unsafe { &mut *state })
            })
        })
    }

    /// Runs `f` on the state without the lock: `&mut self` proves that
    /// nobody else can reach it (an owner's drop). Under loom the lock is
    /// taken anyway, as loom cannot see the `Arc` count that proves it.
    pub(crate) fn with_state_mut<R>(&mut self, f: impl FnOnce(&mut S) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.state.get_mut())
        }
        #[cfg(loom)]
        {
            self.with_state(|_, state| f(state))
        }
    }

    /// Runs `f` under the lock with the flag's current value.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(bool, &mut S) -> R) -> R {
        let lock = self.flag.lock();
        self.state.with_mut(|state| {
            // SAFETY: `lock` holds the flag's lock until after the closure,
            // and the reference does not outlive it.
            f(lock.is_set(), unsafe { &mut *state })
        })
    }
}

/// Anything that owns a [`Flag`]: lets one waiter type serve latches, stop
/// tokens and fatal slots, borrowed or owned.
pub(crate) trait HasFlag {
    fn flag(&self) -> &Flag;
}

impl HasFlag for Flag {
    fn flag(&self) -> &Flag {
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

    /// As [`poll`](Waiter::poll), for a caller that polls with the same
    /// waker every time: once registered, finding the flag unset needs no
    /// lock, as the waker registered is the one it would register.
    pub(crate) fn poll_same_waker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.key.is_some() && !self.holder.flag().is_set() {
            return Poll::Pending;
        }
        self.poll(cx)
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
