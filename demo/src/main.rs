//! The lifecycle demo.
fn main() {}
