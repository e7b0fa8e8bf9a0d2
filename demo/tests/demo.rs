//! Runs the demo binary the way a user (or systemd) does: starts it, talks
//! to its echo server, sends it signals, and checks what it prints, what it
//! tells the notify socket, and its exit code.
//!
//! Every wait has a generous deadline and waits for something the demo
//! says, never for time to pass; the only fixed pause is the one that
//! checks that a signal did *not* end the process.

#![cfg(unix)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any one wait may take before the test fails: long enough for a
/// loaded machine, short enough to fail rather than hang.
const PATIENCE: Duration = Duration::from_secs(60);

/// The demo running as a child process. Dropping it kills the child, so a
/// failing test leaves nothing behind.
struct Demo {
    child: Child,
    /// Lines of standard output, from a reader thread.
    lines: Receiver<String>,
    /// Every line received so far.
    seen: Vec<String>,
    /// The notify socket the demo was given, if any.
    notify: Option<NotifySocket>,
}

impl Demo {
    /// Starts the demo with `args` and a notify socket.
    fn start(args: &[&str]) -> Demo {
        Demo::spawn(args, Some(NotifySocket::new()))
    }

    /// Starts the demo with `args` and no `NOTIFY_SOCKET`.
    fn start_without_notify(args: &[&str]) -> Demo {
        Demo::spawn(args, None)
    }

