//! [`RestartPolicy`]: how soon and how often a failed component is restarted.

use alloc::collections::VecDeque;
use core::fmt;
use core::time::Duration;

use crate::runtime::{Instant, SharedRuntime};

/// How soon and how often to restart a failed component.
///
/// Two independent limits, as in systemd and Erlang/OTP:
/// - **Backoff**: the delay before restart `n` grows from `initial` by
///   `factor` up to `max`, with up to `jitter` (a fraction) added or removed
///   at random (never beyond `max`) so that many components failing
///   together do not restart in lockstep. An instance that ran for
///   `reset_after` before failing counts as stable: the next delay starts
///   from `initial` again.
/// - **Intensity**: at most `max_restarts` restarts within any window of
///   `within`. One more and the budget is spent: the loop stops restarting
///   and reports the error as
///   [`RunOutcome::RestartsExhausted`](crate::RunOutcome::RestartsExhausted).
///
/// The default ([`RestartPolicy::default`]) follows systemd's defaults for
/// the budget and a cautious exponential backoff:
///
/// | setting | default |
/// |---|---|
/// | backoff | 100 ms, doubling, up to 30 s, ±10 % jitter |
/// | reset after a stable run of | 30 s |
/// | intensity | at most 5 restarts within 10 s |
///
/// Go's behaviour (restart at once, forever) is
/// [`RestartPolicy::immediate`]: it must be chosen explicitly.
///
/// # Example
///
/// ```
/// use lifecycle::RestartPolicy;
/// use std::time::Duration;
///
/// let policy = RestartPolicy::default()
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .factor(3.0)
///     .intensity(10, Duration::from_secs(60));
/// assert!(policy.validate().is_ok());
///
/// let broken = RestartPolicy::default().jitter(1.5);
/// assert_eq!(
///     broken.validate().unwrap_err().to_string(),
///     "invalid restart policy: jitter must be a fraction between 0 and 1, got 1.5"
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    reset_after: Duration,
    intensity: Option<(u32, Duration)>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.1,
            reset_after: Duration::from_secs(30),
            intensity: Some((5, Duration::from_secs(10))),
        }
    }
}

