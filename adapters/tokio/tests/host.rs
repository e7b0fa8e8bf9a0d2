//! Real signals and systemd notifications on tokio: the scenarios shared
//! by every adapter (`adapters/host_tests.rs`).

#![cfg(all(unix, feature = "signals"))]

use std::future::Future;

use lifecycle_tokio as adapter;

/// Runs `future` on a multi-thread runtime, as `#[tokio::main]` would.
fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(future)
}

#[path = "../../host_tests.rs"]
mod scenarios;
