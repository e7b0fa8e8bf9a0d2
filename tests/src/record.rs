//! Helpers for component scenarios: an [`Events`] log that also serves as a
//! recording [`FatalHook`], a [`ManualComponent`] driven by hand,
//! [`when_set`] to check orderings at the moment a signal is set, a
//! supervisor's events written out ([`describe`], [`describing`]) and
//! [`shown_with`] to check its status against them, and [`lock`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Wake, Waker};

use lifecycle::{
    Component, EventKind, FatalError, FatalHook, Latch, NodeState, Scope, Signal, StartError,
    SupervisorEvent, WaitOwned, WakeOnStop,
};

/// A shared, ordered log of events: clones append to the same list.
///
/// Scenarios record what happened, from any task or thread, and compare the
/// whole list at the end. [`hook`](Events::hook) makes a [`FatalHook`] that
/// records the errors it receives.
///
/// # Example
///
/// ```
/// use lifecycle::{FatalError, FatalSlot};
/// use lifecycle_conformance::Events;
///
/// let events = Events::new();
/// events.push("start 1");
/// let slot = FatalSlot::with_hook(events.hook());
/// slot.report(FatalError::msg("first"));
/// slot.report(FatalError::msg("second"));
/// assert_eq!(events.snapshot(), ["start 1", "second"]);
/// assert_eq!(events.count("second"), 1);
/// ```
#[derive(Clone, Default)]
pub struct Events {
    list: Arc<Mutex<Vec<String>>>,
}

impl Events {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `event`.
    pub fn push(&self, event: impl Into<String>) {
        self.lock().push(event.into());
    }

    /// A copy of the events so far, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many recorded events equal `event`.
    pub fn count(&self, event: &str) -> usize {
        self.lock().iter().filter(|e| *e == event).count()
    }

    /// A hook that records each error it receives (its `Display` text).
    pub fn hook(&self) -> FatalHook {
        let events = self.clone();
        FatalHook::new(move |error: &FatalError| events.push(error.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        // A scenario that panicked while recording fails anyway; keep the
        // log readable for its report.
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.lock().iter()).finish()
    }
}

/// A [`Component`] with no tasks whose signals the scenario sets by hand.
///
/// `start` records the scope it is first given (see [`scope`](Self::scope))
/// and returns; nothing happens until the scenario sets [`ready`](Self::ready_latch),
/// [`shutdown`](Self::shutdown_latch) or [`done`](Self::done_latch), or throws
/// into the recorded scope. Starts and aborts are counted. Clones are handles
/// to the same component.
///
/// # Example
///
/// ```
/// use lifecycle::{Component, FatalSlot, Scope, StartError, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::{sync::Arc, time::Duration};
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// use lifecycle_conformance::ManualComponent;
///
/// let component = ManualComponent::new();
/// let stop = StopSource::new();
/// let scope = Scope::new(Arc::new(Nothing), stop.token(), FatalSlot::new());
/// component.start(scope.clone()).unwrap();
/// assert!(matches!(component.start(scope), Err(StartError::AlreadyStarted)));
/// assert_eq!(component.start_calls(), 2);
/// assert!(component.scope().is_some());
///
/// component.done_latch().set();
/// assert!(component.done().is_set());
/// ```
#[derive(Clone, Default)]
pub struct ManualComponent {
    inner: Arc<ManualInner>,
}

#[derive(Default)]
struct ManualInner {
    ready: Latch,
    shutdown: Latch,
    done: Latch,
    /// The scope of the first `start`; `Some` also claims the start.
    scope: Mutex<Option<Scope>>,
    /// Set once `scope` holds the first start's scope.
    started: Latch,
    start_error: Option<FatalError>,
    done_on_abort: bool,
    done_on_stop: bool,
    on_stop: Mutex<Option<WakeOnStop>>,
    start_calls: AtomicUsize,
    abort_calls: AtomicUsize,
}

impl ManualComponent {
    /// A component whose `start` succeeds once and whose `abort` does
    /// nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A component whose first `start` fails with
    /// [`StartError::Failed`]`(error)` (later ones with
    /// [`StartError::AlreadyStarted`]).
    pub fn failing_to_start(error: FatalError) -> Self {
        Self::with(ManualInner {
            start_error: Some(error),
            ..ManualInner::default()
        })
    }

    /// A component whose `abort` sets its shutdown signal and done.
    pub fn done_on_abort() -> Self {
        Self::with(ManualInner {
            done_on_abort: true,
            ..ManualInner::default()
        })
    }