impl RestartPolicy {
    /// Restart at once, without limit: the Go package's behaviour. A
    /// component that fails right after starting will spin.
    pub fn immediate() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            factor: 1.0,
            jitter: 0.0,
            reset_after: Duration::ZERO,
            intensity: None,
        }
    }

    /// Whether a budget under this policy needs the time at all: the
    /// immediate policy does not, which keeps a restart storm off the
    /// clock.
    pub(crate) fn reads_clock(&self) -> bool {
        self.intensity.is_some() || !self.reset_after.is_zero() || !self.initial.is_zero()
    }

    /// Never restart: the first failure spends the budget.
    pub fn never() -> Self {
        Self::immediate().intensity(0, Duration::MAX)
    }

    /// The first delay and the largest. No delay exceeds `max`, jitter
    /// included.
    ///
    /// # Example
    ///
    /// The delays of a policy that triples them, as a test runtime that
    /// records each sleep (and ends it at once) sees them:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use lifecycle::{run_component, ComponentManager, FatalError, Failure};
    /// use lifecycle::{RestartPolicy, StopSource, Verdict};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # struct Recorder(Arc<Mutex<Vec<Duration>>>);
    /// # impl Runtime for Recorder {
    /// #     fn spawn_detached(&self, task: BoxFuture) {
    /// #         std::thread::spawn(move || futures_executor::block_on(task));
    /// #     }
    /// #     fn sleep(&self, duration: Duration) -> BoxFuture {
    /// #         self.0.lock().unwrap().push(duration);
    /// #         Box::pin(std::future::ready(()))
    /// #     }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// let policy = RestartPolicy::default()
    ///     .backoff(Duration::from_millis(100), Duration::from_secs(1))
    ///     .factor(3.0)
    ///     .jitter(0.0); // exact delays, for the example
    ///
    /// let factory = || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|_, _| async { Err(FatalError::msg("broker unreachable")) })
    ///             .build(),
    ///     )
    /// };
    /// let handler = |failure: &Failure| {
    ///     if failure.attempt < 5 { Verdict::Restart } else { Verdict::Stop }
    /// };
    /// let slept = Arc::new(Mutex::new(Vec::new()));
    /// let parent = StopSource::new();
    /// futures_executor::block_on(
    ///     run_component(factory, handler)
    ///         .policy(policy)
    ///         .no_stop_timeout() // so that the only timers are the backoff's
    ///         .run(Arc::new(Recorder(slept.clone())), parent.token()),
    /// );
    /// let delays: Vec<u128> = slept.lock().unwrap().iter().map(Duration::as_millis).collect();
    /// assert_eq!(delays, [100, 300, 900, 1000], "tripled, up to the maximum");
    /// ```
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max;
        self
    }

    /// How much each delay grows over the previous one (at least 1).
    ///
    /// See [`backoff`](RestartPolicy::backoff) for an example.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The fraction (0 to 1) of each delay added or removed at random; a
    /// delay with jitter added still never exceeds the maximum.
    ///
    /// See [`backoff`](RestartPolicy::backoff) for an example.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// How long an instance must run before its failure no longer grows the
    /// backoff.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::RestartPolicy;
    /// use std::time::Duration;
    ///
    /// // A search index that takes minutes to load: a failure within its
    /// // first ten minutes is still part of a crash loop.
    /// let policy = RestartPolicy::default().reset_after(Duration::from_secs(600));
    /// assert!(policy.validate().is_ok());
    /// // The default counts a run of 30 s as stable.
    /// let default = RestartPolicy::default();
    /// assert_eq!(default.clone().reset_after(Duration::from_secs(30)), default);
    /// assert_ne!(policy, default);
    /// ```
    pub fn reset_after(mut self, stable: Duration) -> Self {
        self.reset_after = stable;
        self
    }

    /// At most `max_restarts` restarts within any window of `within`.
    ///
    /// # Example
    ///
    /// Two restarts allowed: the third instance's failure spends the budget.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lifecycle::{run_component, ComponentManager, FatalError, RestartPolicy};
    /// use lifecycle::{RunOutcome, StopSource, Verdict};
    /// # use std::sync::Arc;
    /// # mod support { include!("doc_threads.rs"); } use support::Threads;
    /// let factory = || {
    ///     Ok::<_, FatalError>(
    ///         ComponentManager::builder()
    ///             .add_worker(|_, _| async { Err(FatalError::msg("broker unreachable")) })
    ///             .build(),
    ///     )
    /// };
    /// // No backoff, so that the example waits for no timer.
    /// let policy = RestartPolicy::immediate().intensity(2, Duration::from_secs(60));
    /// let parent = StopSource::new();
    /// let outcome = futures_executor::block_on(
    ///     run_component(factory, |_| Verdict::Restart)
    ///         .policy(policy)
    ///         .run(Arc::new(Threads), parent.token()),
    /// );
    /// assert!(matches!(outcome, RunOutcome::RestartsExhausted { attempt: 3, .. }), "{outcome:?}");
    /// ```
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.intensity = Some((max_restarts, within));
        self
    }

    /// No limit on the number of restarts.
    pub fn unlimited(mut self) -> Self {
        self.intensity = None;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] naming the first bad setting: a factor below 1 (or
    /// not a number), a jitter outside 0 to 1, an initial delay above the
    /// maximum.
    ///
    /// # Example
    ///
    /// ```
    /// use lifecycle::{PolicyError, RestartPolicy};
    ///
    /// // A factor below 1 would shrink the delays.
    /// let shrinking = RestartPolicy::default().factor(0.5);
    /// assert_eq!(shrinking.validate(), Err(PolicyError::Factor(0.5)));
    /// assert!(RestartPolicy::default().factor(1.0).validate().is_ok(), "constant delays are fine");
    /// ```
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err(PolicyError::Factor(self.factor));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::Jitter(self.jitter));
        }
        if self.initial > self.max {
            return Err(PolicyError::InitialAboveMax {
                initial: self.initial,
                max: self.max,
            });
        }
        Ok(())
    }
}

