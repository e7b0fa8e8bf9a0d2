//! Real SIGINT, SIGTERM and systemd notifications against an adapter's
//! `signals()` and `run()`, shared by the three adapters' `tests/host.rs`
//! (each includes this file as a module and supplies `adapter`, the
//! adapter crate, and `block_on`, which runs a future to completion on it).
//!
//! Signals and environment variables are process-wide, so every scenario
//! runs in a child: the test re-executes its own test binary with
//! `CHILD_VAR` naming the test, `--exact` and `--nocapture`; the child half
//! of the test prints `child: ...` lines, the parent half waits for them,
//! sends signals, and checks the output and how the child ended.
//!
//! Covered:
//! - SIGTERM and SIGINT reach the stream; after the stream is dropped,
//!   SIGTERM (and, separately, SIGINT) ends the process by that signal.
//! - A process that starts with SIGINT ignored (a shell's background job)
//!   still gets it through the stream, and ignores it again after drop.
//! - Two streams both receive; with one dropped the other keeps the
//!   signals; with both dropped, SIGTERM ends the process.
//! - `run`: SIGTERM stops the supervisor cleanly (exit code 0); a second
//!   SIGINT during a hung stop forces the exit (130); after `run`
//!   returns, SIGTERM ends the process.
//! - `systemd` feature: `run` sends READY=1, STATUS=..., STOPPING=1 in
//!   order and WATCHDOG=1 repeatedly; no watchdog for another process's
//!   WATCHDOG_PID; no notifier without NOTIFY_SOCKET.

use std::future::pending;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lifecycle::{ComponentManager, HostSignal, Supervisor};

use super::{adapter, block_on};

/// Names the test whose child half a process runs.
const CHILD_VAR: &str = "LIFECYCLE_HOST_TEST_CHILD";

/// How long the parent waits for anything from the child.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether this process is the child of `test`.
fn is_child(test: &str) -> bool {
    std::env::var(CHILD_VAR).is_ok_and(|name| name == test)
}

/// The child says something the parent waits for.
fn say(what: &str) {
    println!("child: {what}");
}

/// A child process running one test's child half.
struct Child {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Child {
    /// Starts the child half of `test`, a test function of `module`
    /// (its `module_path!()`).
    fn start(module: &str, test: &str, env: &[(&str, &str)]) -> Child {
        Child::spawn(Child::command(module, test, env))
    }

