//! Telling systemd how a host run is going (`sd_notify(3)`).

use core::fmt;
use core::time::Duration;
use std::ffi::OsString;
use std::io::Write as _;

use super::HostNotify;

/// Tells systemd about a [`HostRun`](crate::HostRun): readiness, the stop,
/// the nodes' status line and the watchdog (feature `systemd`).
///
/// | call | message |
/// |---|---|
/// | [`ready`](HostNotify::ready) | `READY=1` |
/// | [`stopping`](HostNotify::stopping) | `STOPPING=1` |
/// | [`status`](HostNotify::status) | `STATUS=<summary>`, e.g. `STATUS=db=ready api=starting` (line breaks become spaces) |
/// | [`alive`](HostNotify::alive) | `WATCHDOG=1`, every half of `WATCHDOG_USEC` |
///
/// Each is one datagram to the socket `NOTIFY_SOCKET` names, sent with the
/// `sd-notify` crate. A unit of `Type=notify` (or `notify-reload`) is
/// started once `READY=1` arrives; with `WatchdogSec=` set, systemd kills
/// and (per `Restart=`) restarts the service when `WATCHDOG=1` stops
/// arriving, which it does when the task driving the supervisor is stuck.
///
/// Failing to send is not fatal to the run: the first failure is written
/// to standard error once (`lifecycle: systemd notify failed: ...`), later
/// ones are dropped silently. systemd then acts as it would for a service
/// that never notifies (a start timeout for `Type=notify`).
///
/// Only unix targets talk to systemd; elsewhere [`from_env`](Systemd::from_env)
/// is always `None`.
///
/// # Example
///
/// ```
/// use lifecycle::{HostRun, Supervisor, Systemd};
///
/// let supervisor = Supervisor::builder().build()?;
/// let mut run = HostRun::new(supervisor).expect("not started before");
/// // Outside systemd (no NOTIFY_SOCKET) nothing is attached and nothing sent.
/// if let Some(systemd) = Systemd::from_env() {
///     run = run.notify(systemd);
/// }
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
pub struct Systemd {
    /// How often `WATCHDOG=1` is due; `None` without a watchdog for us.
    alive_every: Option<Duration>,
    /// A send failure has been reported.
    reported: bool,
}

impl Systemd {
    /// A notifier for the service manager that started this process, or
    /// `None` if there is none: `NOTIFY_SOCKET` unset or empty (then
    /// nothing is ever sent).
    ///
    /// The watchdog is on when `WATCHDOG_USEC` is a positive number of
    /// microseconds and `WATCHDOG_PID`, if set, is this process's id (as
    /// `sd_watchdog_enabled(3)` decides: a watchdog set up for another
    /// process, or an unreadable value, means none for us).
    pub fn from_env() -> Option<Systemd> {
        Systemd::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var_os("WATCHDOG_USEC"),
            std::env::var_os("WATCHDOG_PID"),
            std::process::id(),
        )
    }

    /// [`from_env`](Systemd::from_env) on given values, for tests.
    fn from_vars(
        socket: Option<OsString>,
        watchdog_usec: Option<OsString>,
        watchdog_pid: Option<OsString>,
        our_pid: u32,
    ) -> Option<Systemd> {
        if !cfg!(unix) || socket.is_none_or(|socket| socket.is_empty()) {
            return None;
        }
        let number = |value: OsString| value.to_str().and_then(|text| text.parse::<u64>().ok());
        let ours = match watchdog_pid {
            None => true,
            Some(pid) => number(pid) == Some(u64::from(our_pid)),
        };
        let alive_every = watchdog_usec
            .and_then(number)
            .filter(|&usec| usec > 0 && ours)
            // systemd's advice: notify at half the timeout.
            .map(|usec| Duration::from_micros(usec) / 2);
        Some(Systemd {
            alive_every,
            reported: false,
        })
    }

    fn send(&mut self, message: &str) {
        let Err(error) = deliver(message) else {
            return;
        };
        if !self.reported {
            self.reported = true;
            // Not `eprintln!`, which panics when standard error is closed.
            let _ = writeln!(
                std::io::stderr(),
                "lifecycle: systemd notify failed: {error} (further failures are not reported)"
            );
        }
    }
}

#[cfg(unix)]
fn deliver(message: &str) -> std::io::Result<()> {
    sd_notify::notify(&[sd_notify::NotifyState::Custom(message)])
}

#[cfg(not(unix))]
fn deliver(_: &str) -> std::io::Result<()> {
    // `from_env` never builds a `Systemd` here.
    Ok(())
}

impl HostNotify for Systemd {
    fn ready(&mut self) {
        self.send("READY=1");
    }

    fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    fn status(&mut self, summary: &str) {
        // A line break would start another assignment in the datagram.
        let line: std::string::String = summary
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&std::format!("STATUS={line}"));
    }

    fn alive_every(&self) -> Option<Duration> {
        self.alive_every
    }

    fn alive(&mut self) {
        self.send("WATCHDOG=1");
    }
}

impl fmt::Debug for Systemd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Systemd")
            .field("alive_every", &self.alive_every)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn os(text: &str) -> Option<OsString> {
        Some(OsString::from(text))
    }

    #[test]
    fn no_socket_no_notifier() {
        assert!(Systemd::from_vars(None, os("1000"), None, 7).is_none());
        assert!(Systemd::from_vars(os(""), os("1000"), None, 7).is_none());
    }

    #[test]
    fn watchdog_is_half_the_timeout() {
        let systemd = Systemd::from_vars(os("/run/notify"), os("3000000"), None, 7);
        let every = systemd.and_then(|systemd| systemd.alive_every);
        assert_eq!(every, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn watchdog_for_our_pid_only() {
        let ours = Systemd::from_vars(os("/s"), os("1000"), os("7"), 7);
        assert_eq!(
            ours.and_then(|s| s.alive_every),
            Some(Duration::from_micros(500))
        );
        let theirs = Systemd::from_vars(os("/s"), os("1000"), os("8"), 7);
        assert_eq!(theirs.map(|s| s.alive_every), Some(None));
        let unreadable = Systemd::from_vars(os("/s"), os("1000"), os("x"), 7);
        assert_eq!(unreadable.map(|s| s.alive_every), Some(None));
    }

    #[test]
    fn no_or_bad_or_zero_timeout_no_watchdog() {
        for usec in [None, os("0"), os("-5"), os("soon")] {
            let systemd = Systemd::from_vars(os("/s"), usec.clone(), None, 7);
            assert_eq!(systemd.map(|s| s.alive_every), Some(None), "{usec:?}");
        }
    }
}
