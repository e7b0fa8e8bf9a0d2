//! The process-wide half of OS signal handling that every adapter shares:
//! what SIGINT and SIGTERM do while no adapter listens for them.
//!
//! The handlers are registered through `signal-hook-registry` (by tokio in
//! its adapter, by async-signal in `HostSignals` for smol and async-std).
//! Neither puts the default disposition back when its handlers go away:
//! tokio never unregisters, and the registry keeps its own handler
//! installed with no action, so the signal would be silently ignored from
//! then on. One fallback action per signal, registered once per process,
//! closes that gap: it ends the process the way the default disposition
//! would, unless a [`SignalClaim`] is alive.

use alloc::format;
use alloc::string::String;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use signal_hook::consts::{SIGINT, SIGTERM};

/// How many claims are alive. The fallback reads it from a signal handler:
/// an atomic load is async-signal-safe, a lock would not be.
static CLAIMS: AtomicUsize = AtomicUsize::new(0);

/// The outcome of installing the fallback, once per process (an
/// `io::Error` is not `Clone`, so its kind and text are kept).
static FALLBACK: OnceLock<Result<(), (io::ErrorKind, String)>> = OnceLock::new();

/// A claim on SIGINT and SIGTERM: while one is alive, the process's own
/// handlers receive them; once the last is dropped, they end the process
/// again, as they did before the first claim.
///
/// The adapters' `signals()` streams (`HostSignals` for smol and
/// async-std, tokio's own) each hold one beside their handlers, so that
/// dropping the stream (when `run` returns, say) gives Ctrl-C and `kill`
/// their usual effect back. Application code rarely needs it directly; it
/// is public for streams on other signal drivers.
///
/// # How
///
/// Tokio never unregisters a signal handler, and `signal-hook-registry`
/// (under tokio and `async-signal`) leaves its own handler installed, doing
/// nothing, once the last action is removed. So the first claim registers,
/// once per process and through the same registry, a fallback action for
/// SIGINT and SIGTERM that ends the process with
/// [`emulate_default_handler`](signal_hook::low_level::emulate_default_handler)
/// when no claim is alive, and does nothing otherwise.
///
/// - If the process started with a signal ignored (a shell's background
///   job has SIGINT ignored, for example), the fallback leaves it ignored.
///   This is read when the first claim is made: take it before any other
///   code installs a handler for these signals.
/// - While no claim is alive the fallback ends the process even if other
///   code still listens for the signal through tokio or `signal-hook`
///   (their stale handlers cannot be told from live ones). Code that
///   listens on its own should hold a claim while it does.
/// - Only unix targets have it.
///
/// # Example
///
/// An adapter registers its handlers inside [`with`](SignalClaim::with),
/// and keeps the claim for as long as it keeps the handlers:
///
/// ```
/// use lifecycle::SignalClaim;
///
/// // A real adapter registers handlers here (tokio::signal::unix::signal,
/// // async_signal::Signals::new) and returns them.
/// let (claim, handlers) = SignalClaim::with(|| Ok("handlers"))?;
/// assert_eq!(handlers, "handlers");
/// // SIGINT and SIGTERM now reach only the handlers...
/// drop(claim);
/// // ...and from here they end the process again.
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the signals end the process again once the claim is dropped"]
pub struct SignalClaim {
    _private: (),
}

