//! Running a model-based test: a proptest runner with a printed,
//! reproducible seed, and a bounded wait for a model step.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lifecycle::{RuntimeExt, SharedRuntime};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestRunner};

/// One model test on one executor, for [`run_model`].
#[derive(Clone, Copy, Debug)]
pub struct ModelRun<'a> {
    /// The test file (the `--test` target), e.g. `"service_model"`.
    pub file: &'a str,
    /// The test function, e.g. `"smol"`.
    pub test: &'a str,
    /// The executor, as printed, e.g. `"smol"`.
    pub executor: &'a str,
    /// Cases when `LIFECYCLE_PROPTEST_CASES` is not set.
    pub default_cases: u32,
}

/// Runs `cases` through `run`, with a `Coverage` shared by every case and
/// printed at the end (what the generated cases actually exercised).
///
/// The seed is random unless `LIFECYCLE_PROPTEST_SEED` sets it, and is
/// printed with the command that reproduces the run; a failure panics with
/// both. `LIFECYCLE_PROPTEST_CASES` changes the number of cases.
///
/// # Panics
///
/// If a case fails (after shrinking), or an environment variable does not
/// parse.
pub fn run_model<S, Coverage>(model: ModelRun<'_>, cases: S, run: impl Fn(S::Value, Arc<Coverage>))
where
    S: Strategy,
    Coverage: Default + fmt::Display,
{
    let ModelRun {
        file,
        test,
        executor,
        default_cases,
    } = model;
    let seed = match std::env::var("LIFECYCLE_PROPTEST_SEED") {
        Ok(seed) => seed
            .trim()
            .parse()
            .expect("LIFECYCLE_PROPTEST_SEED must be an unsigned 64-bit integer"),
        Err(_) => RandomState::new().hash_one(SystemTime::now()),
    };
    let count = match std::env::var("LIFECYCLE_PROPTEST_CASES") {
        Ok(count) => count
            .trim()
            .parse()
            .expect("LIFECYCLE_PROPTEST_CASES must be a number"),
        Err(_) => default_cases,
    };
    let reproduce = format!(
        "LIFECYCLE_PROPTEST_SEED={seed} cargo test -p lifecycle-conformance \
         --test {file} -- --exact {test}"
    );
    eprintln!("{file} on {executor}: {count} cases, seed {seed}; reproduce with {reproduce}");
    let config = Config {
        cases: count,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 512,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let coverage = Arc::new(Coverage::default());
    let mut runner = TestRunner::new(config);
    let result = runner.run(&cases, |case| {
        run(case, coverage.clone());
        Ok(())
    });
    eprintln!("{file} on {executor}: {coverage}");
    if let Err(failure) = result {
        panic!("{file} on {executor}, seed {seed} (reproduce with {reproduce}): {failure}");
    }
}

/// Runs `future` for at most `limit` on `rt`'s clock; panics with `what`
/// otherwise. For a model step that must complete: a lost wakeup fails
/// with a message instead of hanging.
pub async fn within<F: Future>(
    rt: &SharedRuntime,
    limit: Duration,
    what: impl fmt::Display,
    future: F,
) -> F::Output {
    match rt.timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("not within {limit:?}: {what}"),
    }
}
