//! Running a [`Supervisor`] as a process's main job: the host's stop
//! requests in, an exit code out.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;

use futures_util::stream::{Stream, StreamExt};

use crate::component::{Component, StartError};
use crate::latch::Latch;
use crate::runtime::{BoxFuture, SharedRuntime};
use crate::stop::StopSource;
use crate::supervisor::{Supervisor, SupervisorEnd, SupervisorEvent, SupervisorOutcome};

#[cfg(all(feature = "os-signals", unix))]
mod os_signals;
#[cfg(feature = "host-signals")]
mod signal_stream;
#[cfg(feature = "systemd")]
mod systemd;

#[cfg(all(feature = "os-signals", unix))]
pub use os_signals::SignalClaim;
#[cfg(feature = "host-signals")]
pub use signal_stream::HostSignals;
#[cfg(feature = "systemd")]
pub use systemd::Systemd;

/// A stop request from the host: what SIGINT and SIGTERM mean to a run.
///
/// # Example
///
/// A test drives a [`HostRun`] with a stream of them, as the adapters'
/// `run` does with the process's signals:
///
/// ```
/// use lifecycle::{ComponentManager, ExitReason, HostRun, HostSignal, Node, Supervisor};
/// # use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
/// # fn serving() -> Result<ComponentManager, lifecycle::FatalError> {
/// #     Ok(ComponentManager::builder()
/// #         .add_worker(|ctx, ready| async move {
/// #             ready.ready();
/// #             ctx.stopped().await;
/// #             Ok(())
/// #         })
/// #         .build())
/// # }
///
/// let supervisor = Supervisor::builder().node(Node::new("server", serving)).build()?;
/// // Ctrl-C: a graceful stop, which the exit names.
/// let signals = futures_util::stream::iter([HostSignal::Interrupt]);
/// let run = HostRun::new(supervisor).expect("not started before");
/// let exit = futures_executor::block_on(run.run(Arc::new(Threads), signals));
/// assert_eq!(exit.request, Some(HostSignal::Interrupt));
/// assert_eq!(exit.reason, ExitReason::Clean);
/// assert!(exit.to_string().contains("SIGINT"), "{exit}");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostSignal {
    /// SIGINT, Ctrl-C: stop gracefully; a second one during the stop exits
    /// at once. Ignored during a spin-halt.
    Interrupt,
    /// SIGTERM: stop gracefully; the only request that releases a
    /// spin-halt.
    Terminate,
}

impl fmt::Display for HostSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostSignal::Interrupt => "SIGINT",
            HostSignal::Terminate => "SIGTERM",
        })
    }
}

/// Why a host run ended, and the process exit code that says so.
///
/// | reason | code | when |
/// |---|---|---|
/// | [`Clean`](ExitReason::Clean) | 0 | every node completed, or a stop request stopped them all in time, with no error |
/// | [`Fatal`](ExitReason::Fatal) | 1 | a node's failure shut the supervisor down or left a node stopped for good (a `Stop` or `StopParents` verdict), or a node reported an error while being stopped, or the run was aborted |
/// | (none) | 2 | left to the program for usage errors |
/// | [`SpinHaltReleased`](ExitReason::SpinHaltReleased) | 3 | a node's failure put the supervisor in a spin-halt, which SIGTERM released |
/// | [`Overran`](ExitReason::Overran) | 4 | the stop overran the shutdown budget or a node's stop timeout |
/// | [`Forced`](ExitReason::Forced) | 130 | a second SIGINT during the stop: the run was dropped at once (128 + SIGINT, as shells report it) |
///
/// When several apply, the first in this order wins: `Forced`, then the
/// cause of the end (`Fatal`, `SpinHaltReleased`), then `Overran`, then an
/// error during the stop (`Fatal`).
///
/// # Example
///
/// A node that fails and shuts the supervisor down makes a fatal exit:
///
/// ```
/// use lifecycle::{ComponentManager, ExitReason, FatalError, Node, StopSource, Supervisor, Verdict};
/// # use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let supervisor = Supervisor::builder()
///     .node(
///         Node::new("db", || {
///             Ok(ComponentManager::builder()
///                 .add_worker(|_, _| async { Err(FatalError::msg("disk full")) })
///                 .build())
///         })
///         .handler(|_| Verdict::Shutdown),
///     )
///     .build()?;
/// let parent = StopSource::new();
/// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), parent.token()));
/// let reason = ExitReason::of(&outcome);
/// assert_eq!(reason, ExitReason::Fatal);
/// assert_eq!(reason.code(), 1);
/// assert_eq!(reason.to_string(), "fatal failure");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitReason {
    /// A clean end.
    Clean,
    /// A fatal failure: a Shutdown, a node stopped for good by its failure
    /// ([`SupervisorOutcome::failures`]), errors during the stop, or a run
    /// dropped before it ended ([`SupervisorEnd::Aborted`]).
    Fatal,
    /// A spin-halt released by SIGTERM.
    SpinHaltReleased,
    /// The stop overran its budget or a stop timeout.
    Overran,
    /// A second SIGINT forced the exit.
    Forced,
}

