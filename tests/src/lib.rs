//! The executor-neutral scenario suite of lifecycle and its test kit.
