//! `lifecycle-demo`: a supervised service on the loopback, on tokio, smol or
//! async-std.
//!
//! One [`Supervisor`] runs five nodes (see [`nodes`]):
//!
//! ```text
//! config ──▶ store ──▶ echo ──▶ heartbeat
//!               └───▶ flaky
//! ```
//!
//! config loads the settings and completes, store keeps counters, echo is a
//! TCP echo server on 127.0.0.1, heartbeat prints a beat a second, and flaky
//! fails every few seconds and is restarted with a growing backoff while
//! the rest keeps running. Every transition is printed with the status of
//! every node ([`status`]). SIGINT or SIGTERM stops the nodes in reverse
//! dependency order, and the process exits with the code of the run (see
//! `--help`).
//!
//! # One service, three executors
//!
//! The nodes are written once: a worker sleeps and spawns through the
//! runtime its [`WorkerContext`](lifecycle::WorkerContext) hands it, and
//! stops when its stop token says so. Only `main` names an executor, to
//! block on the adapter's `run`.
//!
//! The echo server uses `async-net`, whose sockets are driven by
//! `async-io`'s own reactor thread rather than by the executor that polls
//! them, so the same listener works under tokio, smol and async-std (smol
//! and async-std use that reactor anyway). The alternative, a small socket
//! shim per runtime, would triple the one node the demo is about for no
//! gain a reader could see; the price is one reactor thread beside tokio's
//! own under `--runtime tokio`.
//!
//! # Signals and systemd
//!
//! The adapters' `run` does the process side: SIGINT and SIGTERM stop the
//! supervisor (a second SIGINT during the stop forces the exit; only
//! SIGTERM releases a spin-halt), and with `NOTIFY_SOCKET` set, systemd
//! hears `READY=1`, a `STATUS=` line per change and `STOPPING=1` (the
//! adapters' `systemd` feature). `main` maps the [`HostExit`] it returns to
//! the process exit code.

mod nodes;
mod options;
mod status;

use std::io;
use std::process::ExitCode;

use lifecycle::{HostExit, Supervisor};

use crate::options::{Command, Options, RuntimeChoice, USAGE};

/// Parses the command line (bad arguments exit with 2), builds the service
/// and runs it; the exit code is the run's.
fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lifecycle-demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let supervisor = match status::build_with_status_lines(nodes::service(&options)) {
        Ok(supervisor) => supervisor,
        // The graph is fixed, so this is a bug in the demo, not bad input.
        Err(error) => {
            eprintln!("lifecycle-demo: invalid service graph: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "lifecycle demo on {}, pid {}; Ctrl-C or SIGTERM stops it",
        options.runtime,
        std::process::id()
    );
    match run(options.runtime, supervisor) {
        Ok(exit) => {
            println!("supervisor: {exit}");
            ExitCode::from(exit.code())
        }
        Err(error) => {
            eprintln!("lifecycle-demo: cannot run the service: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the supervisor on the chosen executor, under SIGINT and SIGTERM
/// (and systemd's notify socket, if set), until it ends.
fn run(runtime: RuntimeChoice, supervisor: Supervisor) -> io::Result<HostExit> {
    match runtime {
        RuntimeChoice::Tokio => tokio::runtime::Builder::new_multi_thread()
            // Time for the nodes' sleeps, I/O for the signal listener.
            .enable_all()
            .build()?
            .block_on(lifecycle_tokio::run(supervisor)),
        RuntimeChoice::Smol => smol::block_on(lifecycle_smol::run(supervisor)),
        RuntimeChoice::AsyncStd => async_std::task::block_on(lifecycle_async_std::run(supervisor)),
    }
}
