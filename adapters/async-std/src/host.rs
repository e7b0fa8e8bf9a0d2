//! SIGINT and SIGTERM as a stream, and a supervisor as the process's main
//! job (feature `signals`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use lifecycle::{HostExit, HostRun, HostSignal, Supervisor};

/// SIGINT and SIGTERM, delivered to this stream instead of ending the
/// process; see [`signals`].
///
/// Dropping it unregisters its handlers and gives both signals their usual
/// effect back: from then on they end the process (unless it started with
/// them ignored; [`lifecycle::SignalClaim`] sees to that).
pub struct HostSignals {
    /// `None` once the stream has ended: the signals are given back at once.
    #[cfg(unix)]
    parts: Option<Parts>,
    #[cfg(not(unix))]
    never: std::convert::Infallible,
}

/// Declared first, the claim is released first: a signal that arrives
/// while the handlers are unregistered ends the process rather than being
/// lost.
#[cfg(unix)]
type Parts = (lifecycle::SignalClaim, async_signal::Signals);

/// Listens for SIGINT and SIGTERM, for as long as the returned stream
/// lives.
///
/// Pass the stream to [`HostRun::run`] (which [`run`] does). Each signal
/// the process receives is one item ([`HostSignal::Interrupt`] for SIGINT,
/// [`HostSignal::Terminate`] for SIGTERM). The handlers are
/// `async-signal`'s, woken through async-io's reactor, so the stream works
/// on any executor. Several streams may be alive at once, each receiving
/// every signal.
///
/// # Errors
///
/// - the OS error of registering a handler or creating the pipe behind it;
/// - `io::ErrorKind::Unsupported` on targets other than unix.
///
/// If reading the handlers' pipe fails later, the stream ends and gives
/// the signals back to their usual effect at once.
///
/// # Example
///
/// ```
/// async_std::task::block_on(async {
///     let signals = lifecycle_async_std::signals()?;
///     // Ctrl-C and `kill` now reach `signals` instead of ending the process.
///     drop(signals);
///     // And now they end it again.
///     Ok::<(), std::io::Error>(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn signals() -> io::Result<HostSignals> {
    #[cfg(unix)]
    {
        use async_signal::{Signal, Signals};
        let parts = lifecycle::SignalClaim::with(|| Signals::new([Signal::Int, Signal::Term]))?;
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

/// Runs `supervisor` as the process's main job, its nodes on async-std's
/// global executor ([`runtime`](crate::runtime)): SIGINT and SIGTERM stop it (see
/// [`HostRun`]), and the returned [`HostExit`] says how it ended, with the
/// exit code to end the process with.
///
/// Drive it with [`async_std::task::block_on`]. The signals are listened for (through
/// [`signals`]) only while this runs; once it returns they end the process
/// again. With the `systemd` feature (on by default), a
/// [`lifecycle::Systemd`] notifier is attached when `NOTIFY_SOCKET` is
/// set: `READY=1`, `STATUS=...`, `STOPPING=1` and the watchdog.
///
/// | signal | effect |
/// |---|---|
/// | SIGINT (Ctrl-C) | graceful stop; a second one during the stop returns at once ([`Forced`](lifecycle::ExitReason::Forced), 130); ignored during a spin-halt |
/// | SIGTERM | graceful stop; releases a spin-halt |
///
/// | exit code | [`ExitReason`](lifecycle::ExitReason) |
/// |---|---|
/// | 0 | `Clean`: every node completed, or stopped in time without error |
/// | 1 | `Fatal`: a node's failure shut the supervisor down, or a node failed while stopping |
/// | 3 | `SpinHaltReleased`: SIGTERM released a spin-halt |
/// | 4 | `Overran`: the stop overran the shutdown budget or a node's stop timeout |
/// | 130 | `Forced`: a second SIGINT during the stop |
///
/// # Errors
///
/// Those of [`signals`]: when the handlers cannot be registered, and on
/// targets other than unix. The supervisor has not started then.
///
/// # Example
///
/// A `main` whose one job ends on its own (a real service would run until
/// SIGTERM):
///
/// ```
/// use std::process::ExitCode;
/// use lifecycle::{ComponentManager, Supervisor};
///
/// fn main() -> ExitCode {
///     let supervisor = Supervisor::of_one("job", || {
///         Ok(ComponentManager::builder()
///             .add_worker(|_, ready| async move {
///                 ready.ready();
///                 Ok(()) // done: the supervisor completes
///             })
///             .build())
///     });
///     match async_std::task::block_on(lifecycle_async_std::run(supervisor)) {
///         Ok(exit) => {
///             if exit.code() != 0 {
///                 eprintln!("{exit}");
///             }
///             assert_eq!(exit.code(), 0);
///             ExitCode::from(exit.code())
///         }
///         Err(error) => {
///             eprintln!("cannot listen for SIGINT and SIGTERM: {error}");
///             ExitCode::FAILURE
///         }
///     }
/// }
/// ```
pub async fn run(supervisor: Supervisor) -> io::Result<HostExit> {
    let signals = signals()?;
    let host = HostRun::new(supervisor);
    #[cfg(feature = "systemd")]
    let host = match lifecycle::Systemd::from_env() {
        Some(systemd) => host.notify(systemd),
        None => host,
    };
    Ok(host.run(crate::runtime(), signals).await)
}
