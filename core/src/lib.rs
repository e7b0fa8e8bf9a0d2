//! Runtime-agnostic building blocks for the life of async components.
//!
//! `lifecycle` is `#![no_std]` (with `alloc`) and knows no executor. The
//! primitives every face of a component's life is made of:
//!
//! | item | what it is |
//! |---|---|
//! | [`Latch`] / [`Signal`] | a one-shot broadcast signal (ready, done, ...) and its read-only view |
//! | [`StopSource`] / [`StopToken`] | hierarchical cancellation with a first-writer-wins [`StopCause`] |
//! | [`FatalSlot`] | the first fatal error of a scope, delivered once; the rest go to a [`FatalHook`] |
//! | [`Runtime`] | the binding to an executor: spawn, sleep, clock; adapters implement it |
//! | [`JoinHandle`] | join and abort a spawned task the same way on every executor |
//!
//! and the faces built from them:
//!
//! | item | what it is |
//! |---|---|
//! | [`Component`] | the contract: start once in a [`Scope`]; ready, shutdown signal, done |
//! | [`ComponentManager`] | a component made of async workers, with fatal-error and panic capture |
//! | [`run_component`] | the restart loop: a [`Verdict`] per failure, a [`RestartPolicy`], a stop timeout |
//! | [`Service`] / [`StartStop`] | a restartable start/stop service and the base that implements it, generation by generation |
//! | [`Supervisor`] / [`Node`] | a dependency graph of nodes: readiness-gated start, reverse-order stop, verdicts, restart budgets, events and status |
//! | [`service_fn`], [`start_all`], [`stop_all`], [`wait_all_started`] | closure services and groups of services |
//! | [`HostRun`], [`HostSignal`], [`ExitReason`] | a supervisor as a process's main job: SIGINT/SIGTERM in, an exit code out (the adapters' `run` binds the OS signals) |
//! | [`wait_all`], [`wait_signal_or_stop`], [`wait_error_or_done`] | small waits over signals, tokens and slots |
//!
//! Executors are bound by the adapter crates `lifecycle-tokio`,
//! `lifecycle-smol` and `lifecycle-async-std`.
//!
//! # Example
//!
//! ```
//! use lifecycle::{Latch, StopSource};
//! # futures_executor::block_on(async {
//! let ready = Latch::new();
//! let shutdown = StopSource::new();
//!
//! let worker = {
//!     let ready = ready.clone();
//!     let token = shutdown.token().child().token();
//!     async move {
//!         ready.set(); // initialised
//!         token.stopped().await; // run until told to stop
//!     }
//! };
//! # let worker = futures_util::future::join(worker, async {
//! ready.wait().await;
//! shutdown.stop();
//! # });
//! # worker.await;
//! # });
//! ```
//!
//! # Features
//!
//! - `std` (default): panics inside spawned tasks are caught and reported as
//!   [`JoinError::Panicked`] (inside manager workers: a fatal
//!   [`WorkerPanic`]); a thread waiting for one of the crate's (spin) locks
//!   yields to the holder; the default [`FatalHook`] writes to standard
//!   error. Without it the crate builds for bare targets such as
//!   `thumbv7em-none-eabihf`, and a waiter only spins, so do not stop tokens
//!   or set latches from interrupt handlers that may preempt a task holding
//!   a lock.
//! - `tracing`: every transition of supervisors (each [`SupervisorEvent`],
//!   with its cause), restart loops and managers as structured `tracing`
//!   events, targets `lifecycle::supervisor`, `lifecycle::restart` and
//!   `lifecycle::manager`; a node's instance starts inside a `node` span
//!   (fields `node`, `attempt`) that its manager keeps for its own events.
//!   Failures are `WARN` (`ERROR` for a spent restart budget), starts and
//!   stops `DEBUG`, the rest `INFO`. Works without `std`.
//! - `os-signals` (implies `std`; unix only): `SignalClaim`, which the
//!   adapters' `signals()` streams hold so that SIGINT and SIGTERM end the
//!   process again once no stream is alive. Adapters turn it on.
//! - `host-signals` (implies `os-signals`): `HostSignals`, SIGINT and
//!   SIGTERM as a stream of [`HostSignal`]s on any executor, for
//!   [`HostRun`]; the smol and async-std adapters' `signals()` return it.
//!   On targets other than unix it is an `Unsupported` error.
//! - `systemd` (implies `std`): `Systemd`, a [`HostNotify`] that sends
//!   `READY=1`, `STOPPING=1`, `STATUS=...` and the watchdog's `WATCHDOG=1`
//!   to systemd when `NOTIFY_SOCKET` is set, and
//!   `HostRun::with_systemd_from_env`, which attaches it then. The
//!   adapters' `run` calls that under their `systemd` feature.
//!
//! # Dependencies
//!
//! Each is `no_std` with default features off:
//! - `slab`: the waiter and child lists past their first entry (kept
//!   inline), reusing freed slots so lists never grow past their peak size;
//! - `fastrand`: the jitter of restart backoff (seeded from the runtime's
//!   clock, so virtual-time runs are reproducible);
//! - `pin-project-lite`: safe pin projections without a proc-macro;
//! - `spin`: the lock of the manager's life;
//! - `futures-util` (feature `alloc`): `FuturesUnordered`, the supervisor's
//!   set of timers and outside inputs (its instances are watched through
//!   one waker per node instead), and `join_all` for groups of services;
//! - `tracing` (feature `tracing`, default features off): the events above;
//!   with no subscriber each costs one cached interest check.
//!
//! Behind features, unix only:
//! - `signal-hook` and `libc` (`os-signals`): tokio and `async-signal`
//!   register their handlers through `signal-hook-registry`, which never
//!   restores a signal's default disposition; `signal-hook`'s low-level API
//!   registers our fallback in that same registry and emulates the default
//!   action async-signal-safely, so it cannot fight the adapters' handlers
//!   over `sigaction`. `libc` reads the disposition the process started
//!   with (an ignored SIGINT stays ignored). Both were already in the tree
//!   of every adapter.
//! - `async-signal` (`host-signals`): the one stream of SIGINT and SIGTERM
//!   that smol and async-std share. Its handlers write to a pipe that
//!   async-io's reactor watches, so the stream wakes on any executor
//!   without one of its own, and it unregisters them on drop (through
//!   `signal-hook-registry`, the registry `os-signals` uses). A separate
//!   feature, so that tokio's adapter, which has tokio's signal driver,
//!   does not pull in async-io.
//!
//! The `systemd` feature needs no crate: `sd_notify(3)` is one datagram
//! to a unix socket, which `std` sends. The `sd-notify` crate opens a
//! blocking socket per message and does not read abstract addresses
//! (`NOTIFY_SOCKET=@name`), and `libsystemd` would link a C library.
//!
//! Wakeups use one small waiter list of our own (the first waker inline, more
//! in a `slab`, behind a lock that is a bit of the signal's own state byte,
//! drained once when the signal is set) rather than `event-listener`:
//! `event-listener` wakes listeners while holding its list lock, so every
//! woken task contends for that lock on its next poll, and with ten thousand
//! waiters on one signal that measured several times slower than tokio-util's
//! `CancellationToken`. Ours wakes after releasing the lock, and a woken
//! waiter completes with one atomic load, without touching the lock.

