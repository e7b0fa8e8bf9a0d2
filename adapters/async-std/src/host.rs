//! SIGINT and SIGTERM as a stream, and a supervisor as the process's main
//! job (feature `signals`).

use std::io;

pub use lifecycle::HostSignals;
use lifecycle::{HostExit, HostRun, Supervisor};

/// Listens for SIGINT and SIGTERM, for as long as the returned stream
/// lives: [`HostSignals::listen`], which works on any executor (its
/// errors, and what dropping the stream does, are described there).
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
    HostSignals::listen()
}

/// Runs `supervisor` as the process's main job, its nodes on async-std's
/// global executor ([`runtime`](crate::runtime)): SIGINT and SIGTERM stop it (as
/// [`HostRun`] describes), and the returned [`HostExit`] says how it ended,
/// with the exit code to end the process with (the table is
/// [`ExitReason`](lifecycle::ExitReason)'s).
///
/// Drive it with [`async_std::task::block_on`]. The signals are listened for (through
/// [`signals`]) only while this runs; once it returns they end the process
/// again. With the `systemd` feature (on by default), a
/// [`lifecycle::Systemd`] notifier is attached when `NOTIFY_SOCKET` is
/// set: `READY=1`, `STATUS=...`, `STOPPING=1` and the watchdog.
///
/// # Errors
///
/// Those of [`signals`]: when the handlers cannot be registered, and on
/// targets other than unix; and `io::ErrorKind::InvalidInput` (wrapping
/// [`StartError::AlreadyStarted`](lifecycle::StartError::AlreadyStarted))
/// for a supervisor that was run or started before (see [`HostRun::new`]).
/// The supervisor has not started then.
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
    // Refused before the signals are claimed: they would never reach a
    // supervisor started elsewhere.
    let host = HostRun::new(supervisor)?;
    let signals = signals()?;
    #[cfg(feature = "systemd")]
    let host = host.with_systemd_from_env();
    Ok(host.run(crate::runtime(), signals).await)
}
