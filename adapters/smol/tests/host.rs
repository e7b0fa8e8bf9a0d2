//! Real signals and systemd notifications on smol: the scenarios shared
//! by every adapter (`adapters/host_tests.rs`).

#![cfg(all(unix, feature = "signals"))]

use lifecycle_smol as adapter;
use smol::block_on;

#[path = "../../host_tests.rs"]
mod scenarios;