/// A bad [`RestartPolicy`] setting.
///
/// [`RestartPolicy::validate`] returns it; so does a restart loop given the
/// policy ([`RunOutcome::InvalidPolicy`](crate::RunOutcome::InvalidPolicy))
/// and a supervisor's `build` for a node with it
/// ([`BuildError::InvalidPolicy`](crate::BuildError::InvalidPolicy)).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use lifecycle::{PolicyError, RestartPolicy};
///
/// let policy = RestartPolicy::default().backoff(Duration::from_secs(10), Duration::from_secs(1));
/// let error = policy.validate().unwrap_err();
/// assert!(matches!(error, PolicyError::InitialAboveMax { .. }));
/// assert_eq!(
///     error.to_string(),
///     "invalid restart policy: initial backoff 10s is longer than the maximum 1s"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The backoff factor is below 1 or not a finite number.
    Factor(f64),
    /// The jitter is not a fraction between 0 and 1.
    Jitter(f64),
    /// The first delay is longer than the longest.
    InitialAboveMax {
        /// The first delay.
        initial: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid restart policy: ")?;
        match self {
            PolicyError::Factor(factor) => {
                write!(
                    f,
                    "backoff factor must be a number of at least 1, got {factor}"
                )
            }
            PolicyError::Jitter(jitter) => {
                write!(f, "jitter must be a fraction between 0 and 1, got {jitter}")
            }
            PolicyError::InitialAboveMax { initial, max } => write!(
                f,
                "initial backoff {initial:?} is longer than the maximum {max:?}"
            ),
        }
    }
}

impl core::error::Error for PolicyError {}

/// A policy applied over time: the restarts made so far and the next delay.
pub(crate) struct RestartBudget {
    policy: RestartPolicy,
    /// When each restart within the current window was made.
    recent: VecDeque<Instant>,
    /// The delay before the next restart, before jitter.
    next_delay: Duration,
    rng: fastrand::Rng,
}

