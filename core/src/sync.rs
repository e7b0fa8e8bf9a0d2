//! The synchronisation primitives the core is built from, in one place so that
//! loom can replace them.
//!
//! Under `cfg(loom)` the atomics and the mutex come from loom, which explores
//! every interleaving of their operations. Otherwise the mutex is
//! `std::sync::Mutex` with the `std` feature and a spin lock without it.
//!
//! `Arc` is always `alloc::sync::Arc`: reference counts are not part of any
//! protocol loom needs to explore, and loom has no `Weak`.
//!
//! None of the critical sections in this crate runs user code (wakers are
//! woken after the lock is released, hooks are called outside it), so a
//! poisoned std mutex can only mean a panic inside an allocator or a waker's
//! `clone`; the data is still consistent and we keep going.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicUsize};

/// A mutual-exclusion lock whose `lock` cannot fail.
pub(crate) struct Mutex<T> {
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(all(not(loom), feature = "std"))]
    inner: std::sync::Mutex<T>,
    #[cfg(all(not(loom), not(feature = "std")))]
    inner: spin::Mutex<T>,
}

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(all(not(loom), feature = "std"))]
pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;
#[cfg(all(not(loom), not(feature = "std")))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
            #[cfg(all(not(loom), feature = "std"))]
            inner: std::sync::Mutex::new(value),
            #[cfg(all(not(loom), not(feature = "std")))]
            inner: spin::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(any(loom, feature = "std"))]
        {
            self.inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
        #[cfg(all(not(loom), not(feature = "std")))]
        {
            self.inner.lock()
        }
    }
}
