//! Structured `tracing` events, one per transition, with its cause
//! (feature `tracing`). Without the feature every function here is empty
//! and [`Span`] is a zero-sized stand-in, so call sites need no `cfg`.
//!
//! Targets: `lifecycle::supervisor` (every [`SupervisorEvent`], inside a
//! `node` span per instance while it starts), `lifecycle::restart` (the
//! restart loop), `lifecycle::manager` (a manager's fatal errors and its
//! end, inside the span that was current when it was started). Levels:
//! failures are `WARN` (`ERROR` when a restart budget is spent), stops and
//! starts `DEBUG`, everything else `INFO`.

use core::time::Duration;

use crate::fatal::FatalError;
use crate::restart::{RunOutcome, Verdict};
use crate::supervisor::SupervisorEvent;

#[cfg(feature = "tracing")]
pub(crate) use tracing::Span;

/// Without `tracing`: nothing to enter, nothing to keep.
#[cfg(not(feature = "tracing"))]
#[derive(Clone, Debug, Default)]
pub(crate) struct Span;

#[cfg(not(feature = "tracing"))]
impl Span {
    pub(crate) fn current() -> Span {
        Span
    }

    pub(crate) fn none() -> Span {
        Span
    }

    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        f()
    }
}

/// The span a node's instance starts in: the components it starts (a
/// manager, a nested supervisor) record it as theirs.
pub(crate) fn node_span(node: &str, attempt: u32) -> Span {
    #[cfg(feature = "tracing")]
    {
        tracing::info_span!(target: "lifecycle::supervisor", "node", node, attempt)
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (node, attempt);
        Span
    }
}

/// One supervisor transition.
pub(crate) fn supervisor_event(event: &SupervisorEvent) {
    #[cfg(feature = "tracing")]
    {
        use crate::supervisor::EventKind;
        use tracing::{debug, error, info, warn};
        const T: &str = "lifecycle::supervisor";
        let node = &*event.node;
        match &event.kind {
            EventKind::Starting { attempt } => debug!(target: T, node, attempt, "starting"),
            EventKind::Ready { attempt } => info!(target: T, node, attempt, "ready"),
            EventKind::Failed { attempt, error } => {
                warn!(target: T, node, attempt, error = %error, "failed")
            }
            EventKind::Verdict {
                attempt,
                verdict,
                acted,
            } => info!(target: T, node, attempt, verdict = %verdict, acted, "verdict"),
            EventKind::Restarting { attempt, delay } => {
                info!(target: T, node, attempt, delay = ?delay, "restarting")
            }
            EventKind::RestartsExhausted {
                attempt,
                escalation,
            } => error!(target: T, node, attempt, escalation = %escalation, "restarts exhausted"),
            EventKind::Stopping { attempt, cause } => {
                debug!(target: T, node, attempt, cause = %cause, "stopping")
            }
            EventKind::ErrorDuringStop { attempt, error } => {
                warn!(target: T, node, attempt, error = %error, "error during stop")
            }
            EventKind::StopTimedOut { attempt, timeout } => {
                warn!(target: T, node, attempt, timeout = ?timeout, "stop timed out, aborted")
            }
            EventKind::GivenUp { attempt, budget } => {
                warn!(target: T, node, attempt, budget = ?budget, "given up: shutdown budget spent")
            }
            EventKind::Completed { attempt } => info!(target: T, node, attempt, "completed"),
            EventKind::Stopped { attempt } => info!(target: T, node, attempt, "stopped"),
            EventKind::Waiting { attempt } => info!(target: T, node, attempt, "waiting"),
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = event;
}

/// The restart loop builds and starts instance `attempt`.
pub(crate) fn restart_starting(attempt: u32) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "lifecycle::restart", attempt, "starting");
    #[cfg(not(feature = "tracing"))]
    let _ = attempt;
}

/// Instance `attempt` failed, and the handler decided `verdict`.
pub(crate) fn restart_failed(attempt: u32, error: &FatalError, verdict: Verdict) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "lifecycle::restart", attempt, error = %error, verdict = %verdict, "failed");
    #[cfg(not(feature = "tracing"))]
    let _ = (attempt, error, verdict);
}

/// The next instance starts after `delay`.
pub(crate) fn restart_backoff(attempt: u32, delay: Duration) {
    #[cfg(feature = "tracing")]
    tracing::info!(target: "lifecycle::restart", attempt, delay = ?delay, "restarting");
    #[cfg(not(feature = "tracing"))]
    let _ = (attempt, delay);
}

/// The loop ended with `outcome`.
pub(crate) fn restart_ended(outcome: &RunOutcome) {
    #[cfg(feature = "tracing")]
    {
        if outcome.is_clean() {
            tracing::info!(target: "lifecycle::restart", outcome = %outcome, "ended");
        } else {
            tracing::warn!(target: "lifecycle::restart", outcome = %outcome, "ended");
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = outcome;
}

/// A manager's fatal error: its first (`first`, delivered to its parent,
/// which begins its shutdown) or a later one (handed to the hook).
pub(crate) fn manager_error(span: &Span, error: &FatalError, first: bool) {
    #[cfg(feature = "tracing")]
    span.in_scope(|| {
        if first {
            tracing::warn!(target: "lifecycle::manager", error = %error, "fatal error, shutting down");
        } else {
            tracing::warn!(target: "lifecycle::manager", error = %error, "later fatal error, to the hook");
        }
    });
    #[cfg(not(feature = "tracing"))]
    let _ = (span, error, first);
}

/// Every worker of a manager has called ready.
pub(crate) fn manager_ready(span: &Span) {
    #[cfg(feature = "tracing")]
    span.in_scope(|| tracing::debug!(target: "lifecycle::manager", "ready"));
    #[cfg(not(feature = "tracing"))]
    let _ = span;
}

/// A manager is done; `ready` says whether it had become ready.
pub(crate) fn manager_done(span: &Span, ready: bool) {
    #[cfg(feature = "tracing")]
    span.in_scope(|| tracing::debug!(target: "lifecycle::manager", ready, "done"));
    #[cfg(not(feature = "tracing"))]
    let _ = (span, ready);
}
