//! The `tracing` feature: a supervisor's transitions, its node's manager
//! and a restart loop each report what happened and why, as structured
//! events, in the span of the node they belong to.
//!
//! One executor only (tokio current-thread): the subscriber is the
//! thread's default, so every task must run on the test's thread.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use lifecycle::{
    run_component, ComponentManager, FatalError, Node, RestartPolicy, RunOutcome, StopSource,
    Supervisor, SupervisorEnd, Verdict,
};
use lifecycle_conformance::tokio_current_thread;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

/// Records every event as one line: `target message field=value ... [span]`.
#[derive(Clone, Default)]
struct Recorder {
    lines: Arc<Mutex<Vec<String>>>,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    entered: Arc<Mutex<Vec<u64>>>,
    next: Arc<AtomicU64>,
}

/// A span's id, its name and fields as written, and its metadata.
type SpanRecord = (u64, String, &'static Metadata<'static>);

/// Writes fields as `name=value`, the message first and bare.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, SeqCst) + 1;
        let mut fields = String::from(span.metadata().name());
        span.record(&mut Fields(&mut fields));
        self.spans
            .lock()
            .unwrap()
            .push((id, fields, span.metadata()));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = String::from(event.metadata().target());
        event.record(&mut Fields(&mut line));
        let parent = event
            .parent()
            .map(Id::into_u64)
            .or_else(|| self.entered.lock().unwrap().last().copied());
        if let Some(parent) = parent {
            let spans = self.spans.lock().unwrap();
            if let Some((_, span, _)) = spans.iter().find(|(id, ..)| *id == parent) {
                let _ = write!(line, " [{span}]");
            }
        }
        self.lines.lock().unwrap().push(line);
    }

    /// What `Span::current()` returns: the innermost entered span.
    fn current_span(&self) -> Current {
        let Some(current) = self.entered.lock().unwrap().last().copied() else {
            return Current::none();
        };
        let spans = self.spans.lock().unwrap();
        match spans.iter().find(|(id, ..)| *id == current) {
            Some((id, _, metadata)) => Current::new(Id::from_u64(*id), metadata),
            None => Current::none(),
        }
    }

    fn enter(&self, span: &Id) {
        self.entered.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut entered = self.entered.lock().unwrap();
        if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
            entered.remove(at);
        }
    }
}

/// A component that fails with "db failed N" on its first `fails`
/// instances, right after ready, and then serves until stopped.
fn flaky(fails: u32) -> impl FnMut() -> Result<ComponentManager, FatalError> + Send + 'static {
    let mut built = 0;
    move || {
        built += 1;
        let instance = built;
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| async move {
                ready.ready();
                if instance <= fails {
                    return Err(FatalError::msg(format!("db failed {instance}")));
                }
                ctx.stopped().await;
                Ok(())
            })
            .build())
    }
}

#[test]
fn supervisor_transitions_are_events_with_their_causes() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    let watching = recorder.clone();
    tokio_current_thread(|rt| async move {
        let recorder = watching;
        let supervisor = Supervisor::builder()
            .node(Node::new("db", flaky(1)).policy(RestartPolicy::immediate()))
            .build()
            .unwrap();
        let ready = lifecycle::Component::ready(&supervisor);
        let stop = StopSource::new();
        let run = supervisor.run(rt.clone(), stop.token());
        let stopper = async {
            // Ready after the restart: the first instance failed.
            ready.wait().await;
            while !recorder
                .lines()
                .iter()
                .any(|line| line.contains("ready node=db attempt=2"))
            {
                tokio::task::yield_now().await;
            }
            stop.stop();
        };
        let (outcome, ()) = futures_util::future::join(run, stopper).await;
        assert!(matches!(outcome.end, SupervisorEnd::ParentStopped));
    });
    let lines = recorder.lines();
    // The first instance fails right after calling ready: whether the
    // supervisor saw it ready before it failed is a race of no consequence.
    let supervisor: Vec<_> = lines
        .iter()
        .filter(|line| line.starts_with("lifecycle::supervisor"))
        .map(String::as_str)
        .filter(|line| *line != "lifecycle::supervisor ready node=db attempt=1")
        .collect();
    assert_eq!(
        supervisor,
        [
            "lifecycle::supervisor starting node=db attempt=1",
            "lifecycle::supervisor failed node=db attempt=1 error=db failed 1",
            "lifecycle::supervisor verdict node=db attempt=1 verdict=restart acted=true",
            "lifecycle::supervisor restarting node=db attempt=2 delay=0ns",
            "lifecycle::supervisor starting node=db attempt=2",
            "lifecycle::supervisor ready node=db attempt=2",
            "lifecycle::supervisor stopping node=db attempt=2 cause=the parent stopped",
            "lifecycle::supervisor stopped node=db attempt=2",
        ]
    );
    // The node's manager reports in the node's span, instance by instance.
    let first_error = lines
        .iter()
        .find(|line| line.starts_with("lifecycle::manager fatal error"))
        .expect("the manager reported its fatal error");
    assert_eq!(
        first_error,
        "lifecycle::manager fatal error, shutting down error=db failed 1 [node node=db attempt=1]"
    );
    assert!(
        lines.contains(&"lifecycle::manager done ready=true [node node=db attempt=2]".to_string()),
        "{lines:#?}"
    );
}

#[test]
fn restart_loop_reports_each_failure_verdict_and_its_end() {
    let recorder = Recorder::default();
    let _default = tracing::subscriber::set_default(recorder.clone());
    tokio_current_thread(|rt| async move {
        let stop = StopSource::new();
        let outcome = run_component(flaky(2), |failure| {
            if failure.attempt < 2 {
                Verdict::Restart
            } else {
                Verdict::Stop
            }
        })
        .policy(RestartPolicy::immediate())
        .run(rt, stop.token())
        .await;
        assert!(matches!(outcome, RunOutcome::Failed { .. }));
    });
    let lines: Vec<_> = recorder
        .lines()
        .into_iter()
        .filter(|line| line.starts_with("lifecycle::restart"))
        .collect();
    assert_eq!(
        lines,
        [
            "lifecycle::restart starting attempt=1",
            "lifecycle::restart failed attempt=1 error=db failed 1 verdict=restart",
            "lifecycle::restart restarting attempt=2 delay=0ns",
            "lifecycle::restart starting attempt=2",
            "lifecycle::restart failed attempt=2 error=db failed 2 verdict=stop",
            "lifecycle::restart ended outcome=instance 2 failed (stop): db failed 2",
        ]
    );
}
