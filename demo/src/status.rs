//! The live status lines: one per node transition, from the supervisor's
//! event hook, with the status of every node whenever it changed.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use lifecycle::{
    BuildError, EventKind, NodeState, StatusBoard, Supervisor, SupervisorBuilder, SupervisorEvent,
};

/// Builds the supervisor with an event hook that prints every transition.
///
/// # Errors
///
/// The builder's, if the graph is invalid.
pub(crate) fn build_with_status_lines(
    builder: SupervisorBuilder,
) -> Result<Supervisor, BuildError> {
    // The hook is installed before the supervisor (and its status board)
    // exists; events only come once it runs, by when the board is in.
    let board = Arc::new(OnceLock::new());
    let printer = Mutex::new(Printer {
        board: board.clone(),
        started: Instant::now(),
        last_summary: String::new(),
        told_ready: false,
        told_halt: false,
    });
    let supervisor = builder
        .on_event(move |event| {
            // A poisoned lock only means an earlier line panicked halfway;
            // the state is still fine to print from.
            let mut printer = printer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            printer.print(event);
        })
        .build()?;
    let _ = board.set(supervisor.status());
    Ok(supervisor)
}

/// What the hook remembers between events.
struct Printer {
    /// The supervisor's status board, set right after the build.
    board: Arc<OnceLock<StatusBoard>>,
    /// When the service was built: the origin of the timestamps.
    started: Instant,
    /// The last status line printed, so that an unchanged one is not repeated.
    last_summary: String,
    /// Whether the "every node is ready" line was printed.
    told_ready: bool,
    /// Whether the spin-halt line was printed.
    told_halt: bool,
}

impl Printer {
    /// Prints the event's line, the status line if it changed, and the
    /// two milestones: every node ready, and a spin-halt in place.
    fn print(&mut self, event: &SupervisorEvent) {
        let elapsed = self.started.elapsed().as_secs_f64();
        println!(
            "[{elapsed:7.2}s] {:<10} {}",
            event.node,
            describe(&event.kind)
        );
        let Some(board) = self.board.get() else {
            return;
        };
        let summary = board.summary();
        if shows_in_board(&event.kind) && summary != self.last_summary {
            println!("{:11}{summary}", "");
            self.last_summary = summary;
        }
        let nodes = board.snapshot();
        if !self.told_ready
            && nodes
                .iter()
                .all(|node| node.is_ready() || node.state == NodeState::Completed)
        {
            self.told_ready = true;
            println!("supervisor: every node is ready; Ctrl-C or SIGTERM stops the service");
        }
        if let Some(culprit) = board.spin_halted_by() {
            if !self.told_halt && nodes.iter().all(|node| node.is_done()) {
                self.told_halt = true;
                println!(
                    "supervisor: spin-halt after {culprit} failed; every node is stopped; \
                     waiting for SIGTERM (SIGINT is ignored)"
                );
            }
        }
    }
}

/// What happened, in words.
fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::Starting { attempt } => format!("starting (attempt {attempt})"),
        EventKind::Ready { attempt } => format!("ready (attempt {attempt})"),
        EventKind::Failed { attempt, error } => format!("failed (attempt {attempt}): {error}"),
        EventKind::Verdict {
            verdict,
            acted: true,
            ..
        } => format!("verdict: {verdict}"),
        EventKind::Verdict {
            verdict,
            acted: false,
            ..
        } => {
            format!("verdict: {verdict} (not acted on: already stopping)")
        }
        EventKind::Restarting { attempt, delay } => {
            format!(
                "restarting in {:.2}s (attempt {attempt})",
                delay.as_secs_f64()
            )
        }
        EventKind::RestartsExhausted { escalation, .. } => {
            format!("restart budget spent; escalating to {escalation}")
        }
        EventKind::Stopping { cause, .. } => format!("stopping: {cause}"),
        EventKind::ErrorDuringStop { error, .. } => format!("error while stopping: {error}"),
        EventKind::StopTimedOut { timeout, .. } => {
            format!("not stopped within {timeout:?}; aborted")
        }
        EventKind::GivenUp { budget, .. } => {
            format!("shutdown budget of {budget:?} spent; given up")
        }
        EventKind::Completed { .. } => "completed".to_owned(),
        EventKind::Stopped { .. } => "stopped".to_owned(),
        EventKind::Waiting { .. } => "waiting to start again".to_owned(),
        // The list may grow (it is non-exhaustive): show what is there.
        other => format!("{other:?}"),
    }
}

/// Whether the board already shows what `kind` reports when the hook is
/// called. The supervisor reports `Starting` before it calls the factory,
/// and `Failed` and `Completed` before it moves the node on, so the board
/// is a step behind for those three: the status line waits for the next
/// event rather than print a state the event line just contradicted.
fn shows_in_board(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Starting { .. } | EventKind::Failed { .. } | EventKind::Completed { .. }
    )
}
