//! [`StartStop`]: the generation state machine every service embeds.
//!
//! ```text
//!            begin                       stop_init
//!   Idle ───────────────▶ Running(gen) ─────────────▶ Stopping(gen)
//!    ▲                     │    ▲                      │      │
//!    │   begin after the   │    │   finalize(false),   │      │ finalize(true)
//!    │   work exited:      │    └── or the guard ──────┘      │
//!    │   a new gen ◀───────┘        dropped                   │
//!    └────────────────────────────────────────────────────────┘
//! ```
//!
//! - `Idle`: no generation (never started, or the last stop completed).
//!   Latches asked for now are kept and adopted by the next `begin`.
//! - `Running`: a generation began. Its work may still run, or may have
//!   exited (its stopped latch is set: a failed start, a parent stop, the
//!   work returning), or its stop may have been abandoned (its scope is
//!   stopped but the stop was never completed).
//! - `Stopping`: a two-phase stop is open. `begin` and `stop_init` wait for
//!   it to close; the latch accessors and `is_running` do not.
//!
//! Every transition happens under one short lock that never runs user code:
//! stop sources are stopped and latches set after the lock is released,
//! because both wake wakers, and a waker may do anything.
//!
//! A generation's handles hold their own generation's signals, never a slot
//! of the base, so a late or repeated call on a handle can only touch its
//! own generation.
//!
//! # Memory
//!
//! A generation's started and stopped latches and the count of its stopped
//! handles live in one allocation ([`GenSignals`]), and the next generation
//! reuses it when nothing else holds it any more (no handle, no latch taken
//! by a caller): then nothing can tell the two generations' signals apart,
//! and no stale handle exists that could touch the new one.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::mem;
use core::pin::Pin;
use core::sync::atomic::Ordering::{AcqRel, Relaxed};
use core::task::{Context, Poll};
use core::time::Duration;

use pin_project_lite::pin_project;

use crate::fatal::{FatalError, FatalSlot};
use crate::flag::Flag;
use crate::latch::{FlagOwner, Latch, Signal};
use crate::runtime::{Elapsed, RuntimeExt, SharedRuntime};
use crate::scope::Scope;
use crate::stop::{StopCause, StopSource};
use crate::sync::{AtomicUsize, Mutex};
use crate::task::{self, JoinError, JoinHandle};

/// The restartable start/stop base a service embeds: it begins generations,
/// stops them, and hands out their latches.
///
/// A service author writes only the start body (see [`Service`] for a
/// complete service):
///
/// 1. [`begin`](StartStop::begin) a generation; `None` means one is running
///    already, so the start is a no-op.
/// 2. Spawn the work in [`Generation::scope`]; call
///    [`started.set()`](StartedHandle::set) once it runs and
///    [`stopped.set()`](StoppedHandle::set) when it exits (dropping the
///    last [`StoppedHandle`] does the same, so a task that panics or is
///    aborted still ends its generation). [`Generation::spawn`] does the
///    spawning and the stopped handle for you, and
///    [`Generation::spawn_detached`] does it without a join handle, for
///    work nobody joins.
/// 3. On a setup error, drop the handles (or call `stopped.set()`) and
///    return the error: a later start begins a new generation.
///
/// The behaviour the base keeps:
///
/// | call | when | effect |
/// |---|---|---|
/// | `begin` | idle, or the work exited | a new generation in a child scope of the given one, adopting latches asked for early |
/// | `begin` | the work runs | `None`; the caller's scope is not used |
/// | `begin` | a two-phase stop is open | wait until it closes, then act |
/// | `stop_init`, `stop` | a two-phase stop is open | wait until it closes; then stop the generation waited behind if it is still there (the stop was abandoned), or return without touching a newer generation that began meanwhile |
/// | `begin` | the given scope is stopped | a generation born stopped: its work sees its scope stopped at once |
/// | `stop` | idle | returns at once |
/// | `stop` | a generation exists | stops its scope with [`StopCause::ServiceStopped`], waits for its stopped latch, resets to idle |
/// | `started`, `stopped` | idle | a latch for the coming generation |
/// | `started`, `stopped` | a generation exists | that generation's latch (set already after a failed start) |
///
/// The generation's scope tells a stop through the service apart from
/// anything else: its [`cause`](crate::StopToken::cause) is
/// [`StopCause::ServiceStopped`]; if the parent scope stopped first it is
/// [`StopCause::ParentStopped`], and
/// [`origin_cause`](crate::StopToken::origin_cause) gives the parent's.
///
/// [`Service`]: crate::Service
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{FatalSlot, RuntimeExt, Scope, StartStop, StopCause, StopSource};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
/// # futures_executor::block_on(async {
/// let base = StartStop::new();
/// let parent = StopSource::new();
/// let scope = Scope::new(Arc::new(Threads), parent.token(), FatalSlot::new());
///
/// let early = base.stopped(); // asked for before the start: adopted by it
/// let generation = base.begin(&scope).await.expect("idle, so it begins");
/// assert!(base.begin(&scope).await.is_none(), "running: a second start is a no-op");
///
/// let token = generation.scope.token().clone();
/// let stopped = generation.stopped;
/// drop(scope.runtime().spawn(async move {
///     token.stopped().await;
///     stopped.set();
/// }));
/// generation.started.set();
///
/// base.stop().await;
/// assert!(early.is_set());
/// assert!(matches!(generation.scope.token().cause(), Some(StopCause::ServiceStopped)));
/// assert!(!base.is_running());
/// # });
/// ```
pub struct StartStop {
    state: Mutex<State>,
}

