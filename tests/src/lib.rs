//! The executor-neutral scenario suite of lifecycle, and its test kit.
//!
//! A scenario is an `async fn(SharedRuntime)` written once against the
//! [`lifecycle::Runtime`] binding. The kit runs it on every executor the
//! project supports, each with a harness function of its own:
//!
//! | harness | executor |
//! |---|---|
//! | [`tokio_current_thread`] | tokio, current-thread runtime |
//! | [`tokio_multi_thread`] | tokio, multi-thread runtime with two workers |
//! | [`async_std`](fn@async_std) | async-std's global executor |
//! | [`smol`](fn@smol) | a `smol::Executor` owned by the test |
//! | [`virtual_time`] | a [`VirtualTimeExecutor`]: one thread, deterministic, virtual clock |
//!
//! Every harness wraps the runtime in a [`CountingRuntime`], runs the
//! scenario under a time limit on the runtime's own clock (a lost wakeup
//! fails with a message instead of hanging), and then requires that every
//! task the scenario spawned is gone: a scenario joins what it spawns.
//!
//! [`conformance!`] turns a list of scenarios into tests, five per scenario.
//! The scenarios of the suite itself are in this crate's `tests/` folder.
//!
//! # Example
//!
//! ```
//! use lifecycle::{Latch, RuntimeExt, SharedRuntime};
//!
//! async fn set_wakes_a_spawned_waiter(rt: SharedRuntime) {
//!     let latch = Latch::new();
//!     let waiter = rt.spawn(latch.clone().wait_owned());
//!     latch.set();
//!     waiter.await.unwrap();
//! }
//!
//! // In a test file, `conformance!(set_wakes_a_spawned_waiter);` makes these
//! // five runs five tests.
//! fn main() {
//!     lifecycle_conformance::tokio_current_thread(set_wakes_a_spawned_waiter);
//!     lifecycle_conformance::tokio_multi_thread(set_wakes_a_spawned_waiter);
//!     lifecycle_conformance::async_std(set_wakes_a_spawned_waiter);
//!     lifecycle_conformance::smol(set_wakes_a_spawned_waiter);
//!     lifecycle_conformance::virtual_time(set_wakes_a_spawned_waiter);
//! }
//! ```
//!
//! # Writing scenarios
//!
//! - Use only the runtime you are given: spawn with
//!   [`RuntimeExt::spawn`](lifecycle::RuntimeExt::spawn), sleep with
//!   [`Runtime::sleep`](lifecycle::Runtime::sleep). Never block a thread:
//!   on the current-thread and smol harnesses the scenario shares its thread
//!   with every task.
//! - Join every task you spawn (or abort it and then join it).
//! - Assert orderings and lower bounds, never upper time bounds: the suite
//!   must pass on a slow, loaded machine. Sleep only where an ordering needs
//!   time to show, and briefly.
//! - Never wait for time to pass by yielding in a loop: on the virtual-time
//!   harness the clock stands still while any task is ready. Sleep on the
//!   runtime instead (as [`eventually`] does).

/// The README's examples, compiled and run as doctests of this crate.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod counting;
mod harness;
mod model;
mod record;
mod util;
mod virtual_time;

pub use counting::CountingRuntime;
pub use harness::{
    async_std, run_scenario, smol, tokio_current_thread, tokio_multi_thread, virtual_time,
    SCENARIO_TIME_LIMIT, SETTLE_TIME_LIMIT, WATCHDOG_TIME_LIMIT,
};
pub use model::{run_model, within, ModelRun};
pub use record::{
    describe, describing, lock, shown_with, when_set, Events, ManualComponent, WhenSet,
};
pub use util::{
    eventually, let_others_run, scope, serve_until_stopped, yield_now, Counter, DropProbe, Held,
    YieldNow, EVENTUALLY_TIME_LIMIT,
};
pub use virtual_time::{VirtualTimeExecutor, VirtualTimeRuntime, BUSY_POLL_LIMIT, IDLE_WAIT_LIMIT};

/// Generates the tests of one or more scenarios: for each, a module named
/// like the scenario function, with one `#[test]` per executor harness:
/// `tokio_current_thread`, `tokio_multi_thread`, `async_std`, `smol` and
/// `virtual_time`.
///
/// Each scenario is a function in scope where the macro is invoked, taking a
/// [`SharedRuntime`](lifecycle::SharedRuntime) and returning a future with
/// output `()`, typically an `async fn`.
///
/// A test filter selects a scenario (`cargo test latch_set_after_wait`) or an
/// executor across scenarios (`cargo test smol`).
///
/// # Example
///
/// ```
/// use lifecycle::{RuntimeExt, SharedRuntime};
///
/// async fn spawn_returns_the_output(rt: SharedRuntime) {
///     assert_eq!(rt.spawn(async { 6 * 7 }).await, Ok(42));
/// }
///
/// lifecycle_conformance::conformance!(spawn_returns_the_output);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn tokio_current_thread() {
                    $crate::tokio_current_thread(super::$scenario);
                }

                #[test]
                fn tokio_multi_thread() {
                    $crate::tokio_multi_thread(super::$scenario);
                }

                #[test]
                fn async_std() {
                    $crate::async_std(super::$scenario);
                }

                #[test]
                fn smol() {
                    $crate::smol(super::$scenario);
                }

                #[test]
                fn virtual_time() {
                    $crate::virtual_time(super::$scenario);
                }
            }
        )+
    };
}

/// The five tests of a model-based test file, one per executor: each calls
/// `$run_model(test_name, executor_label, run)`, where `run` drives one
/// case through `$run_case(runtime, case, coverage)` on that executor.
///
/// A model file defines `fn run_model(test: &str, executor: &str, run:
/// impl Fn(Case, Arc<Coverage>))` (its [`ModelRun`] and case strategy) and
/// `async fn run_case(rt: SharedRuntime, case: Case, coverage:
/// Arc<Coverage>)`, then writes `model_conformance!(run_model, run_case);`.
#[macro_export]
macro_rules! model_conformance {
    ($run_model:ident, $run_case:ident) => {
        $crate::model_conformance!(@one $run_model, $run_case, tokio_current_thread, "tokio current-thread");
        $crate::model_conformance!(@one $run_model, $run_case, tokio_multi_thread, "tokio multi-thread");
        $crate::model_conformance!(@one $run_model, $run_case, async_std, "async-std");
        $crate::model_conformance!(@one $run_model, $run_case, smol, "smol");
        $crate::model_conformance!(@one $run_model, $run_case, virtual_time, "virtual time");
    };
    (@one $run_model:ident, $run_case:ident, $executor:ident, $label:literal) => {
        #[test]
        fn $executor() {
            $run_model(stringify!($executor), $label, |case, coverage| {
                $crate::$executor(move |rt| $run_case(rt, case, coverage));
            });
        }
    };
}