    /// A component that stops at once: when its scope's token stops, its
    /// shutdown signal and done are set right away, by the thread that
    /// stops the token, before `stop` returns.
    pub fn done_on_stop() -> Self {
        Self::with(ManualInner {
            done_on_stop: true,
            ..ManualInner::default()
        })
    }

    fn with(inner: ManualInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The scope given to the first `start`, successful or not.
    pub fn scope(&self) -> Option<Scope> {
        lock(&self.inner.scope).clone()
    }

    /// Waits for the first `start` (successful or not) and returns its
    /// scope.
    pub async fn started(&self) -> Scope {
        self.inner.started.wait().await;
        self.scope()
            .expect("`started` is set only after the scope is stored")
    }

    /// A factory for `run_component` that hands out this very component on
    /// every call (so a second build is a start error).
    pub fn factory(&self) -> impl FnMut() -> Result<ManualComponent, FatalError> + Send + 'static {
        let component = self.clone();
        move || Ok(component.clone())
    }

    /// How many times `start` was called, successfully or not.
    pub fn start_calls(&self) -> usize {
        self.inner.start_calls.load(SeqCst)
    }

    /// How many times `abort` was called.
    pub fn abort_calls(&self) -> usize {
        self.inner.abort_calls.load(SeqCst)
    }

    /// The latch behind [`Component::ready`].
    pub fn ready_latch(&self) -> &Latch {
        &self.inner.ready
    }

    /// The latch behind [`Component::shutdown_signal`].
    pub fn shutdown_latch(&self) -> &Latch {
        &self.inner.shutdown
    }

    /// The latch behind [`Component::done`].
    pub fn done_latch(&self) -> &Latch {
        &self.inner.done
    }
}

impl Component for ManualComponent {
    fn start(&self, scope: Scope) -> Result<(), StartError> {
        self.inner.start_calls.fetch_add(1, SeqCst);
        {
            let mut first = lock(&self.inner.scope);
            if first.is_some() {
                return Err(StartError::AlreadyStarted);
            }
            *first = Some(scope.clone());
        }
        if let Some(error) = &self.inner.start_error {
            self.inner.started.set();
            return Err(StartError::Failed(error.clone()));
        }
        if self.inner.done_on_stop {
            let finish = Waker::from(Arc::new(Finish {
                shutdown: self.inner.shutdown.clone(),
                done: self.inner.done.clone(),
            }));
            *lock(&self.inner.on_stop) = Some(scope.token().wake_on_stop(&finish));
        }
        // Set last: a test that stops the scope as soon as `started` is set
        // finds the stop already wired to done, instead of racing the
        // registration above.
        self.inner.started.set();
        Ok(())
    }

    fn ready(&self) -> Signal {
        self.inner.ready.signal()
    }

    fn shutdown_signal(&self) -> Signal {
        self.inner.shutdown.signal()
    }

    fn done(&self) -> Signal {
        self.inner.done.signal()
    }

    fn abort(&self) {
        self.inner.abort_calls.fetch_add(1, SeqCst);
        if self.inner.done_on_abort {
            self.inner.shutdown.set();
            self.inner.done.set();
        }
    }
}

impl fmt::Debug for ManualComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualComponent")
            .field("start_calls", &self.start_calls())
            .field("abort_calls", &self.abort_calls())
            .field("ready", &self.inner.ready.is_set())
            .field("shutdown", &self.inner.shutdown.is_set())
            .field("done", &self.inner.done.is_set())
            .finish_non_exhaustive()
    }
}

/// Sets a component's shutdown signal and done when woken.
struct Finish {
    shutdown: Latch,
    done: Latch,
}

impl Wake for Finish {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shutdown.set();
        self.done.set();
    }
}

/// Locks `mutex`, poisoned or not: a scenario that panicked while holding
/// it has failed already, and what it left is still worth reporting.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls `callback` once `signal` is set, synchronously, on the thread that
/// sets it, before `set` returns (or at once, on this thread, if it is set
/// already). Dropping the returned guard first cancels the call.
///
/// For ordering checks that must not depend on a task being scheduled: the
/// callback sees the world exactly as it was when the signal was set, so
/// "when done is set, the shutdown signal is set already" can be checked
/// without a race. Keep the callback short and never block in it.
///
/// Other threads can see the signal set a moment before the callback has
/// run: wait for [`WhenSet::ran`] before reading what the callback recorded.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
/// use std::sync::Arc;
/// use lifecycle::Latch;
/// use lifecycle_conformance::when_set;
///
/// let (first, second) = (Latch::new(), Latch::new());
/// let in_order = Arc::new(AtomicBool::new(false));
/// let guard = when_set(&second.signal(), {
///     let (first, in_order) = (first.clone(), in_order.clone());
///     move || in_order.store(first.is_set(), SeqCst)
/// });
/// first.set();
/// second.set();
/// assert!(guard.ran().is_set());
/// assert!(in_order.load(SeqCst));
/// ```
pub fn when_set<F>(signal: &Signal, callback: F) -> WhenSet
where
    F: Fn() + Send + Sync + 'static,
{
    let ran = Latch::new();
    let call = Arc::new(CallOnce {
        called: AtomicBool::new(false),
        ran: ran.clone(),
        callback,
    });
    let waker = Waker::from(call.clone());
    let mut wait = Box::pin(signal.clone().wait_owned());
    if wait
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
    {
        call.call();
    }
    WhenSet { _wait: wait, ran }
}