enum State {
    Idle(Idle),
    Running(Gen),
    Stopping {
        gen: Gen,
        /// Set when the stop closes; made by the first caller that waits.
        closed: Option<Latch>,
    },
}

impl State {
    /// The number of the generation the base holds; `None` when idle.
    fn number(&self) -> Option<u64> {
        match self {
            State::Idle(_) => None,
            State::Running(gen) | State::Stopping { gen, .. } => Some(gen.number),
        }
    }
}

/// What an idle base keeps between generations.
#[derive(Default)]
struct Idle {
    /// The signals of the next generation, made when one of its latches is
    /// asked for before it begins; the next start adopts them.
    next: Option<Arc<GenSignals>>,
    /// Whether the stopped latch of `next` was asked for (not only its
    /// started latch): only then is it [`StartStop::stopped_unchecked`]'s.
    next_stopped: bool,
    /// The last generation's, for [`StartStop::stopped_unchecked`], and for
    /// the next generation to reuse if nobody else holds them.
    last: Option<Arc<GenSignals>>,
    /// The number the next generation gets.
    next_number: u64,
}

/// One generation, as the base remembers it.
struct Gen {
    /// Counts generations, so a guard can only close the stop it opened.
    number: u64,
    /// Stops the generation's scope; taken by the first stop, which is the
    /// only one that needs it (the scope stays stopped).
    source: Option<StopSource>,
    runtime: SharedRuntime,
    signals: Arc<GenSignals>,
}

impl Gen {
    fn exited(&self) -> bool {
        self.signals.stopped.is_set()
    }
}

/// Which flag of a [`GenSignals`] a latch is.
const STARTED: u8 = 0;
const STOPPED: u8 = 1;

/// One generation's signals, in one allocation shared by the base, the
/// generation's handles and the latches handed out for it.
struct GenSignals {
    started: Flag,
    stopped: Flag,
    /// The live [`StoppedHandle`]s, plus one for the handle the generation's
    /// `begin` makes (so a count of one before then): the last one dropped
    /// ends the generation.
    handles: AtomicUsize,
}

impl GenSignals {
    fn new() -> Self {
        Self {
            started: Flag::new(),
            stopped: Flag::new(),
            handles: AtomicUsize::new(1),
        }
    }

    /// Signals for the next generation: `last`'s allocation, reset, if
    /// nobody else holds it, else a new one.
    fn recycle(last: Option<Arc<GenSignals>>) -> Arc<GenSignals> {
        match last {
            // `get_mut` succeeds only for the sole holder, and acquires
            // every release of the other holders' counts: no handle or latch
            // of the last generation is left to see (or set) the reset.
            Some(mut last) => match Arc::get_mut(&mut last) {
                Some(signals) => {
                    *signals = GenSignals::new();
                    last
                }
                None => Arc::new(GenSignals::new()),
            },
            None => Arc::new(GenSignals::new()),
        }
    }

    fn latch(self: &Arc<Self>, which: u8) -> Signal {
        Signal::from(Latch::in_owner(self.clone(), which))
    }

    /// Ends the generation. Started first: whoever sees the generation
    /// stopped also sees it done starting.
    fn end(&self) {
        self.started.raise();
        self.stopped.raise();
    }
}

impl FlagOwner for GenSignals {
    fn flag(&self, which: u8) -> &Flag {
        match which {
            STARTED => &self.started,
            _ => &self.stopped,
        }
    }
}

impl fmt::Debug for GenSignals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenSignals")
            .field("started", &self.started.is_set())
            .field("stopped", &self.stopped.is_set())
            .finish()
    }
}

/// What a call does once the lock is released.
enum After<T> {
    Return(T),
    WaitFor(Latch),
}

