//! Real signals and systemd notifications on async-std: the scenarios
//! shared by every adapter (`adapters/host_tests.rs`).

#![cfg(all(unix, feature = "signals"))]

use async_std::task::block_on;
use lifecycle_async_std as adapter;

#[path = "../../host_tests.rs"]
mod scenarios;