impl ExitReason {
    /// The process exit code.
    ///
    /// # Example
    ///
    /// A `const fn`: the codes can name constants of a program's own.
    ///
    /// ```
    /// use lifecycle::ExitReason;
    ///
    /// const FORCED: u8 = ExitReason::Forced.code();
    /// assert_eq!(FORCED, 130, "128 + SIGINT");
    /// assert_eq!(ExitReason::Clean.code(), 0);
    /// assert_eq!(ExitReason::Overran.code(), 4);
    /// ```
    pub const fn code(self) -> u8 {
        match self {
            ExitReason::Clean => 0,
            ExitReason::Fatal => 1,
            ExitReason::SpinHaltReleased => 3,
            ExitReason::Overran => 4,
            ExitReason::Forced => 130,
        }
    }

    /// The reason a supervisor's outcome gives.
    ///
    /// # Example
    ///
    /// A run that ended because every node ended is still a fatal exit if a
    /// node's failure left it stopped for good:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lifecycle::{ComponentManager, ExitReason, FatalError, Node};
    /// use lifecycle::{StopSource, Supervisor, SupervisorEnd, Verdict};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let thumbnails = Node::new("thumbnails", || {
    ///     Ok(ComponentManager::builder()
    ///         .add_worker(|_, _| async { Err(FatalError::msg("no image codec")) })
    ///         .build())
    /// })
    /// .handler(|_| Verdict::Stop);
    /// let supervisor = Supervisor::builder().node(thumbnails).build()?;
    ///
    /// let parent = StopSource::new();
    /// let outcome = futures_executor::block_on(supervisor.run(Arc::new(Threads), parent.token()));
    /// assert!(matches!(outcome.end, SupervisorEnd::Completed), "{outcome}");
    /// assert_eq!(ExitReason::of(&outcome), ExitReason::Fatal);
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn of(outcome: &SupervisorOutcome) -> ExitReason {
        match outcome.end {
            SupervisorEnd::Shutdown { .. } | SupervisorEnd::Aborted => ExitReason::Fatal,
            SupervisorEnd::SpinHaltReleased { .. } => ExitReason::SpinHaltReleased,
            _ if outcome.budget_spent || !outcome.overran.is_empty() => ExitReason::Overran,
            _ if !outcome.failures.is_empty() || !outcome.shutdown_errors.is_empty() => {
                ExitReason::Fatal
            }
            _ => ExitReason::Clean,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::Clean => "clean stop",
            ExitReason::Fatal => "fatal failure",
            ExitReason::SpinHaltReleased => "spin-halt released by SIGTERM",
            ExitReason::Overran => "the stop overran its budget",
            ExitReason::Forced => "forced exit by a second SIGINT",
        })
    }
}

