//! The synchronisation primitives the core is built from, in one place so that
//! loom can replace them.
//!
//! Under `cfg(loom)` the atomics, the cell and the mutex come from loom,
//! which explores every interleaving of their operations and checks every
//! access to the cell against them. Otherwise the mutex is a spin lock
//! that, with the `std` feature, yields the thread while it waits.
//!
//! `Arc` is always `alloc::sync::Arc`: reference counts are not part of any
//! protocol loom needs to explore, and loom has no `Weak`.
//!
//! None of the critical sections in this crate runs user code (wakers are
//! woken after the lock is released, hooks are called outside it), so a
//! poisoned loom mutex can only mean a panic inside an allocator or a
//! waker's `clone`; the data is still consistent and we keep going. (The
//! spin lock knows no poisoning.)

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize};

/// A mutual-exclusion lock whose `lock` cannot fail.
///
/// Outside loom a spin lock, with `std` too: the critical sections are a
/// few instructions, and a lock and unlock then cost one atomic
/// read-modify-write (an exchange in, a store out) where `std::sync::Mutex`
/// costs two. A waiter yields its thread while it waits (see [`Relax`]).
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(not(loom))]
    inner: spin::mutex::SpinMutex<T, Relax>,
}

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T, Relax>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(not(loom))]
            inner: spin::mutex::SpinMutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        {
            self.inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
        #[cfg(not(loom))]
        {
            self.inner.lock()
        }
    }
}

/// What a thread waiting for a held [`Mutex`] does between tries: with
/// `std`, gives its core to the holder, which has most likely been
/// preempted (critical sections are too short to wait out otherwise).
#[cfg(not(loom))]
pub(crate) struct Relax;

#[cfg(not(loom))]
impl spin::RelaxStrategy for Relax {
    fn relax() {
        #[cfg(feature = "std")]
        std::thread::yield_now();
        #[cfg(not(feature = "std"))]
        core::hint::spin_loop();
    }
}

/// `core::cell::UnsafeCell` with loom's closure API, so that one code path
/// serves both and loom sees every access.
#[cfg(not(loom))]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

/// How a thread waits for a flag's lock (see `flag.rs`) held by another.
///
/// Critical sections are a few instructions, so a short spin usually sees
/// the lock free; past that the holder has probably been preempted, and
/// with `std` the waiter yields its core to it instead of burning it.
/// (Under loom a flag's lock is a loom mutex: loom cannot explore a spin.)
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Backoff {
    #[cfg(feature = "std")]
    spins: u32,
}

#[cfg(not(loom))]
impl Backoff {
    #[cfg(feature = "std")]
    const SPINS: u32 = 64;

    pub(crate) fn snooze(&mut self) {
        #[cfg(feature = "std")]
        if self.spins < Self::SPINS {
            self.spins += 1;
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        #[cfg(not(feature = "std"))]
        core::hint::spin_loop();
    }
}
