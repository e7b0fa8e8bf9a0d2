//! Telling systemd how a host run is going (`sd_notify(3)`).

use core::fmt;
use core::time::Duration;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
#[cfg(unix)]
use std::os::unix::{
    ffi::OsStrExt as _,
    net::{SocketAddr, UnixDatagram},
};

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
/// Each is one datagram, ending in a line break, to the socket
/// `NOTIFY_SOCKET` names: a file system path (`/run/systemd/notify`) or,
/// on Linux, an abstract address (`@name`, as in containers). A unit of
/// `Type=notify` (or `notify-reload`) is started once `READY=1` arrives;
/// with `WatchdogSec=` set, systemd kills and (per `Restart=`) restarts
/// the service when `WATCHDOG=1` stops arriving, which it does when the
/// task driving the supervisor is stuck.
///
/// A send never blocks the task that makes it (the run's, on the
/// executor): the datagrams go out through one socket of our own, made
/// non-blocking, and a message systemd has no room for (its queue is full,
/// so it is not reading) is dropped rather than waited for. Blocking there
/// would stall every task of the executor thread until systemd reads
/// again, and the watchdog's own pings with them.
///
/// Failing to send is not fatal to the run: the first failure (also an
/// address that is neither of the above, or a full queue) is written to
/// standard error once (`lifecycle: systemd notify failed: ...`), later
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
    /// Where the messages go, or why they cannot (reported at the first
    /// send, like any other failure).
    channel: io::Result<Channel>,
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
    ///
    /// On targets other than unix it is always `None`. A `NOTIFY_SOCKET`
    /// that names no socket systemd would give still makes a notifier: the
    /// error is reported at its first send (see [`Systemd`]).
    ///
    /// # Example
    ///
    /// What systemd's variables make of it (set here by hand, as systemd
    /// sets them for a unit with `Type=notify` and `WatchdogSec=10`):
    ///
    /// ```
    /// use std::env;
    /// use std::time::Duration;
    /// use lifecycle::{HostNotify, Systemd};
    ///
    /// env::remove_var("NOTIFY_SOCKET");
    /// assert!(Systemd::from_env().is_none(), "not started by systemd");
    ///
    /// env::set_var("NOTIFY_SOCKET", "/run/systemd/notify");
    /// env::set_var("WATCHDOG_USEC", "10000000");
    /// env::set_var("WATCHDOG_PID", std::process::id().to_string());
    /// let systemd = Systemd::from_env().expect("NOTIFY_SOCKET is set");
    /// assert_eq!(systemd.alive_every(), Some(Duration::from_secs(5)), "half the timeout");
    ///
    /// let other = std::process::id() + 1;
    /// env::set_var("WATCHDOG_PID", other.to_string()); // the watchdog is another process's
    /// let systemd = Systemd::from_env().expect("NOTIFY_SOCKET is still set");
    /// assert_eq!(systemd.alive_every(), None);
    /// ```
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
        let socket = socket.filter(|socket| cfg!(unix) && !socket.is_empty())?;
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
            channel: Channel::open(&socket),
            reported: false,
        })
    }

    fn send(&mut self, message: &str) {
        let sent = self.channel.as_ref().map(|channel| channel.send(message));
        let error = match &sent {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            // No channel: why the address could not be opened.
            Err(error) => *error,
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

/// An unbound datagram socket and the address of systemd's.
#[cfg(unix)]
struct Channel {
    socket: UnixDatagram,
    to: SocketAddr,
}

#[cfg(unix)]
impl Channel {
    /// The channel to the socket `name` (a `NOTIFY_SOCKET` value) names.
    fn open(name: &OsStr) -> io::Result<Channel> {
        let to = match name.as_bytes().split_first() {
            Some((b'/', _)) => SocketAddr::from_pathname(name)?,
            Some((b'@', abstract_name)) => abstract_address(abstract_name)?,
            _ => {
                let name = name.to_string_lossy();
                let why = std::format!("NOTIFY_SOCKET={name} is not an absolute path or @name");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
        };
        let socket = UnixDatagram::unbound()?;
        // See the type's docs: a full queue drops the message.
        socket.set_nonblocking(true)?;
        Ok(Channel { socket, to })
    }

    /// Sends `message` as one datagram, with the line break that ends an
    /// assignment.
    fn send(&self, message: &str) -> io::Result<()> {
        let datagram = std::format!("{message}\n");
        let sent = self.socket.send_to_addr(datagram.as_bytes(), &self.to);
        match sent {
            Ok(length) if length == datagram.len() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the datagram was cut short",
            )),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "systemd's queue is full (it is not reading); the message was dropped",
            )),
            Err(error) => Err(error),
        }
    }
}