/// How a host run ended.
///
/// # Example
///
/// What a `main` prints and exits with after SIGTERM stopped its
/// supervisor:
///
/// ```
/// use lifecycle::{ComponentManager, ExitReason, HostRun, HostSignal, Node, Supervisor};
/// # use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
/// # fn serving() -> Result<ComponentManager, lifecycle::FatalError> {
/// #     Ok(ComponentManager::builder()
/// #         .add_worker(|ctx, ready| async move {
/// #             ready.ready();
/// #             ctx.stopped().await;
/// #             Ok(())
/// #         })
/// #         .build())
/// # }
///
/// let supervisor = Supervisor::builder().node(Node::new("server", serving)).build()?;
/// let signals = futures_util::stream::iter([HostSignal::Terminate]);
/// let run = HostRun::new(supervisor).expect("not started before");
/// let exit = futures_executor::block_on(run.run(Arc::new(Threads), signals));
/// assert_eq!((exit.reason, exit.code()), (ExitReason::Clean, 0));
/// assert_eq!(exit.request, Some(HostSignal::Terminate));
/// let outcome = exit.outcome.as_ref().expect("a graceful stop waits for the outcome");
/// assert!(outcome.is_clean());
/// assert!(exit.to_string().starts_with("clean stop (exit code 0)"), "{exit}");
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostExit {
    /// Why, and the exit code.
    pub reason: ExitReason,
    /// The supervisor's outcome; `None` after a forced exit, which does not
    /// wait for it.
    pub outcome: Option<SupervisorOutcome>,
    /// The first of the host's requests that the run acted on (an
    /// interrupt during a spin-halt is ignored, so it is not one); `None`
    /// if none was. When it is what stopped the supervisor, the exit's line
    /// names it ("stopped by SIGINT") where the outcome alone would say
    /// "stopped by the parent".
    pub request: Option<HostSignal>,
}

impl HostExit {
    /// The process exit code ([`ExitReason::code`]).
    pub fn code(&self) -> u8 {
        self.reason.code()
    }

    /// The process exit code as `main`'s return value (feature `std`).
    ///
    /// ```
    /// use lifecycle::{ExitReason, HostExit};
    ///
    /// // The end of a `main` that returns `ExitCode`.
    /// fn finish(exit: HostExit) -> std::process::ExitCode {
    ///     if exit.reason != ExitReason::Clean {
    ///         eprintln!("{exit}");
    ///     }
    ///     exit.exit_code()
    /// }
    /// ```
    #[cfg(feature = "std")]
    pub fn exit_code(&self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.code())
    }
}

impl fmt::Display for HostExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (exit code {})", self.reason, self.code())?;
        if let Some(outcome) = &self.outcome {
            f.write_str(": ")?;
            let request = self.request.as_ref().map(|r| r as &dyn fmt::Display);
            outcome.describe(f, request)?;
            for error in &outcome.shutdown_errors {
                write!(f, "; {} failed while stopping: {}", error.node, error.error)?;
            }
        }
        Ok(())
    }
}