    fn spawn(args: &[&str], notify: Option<NotifySocket>) -> Demo {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lifecycle-demo"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Whatever runs the tests must not leak its own service
            // manager's settings into the demo.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        if let Some(notify) = &notify {
            command.env("NOTIFY_SOCKET", &notify.path);
        }
        let mut child = command.spawn().expect("the demo starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            notify,
        }
    }

    /// Waits for a line that `wanted` accepts and returns it.
    fn wait_for_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what} within {PATIENCE:?}; output so far:\n{}",
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the demo closed its output before {what}:\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    /// Waits until every node is ready and returns the echo server's
    /// address.
    fn wait_until_ready(&mut self) -> String {
        let listening = self.wait_for_line("echo's address", |line| {
            line.starts_with("echo: listening on ")
        });
        self.wait_for_line("the ready line", |line| {
            line.starts_with("supervisor: every node is ready")
        });
        listening["echo: listening on ".len()..].to_owned()
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid fits in pid_t")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) takes plain integers and touches no memory of
        // ours; the child is not reaped yet (only `wait_for_exit` and the
        // guard's drop reap it), so the pid is still the demo's.
        let sent = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(sent, 0, "kill failed: {}", std::io::Error::last_os_error());
    }

    /// Waits for the demo to exit; then reads the rest of its output.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                break status;
            }
            // Keeps what the demo printed, for the messages below.
            self.seen.extend(self.lines.try_iter());
            if Instant::now() > deadline {
                panic!(
                    "the demo did not exit within {PATIENCE:?}:\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of file, which the exit brings
        // (the demo starts no process that could hold its stdout open).
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        status
    }

    /// Waits for the demo to exit and checks its exit code.
    fn expect_exit(&mut self, code: i32) {
        let status = self.wait_for_exit();
        assert_eq!(
            status.code(),
            Some(code),
            "exit {status}; output:\n{}",
            self.output()
        );
    }

    /// The index of the first line `wanted` accepts, among the lines seen.
    fn position(&self, what: &str, wanted: impl Fn(&str) -> bool) -> usize {
        self.seen
            .iter()
            .position(|line| wanted(line))
            .unwrap_or_else(|| panic!("no {what} in:\n{}", self.output()))
    }

    /// Whether `node`'s stop line (`<node>: stopped`) was printed.
    fn printed(&self, line: &str) -> bool {
        self.seen.iter().any(|seen| seen == line)
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }

    /// Every message the demo sent to the notify socket, in order.
    fn notifications(&mut self) -> Vec<String> {
        self.notify
            .as_mut()
            .expect("started with a notify socket")
            .drain()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Fails harmlessly if the child has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A datagram socket standing in for systemd's notify socket, read as the
/// messages come: Linux queues only a few datagrams on a socket (10 by
/// default), and the sender blocks while the queue is full.
struct NotifySocket {
    path: PathBuf,
    /// The reader thread, which returns every message it read once `done`
    /// is set and the socket has nothing left.
    reader: Option<thread::JoinHandle<Vec<String>>>,
    done: Arc<AtomicBool>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "lifecycle-demo-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        // A stale file from a killed run with the same pid would fail the bind.
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("the notify socket binds");
        // Short, so that the reader sees `done` soon; it only paces the loop.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a read timeout");
        let done = Arc::new(AtomicBool::new(false));
        let reader = thread::spawn({
            let done = done.clone();
            move || read_messages(&socket, &done)
        });
        NotifySocket {
            path,
            reader: Some(reader),
            done,
        }
    }

    /// Every message received. Call it once the demo has exited: whatever
    /// it sent is queued by then, and the reader empties the queue before
    /// it returns.
    fn drain(&mut self) -> Vec<String> {
        self.done.store(true, Ordering::Relaxed);
        let reader = self.reader.take().expect("drained once");
        reader.join().expect("the notify reader does not panic")
    }
}

/// Reads messages until `done` is set and nothing is queued.
fn read_messages(socket: &UnixDatagram, done: &AtomicBool) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        // Read before the recv: a timeout after `done` means the queue is empty.
        let last_round = done.load(Ordering::Relaxed);
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                // Each message ends with a line break.
                match message.strip_suffix('\n') {
                    Some(message) => messages.push(message.to_owned()),
                    None => panic!("a message without its line break: {message:?}"),
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last_round {
                    return messages;
                }
            }
            Err(error) => panic!("reading the notify socket: {error}"),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `line` is the status line of `node` saying `what`, as in
/// `[   1.23s] flaky      stopped`.
fn event(line: &str, node: &str, what: &str) -> bool {
    let Some((_, rest)) = line.split_once("] ") else {
        return false;
    };
    let mut words = rest.split_whitespace();
    words.next() == Some(node) && words.collect::<Vec<_>>().join(" ").starts_with(what)
}

/// Sends a line to the echo server at `address` and checks it comes back.
fn check_echo(address: &str) {
    let mut stream = TcpStream::connect(address).expect("the echo server accepts");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    let message = b"hello, lifecycle\n";
    stream.write_all(message).expect("the message is sent");
    let mut echoed = vec![0; message.len()];
    stream
        .read_exact(&mut echoed)
        .expect("the message comes back");
    assert_eq!(echoed, message);
}

/// The stop ran in reverse dependency order: heartbeat before echo, echo
/// and flaky before store.
fn check_stop_order(demo: &Demo) {
    let stopped = |node: &'static str| {
        let line = format!("{node}: stopped");
        demo.position(&line.clone(), move |seen| seen == line)
    };
    assert!(stopped("heartbeat") < stopped("echo"), "{}", demo.output());
    assert!(stopped("echo") < stopped("store"), "{}", demo.output());
    // flaky prints its line only if an instance was running (not in a
    // backoff); the supervisor's line is there either way.
    if demo.printed("flaky: stopped") {
        assert!(stopped("flaky") < stopped("store"), "{}", demo.output());
    }
    let event_at = |node| demo.position("a stopped event", |line| event(line, node, "stopped"));
    assert!(event_at("flaky") < event_at("store"), "{}", demo.output());
    assert!(
        event_at("heartbeat") < event_at("echo"),
        "{}",
        demo.output()
    );
    assert!(event_at("echo") < event_at("store"), "{}", demo.output());
}