impl StartStop {
    /// An idle base: no generation yet.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::Idle(Idle::default())),
        }
    }

    /// Begins a generation in a child scope of `scope`, or returns `None` if
    /// one is running (its work has not exited). If the last generation's
    /// work has exited (a failed start, a parent stop, the work returning),
    /// its scope is stopped and a new generation begins.
    ///
    /// Waits while a two-phase stop is open, then begins.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopCause, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// let parent = StopSource::new();
    /// let scope = Scope::new(Arc::new(Nothing), parent.token(), FatalSlot::new());
    /// let base = StartStop::new();
    ///
    /// let first = base.begin(&scope).await.expect("idle, so it begins");
    /// assert!(base.begin(&scope).await.is_none(), "the work runs: a no-op");
    ///
    /// let old = first.scope.clone();
    /// drop(first); // the work exits on its own (its listener closed, say)
    /// let second = base.begin(&scope).await.expect("the work exited: a new generation");
    /// assert!(matches!(old.token().cause(), Some(StopCause::ServiceStopped)));
    /// assert!(!second.scope.token().is_stopped());
    ///
    /// // Begun under a stopped scope, a generation is born stopped.
    /// drop(second);
    /// parent.stop();
    /// let third = base.begin(&scope).await.expect("the work exited again");
    /// assert!(third.scope.token().is_stopped(), "its work sees the stop at once");
    /// # });
    /// ```
    pub async fn begin(&self, scope: &Scope) -> Option<Generation> {
        loop {
            let after = {
                let mut state = self.state.lock();
                match &mut *state {
                    State::Stopping { closed, .. } => {
                        After::WaitFor(closed.get_or_insert_with(Latch::new).clone())
                    }
                    State::Running(gen) if !gen.exited() => After::Return(None),
                    _ => After::Return(Some(self.next_generation(&mut state, scope))),
                }
            };
            match after {
                After::WaitFor(closed) => closed.wait_owned().await,
                After::Return(None) => return None,
                After::Return(Some((generation, exited))) => {
                    // The old work is gone; stopping its scope ends whatever
                    // it left below it. Outside the lock: stopping wakes.
                    if let Some(exited) = exited {
                        exited.stop_with(StopCause::ServiceStopped);
                    }
                    return Some(generation);
                }
            }
        }
    }

    /// Replaces an idle state or an exited generation with a new generation.
    /// Returns it and the exited generation's stop source, if any.
    fn next_generation(
        &self,
        state: &mut State,
        scope: &Scope,
    ) -> (Generation, Option<StopSource>) {
        let (signals, number, exited) = match mem::replace(state, State::Idle(Idle::default())) {
            State::Idle(idle) => (
                idle.next.unwrap_or_else(|| GenSignals::recycle(idle.last)),
                idle.next_number,
                None,
            ),
            State::Running(old) | State::Stopping { gen: old, .. } => (
                GenSignals::recycle(Some(old.signals)),
                old.number + 1,
                old.source,
            ),
        };
        // A child of a stopped token is born stopped: the generation of a
        // start with a stopped parent ends as soon as its work looks.
        let source = scope.token().child();
        let generation = Generation {
            scope: scope.with_token(source.token()),
            started: StartedHandle(signals.clone()),
            // The handle the count of a fresh `GenSignals` includes.
            stopped: StoppedHandle(signals.clone()),
        };
        *state = State::Running(Gen {
            number,
            source: Some(source),
            runtime: scope.runtime().clone(),
            signals,
        });
        (generation, exited)
    }

    /// Opens a two-phase stop: stops the generation's scope with
    /// [`StopCause::ServiceStopped`] and returns the guard that closes the
    /// stop, or `None` if there is no generation to stop.
    ///
    /// Waits while another two-phase stop is open, and then applies only to
    /// the generation it waited behind: if that stop was abandoned, this
    /// call stops the same generation; if that generation has ended and a
    /// newer one began meanwhile (a start that waited behind the same stop
    /// may win the race), it returns `None` without touching the newer one.
    /// While this stop is open, [`begin`](StartStop::begin), `stop_init` and
    /// [`stop`](StartStop::stop) wait for it; the latch accessors and
    /// [`is_running`](StartStop::is_running) do not.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// assert!(base.stop_init().await.is_none(), "nothing to stop");
    ///
    /// let generation = base.begin(&scope).await.unwrap();
    /// let guard = base.stop_init().await.expect("a generation to stop");
    /// assert!(generation.scope.token().is_stopped());
    ///
    /// // The work has not exited: give up on this stop for now.
    /// guard.finalize(false);
    /// assert!(base.begin(&scope).await.is_none(), "the old work still runs");
    ///
    /// drop(generation); // the work exits: its last stopped handle is gone
    /// let guard = base.stop_init().await.unwrap();
    /// guard.stopped().wait().await;
    /// guard.finalize(true); // now idle
    /// assert!(base.stop_init().await.is_none());
    /// # });
    /// ```
    pub async fn stop_init(&self) -> Option<StopGuard<'_>> {
        // The generation whose open stop this call waited behind, if any.
        let mut behind = None;
        loop {
            let after = {
                let mut state = self.state.lock();
                match mem::replace(&mut *state, State::Idle(Idle::default())) {
                    idle @ State::Idle(_) => {
                        *state = idle;
                        After::Return(None)
                    }
                    // The generation this call waited behind has ended and a
                    // newer one began meanwhile: the stop was for the one
                    // that is gone, and the newer one may be a start that
                    // came after this stop and was told it started.
                    newer if behind.is_some_and(|behind| newer.number() != Some(behind)) => {
                        *state = newer;
                        After::Return(None)
                    }
                    // Another stop is open: wait for it to close and look
                    // again. If it was abandoned, the generation is back to
                    // running and this call stops it.
                    State::Stopping { gen, mut closed } => {
                        behind = Some(gen.number);
                        let wait = closed.get_or_insert_with(Latch::new).clone();
                        *state = State::Stopping { gen, closed };
                        After::WaitFor(wait)
                    }
                    State::Running(mut gen) => {
                        let opened = (gen.number, gen.source.take(), gen.signals.latch(STOPPED));
                        *state = State::Stopping { gen, closed: None };
                        After::Return(Some(opened))
                    }
                }
            };
            match after {
                After::WaitFor(closed) => closed.wait_owned().await,
                After::Return(None) => return None,
                After::Return(Some((number, source, stopped))) => {
                    // `None` after an abandoned stop, which stopped it.
                    if let Some(source) = source {
                        source.stop_with(StopCause::ServiceStopped);
                    }
                    return Some(StopGuard {
                        base: self,
                        number: Some(number),
                        stopped,
                    });
                }
            }
        }
    }

    /// Stops the generation and returns once its work has exited (its
    /// stopped latch is set); at once if there is no generation. Concurrent
    /// callers all return once the generation has stopped.
    ///
    /// A stop that waits behind an open two-phase stop applies only to the
    /// generation it waited behind, as [`stop_init`](StartStop::stop_init)
    /// does: if that generation has ended and a newer one began
    /// meanwhile, it returns without touching the newer one.
    ///
    /// Dropping the future before it completes abandons the stop, as
    /// [`StopGuard::finalize`]`(false)` does.
    ///
    /// # Example
    ///
    /// Two callers stop the service at once (a reload and the shutdown,
    /// say): both return once its work has exited.
    ///
    /// ```
    /// use futures_util::future::join;
    /// use lifecycle::{StartStop, StopCause};
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StopSource};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// let token = generation.scope.token().clone();
    /// generation.spawn_detached(|scope, started| async move {
    ///     started.set();
    ///     scope.token().stopped().await; // serve until told to stop
    /// });
    /// let stopped = base.stopped(); // taken before the stop: this generation's
    ///
    /// join(base.stop(), base.stop()).await;
    /// assert!(stopped.is_set() && !base.is_running());
    /// assert!(matches!(token.cause(), Some(StopCause::ServiceStopped)));
    /// base.stop().await; // idle now: returns at once
    /// # });
    /// ```
    pub async fn stop(&self) {
        if let Some(guard) = self.stop_init().await {
            guard.stopped().wait().await;
            guard.finalize(true);
        }
    }

    /// [`stop`](StartStop::stop) with a deadline on the runtime of the
    /// generation's scope. When the time runs out, the stop is abandoned as
    /// [`StopGuard::finalize`]`(false)` does: the scope stays stopped, a
    /// later stop completes normally.
    ///
    /// # Errors
    ///
    /// [`Elapsed`] if the generation was not stopped within `timeout`,
    /// counting any wait for another stop in progress.
    ///
    /// # Example
    ///
    /// A cache flusher that exits as soon as it is told to stop, well
    /// within its deadline:
    ///
    /// ```
    /// use std::time::Duration;
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// assert_eq!(base.stop_within(Duration::from_secs(5)).await, Ok(()), "idle: at once");
    ///
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// generation.spawn_detached(|scope, started| async move {
    ///     started.set();
    ///     scope.token().stopped().await; // flush, then exit
    /// });
    /// base.started().wait().await;
    /// assert_eq!(base.stop_within(Duration::from_secs(5)).await, Ok(()));
    /// assert!(!base.is_running(), "stopped in time: the base is idle again");
    /// # });
    /// ```
    pub async fn stop_within(&self, timeout: Duration) -> Result<(), Elapsed> {
        let runtime = match &*self.state.lock() {
            State::Idle(_) => return Ok(()),
            State::Running(gen) | State::Stopping { gen, .. } => gen.runtime.clone(),
        };
        runtime.timeout(timeout, self.stop()).await
    }

    /// The started latch of the current generation, or of the coming one if
    /// there is none (kept and adopted by the next start). Set once startup
    /// finished, or failed and stopped. Never waits.
    ///
    /// # Example
    ///
    /// A caller waiting for a start is released when the start fails too;
    /// the [`stopped`](StartStop::stopped) latch tells the two apart:
    ///
    /// ```
    /// use lifecycle::StartStop;
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// let started = base.started(); // asked for early: the coming generation's
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// drop(generation); // its setup fails (port in use, say): the handles go
    /// started.wait().await; // the waiter is released all the same...
    /// assert!(base.stopped().is_set(), "...and the stopped latch says it failed");
    ///
    /// let generation = base.begin(&scope).await.expect("the failed one exited");
    /// generation.started.set(); // this time the setup succeeds
    /// assert!(base.started().is_set() && !base.stopped().is_set());
    /// # });
    /// ```
    pub fn started(&self) -> Signal {
        self.latch(STARTED)
    }

    /// The stopped latch of the current generation, or of the coming one if
    /// there is none (kept and adopted by the next start). Take it before
    /// calling [`stop`](StartStop::stop): after a completed stop this is the
    /// next generation's. Never waits.
    ///
    /// # Example
    ///
    /// The latch taken before the stop is set by it; the one asked for
    /// after it belongs to the next generation:
    ///
    /// ```
    /// use lifecycle::StartStop;
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StopSource};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// generation.spawn_detached(|scope, started| async move {
    ///     started.set();
    ///     scope.token().stopped().await;
    /// });
    ///
    /// let stopped = base.stopped(); // this generation's
    /// assert!(!stopped.is_set(), "its work runs");
    /// base.stop().await;
    /// assert!(stopped.is_set());
    /// assert!(!base.stopped().is_set(), "asked for too late: the next generation's");
    /// # });
    /// ```
    pub fn stopped(&self) -> Signal {
        self.latch(STOPPED)
    }

    /// The current generation's latch `which`, or the coming one's.
    fn latch(&self, which: u8) -> Signal {
        match &mut *self.state.lock() {
            State::Idle(idle) => {
                let next = match (&mut idle.next, which) {
                    (Some(next), _) => next,
                    // The last generation's stopped latch is the unchecked
                    // one until the next one's is asked for: keep it.
                    (next @ None, STARTED) => next.insert(Arc::new(GenSignals::new())),
                    (next @ None, _) => next.insert(GenSignals::recycle(idle.last.take())),
                };
                idle.next_stopped |= which == STOPPED;
                next.latch(which)
            }
            State::Running(gen) | State::Stopping { gen, .. } => gen.signals.latch(which),
        }
    }

    /// The stopped latch of the current generation, without making one: one
    /// asked for early if a start is coming, else the last generation's,
    /// and `None` before the first start. Never waits.
    ///
    /// # Example
    ///
    /// Unlike [`stopped`](StartStop::stopped), it makes no latch: before the
    /// first start it has none to give, unless one was asked for.
    ///
    /// ```
    /// use lifecycle::StartStop;
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// assert!(base.stopped_unchecked().is_none(), "no start, and no latch asked for");
    ///
    /// let early = base.stopped(); // made for the coming generation
    /// assert!(base.stopped_unchecked().is_some_and(|latch| latch.same_as(&early)));
    ///
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// drop(generation); // the work exits
    /// let last = base.stopped_unchecked().expect("the generation's latch");
    /// assert!(last.same_as(&early) && last.is_set());
    /// # });
    /// ```
    pub fn stopped_unchecked(&self) -> Option<Signal> {
        match &*self.state.lock() {
            State::Idle(idle) => idle
                .next
                .as_ref()
                .filter(|_| idle.next_stopped)
                .or(idle.last.as_ref())
                .map(|signals| signals.latch(STOPPED)),
            State::Running(gen) | State::Stopping { gen, .. } => Some(gen.signals.latch(STOPPED)),
        }
    }

    /// Whether a generation began and its work has not exited yet, also
    /// while it is being stopped. Never waits.
    ///
    /// # Example
    ///
    /// A generation being stopped still runs until its work exits:
    ///
    /// ```
    /// use lifecycle::StartStop;
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// assert!(!base.is_running());
    ///
    /// let generation = base.begin(&scope).await.expect("idle, so it begins");
    /// let guard = base.stop_init().await.expect("a generation to stop");
    /// assert!(base.is_running(), "told to stop, its work has not exited");
    ///
    /// drop(generation); // the work exits
    /// assert!(!base.is_running());
    /// guard.finalize(true);
    /// # });
    /// ```
    pub fn is_running(&self) -> bool {
        match &*self.state.lock() {
            State::Idle(_) => false,
            State::Running(gen) | State::Stopping { gen, .. } => !gen.exited(),
        }
    }

    /// Closes the two-phase stop of generation `number`: to idle if the
    /// generation stopped, else back to running with its scope stopped.
    fn close_stop(&self, number: u64, did_stop: bool) {
        let (closed, ended) = {
            let mut state = self.state.lock();
            match mem::replace(&mut *state, State::Idle(Idle::default())) {
                State::Stopping { gen, closed } if gen.number == number => {
                    if did_stop {
                        let Gen {
                            number,
                            source,
                            runtime,
                            signals,
                        } = gen;
                        *state = State::Idle(Idle {
                            next: None,
                            next_stopped: false,
                            last: Some(signals),
                            next_number: number + 1,
                        });
                        (closed, Some((source, runtime)))
                    } else {
                        *state = State::Running(gen);
                        (closed, None)
                    }
                }
                // Unreachable by construction (a guard is the only way out of
                // the stop it opened); leave any other state as it is.
                other => {
                    *state = other;
                    (None, None)
                }
            }
        };
        // Outside the lock: dropping the last handle on the generation's stop
        // node unregisters it from the parent under the parent's lock, and
        // the runtime's may be the last handle on it.
        drop(ended);
        if let Some(closed) = closed {
            closed.set();
        }
    }
}

