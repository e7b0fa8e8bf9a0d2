//! Shared helpers of the lifecycle benchmarks.