/// Checks what a run told systemd: status lines, then `READY=1` once, then
/// (after the stop began) `STOPPING=1` once; nothing else.
fn check_notifications(messages: &[String]) {
    let all = messages.join("\n");
    let at = |wanted: &str| {
        let found: Vec<usize> = (0..messages.len())
            .filter(|&at| messages[at] == wanted)
            .collect();
        assert_eq!(found.len(), 1, "{wanted} once, in:\n{all}");
        found[0]
    };
    let (ready, stopping) = (at("READY=1"), at("STOPPING=1"));
    assert!(ready < stopping, "{all}");
    for (index, message) in messages.iter().enumerate() {
        if index != ready && index != stopping {
            let summary = message
                .strip_prefix("STATUS=")
                .unwrap_or_else(|| panic!("unexpected message {message:?} in:\n{all}"));
            assert!(summary.starts_with("config="), "{message:?}");
        }
    }
    // The last status before READY=1 shows every node up, and the last of
    // all every node down (flaky may be on a later instance, as `ready(2)`).
    let last_status = |messages: &[String]| {
        let mut statuses = messages
            .iter()
            .filter(|message| message.starts_with("STATUS="));
        statuses.next_back().cloned().unwrap_or_default()
    };
    let up = "STATUS=config=completed store=ready echo=ready heartbeat=ready flaky=ready";
    assert!(last_status(&messages[..ready]).starts_with(up), "{all}");
    let down = "STATUS=config=completed store=stopped echo=stopped heartbeat=stopped flaky=stopped";
    assert!(last_status(messages).starts_with(down), "{all}");
}

/// The main path: ready, echo, SIGTERM, a clean stop in reverse order.
fn serves_and_stops_in_order(runtime: &str) {
    let mut demo = Demo::start(&["--runtime", runtime]);
    assert!(demo
        .wait_for_line("the banner", |line| line.starts_with("lifecycle demo on "))
        .starts_with(&format!("lifecycle demo on {runtime},")));
    let address = demo.wait_until_ready();
    check_echo(&address);
    demo.signal(libc::SIGTERM);
    demo.expect_exit(0);
    check_stop_order(&demo);
    demo.position("the final line", |line| {
        line == "supervisor: clean stop (exit code 0): stopped by SIGTERM"
    });
    check_notifications(&demo.notifications());
}

/// `--spin-halt-after`: once halted, SIGINT is ignored; SIGTERM releases
/// the halt with exit code 3.
fn spin_halt_waits_for_sigterm(runtime: &str) {
    let mut demo = Demo::start(&["--runtime", runtime, "--spin-halt-after", "1"]);
    demo.wait_until_ready();
    demo.wait_for_line("the spin-halt line", |line| {
        line.starts_with("supervisor: spin-halt after heartbeat failed; every node is stopped")
    });
    demo.signal(libc::SIGINT);
    // A negative can only be shown by waiting: the process is still there
    // a while after SIGINT.
    thread::sleep(Duration::from_millis(500));
    assert!(
        demo.child
            .try_wait()
            .expect("the child can be waited for")
            .is_none(),
        "SIGINT ended a spin-halt:\n{}",
        demo.output()
    );
    demo.signal(libc::SIGTERM);
    demo.expect_exit(3);
    check_stop_order(&demo);
    demo.position("the verdict", |line| {
        event(line, "heartbeat", "verdict: spin-halt")
    });
    let messages = demo.notifications();
    assert!(messages.contains(&"READY=1".to_owned()), "{messages:?}");
    assert!(messages.contains(&"STOPPING=1".to_owned()), "{messages:?}");
}

/// A second SIGINT while the stop is under way (store flushing slowly)
/// exits at once with code 130.
fn second_sigint_forces_the_exit(runtime: &str) {
    let mut demo = Demo::start(&["--runtime", runtime, "--stop-delay", "60"]);
    demo.wait_until_ready();
    demo.signal(libc::SIGINT);
    demo.wait_for_line("store flushing", |line| line.starts_with("store: flushing"));
    demo.signal(libc::SIGINT);
    demo.expect_exit(130);
    assert!(!demo.printed("store: stopped"), "{}", demo.output());
    demo.position("the final line", |line| {
        line.starts_with("supervisor: forced exit by a second SIGINT")
    });
}