impl Default for StartStop {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StartStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.state.lock() {
            State::Idle(_) => "idle",
            State::Running(gen) if gen.exited() => "exited",
            State::Running(_) => "running",
            State::Stopping { .. } => "stopping",
        };
        f.debug_struct("StartStop").field("state", &state).finish()
    }
}

/// A generation that just began: its scope and the handles its work uses to
/// say it started and it stopped.
///
/// The handles belong to this generation only: called late or twice, they
/// do nothing, and never signal another generation.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{FatalSlot, Generation, Scope, StartStop, StopCause, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// # futures_executor::block_on(async {
/// let base = StartStop::new();
/// let parent = StopSource::new();
/// let scope = Scope::new(Arc::new(Nothing), parent.token(), FatalSlot::new());
///
/// let Generation { scope: own, started, stopped } =
///     base.begin(&scope).await.expect("idle, so it begins");
/// started.set(); // the work runs
/// assert!(base.started().is_set() && base.is_running());
///
/// parent.stop(); // the generation's scope is a child of the given one
/// assert!(matches!(own.token().cause(), Some(StopCause::ParentStopped)));
/// stopped.set(); // the work saw it and exited
/// assert!(!base.is_running());
/// # });
/// ```
#[derive(Debug)]
pub struct Generation {
    /// The generation's scope: a child of the scope passed to `begin`,
    /// stopped by the service's stop or by the parent.
    pub scope: Scope,
    /// Call once the work runs.
    pub started: StartedHandle,
    /// Call when the work exits; dropping the last clone does the same.
    pub stopped: StoppedHandle,
}