#[cfg(unix)]
impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("to", &self.to).finish()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn abstract_address(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket addresses (NOTIFY_SOCKET=@name) exist on Linux only",
    ))
}

/// Never made: `from_env` builds no `Systemd` but on unix.
#[cfg(not(unix))]
enum Channel {}

#[cfg(not(unix))]
impl Channel {
    fn open(_: &OsStr) -> io::Result<Channel> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn send(&self, _: &str) -> io::Result<()> {
        match *self {}
    }
}

#[cfg(not(unix))]
impl fmt::Debug for Channel {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
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
            .field("channel", &self.channel)
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

    /// A bound socket for systemd's side, in a fresh directory.
    struct Listener {
        dir: std::path::PathBuf,
        socket: UnixDatagram,
    }

    impl Listener {
        fn bind(test: &str) -> Listener {
            let dir = std::env::temp_dir().join(std::format!(
                "lifecycle-sd-{}-{test:.30}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Listener { dir, socket }
        }

        fn path(&self) -> Option<OsString> {
            Some(self.dir.join("notify").into_os_string())
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn receive(socket: &UnixDatagram) -> std::string::String {
        let mut buffer = [0; 256];
        let length = socket.recv(&mut buffer).unwrap();
        std::string::String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_path_socket_one_datagram_each() {
        let listener = Listener::bind("path");
        let mut systemd = Systemd::from_vars(listener.path(), None, None, 7).unwrap();
        systemd.ready();
        systemd.status("db=ready\napi=starting");
        systemd.stopping();
        assert_eq!(receive(&listener.socket), "READY=1\n");
        assert_eq!(receive(&listener.socket), "STATUS=db=ready api=starting\n");
        assert_eq!(receive(&listener.socket), "STOPPING=1\n");
        assert!(!systemd.reported);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = std::format!("lifecycle-sd-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut systemd = Systemd::from_vars(os(&std::format!("@{name}")), None, None, 7).unwrap();
        systemd.ready();
        assert_eq!(receive(&socket), "READY=1\n");
        assert!(!systemd.reported);
    }

    #[test]
    fn a_full_queue_drops_messages_instead_of_blocking() {
        let listener = Listener::bind("full");
        let path = listener.path();
        // On another thread, so that a send that blocks fails the test
        // rather than hanging it: the listener never reads, and the
        // kernel queues a few datagrams at most (10 by default on Linux).
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut systemd = Systemd::from_vars(path, None, None, 7).unwrap();
            for _ in 0..1_000 {
                systemd.alive();
            }
            let _ = done.send(systemd.reported);
        });
        let reported = finished.recv_timeout(Duration::from_secs(10));
        assert_eq!(reported, Ok(true), "sends blocked, or nothing was reported");
        drop(listener);
    }

    #[test]
    fn an_address_systemd_would_not_give_is_reported_when_sending() {
        for value in ["notify", "vsock:2:1234", "./run/notify"] {
            let mut systemd = Systemd::from_vars(os(value), None, None, 7).unwrap();
            let error = systemd
                .channel
                .as_ref()
                .err()
                .map(std::string::ToString::to_string);
            assert!(
                error.as_deref().is_some_and(|error| error.contains(value)),
                "{value}: {error:?}"
            );
            systemd.ready();
            assert!(systemd.reported, "{value}");
        }
    }

    #[test]
    fn no_or_bad_or_zero_timeout_no_watchdog() {
        for usec in [None, os("0"), os("-5"), os("soon")] {
            let systemd = Systemd::from_vars(os("/s"), usec.clone(), None, 7);
            assert_eq!(systemd.map(|s| s.alive_every), Some(None), "{usec:?}");
        }
    }
}