/// Guard returned by [`when_set`]: keeps the callback registered.
#[must_use = "dropping the guard cancels the callback"]
pub struct WhenSet {
    _wait: Pin<Box<WaitOwned>>,
    ran: Latch,
}

impl WhenSet {
    /// Set once the callback has returned.
    pub fn ran(&self) -> Signal {
        self.ran.signal()
    }
}

impl fmt::Debug for WhenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhenSet").finish_non_exhaustive()
    }
}

struct CallOnce<F> {
    called: AtomicBool,
    ran: Latch,
    callback: F,
}

impl<F: Fn()> CallOnce<F> {
    fn call(&self) {
        if !self.called.swap(true, SeqCst) {
            (self.callback)();
            self.ran.set();
        }
    }
}

impl<F: Fn() + Send + Sync + 'static> Wake for CallOnce<F> {
    fn wake(self: Arc<Self>) {
        self.call();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.call();
    }
}

/// The states a supervisor's status board may show for a node when `kind`,
/// an event about it, reaches the event hook: the state the event leads
/// to. `None` for the handler's verdict and a spent restart budget, which
/// come between two transitions.
pub fn shown_with(kind: &EventKind) -> Option<&'static [NodeState]> {
    Some(match kind {
        EventKind::Starting { .. } => &[NodeState::Starting],
        EventKind::Ready { .. } => &[NodeState::Ready],
        // Stopping a live instance; waiting, after a factory error.
        EventKind::Failed { .. } => &[NodeState::Stopping, NodeState::Waiting],
        EventKind::Restarting { .. } => &[NodeState::Backoff],
        EventKind::Stopping { .. }
        | EventKind::ErrorDuringStop { .. }
        | EventKind::StopTimedOut { .. }
        | EventKind::GivenUp { .. } => &[NodeState::Stopping],
        // A permanent node goes on to its backoff.
        EventKind::Completed { .. } => &[NodeState::Completed, NodeState::Backoff],
        EventKind::Stopped { .. } => &[NodeState::Stopped],
        EventKind::Waiting { .. } => &[NodeState::Waiting],
        _ => return None,
    })
}

/// An event hook that records every event into `events`, as [`describe`]
/// writes it.
pub fn describing(events: &Events) -> impl Fn(&SupervisorEvent) + Send + Sync + 'static {
    let events = events.clone();
    move |event| events.push(describe(event))
}

/// A supervisor event as one line: the node, what happened, the attempt
/// and what goes with it (`api verdict 2: restart, acted on: true`).
pub fn describe(event: &SupervisorEvent) -> String {
    let what = match &event.kind {
        EventKind::Starting { attempt } => format!("starting {attempt}"),
        EventKind::Ready { attempt } => format!("ready {attempt}"),
        EventKind::Failed { attempt, error } => format!("failed {attempt}: {error}"),
        EventKind::Verdict {
            attempt,
            verdict,
            acted,
        } => format!("verdict {attempt}: {verdict}, acted on: {acted}"),
        EventKind::Restarting { attempt, delay } => {
            format!("restarting {attempt} after {delay:?}")
        }
        EventKind::RestartsExhausted {
            attempt,
            escalation,
        } => format!("restarts exhausted {attempt}: {escalation}"),
        EventKind::Stopping { attempt, cause } => format!("stopping {attempt}: {cause}"),
        EventKind::ErrorDuringStop { attempt, error } => {
            format!("error during stop {attempt}: {error}")
        }
        EventKind::StopTimedOut { attempt, timeout } => {
            format!("stop timed out {attempt} after {timeout:?}")
        }
        EventKind::GivenUp { attempt, budget } => {
            format!("given up {attempt} after a budget of {budget:?}")
        }
        EventKind::Completed { attempt } => format!("completed {attempt}"),
        EventKind::Stopped { attempt } => format!("stopped {attempt}"),
        EventKind::Waiting { attempt } => format!("waiting {attempt}"),
        other => format!("{other:?}"),
    };
    format!("{} {what}", event.node)
}