impl Generation {
    /// Spawns the generation's work on its scope's runtime and ends the
    /// generation when the work returns (or panics, or is aborted): the
    /// task holds the stopped handle. `work` receives the scope and the
    /// started handle; it should call `started.set()` once it runs and
    /// return when the scope's token stops.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// let generation = base.begin(&scope).await.unwrap();
    /// let work = generation.spawn(|scope, started| async move {
    ///     started.set();
    ///     scope.token().stopped().await;
    ///     "served"
    /// });
    /// base.started().wait().await;
    /// base.stop().await;
    /// assert_eq!(work.await, Ok("served"));
    /// # });
    /// ```
    pub fn spawn<F, Fut>(self, work: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce(Scope, StartedHandle) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let Generation {
            scope,
            started,
            stopped,
        } = self;
        let runtime = scope.runtime().clone();
        let work = work(scope, started);
        runtime.spawn(async move {
            let output = work.await;
            stopped.set();
            output
        })
    }

    /// Spawns the generation's work as [`spawn`](Generation::spawn) does,
    /// without a [`JoinHandle`]: for work nobody joins, it saves the
    /// handle's shared state (an allocation) and the abort check on every
    /// poll. The generation ends when the work returns, or panics, or the
    /// executor drops it.
    ///
    /// A panic in the work (caught with the `std` feature) is a fatal error
    /// of the generation's scope, reported into its
    /// [`fatal`](Scope::fatal) slot before the generation ends, with the
    /// message `service work panicked: <the panic message>`.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    /// # futures_executor::block_on(async {
    /// let fatal = FatalSlot::new();
    /// let scope = Scope::new(Arc::new(Threads), StopSource::new().token(), fatal.clone());
    /// let base = StartStop::new();
    ///
    /// let generation = base.begin(&scope).await.unwrap();
    /// generation.spawn_detached(|scope, started| async move {
    ///     started.set();
    ///     scope.token().stopped().await;
    /// });
    /// base.started().wait().await;
    /// base.stop().await; // returns once the work has exited
    ///
    /// // A work that panics ends its generation and reports the panic.
    /// let generation = base.begin(&scope).await.unwrap();
    /// let stopped = base.stopped();
    /// generation.spawn_detached(|_, _| async { panic!("no disk") });
    /// stopped.wait().await;
    /// let error = fatal.take().unwrap();
    /// assert_eq!(error.to_string(), "service work panicked: no disk");
    /// # });
    /// ```
    pub fn spawn_detached<F, Fut>(self, work: F)
    where
        F: FnOnce(Scope, StartedHandle) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Generation {
            scope,
            started,
            stopped,
        } = self;
        let runtime = scope.runtime().clone();
        let fatal = scope.fatal().clone();
        let work = work(scope, started);
        // One allocation: the work lives inside the task.
        runtime.spawn_detached(Box::pin(DetachedWork {
            work: Some(work),
            stopped: Some(stopped),
            fatal,
        }));
    }
}