impl RestartBudget {
    pub(crate) fn new(policy: RestartPolicy, seed: u64) -> Self {
        Self {
            next_delay: policy.initial,
            policy,
            recent: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The runtime's clock, read only if the policy looks at time (see
    /// [`RestartPolicy::reads_clock`]).
    pub(crate) fn now(&self, runtime: &SharedRuntime) -> Instant {
        if self.policy.reads_clock() {
            runtime.now()
        } else {
            Instant::default()
        }
    }

    /// An instance started at `started` failed at `now` and its handler asks
    /// for a restart. Returns the delay to wait before it, or `None` when the
    /// budget is spent.
    pub(crate) fn restart(&mut self, started: Instant, now: Instant) -> Option<Duration> {
        if let Some((max_restarts, within)) = self.policy.intensity {
            while let Some(&oldest) = self.recent.front() {
                if now.saturating_duration_since(oldest) < within {
                    break;
                }
                self.recent.pop_front();
            }
            if self.recent.len() >= max_restarts as usize {
                return None;
            }
            self.recent.push_back(now);
        }
        if now.saturating_duration_since(started) >= self.policy.reset_after
            && self.policy.reset_after > Duration::ZERO
        {
            self.next_delay = self.policy.initial;
        }
        let base = self.next_delay;
        self.next_delay = scale(base, self.policy.factor).min(self.policy.max);
        Some(self.jittered(base))
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        if self.policy.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        // A uniform factor in [1 - jitter, 1 + jitter].
        let spread = self.policy.jitter * (2.0 * self.rng.f64() - 1.0);
        scale(delay, 1.0 + spread).min(self.policy.max)
    }
}

/// `delay * factor`, saturating instead of panicking on overflow.
fn scale(delay: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn no_jitter() -> RestartPolicy {
        RestartPolicy::default().jitter(0.0)
    }

    #[test]
    fn the_default_is_the_documented_one() {
        // The table in `RestartPolicy`'s docs: a change here is a change
        // of behaviour for every user who took the default.
        let policy = RestartPolicy::default();
        assert_eq!(
            (policy.initial, policy.max, policy.factor, policy.jitter),
            (
                Duration::from_millis(100),
                Duration::from_secs(30),
                2.0,
                0.1
            )
        );
        assert_eq!(policy.reset_after, Duration::from_secs(30));
        assert_eq!(policy.intensity, Some((5, Duration::from_secs(10))));
        // And it behaves so: five restarts within ten seconds, not six.
        let mut budget = RestartBudget::new(policy, 1);
        let granted = (0..6).filter(|&i| budget.restart(at(i * 1000), at(i * 1000 + 1)).is_some());
        assert_eq!(granted.count(), 5);
    }

    #[test]
    fn backoff_grows_by_the_factor_up_to_the_max() {
        let policy = no_jitter()
            .backoff(Duration::from_millis(100), Duration::from_millis(350))
            .unlimited();
        let mut budget = RestartBudget::new(policy, 1);
        let delays: Vec<_> = (0..5)
            .map(|i| budget.restart(at(i), at(i + 1)).unwrap().as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let policy = no_jitter().reset_after(Duration::from_secs(1)).unlimited();
        let mut budget = RestartBudget::new(policy, 1);
        assert_eq!(
            budget.restart(at(0), at(10)),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            budget.restart(at(10), at(20)),
            Some(Duration::from_millis(200))
        );
        // Ran for 1 s before failing: back to the first delay.
        assert_eq!(
            budget.restart(at(20), at(1_020)),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn intensity_counts_restarts_in_a_sliding_window() {
        let policy = RestartPolicy::immediate().intensity(2, Duration::from_secs(1));
        let mut budget = RestartBudget::new(policy, 1);
        assert!(budget.restart(at(0), at(0)).is_some());
        assert!(budget.restart(at(0), at(100)).is_some());
        assert!(budget.restart(at(0), at(200)).is_none(), "third within 1 s");
        // The first restart leaves the window at 1,000 ms.
        assert!(budget.restart(at(0), at(1_000)).is_some());
    }

    #[test]
    fn never_spends_the_budget_on_the_first_failure() {
        let mut budget = RestartBudget::new(RestartPolicy::never(), 1);
        assert!(budget.restart(at(0), at(0)).is_none());
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RestartPolicy::default()
            .backoff(Duration::from_secs(1), Duration::from_secs(1))
            .jitter(0.5)
            .unlimited();
        let mut budget = RestartBudget::new(policy, 7);
        let delays: Vec<_> = (0..200)
            .map(|_| budget.restart(at(0), at(0)).unwrap())
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(500)));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "capped at max"
        );
        assert!(
            delays.iter().any(|d| *d < Duration::from_millis(900)),
            "it varies"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            RestartPolicy::default().factor(0.5).validate(),
            Err(PolicyError::Factor(0.5))
        );
        assert!(RestartPolicy::default()
            .factor(f64::NAN)
            .validate()
            .is_err());
        assert_eq!(
            RestartPolicy::default().jitter(-0.1).validate(),
            Err(PolicyError::Jitter(-0.1))
        );
        let inverted =
            RestartPolicy::default().backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(
            inverted.validate().unwrap_err().to_string(),
            "invalid restart policy: initial backoff 2s is longer than the maximum 1s"
        );
        assert!(RestartPolicy::default().validate().is_ok());
        assert!(RestartPolicy::immediate().validate().is_ok());
    }

    #[test]
    fn huge_delays_saturate() {
        assert_eq!(scale(Duration::MAX, 2.0), Duration::MAX);
    }
}