impl SignalClaim {
    /// Claims SIGINT and SIGTERM for the handlers `register` installs, and
    /// returns the claim with what `register` returned.
    ///
    /// `register` runs after the fallback is in place and before the claim
    /// counts, so a signal arriving in between ends the process, as it
    /// would have without the call; once this returns, the handlers get
    /// every signal. Keep the claim for as long as the handlers are
    /// registered, and drop it first (a struct drops its fields in
    /// declaration order), so that a signal arriving while the handlers
    /// are taken down ends the process rather than being lost.
    ///
    /// # Errors
    ///
    /// The error of `register`, or the OS error of installing the fallback
    /// (the same one on every later call: the fallback is installed at most
    /// once per process).
    ///
    /// # Example
    ///
    /// A signal driver that fails to register its handlers gets its own
    /// error back, and no claim is made; one that succeeds keeps the claim
    /// beside its handlers:
    ///
    /// ```
    /// use std::io;
    /// use lifecycle::SignalClaim;
    ///
    /// let failed = SignalClaim::with(|| Err::<(), _>(io::Error::other("no pipe left")));
    /// let error = failed.expect_err("register failed");
    /// assert_eq!(error.to_string(), "no pipe left");
    ///
    /// struct Listening {
    ///     _claim: SignalClaim, // first: dropped before the handlers
    ///     handlers: Vec<&'static str>,
    /// }
    /// let (claim, handlers) = SignalClaim::with(|| Ok(vec!["SIGINT", "SIGTERM"]))?;
    /// let listening = Listening { _claim: claim, handlers };
    /// assert_eq!(listening.handlers, ["SIGINT", "SIGTERM"]);
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn with<T>(register: impl FnOnce() -> io::Result<T>) -> io::Result<(SignalClaim, T)> {
        if let Err((kind, text)) = FALLBACK.get_or_init(install_fallback) {
            return Err(io::Error::new(*kind, text.clone()));
        }
        let handlers = register()?;
        // Relaxed: the count carries no other data, and the fallback reads
        // only this location, whose modification order every thread agrees
        // on. A signal is sent from outside the process (no happens-before
        // edge can tie it to this increment anyway); the kernel's entry
        // into the handler orders it after everything that ran before the
        // signal was sent.
        CLAIMS.fetch_add(1, Ordering::Relaxed);
        Ok((SignalClaim { _private: () }, handlers))
    }
}

impl Drop for SignalClaim {
    fn drop(&mut self) {
        // Relaxed: as in `with`.
        CLAIMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registers the fallback for SIGINT and SIGTERM, except for a signal the
/// process started with ignored.
fn install_fallback() -> Result<(), (io::ErrorKind, String)> {
    for signal in [SIGINT, SIGTERM] {
        let ignored = starts_ignored(signal).map_err(|error| {
            (
                error.kind(),
                format!("reading the disposition of signal {signal}: {error}"),
            )
        })?;
        if ignored {
            continue;
        }
        // SAFETY: `register` requires an action that is async-signal-safe
        // and does not panic. Ours does an atomic load and, when no claim is
        // alive, calls `emulate_default_handler`, which signal-hook documents
        // as async-signal-safe; it neither allocates nor locks, and nothing
        // in it can panic.
        let registered =
            unsafe { signal_hook::low_level::register(signal, move || fallback(signal)) };
        registered.map_err(|error| {
            (
                error.kind(),
                format!("registering the fallback for signal {signal}: {error}"),
            )
        })?;
    }
    Ok(())
}

/// Whether `signal`'s disposition is "ignore" (`SIG_IGN`).
fn starts_ignored(signal: libc::c_int) -> io::Result<bool> {
    // SAFETY: `sigaction` is a plain C struct of integers, a handler
    // address and a signal set; all zeroes is a valid value of it.
    let mut current: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action makes `sigaction` a query that changes
    // nothing; `current` is a valid, writable `sigaction` for the answer.
    let status = unsafe { libc::sigaction(signal, core::ptr::null(), &mut current) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current.sa_sigaction == libc::SIG_IGN)
}

/// The fallback action: runs inside the signal handler, so only
/// async-signal-safe calls.
fn fallback(signal: libc::c_int) {
    // Relaxed: see `SignalClaim::with`.
    if CLAIMS.load(Ordering::Relaxed) == 0 {
        // Ends the process (it aborts if re-raising fails); an error means
        // a signal it does not know, which SIGINT and SIGTERM are not.
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
}