/// Says that a generation finished starting.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// # futures_executor::block_on(async {
/// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
/// let base = StartStop::new();
/// let first = base.begin(&scope).await.expect("idle, so it begins");
/// let started = first.started.clone();
/// assert!(!base.started().is_set());
/// started.set(); // setup done: the work runs
/// assert!(base.started().is_set());
/// assert!(!base.stopped().is_set(), "started, not stopped");
///
/// drop(first); // the work exits (its stopped handle is gone)
/// base.stop().await;
/// let _second = base.begin(&scope).await.expect("idle again");
/// started.set(); // a late call on the first generation's handle...
/// assert!(!base.started().is_set(), "...never reaches the second");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct StartedHandle(Arc<GenSignals>);

impl StartedHandle {
    /// Sets the generation's started latch. Later calls do nothing.
    pub fn set(&self) {
        self.0.started.raise();
    }
}

/// Says that a generation's work exited. Setting it also sets the started
/// latch, so waiters on a start that failed are released.
///
/// Dropping the last clone sets it too: a generation ends when its work's
/// task ends, also by a panic or an abort, and a start that drops its
/// handles on a setup error leaves the service restartable. So move it into
/// the task that runs the work.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// # futures_executor::block_on(async {
/// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
/// let base = StartStop::new();
/// let generation = base.begin(&scope).await.expect("idle, so it begins");
/// let work = generation.stopped.clone(); // the work's task holds this one
/// drop(generation); // the start is done with its handles
/// assert!(base.is_running(), "the work's clone keeps the generation");
///
/// work.set(); // the work exits (dropping `work` would do the same)
/// assert!(!base.is_running());
/// assert!(base.started().is_set(), "waiters on the start are released too");
///
/// // A start whose setup fails drops its handles: the service can start again.
/// drop(base.begin(&scope).await.expect("the work exited, so a new generation"));
/// assert!(!base.is_running());
/// # });
/// ```
#[derive(Debug)]
pub struct StoppedHandle(Arc<GenSignals>);