/// What a host run tells its service manager (systemd, in the adapters'
/// `systemd` feature). Every method is called from the run's task.
///
/// Order: a status line comes before the ready or stopping it shows;
/// stopping is told as soon as the host's request arrives (or the
/// supervisor begins to stop on its own), before the nodes stop; ready and
/// stopping are told once each.
///
/// # Example
///
/// A notifier that keeps what it is told:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use lifecycle::{ComponentManager, HostNotify, HostRun, HostSignal, Node, Supervisor};
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
/// # fn serving() -> Result<ComponentManager, lifecycle::FatalError> {
/// #     Ok(ComponentManager::builder()
/// #         .add_worker(|ctx, ready| async move {
/// #             ready.ready();
/// #             ctx.stopped().await;
/// #             Ok(())
/// #         })
/// #         .build())
/// # }
///
/// #[derive(Clone, Default)]
/// struct Told(Arc<Mutex<Vec<&'static str>>>);
///
/// impl HostNotify for Told {
///     fn ready(&mut self) {
///         self.0.lock().unwrap().push("ready");
///     }
///     fn stopping(&mut self) {
///         self.0.lock().unwrap().push("stopping");
///     }
///     fn status(&mut self, _summary: &str) {}
///     fn alive_every(&self) -> Option<Duration> {
///         None // no watchdog
///     }
///     fn alive(&mut self) {}
/// }
///
/// let told = Told::default();
/// let supervisor = Supervisor::builder().node(Node::new("server", serving)).build()?;
/// // SIGTERM once every node is ready, as it would arrive while serving.
/// let ready = lifecycle::Component::ready(&supervisor);
/// let run = HostRun::new(supervisor).expect("not started before").notify(told.clone());
/// let signals = Box::pin(futures_util::stream::once(async move {
///     ready.wait().await;
///     HostSignal::Terminate
/// }));
/// futures_executor::block_on(run.run(Arc::new(Threads), signals));
/// assert_eq!(*told.0.lock().unwrap(), ["ready", "stopping"]);
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
pub trait HostNotify: Send {
    /// Every node is ready (or completed), for the first time.
    fn ready(&mut self);
    /// The stop has begun.
    fn stopping(&mut self);
    /// A node changed state; `summary` is [`StatusBoard::summary`](crate::StatusBoard::summary).
    fn status(&mut self, summary: &str);
    /// How often [`alive`](HostNotify::alive) is wanted; `None` (or zero)
    /// for never.
    fn alive_every(&self) -> Option<Duration>;
    /// The supervisor is making progress: called every
    /// [`alive_every`](HostNotify::alive_every) by the task that drives the
    /// supervisor, so a supervisor stuck in its own loop stops the calls.
    fn alive(&mut self);
}

/// Runs a [`Supervisor`] under a host's stop requests, and says how it
/// ended as an exit code. The adapters' `run` functions build one with
/// their OS signals; tests drive one with any stream.
///
/// - [`HostSignal::Interrupt`] stops the supervisor gracefully (its parent
///   stops: nodes stop in reverse dependency order). A second one while
///   the stop is under way returns at once with [`ExitReason::Forced`],
///   dropping the run (every node's scope stopped, its tasks aborted).
///   During a spin-halt it is ignored.
/// - [`HostSignal::Terminate`] is a terminate request: a graceful stop
///   while running, the release of a spin-halt.
/// - The shutdown budget is the supervisor's own
///   ([`SupervisorBuilder::shutdown_budget`](crate::SupervisorBuilder::shutdown_budget)).
///
/// # In a process
///
/// `lifecycle_tokio::run`, `lifecycle_smol::run` and
/// `lifecycle_async_std::run` (each `async fn run(Supervisor) ->
/// io::Result<HostExit>`) build one with their `signals()` stream of SIGINT
/// and SIGTERM, and, under their `systemd` feature, attach `Systemd` with
/// `with_systemd_from_env` (when `NOTIFY_SOCKET` is set). This crate's
/// features behind them:
///
/// - `os-signals`: `SignalClaim`, held by every `signals()` stream, so that
///   SIGINT and SIGTERM end the process again once no stream is alive
///   (tokio and `signal-hook-registry` alone would leave them ignored);
/// - `host-signals` (implies `os-signals`): `HostSignals`, the stream of
///   SIGINT and SIGTERM on any executor, through `async-signal`; smol's
///   and async-std's `signals()` return it (tokio's is its own, on tokio's
///   signal driver);
/// - `systemd`: `Systemd`, a [`HostNotify`] speaking `sd_notify(3)`.
///
/// # Example
///
/// ```
/// use lifecycle::{ComponentManager, ExitReason, HostRun, HostSignal, Node, Supervisor};
/// # use std::sync::Arc;
/// # mod support { include!("../doc_threads.rs"); } use support::Threads;
///
/// let supervisor = Supervisor::builder()
///     .node(Node::new("server", || {
///         Ok(ComponentManager::builder()
///             .add_worker(|ctx, ready| async move {
///                 ready.ready();
///                 ctx.stopped().await;
///                 Ok(())
///             })
///             .build())
///     }))
///     .build()?;
///
/// // The host sends SIGTERM.
/// let signals = futures_util::stream::iter([HostSignal::Terminate]);
/// let run = HostRun::new(supervisor).expect("not started before");
/// let exit = futures_executor::block_on(run.run(Arc::new(Threads), signals));
/// assert_eq!(exit.reason, ExitReason::Clean);
/// assert_eq!(exit.code(), 0);
/// # Ok::<(), lifecycle::BuildError>(())
/// ```
pub struct HostRun {
    supervisor: Supervisor,
    notify: Option<Box<dyn HostNotify>>,
}