    /// The command that [`start`](Child::start) runs.
    fn command(module: &str, test: &str, env: &[(&str, &str)]) -> Command {
        // The test's name as the harness knows it: without the crate.
        let module = module.split_once("::").map_or("", |(_, path)| path);
        let name = format!("{module}::{test}");
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, test)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdout(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    fn spawn(mut command: Command) -> Child {
        let mut process = command.spawn().unwrap();
        let stdout = process.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Child {
            process,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the child to say `what`.
    fn expect(&mut self, what: &str) {
        let wanted = format!("child: {what}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // The harness's "test ... " may start the line.
                    let found = line.ends_with(&wanted);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.process.kill();
                    panic!("the child did not say {wanted:?}; it said {:#?}", self.seen);
                }
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.process.id()).unwrap();
        // SAFETY: `kill` has no memory effects in this process; the pid is
        // our own child's, which is not reaped before `wait`.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill failed: {}", std::io::Error::last_os_error());
    }

    /// Waits for the child to end.
    fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.process.kill();
                panic!("the child did not end; it said {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sleeps long enough for the parent to give up if nothing ends the
/// child, then says so.
fn linger() {
    std::thread::sleep(PATIENCE * 2);
    say("still alive");
}

#[test]
fn signals_reach_the_stream_then_sigterm_ends_the_process_after_drop() {
    const TEST: &str = "signals_reach_the_stream_then_sigterm_ends_the_process_after_drop";
    if is_child(TEST) {
        block_on(async {
            let mut signals = adapter::signals().unwrap();
            say("listening");
            assert_eq!(signals.next().await, Some(HostSignal::Terminate));
            say("got terminate");
            assert_eq!(signals.next().await, Some(HostSignal::Interrupt));
            say("got interrupt");
        });
        say("dropped");
        linger();
        return;
    }
    let mut child = Child::start(module_path!(), TEST, &[]);
    child.expect("listening");
    child.signal(libc::SIGTERM);
    child.expect("got terminate");
    child.signal(libc::SIGINT);
    child.expect("got interrupt");
    child.expect("dropped");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait().signal(), Some(libc::SIGTERM));
}

#[test]
fn sigint_ends_the_process_after_drop() {
    const TEST: &str = "sigint_ends_the_process_after_drop";
    if is_child(TEST) {
        block_on(async {
            drop(adapter::signals().unwrap());
        });
        say("dropped");
        linger();
        return;
    }
    let mut child = Child::start(module_path!(), TEST, &[]);
    child.expect("dropped");
    child.signal(libc::SIGINT);
    assert_eq!(child.wait().signal(), Some(libc::SIGINT));
}

#[test]
fn the_last_stream_alive_keeps_the_signals() {
    const TEST: &str = "the_last_stream_alive_keeps_the_signals";
    if is_child(TEST) {
        block_on(async {
            let mut first = adapter::signals().unwrap();
            let mut second = adapter::signals().unwrap();
            say("listening twice");
            assert_eq!(first.next().await, Some(HostSignal::Terminate));
            assert_eq!(second.next().await, Some(HostSignal::Terminate));
            drop(first);
            say("both got it; one left");
            assert_eq!(second.next().await, Some(HostSignal::Terminate));
            say("the last one got it");
        });
        say("none left");
        linger();
        return;
    }
    let mut child = Child::start(module_path!(), TEST, &[]);
    child.expect("listening twice");
    child.signal(libc::SIGTERM);
    child.expect("both got it; one left");
    child.signal(libc::SIGTERM);
    child.expect("the last one got it");
    child.expect("none left");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait().signal(), Some(libc::SIGTERM));
}

#[test]
fn a_sigint_ignored_from_the_start_stays_ignored_after_drop() {
    const TEST: &str = "a_sigint_ignored_from_the_start_stays_ignored_after_drop";
    if is_child(TEST) {
        block_on(async {
            let mut signals = adapter::signals().unwrap();
            say("listening");
            // While listening, the stream gets it all the same.
            assert_eq!(signals.next().await, Some(HostSignal::Interrupt));
        });
        say("dropped");
        std::thread::sleep(Duration::from_millis(300));
        return say("survived");
    }
    use std::os::unix::process::CommandExt;
    let mut command = Child::command(module_path!(), TEST, &[]);
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; `signal` is one, and it touches
    // no memory of ours. Ignored dispositions survive exec, as a shell's
    // background job's do.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = Child::spawn(command);
    child.expect("listening");
    child.signal(libc::SIGINT);
    child.expect("dropped");
    child.signal(libc::SIGINT);
    child.expect("survived");
    assert!(child.wait().success());
}

/// One node serving until told to stop, then returning (or, with `hang`,
/// never returning).
fn serving(hang: bool) -> Supervisor {
    Supervisor::of_one("app", move || {
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| async move {
                ready.ready();
                say("serving");
                ctx.stopped().await;
                say("stopping");
                if hang {
                    pending::<()>().await;
                }
                Ok(())
            })
            .build())
    })
}

/// Runs `supervisor` through the adapter's `run`, says how it ended, and
/// lingers (so that the parent can check that the signals end the process
/// again).
fn run_in_child(supervisor: Supervisor) {
    let exit = block_on(adapter::run(supervisor)).unwrap();
    say(&format!("exit code {}", exit.code()));
    linger();
}

#[test]
fn run_stops_cleanly_on_sigterm_then_gives_the_signal_back() {
    const TEST: &str = "run_stops_cleanly_on_sigterm_then_gives_the_signal_back";
    if is_child(TEST) {
        return run_in_child(serving(false));
    }
    let mut child = Child::start(module_path!(), TEST, &[]);
    child.expect("serving");
    child.signal(libc::SIGTERM);
    child.expect("stopping");
    child.expect("exit code 0");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait().signal(), Some(libc::SIGTERM));
}

#[test]
fn a_second_sigint_forces_the_exit() {
    const TEST: &str = "a_second_sigint_forces_the_exit";
    if is_child(TEST) {
        return run_in_child(serving(true));
    }
    let mut child = Child::start(module_path!(), TEST, &[]);
    child.expect("serving");
    child.signal(libc::SIGINT);
    child.expect("stopping");
    child.signal(libc::SIGINT);
    child.expect("exit code 130");
    child.signal(libc::SIGINT);
    assert_eq!(child.wait().signal(), Some(libc::SIGINT));
}

#[cfg(feature = "systemd")]
mod systemd {
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;

    use super::*;

    /// A notify socket in a fresh directory, removed on drop.
    struct NotifySocket {
        dir: PathBuf,
        socket: UnixDatagram,
    }