impl StoppedHandle {
    /// Sets the generation's started and stopped latches. Later calls do
    /// nothing.
    pub fn set(&self) {
        self.0.end();
    }
}

impl Clone for StoppedHandle {
    fn clone(&self) -> Self {
        // Relaxed: a handle is only cloned from a live one, which keeps the
        // count above zero until the clone is counted; nothing is published
        // through the count here (as in `Arc::clone`).
        self.0.handles.fetch_add(1, Relaxed);
        StoppedHandle(self.0.clone())
    }
}

impl Drop for StoppedHandle {
    fn drop(&mut self) {
        // AcqRel: each holder's release of the count, and what it did
        // before, happens-before the last holder's acquire and so before
        // the end it publishes through the latches.
        if self.0.handles.fetch_sub(1, AcqRel) == 1 {
            self.0.end();
        }
    }
}

pin_project! {
    /// The task [`Generation::spawn_detached`] hands the executor: the
    /// work, then the end of its generation.
    struct DetachedWork<Fut> {
        #[pin]
        work: Option<Fut>,
        // After `work`: fields drop in order, so a task the executor drops
        // unfinished ends its generation only once the work is gone.
        stopped: Option<StoppedHandle>,
        fatal: FatalSlot,
    }
}

impl<Fut: Future<Output = ()>> Future for DetachedWork<Fut> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(work) = this.work.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let outcome = match task::poll_catching_panics(work, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        let outcome = task::drop_future(this.work.as_mut()).and(outcome);
        // Reported before the generation ends: whoever sees it stopped can
        // find the error in the slot.
        if let Err(JoinError::Panicked(message)) = outcome {
            this.fatal
                .report(FatalError::msg(format!("service work panicked: {message}")));
        }
        drop(this.stopped.take());
        Poll::Ready(())
    }
}

/// An open two-phase stop, from [`StartStop::stop_init`]. Close it with
/// [`finalize`](StopGuard::finalize); it can be closed only once.
///
/// Dropping it without finalizing closes it as `finalize(false)`: the stop
/// is abandoned (the scope stays stopped, a later stop completes it).
/// Nothing waits forever on a dropped guard. A guard that is leaked with
/// `mem::forget` never closes, and starts and stops wait behind it.
///
/// # Example
///
/// ```
/// use std::pin::pin;
/// use std::sync::Arc;
/// use futures_util::FutureExt;
/// use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::time::Duration;
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// # futures_executor::block_on(async {
/// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
/// let base = StartStop::new();
/// let generation = base.begin(&scope).await.expect("idle, so it begins");
///
/// let guard = base.stop_init().await.expect("a generation to stop");
/// assert!(generation.scope.token().is_stopped());
/// drop(generation); // the work sees its scope stopped and exits
/// guard.stopped().wait().await;
///
/// // While the guard is open (say, flushing what the work left), a start waits.
/// let mut restart = pin!(base.begin(&scope));
/// assert!(restart.as_mut().now_or_never().is_none());
/// guard.finalize(true); // the old generation is gone: idle
/// let next = restart.await.expect("a new generation");
/// assert!(!next.scope.token().is_stopped());
/// # });
/// ```
#[must_use = "the stop stays open until the guard is finalized or dropped"]
pub struct StopGuard<'a> {
    base: &'a StartStop,
    /// The generation whose stop this is; `None` once closed.
    number: Option<u64>,
    stopped: Signal,
}