impl HostRun {
    /// A run of `supervisor`, not yet started.
    ///
    /// # Errors
    ///
    /// [`StartError::AlreadyStarted`] if the supervisor was run or started
    /// as a component before: the host's requests could not reach that
    /// run, so a host run of it would not end on them.
    ///
    /// ```
    /// use lifecycle::{Component, FatalSlot, HostRun, Scope, StartError, StopSource, Supervisor};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::{sync::Arc, time::Duration};
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// let supervisor = Supervisor::builder().build()?;
    /// let parent = StopSource::new();
    /// supervisor
    ///     .start(Scope::new(Arc::new(Nothing), parent.token(), FatalSlot::new()))
    ///     .expect("a fresh supervisor starts");
    /// assert!(matches!(HostRun::new(supervisor), Err(StartError::AlreadyStarted)));
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn new(supervisor: Supervisor) -> Result<HostRun, StartError> {
        if supervisor.is_started() {
            return Err(StartError::AlreadyStarted);
        }
        Ok(HostRun {
            supervisor,
            notify: None,
        })
    }

    /// Tells `notify` about readiness, the stop, the nodes' status whenever
    /// it changed (the changes between two polls of the run make one status
    /// line, so a short-lived state may never be shown) and the
    /// supervisor's progress; see [`HostNotify`] for the order of the calls.
    ///
    /// # Example
    ///
    /// A notifier that keeps the status lines, on a run without host
    /// requests (an empty stream) that goes on until its one node completes:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use lifecycle::{ComponentManager, ExitReason, FatalError, HostNotify, HostRun};
    /// use lifecycle::{Node, Supervisor};
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// #[derive(Clone, Default)]
    /// struct StatusLines(Arc<Mutex<Vec<String>>>);
    ///
    /// impl HostNotify for StatusLines {
    ///     fn status(&mut self, summary: &str) {
    ///         self.0.lock().unwrap().push(summary.to_owned());
    ///     }
    ///     fn ready(&mut self) {}
    ///     fn stopping(&mut self) {}
    ///     fn alive_every(&self) -> Option<Duration> {
    ///         None
    ///     }
    ///     fn alive(&mut self) {}
    /// }
    ///
    /// let migrate = Node::new("migrate", || {
    ///     let job = ComponentManager::builder().add_worker(|_, _| async { Ok(()) });
    ///     Ok::<_, FatalError>(job.build())
    /// });
    /// let lines = StatusLines::default();
    /// let run = HostRun::new(Supervisor::builder().node(migrate).build()?)
    ///     .expect("not started before")
    ///     .notify(lines.clone());
    /// let no_requests = futures_util::stream::empty();
    /// let exit = futures_executor::block_on(run.run(Arc::new(Threads), no_requests));
    /// assert_eq!((exit.reason, exit.request), (ExitReason::Clean, None));
    /// let lines = lines.0.lock().unwrap();
    /// assert_eq!(lines.last().map(String::as_str), Some("migrate=completed"), "{lines:?}");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub fn notify(mut self, notify: impl HostNotify + 'static) -> HostRun {
        self.notify = Some(Box::new(notify));
        self
    }

    /// Tells systemd, when it started this process, through
    /// [`Systemd::from_env`] (feature `systemd`): [`notify`](HostRun::notify)
    /// with a [`Systemd`] when `NOTIFY_SOCKET` is set, nothing otherwise
    /// (and nothing on targets other than unix).
    ///
    /// The adapters' `run` calls it under their own `systemd` feature.
    ///
    /// ```
    /// use lifecycle::{HostRun, Supervisor};
    ///
    /// let supervisor = Supervisor::builder().build()?;
    /// // Outside systemd (no NOTIFY_SOCKET) nothing is attached and nothing sent.
    /// let run = HostRun::new(supervisor).expect("not started before").with_systemd_from_env();
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    #[cfg(feature = "systemd")]
    pub fn with_systemd_from_env(self) -> HostRun {
        match Systemd::from_env() {
            Some(systemd) => self.notify(systemd),
            None => self,
        }
    }

    /// Runs the supervisor on `runtime` until it ends or a second
    /// interrupt forces the exit. `signals` is polled from the run's task
    /// and dropped when the run returns (the adapters unregister their
    /// signal handlers then); when it ends, the run goes on without it.
    ///
    /// # Example
    ///
    /// Ctrl-C stops the supervisor, but a node ignores its stop; a second
    /// Ctrl-C during the stop ends the run at once:
    ///
    /// ```
    /// use futures_util::stream::{self, StreamExt};
    /// use lifecycle::{Component, ComponentManager, ExitReason, FatalError, HostRun, HostSignal};
    /// use lifecycle::{Node, Supervisor};
    /// # use std::sync::Arc;
    /// # mod support { include!("../doc_threads.rs"); } use support::Threads;
    ///
    /// let stuck = Node::new("stuck", || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|_, ready| async move {
    ///                 ready.ready();
    ///                 std::future::pending().await // never looks at its stop
    ///             })
    ///             .build(),
    ///     )
    /// });
    /// let supervisor = Supervisor::builder().node(stuck).build()?;
    /// let (ready, stopping) = (supervisor.ready(), supervisor.shutdown_signal());
    /// let signals = stream::once(async move {
    ///     ready.wait().await;
    ///     HostSignal::Interrupt
    /// })
    /// .chain(stream::once(async move {
    ///     stopping.wait().await;
    ///     HostSignal::Interrupt // pressed again while the stop hangs
    /// }));
    ///
    /// let run = HostRun::new(supervisor).expect("not started before");
    /// let exit = futures_executor::block_on(run.run(Arc::new(Threads), Box::pin(signals)));
    /// assert_eq!((exit.reason, exit.code()), (ExitReason::Forced, 130));
    /// assert!(exit.outcome.is_none(), "a forced exit does not wait for the outcome");
    /// # Ok::<(), lifecycle::BuildError>(())
    /// ```
    pub async fn run<S>(self, runtime: SharedRuntime, signals: S) -> HostExit
    where
        S: Stream<Item = HostSignal> + Send + Unpin,
    {
        let HostRun { supervisor, notify } = self;
        let terminate = Latch::new();
        // The run has not started (`new` made sure, and the supervisor has
        // been ours since), so both additions take.
        let added = supervisor.also_terminate_on(Arc::new(terminate.signal()));
        debug_assert!(added, "a host run's supervisor started elsewhere");
        let changed = Arc::new(AtomicBool::new(true));
        if notify.is_some() {
            let flag = changed.clone();
            // Relaxed: the flag is set and read by the same task (the
            // supervisor's events fire while this run polls it).
            let added = supervisor.also_on_event(Arc::new(move |_: &SupervisorEvent| {
                flag.store(true, Ordering::Relaxed);
            }));
            debug_assert!(added, "a host run's supervisor started elsewhere");
        }
        let status = supervisor.status();
        let ready = Component::ready(&supervisor);
        let shutdown = Component::shutdown_signal(&supervisor);
        let parent = StopSource::new();
        // A zero period would have the timer loop spin.
        let alive_every = notify
            .as_ref()
            .and_then(|notify| notify.alive_every())
            .filter(|every| !every.is_zero());
        let run = supervisor.run(runtime.clone(), parent.token());
        let mut driver = Driver {
            run: Box::pin(run),
            signals: Some(signals),
            parent,
            terminate,
            state: HostState::Running,
            request: None,
            notify,
            changed,
            status,
            ready,
            shutdown,
            told_ready: false,
            told_stopping: false,
            alive_timer: alive_every.map(|every| (every, runtime.sleep(every))),
            runtime,
        };
        core::future::poll_fn(|cx| driver.poll(cx)).await
    }
}