    impl NotifySocket {
        fn bind(test: &str) -> NotifySocket {
            // Short: a socket path has at most 107 bytes.
            let dir =
                std::env::temp_dir().join(format!("lifecycle-{}-{test:.40}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket.set_read_timeout(Some(PATIENCE)).unwrap();
            NotifySocket { dir, socket }
        }

        fn path(&self) -> String {
            self.dir.join("notify").to_str().unwrap().to_owned()
        }

        /// The next message, without its trailing line break.
        fn next(&self) -> String {
            let mut buffer = [0; 4096];
            let length = self.socket.recv(&mut buffer).unwrap();
            String::from_utf8_lossy(&buffer[..length])
                .trim_end()
                .to_owned()
        }

        /// Messages until (and with) `last`.
        fn until(&self, last: &str, seen: &mut Vec<String>) {
            loop {
                let message = self.next();
                let done = message == last;
                seen.push(message);
                if done {
                    return;
                }
            }
        }

        /// Whatever is left, without waiting.
        fn rest(&self, seen: &mut Vec<String>) {
            self.socket.set_nonblocking(true).unwrap();
            let mut buffer = [0; 4096];
            while let Ok(length) = self.socket.recv(&mut buffer) {
                seen.push(
                    String::from_utf8_lossy(&buffer[..length])
                        .trim_end()
                        .to_owned(),
                );
            }
        }
    }

    impl Drop for NotifySocket {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn run_tells_systemd_ready_status_stopping_and_feeds_the_watchdog() {
        const TEST: &str = "run_tells_systemd_ready_status_stopping_and_feeds_the_watchdog";
        if is_child(TEST) {
            return run_in_child(serving(false));
        }
        let notify = NotifySocket::bind(TEST);
        let path = notify.path();
        // 60 ms: a WATCHDOG=1 every 30 ms.
        let env = [("NOTIFY_SOCKET", path.as_str()), ("WATCHDOG_USEC", "60000")];
        let mut child = Child::start(module_path!(), TEST, &env);
        let mut seen = Vec::new();
        notify.until("READY=1", &mut seen);
        for _ in 0..3 {
            notify.until("WATCHDOG=1", &mut seen);
        }
        child.expect("serving");
        child.signal(libc::SIGTERM);
        child.expect("exit code 0");
        child.signal(libc::SIGTERM);
        assert_eq!(child.wait().signal(), Some(libc::SIGTERM));
        notify.rest(&mut seen);

        let watchdog = seen
            .iter()
            .filter(|message| *message == "WATCHDOG=1")
            .count();
        assert!(watchdog >= 3, "{seen:#?}");
        // A status line comes before the ready or stopping it shows, and
        // stopping is told as soon as SIGTERM arrives. Lines while starting
        // and stopping may coalesce (changes between two polls of the run
        // make one line), so only those showing a settled state are kept.
        let told: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|message| *message != "WATCHDOG=1")
            .filter(|message| {
                ![
                    "STATUS=app=waiting",
                    "STATUS=app=starting",
                    "STATUS=app=stopping",
                ]
                .contains(message)
            })
            .collect();
        assert_eq!(
            told,
            [
                "STATUS=app=ready",
                "READY=1",
                "STOPPING=1",
                "STATUS=app=stopped"
            ],
            "{seen:#?}"
        );
    }

    #[test]
    fn no_watchdog_for_another_process() {
        const TEST: &str = "no_watchdog_for_another_process";
        if is_child(TEST) {
            return run_in_child(serving(false));
        }
        let notify = NotifySocket::bind(TEST);
        let path = notify.path();
        let env = [
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "20000"),
            ("WATCHDOG_PID", "1"),
        ];
        let mut child = Child::start(module_path!(), TEST, &env);
        let mut seen = Vec::new();
        notify.until("READY=1", &mut seen);
        child.expect("serving");
        // Five watchdog periods: ten pings, were any sent.
        std::thread::sleep(Duration::from_millis(100));
        child.signal(libc::SIGTERM);
        child.expect("exit code 0");
        notify.until("STOPPING=1", &mut seen);
        notify.rest(&mut seen);
        child.signal(libc::SIGTERM);
        assert_eq!(child.wait().signal(), Some(libc::SIGTERM));
        assert!(
            !seen.iter().any(|message| message == "WATCHDOG=1"),
            "{seen:#?}"
        );
    }

    #[test]
    fn no_notifier_without_notify_socket() {
        const TEST: &str = "no_notifier_without_notify_socket";
        if is_child(TEST) {
            assert!(lifecycle::Systemd::from_env().is_none());
            return say("none");
        }
        let mut child = Child::start(module_path!(), TEST, &[("WATCHDOG_USEC", "1000")]);
        child.expect("none");
        assert!(child.wait().success());
    }
}
