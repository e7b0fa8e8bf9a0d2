//! SIGINT and SIGTERM as a stream of [`HostSignal`]s on any executor
//! (feature `host-signals`), through `async-signal`.

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;

use futures_util::stream::Stream;

use super::HostSignal;

/// SIGINT and SIGTERM, delivered to this stream instead of ending the
/// process; see [`listen`](HostSignals::listen).
///
/// Dropping it unregisters its handlers and gives both signals their usual
/// effect back: from then on they end the process (unless it started with
/// them ignored; [`SignalClaim`](crate::SignalClaim) sees to that).
///
/// The smol and async-std adapters' `signals()` return it, and their
/// `run()` listens with it; the tokio adapter has a stream of its own, on
/// tokio's signal driver.
///
/// # Example
///
/// The process sends itself SIGTERM, as `kill` would; the stream has it,
/// and the process lives on:
///
/// ```
/// use futures_util::StreamExt;
/// use lifecycle::{HostSignal, HostSignals};
///
/// let mut signals = HostSignals::listen()?;
/// let pid = std::process::id().to_string();
/// let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
/// assert!(sent.success());
/// let first = futures_executor::block_on(signals.next());
/// assert_eq!(first, Some(HostSignal::Terminate));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct HostSignals {
    /// `None` once the stream has ended: the signals are given back at once.
    #[cfg(unix)]
    parts: Option<Parts>,
    #[cfg(not(unix))]
    never: core::convert::Infallible,
}

/// Declared first, the claim is released first: a signal that arrives
/// while the handlers are unregistered ends the process rather than being
/// lost.
#[cfg(unix)]
type Parts = (super::SignalClaim, async_signal::Signals);

impl HostSignals {
    /// Listens for SIGINT and SIGTERM, for as long as the returned stream
    /// lives.
    ///
    /// Pass the stream to [`HostRun::run`](crate::HostRun::run). Each
    /// signal the process receives is one item ([`HostSignal::Interrupt`]
    /// for SIGINT, [`HostSignal::Terminate`] for SIGTERM). The handlers are
    /// `async-signal`'s, woken through async-io's reactor, so the stream
    /// works on any executor. Several streams may be alive at once, each
    /// receiving every signal.
    ///
    /// # Errors
    ///
    /// - the OS error of registering a handler or creating the pipe behind
    ///   it;
    /// - `io::ErrorKind::Unsupported` on targets other than unix.
    ///
    /// If reading the handlers' pipe fails later, the stream ends and gives
    /// the signals back to their usual effect at once.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::HostSignals;
    ///
    /// let signals = HostSignals::listen()?;
    /// // Ctrl-C and `kill` now reach `signals` instead of ending the process.
    /// drop(signals);
    /// // And now they end it again.
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn listen() -> io::Result<HostSignals> {
        #[cfg(unix)]
        {
            use async_signal::{Signal, Signals};
            let parts = super::SignalClaim::with(|| Signals::new([Signal::Int, Signal::Term]))?;
            Ok(HostSignals { parts: Some(parts) })
        }
        #[cfg(not(unix))]
        {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SIGINT and SIGTERM streams are available on unix only",
            ))
        }
    }
}

impl Stream for HostSignals {
    type Item = HostSignal;

    #[cfg(unix)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HostSignal>> {
        use async_signal::Signal;
        let parts = &mut self.get_mut().parts;
        loop {
            let Some((_, signals)) = parts.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(signals).poll_next(cx) {
                Poll::Ready(Some(Ok(Signal::Int))) => {
                    return Poll::Ready(Some(HostSignal::Interrupt))
                }
                Poll::Ready(Some(Ok(Signal::Term))) => {
                    return Poll::Ready(Some(HostSignal::Terminate))
                }
                // Only SIGINT and SIGTERM are registered.
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_)) | None) => {
                    *parts = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    #[cfg(not(unix))]
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<HostSignal>> {
        match self.never {}
    }
}

impl fmt::Debug for HostSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(unix)]
        let listening = self.parts.is_some();
        #[cfg(not(unix))]
        let listening = false;
        f.debug_struct("HostSignals")
            .field("listening", &listening)
            .finish()
    }
}