impl StopGuard<'_> {
    /// The stopped latch of the generation being stopped: wait on it before
    /// finalizing with `true`.
    pub fn stopped(&self) -> &Signal {
        &self.stopped
    }

    /// Closes the stop. `did_stop = true` resets the base to idle: the next
    /// start begins a new generation. `did_stop = false` abandons the stop
    /// (say, a deadline passed): the generation stays, its scope stopped; a
    /// later stop completes normally, and a later start is a no-op while the
    /// old work runs and a real restart once it has exited.
    ///
    /// `true` is the caller's word that the work has exited (normally after
    /// waiting on [`stopped`](StopGuard::stopped)); the base takes it, so a
    /// `true` given while the work still runs lets the next start run a
    /// new generation beside the old work.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lifecycle::{FatalSlot, Scope, StartStop, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::time::Duration;
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # futures_executor::block_on(async {
    /// # let scope = Scope::new(Arc::new(Nothing), StopSource::new().token(), FatalSlot::new());
    /// let base = StartStop::new();
    /// let first = base.begin(&scope).await.expect("idle, so it begins");
    ///
    /// // `false`: the work has not exited, and the base knows it still runs.
    /// base.stop_init().await.expect("a generation").finalize(false);
    /// assert!(base.is_running());
    /// assert!(base.begin(&scope).await.is_none(), "no second work beside it");
    ///
    /// // `true` is taken at its word, here without waiting on `stopped`...
    /// base.stop_init().await.expect("the same generation").finalize(true);
    /// assert!(!base.is_running());
    /// let second = base.begin(&scope).await.expect("...so a start begins anew");
    /// // ...beside the first work, which still holds its handles.
    /// assert!(first.scope.token().is_stopped() && !second.scope.token().is_stopped());
    /// # });
    /// ```
    pub fn finalize(mut self, did_stop: bool) {
        self.close(did_stop);
    }

    fn close(&mut self, did_stop: bool) {
        if let Some(number) = self.number.take() {
            self.base.close_stop(number, did_stop);
        }
    }
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.close(false);
    }
}

impl fmt::Debug for StopGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopGuard")
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::fatal::FatalSlot;
    use crate::testing::Dropper;
    use core::pin::pin;
    use futures_executor::block_on;
    use futures_util::FutureExt;

    fn scope() -> (StopSource, Scope) {
        let parent = StopSource::new();
        let scope = Scope::new(Arc::new(Dropper), parent.token(), FatalSlot::new());
        (parent, scope)
    }

    #[test]
    fn generations_begin_once_and_stop_to_idle() {
        let (_parent, scope) = scope();
        let base = StartStop::new();
        let early = base.stopped();
        let first = block_on(base.begin(&scope)).unwrap();
        assert!(block_on(base.begin(&scope)).is_none());
        assert!(base.is_running());

        let mut stop = pin!(base.stop());
        assert!(
            stop.as_mut().now_or_never().is_none(),
            "the work still holds its handle"
        );
        assert!(first.scope.token().is_stopped());
        drop(first);
        assert!(stop.now_or_never().is_some());
        assert!(early.is_set());
        assert!(!base.is_running());
        assert!(block_on(base.stop_init()).is_none(), "idle");
        assert!(
            !base.stopped().same_as(&early),
            "the next generation's latch"
        );
    }

    #[test]
    fn begin_waits_for_an_open_stop() {
        let (_parent, scope) = scope();
        let base = StartStop::new();
        let first = block_on(base.begin(&scope)).unwrap();
        let guard = block_on(base.stop_init()).unwrap();
        {
            let mut begin = pin!(base.begin(&scope));
            assert!(begin.as_mut().now_or_never().is_none());
            drop(first);
            assert!(begin.as_mut().now_or_never().is_none(), "still open");
            guard.finalize(true);
            let second = begin.now_or_never().unwrap().unwrap();
            assert!(!second.scope.token().is_stopped());
        }
        block_on(base.stop());
    }

    #[test]
    fn an_abandoned_stop_keeps_the_generation() {
        let (_parent, scope) = scope();
        let base = StartStop::new();
        let first = block_on(base.begin(&scope)).unwrap();
        drop(block_on(base.stop_init()).unwrap()); // as finalize(false)
        assert!(block_on(base.begin(&scope)).is_none(), "the old work runs");
        assert!(first.scope.token().is_stopped());
        drop(first);
        let second = block_on(base.begin(&scope)).unwrap();
        assert!(!second.scope.token().is_stopped());
        drop(second);
        block_on(base.stop());
    }

    #[test]
    fn stale_handles_touch_only_their_generation() {
        let (_parent, scope) = scope();
        let base = StartStop::new();
        let first = block_on(base.begin(&scope)).unwrap();
        let (stale_started, stale_stopped) = (first.started.clone(), first.stopped.clone());
        first.stopped.set(); // the work exits; its clones live on
        drop(first);
        drop(block_on(base.stop_init()));
        let _second = block_on(base.begin(&scope)).unwrap();
        stale_started.set();
        stale_stopped.set();
        drop(stale_stopped);
        assert!(!base.started().is_set() && !base.stopped().is_set());
        assert!(base.is_running());
    }
}
