//! SIGINT and SIGTERM as a stream, and a supervisor as the process's main
//! job (feature `signals`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use lifecycle::{HostExit, HostRun, HostSignal, Supervisor};

use crate::TokioRuntime;

/// SIGINT and SIGTERM, delivered to this stream instead of ending the
/// process; see [`signals`].
///
/// Dropping it gives both signals their usual effect back: from then on
/// they end the process (unless it started with them ignored), although
/// tokio itself never unregisters a signal handler
/// ([`lifecycle::SignalClaim`] sees to that).
///
/// # Example
///
/// The process sends itself SIGINT, as Ctrl-C would; the stream has it,
/// and the process lives on:
///
/// ```
/// use futures_util::StreamExt;
/// use lifecycle::HostSignal;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::io::Result<()> {
///     let mut signals = lifecycle_tokio::signals()?;
///     let pid = std::process::id().to_string();
///     let sent = std::process::Command::new("kill").args(["-INT", &pid]).status()?;
///     assert!(sent.success());
///     assert_eq!(signals.next().await, Some(HostSignal::Interrupt));
///     Ok(())
/// }
/// ```
pub struct HostSignals {
    /// `None` once the stream has ended: the signals are given back at once.
    #[cfg(unix)]
    parts: Option<Parts>,
    #[cfg(not(unix))]
    never: std::convert::Infallible,
}

/// Declared first, the claim is released first: a signal that arrives
/// while tokio's listeners are taken down ends the process rather than
/// being lost.
#[cfg(unix)]
type Parts = (
    lifecycle::SignalClaim,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

/// Listens for SIGINT and SIGTERM, for as long as the returned stream
/// lives, on the tokio runtime this is called from.
///
/// Pass the stream to [`HostRun::run`] (which [`run`] does). Each signal
/// the process receives is one item ([`HostSignal::Interrupt`] for SIGINT,
/// [`HostSignal::Terminate`] for SIGTERM); signals that arrive faster than
/// the stream is polled coalesce, as tokio's do. Several streams may be
/// alive at once, each receiving every signal.
///
/// # Errors
///
/// - `io::ErrorKind::Other` (wrapping [`NoTokioRuntime`](crate::NoTokioRuntime))
///   when called outside a tokio runtime;
/// - the OS error of registering a handler;
/// - `io::ErrorKind::Unsupported` on targets other than unix: on Windows,
///   use `tokio::signal::ctrl_c` and [`HostRun`] directly.
///
/// # Panics
///
/// In a tokio runtime built without its I/O driver (tokio's own panic, as
/// for any tokio signal or socket; `#[tokio::main]` enables it, a
/// hand-built runtime needs `enable_io()` or `enable_all()`).
///
/// # Example
///
/// ```
/// use lifecycle::HostSignal;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::io::Result<()> {
///     let signals = lifecycle_tokio::signals()?;
///     // Ctrl-C and `kill` now reach `signals` instead of ending the process.
///     drop(signals);
///     // And now they end it again.
///     Ok(())
/// }
/// ```
pub fn signals() -> io::Result<HostSignals> {
    tokio::runtime::Handle::try_current().map_err(|_| io::Error::other(crate::NoTokioRuntime))?;
    listen()
}

#[cfg(unix)]
fn listen() -> io::Result<HostSignals> {
    use tokio::signal::unix::{signal, SignalKind};
    let (claim, (interrupt, terminate)) = lifecycle::SignalClaim::with(|| {
        Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    Ok(HostSignals {
        parts: Some((claim, interrupt, terminate)),
    })
}

#[cfg(not(unix))]
fn listen() -> io::Result<HostSignals> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SIGINT and SIGTERM streams are available on unix only",
    ))
}

impl Stream for HostSignals {
    type Item = HostSignal;

    #[cfg(unix)]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HostSignal>> {
        let parts = &mut self.get_mut().parts;
        let Some((_, interrupt, terminate)) = parts.as_mut() else {
            return Poll::Ready(None);
        };
        // Terminate first: of two signals in one poll, it is the stronger.
        let signal = match terminate.poll_recv(cx) {
            Poll::Ready(Some(())) => HostSignal::Terminate,
            Poll::Ready(None) => return end(parts),
            Poll::Pending => match interrupt.poll_recv(cx) {
                Poll::Ready(Some(())) => HostSignal::Interrupt,
                Poll::Ready(None) => return end(parts),
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(signal))
    }

    #[cfg(not(unix))]
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<HostSignal>> {
        match self.never {}
    }
}

/// Tokio documents that its signal streams never end; should one end all
/// the same, the stream ends and gives the signals back at once, rather
/// than swallowing them until it is dropped.
#[cfg(unix)]
fn end(parts: &mut Option<Parts>) -> Poll<Option<HostSignal>> {
    *parts = None;
    Poll::Ready(None)
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

/// Runs `supervisor` as the process's main job on the tokio runtime this is
/// called from: SIGINT and SIGTERM stop it (as [`HostRun`] describes), and
/// the returned [`HostExit`] says how it ended, with the exit code to end
/// the process with (the table is [`ExitReason`](lifecycle::ExitReason)'s).
///
/// The signals are listened for (through [`signals`]) only while this
/// runs; once it returns they end the process again. With the `systemd`
/// feature (on by default), a [`lifecycle::Systemd`] notifier is attached
/// when `NOTIFY_SOCKET` is set: `READY=1`, `STATUS=...`, `STOPPING=1` and
/// the watchdog.
///
/// # Errors
///
/// Those of [`signals`]: outside a tokio runtime, when the handlers cannot
/// be registered, and on targets other than unix; and
/// `io::ErrorKind::InvalidInput` (wrapping
/// [`StartError::AlreadyStarted`](lifecycle::StartError::AlreadyStarted))
/// for a supervisor that was run or started before (see [`HostRun::new`]).
/// The supervisor has not started then.
///
/// # Panics
///
/// In a tokio runtime without its I/O or time driver (`#[tokio::main]`
/// enables both).
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
/// #[tokio::main]
/// async fn main() -> ExitCode {
///     let supervisor = Supervisor::of_one("job", || {
///         Ok(ComponentManager::builder()
///             .add_worker(|_, ready| async move {
///                 ready.ready();
///                 Ok(()) // done: the supervisor completes
///             })
///             .build())
///     });
///     match lifecycle_tokio::run(supervisor).await {
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
    let runtime = TokioRuntime::current().map_err(io::Error::other)?;
    // Refused before the signals are claimed: they would never reach a
    // supervisor started elsewhere.
    let host = HostRun::new(supervisor)?;
    let signals = listen()?;
    #[cfg(feature = "systemd")]
    let host = host.with_systemd_from_env();
    Ok(host.run(Arc::new(runtime), signals).await)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let error = signals().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Other);
        assert!(error.to_string().contains("no tokio runtime"), "{error}");

        let supervisor = Supervisor::builder().build().unwrap();
        let ran = run(supervisor).now_or_never().unwrap();
        assert_eq!(ran.unwrap_err().kind(), io::ErrorKind::Other);
    }

    #[tokio::test]
    async fn a_supervisor_started_before_is_invalid_input() {
        let supervisor = Supervisor::builder().build().unwrap();
        let stop = lifecycle::StopSource::new();
        let scope = lifecycle::Scope::new(
            Arc::new(TokioRuntime::current().unwrap()),
            stop.token(),
            lifecycle::FatalSlot::new(),
        );
        lifecycle::Component::start(&supervisor, scope).unwrap();
        let error = run(supervisor).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("already started"), "{error}");
    }
}