impl fmt::Debug for HostRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRun")
            .field("supervisor", &self.supervisor)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

/// Where the host's requests have got the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostState {
    /// No stop requested by the host.
    Running,
    /// The host asked for a stop; a second interrupt forces the exit.
    Stopping,
}

struct Driver<S> {
    run: Pin<Box<dyn Future<Output = SupervisorOutcome> + Send>>,
    signals: Option<S>,
    parent: StopSource,
    terminate: Latch,
    state: HostState,
    /// The first request acted on: [`HostExit::request`].
    request: Option<HostSignal>,
    notify: Option<Box<dyn HostNotify>>,
    changed: Arc<AtomicBool>,
    status: crate::StatusBoard,
    ready: crate::Signal,
    shutdown: crate::Signal,
    told_ready: bool,
    told_stopping: bool,
    alive_timer: Option<(Duration, BoxFuture)>,
    runtime: SharedRuntime,
}

impl<S> Driver<S>
where
    S: Stream<Item = HostSignal> + Unpin,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<HostExit> {
        // Requests first, so that a request and the run's end in the same
        // poll are both seen.
        while let Some(signals) = self.signals.as_mut() {
            match signals.poll_next_unpin(cx) {
                Poll::Ready(Some(signal)) => {
                    let forced = self.on_signal(signal);
                    // Stopping is told before the stop runs.
                    self.tell();
                    if forced {
                        return Poll::Ready(HostExit {
                            reason: ExitReason::Forced,
                            outcome: None,
                            request: self.request,
                        });
                    }
                }
                Poll::Ready(None) => self.signals = None,
                Poll::Pending => break,
            }
        }
        let ended = self.run.as_mut().poll(cx);
        self.tell();
        if let Poll::Ready(outcome) = ended {
            return Poll::Ready(HostExit {
                reason: ExitReason::of(&outcome),
                outcome: Some(outcome),
                request: self.request,
            });
        }
        self.poll_alive(cx);
        Poll::Pending
    }

    /// Acts on one request; true if it forces the exit.
    fn on_signal(&mut self, signal: HostSignal) -> bool {
        let halted = self.status.spin_halted_by().is_some();
        match (signal, self.state) {
            // A spin-halt ends only on SIGTERM.
            (HostSignal::Interrupt, _) if halted => false,
            (HostSignal::Interrupt, HostState::Stopping) => true,
            (HostSignal::Interrupt, HostState::Running) => {
                self.state = HostState::Stopping;
                self.request.get_or_insert(signal);
                self.parent.stop();
                false
            }
            (HostSignal::Terminate, _) => {
                self.state = HostState::Stopping;
                self.request.get_or_insert(signal);
                self.terminate.set();
                false
            }
        }
    }

    /// Passes what changed since the last poll to the notifier.
    fn tell(&mut self) {
        let Some(notify) = self.notify.as_mut() else {
            return;
        };
        // The status first, so that ready and stopping follow the line
        // that shows them. Relaxed: see where the hook is installed.
        if self.changed.swap(false, Ordering::Relaxed) {
            let summary: String = self.status.summary();
            notify.status(&summary);
        }
        if !self.told_ready && self.ready.is_set() {
            self.told_ready = true;
            notify.ready();
        }
        let stopping = self.state == HostState::Stopping || self.shutdown.is_set();
        if !self.told_stopping && stopping {
            self.told_stopping = true;
            notify.stopping();
        }
    }

    fn poll_alive(&mut self, cx: &mut Context<'_>) {
        let Some((every, timer)) = self.alive_timer.as_mut() else {
            return;
        };
        while timer.as_mut().poll(cx).is_ready() {
            *timer = self.runtime.sleep(*every);
            if let Some(notify) = self.notify.as_mut() {
                notify.alive();
            }
        }
    }
}