#![no_std]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod component;
mod fatal;
mod flag;
mod host;
mod latch;
mod manager;
mod policy;
mod restart;
mod runtime;
mod scope;
mod service;
mod stop;
mod supervisor;
mod sync;
mod task;
#[cfg(all(test, not(loom)))]
mod testing;
mod trace;
mod wait;

pub use component::{Component, StartError};
pub use fatal::{FatalError, FatalHook, FatalSlot, First, Reported};
#[cfg(feature = "host-signals")]
pub use host::HostSignals;
#[cfg(all(feature = "os-signals", unix))]
pub use host::SignalClaim;
#[cfg(feature = "systemd")]
pub use host::Systemd;
pub use host::{ExitReason, HostExit, HostNotify, HostRun, HostSignal};
pub use latch::{Latch, Signal, Wait, WaitOwned};
pub use manager::{
    ComponentManager, ComponentManagerBuilder, ReadyHandle, ThrowHandle, WorkerContext,
    WorkerPanic, WorkerResult,
};
pub use policy::{PolicyError, RestartPolicy};
pub use restart::{run_component, Failure, RestartLoop, RunOutcome, Verdict, DEFAULT_STOP_TIMEOUT};
pub use runtime::{BoxFuture, Elapsed, Instant, Runtime, RuntimeExt, SharedRuntime, Timeout};
pub use scope::Scope;
pub use service::{
    service_fn, start_all, stop_all, wait_all_started, Generation, Service, ServiceFn,
    ServiceFuture, StartOutcome, StartStop, StartedHandle, StopGuard, StoppedHandle,
};
pub use stop::{StopCause, StopSource, StopToken, Stopped, StoppedOwned, WakeOnStop};
pub use supervisor::{
    BuildError, EventKind, Node, NodeError, NodeFailed, NodeState, NodeStatus, StartTimedOut,
    StatusBoard, StopReason, Supervisor, SupervisorBuilder, SupervisorEnd, SupervisorEvent,
    SupervisorOutcome, TerminateRequests,
};
pub use task::{JoinError, JoinHandle};
pub use wait::{wait_all, wait_error_or_done, wait_signal_or_stop, SignalOrStop};