macro_rules! on_every_runtime {
    ($($scenario:ident),* $(,)?) => {
        mod tokio {
            $(#[test] fn $scenario() { super::$scenario("tokio") })*
        }
        mod smol {
            $(#[test] fn $scenario() { super::$scenario("smol") })*
        }
        mod async_std {
            $(#[test] fn $scenario() { super::$scenario("async-std") })*
        }
    };
}

on_every_runtime!(
    serves_and_stops_in_order,
    spin_halt_waits_for_sigterm,
    second_sigint_forces_the_exit,
);

#[test]
fn without_a_notify_socket_ctrl_c_stops_cleanly() {
    let mut demo = Demo::start_without_notify(&[]);
    let address = demo.wait_until_ready();
    check_echo(&address);
    demo.signal(libc::SIGINT);
    demo.expect_exit(0);
    check_stop_order(&demo);
    demo.position("the final line", |line| {
        line == "supervisor: clean stop (exit code 0): stopped by SIGINT"
    });
}

#[test]
fn flaky_is_restarted_while_the_rest_keeps_serving() {
    let mut demo = Demo::start(&[]);
    let address = demo.wait_until_ready();
    demo.wait_for_line("flaky's failure", |line| {
        event(line, "flaky", "failed (attempt 1): simulated failure")
    });
    demo.wait_for_line("flaky's restart", |line| {
        event(line, "flaky", "restarting in")
    });
    demo.wait_for_line("flaky's second instance", |line| {
        event(line, "flaky", "ready (attempt 2)")
    });
    check_echo(&address);
    let failed = demo.position("the failure", |line| event(line, "flaky", "failed"));
    // Nothing else stopped meanwhile.
    assert!(
        !demo.seen[failed..]
            .iter()
            .any(|line| ["store", "echo", "heartbeat"]
                .iter()
                .any(|node| event(line, node, "stopping"))),
        "{}",
        demo.output()
    );
    demo.signal(libc::SIGTERM);
    demo.expect_exit(0);
}

#[test]
fn a_stop_that_overruns_its_timeout_exits_4() {
    // store's stop timeout is 10 s; a flush of 60 s overruns it.
    let mut demo = Demo::start(&["--stop-delay", "60"]);
    demo.wait_until_ready();
    demo.signal(libc::SIGTERM);
    demo.expect_exit(4);
    demo.position("the timeout", |line| {
        event(line, "store", "not stopped within 10s; aborted")
    });
    assert!(!demo.printed("store: stopped"), "{}", demo.output());
}

#[test]
fn a_port_in_use_shuts_the_service_down_with_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("an address").port().to_string();
    let mut demo = Demo::start(&["--port", &port]);
    demo.expect_exit(1);
    demo.position("the bind failure", |line| {
        event(
            line,
            "echo",
            &format!("failed (attempt 1): cannot listen on 127.0.0.1:{port}"),
        )
    });
    demo.position("the escalation", |line| {
        event(line, "echo", "restart budget spent; escalating to shutdown")
    });
    // The nodes that were up stopped in order all the same.
    let event_at = |node| demo.position("a stopped event", |line| event(line, node, "stopped"));
    assert!(event_at("flaky") < event_at("store"), "{}", demo.output());
}

#[test]
fn bad_arguments_exit_2_with_the_culprit_and_the_usage() {
    for (args, culprit) in [
        (&["--port", "soon"][..], "`soon` is not a port number"),
        (
            &["--runtime", "glommio"][..],
            "`glommio` is not one of tokio, smol, async-std",
        ),
        (
            &["--spin-halt-after"][..],
            "--spin-halt-after needs a value",
        ),
        (&["--verbose"][..], "unknown argument `--verbose`"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_lifecycle-demo"))
            .args(args)
            .output()
            .expect("the demo runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(culprit), "{args:?}: {stderr}");
        assert!(stderr.contains("USAGE:"), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_explains_options_signals_and_exit_codes() {
    let output = Command::new(env!("CARGO_BIN_EXE_lifecycle-demo"))
        .arg("--help")
        .output()
        .expect("the demo runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--runtime NAME",
        "--port N",
        "--spin-halt-after SECS",
        "--stop-delay SECS",
        "SIGTERM",
        "SIGINT",
        "130",
        "NOTIFY_SOCKET",
    ] {
        assert!(help.contains(needle), "no {needle:?} in:\n{help}");
    }
}
