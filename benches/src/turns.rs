//! Lifecycle and bare rounds taken in turn, compared by their medians.
//!
//! Criterion measures one line after the other, so a host that slows down
//! between two lines moves their ratio. Here each lifecycle round is
//! followed by its bare round, phase by phase, and the ratio is that of the
//! two medians: a slow spell touches both kinds alike, and a few outliers
//! do not move a median. The `turns` bench prints these ratios for the
//! 10,000 components and the 1,000-node supervisor.

use std::time::Duration;

use crate::components::{Phase, Phases};

/// The medians of a lifecycle round and of its bare counterpart over
/// rounds taken in turn.
#[derive(Clone, Copy, Debug)]
pub struct Turns {
    /// The lifecycle round's medians.
    pub lifecycle: Medians,
    /// The bare round's medians.
    pub bare: Medians,
}

impl Turns {
    /// Runs `rounds` rounds of each kind, a lifecycle round then a bare one,
    /// and keeps the medians of each kind. One round of each goes first,
    /// untimed: the first round on a fresh executor also pays for its
    /// threads' and the allocator's first use.
    pub fn take(
        rounds: usize,
        mut lifecycle: impl FnMut() -> Phases,
        mut bare: impl FnMut() -> Phases,
    ) -> Turns {
        lifecycle();
        bare();
        let (mut ours, mut theirs) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            ours.push(lifecycle());
            theirs.push(bare());
        }
        Turns {
            lifecycle: Medians::of(&ours),
            bare: Medians::of(&theirs),
        }
    }
}

/// The median of each phase, and of the whole round, each on its own (they
/// may come from different rounds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Medians {
    /// The median of each phase.
    pub phases: Phases,
    /// The median of the whole round.
    pub whole: Duration,
}

impl Medians {
    /// The medians of `rounds`; zero for none.
    pub fn of(rounds: &[Phases]) -> Medians {
        let middle = |time: &dyn Fn(&Phases) -> Duration| {
            let mut times: Vec<Duration> = rounds.iter().map(time).collect();
            times.sort_unstable();
            times.get(times.len() / 2).copied().unwrap_or_default()
        };
        let [start_to_ready, stop_to_done] =
            Phase::BOTH.map(|phase| middle(&|round| round.of(phase)));
        Medians {
            phases: Phases {
                start_to_ready,
                stop_to_done,
            },
            whole: middle(&Phases::total),
        }
    }

    /// Each median with its name, in the order the `turns` bench prints
    /// them.
    pub fn named(&self) -> [(&'static str, Duration); 3] {
        let [start, stop] = Phase::BOTH.map(|phase| (phase.name(), self.phases.of(phase)));
        [start, stop, ("whole_round", self.whole)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{bare_components_phases, components_phases, BareStop, Executor};

    #[test]
    fn medians_are_taken_phase_by_phase() {
        let phases = |start, stop| Phases {
            start_to_ready: Duration::from_micros(start),
            stop_to_done: Duration::from_micros(stop),
        };
        let rounds = [phases(3, 10), phases(1, 30), phases(2, 20)];
        let medians = Medians::of(&rounds);
        assert_eq!(medians.phases.start_to_ready, Duration::from_micros(2));
        assert_eq!(medians.phases.stop_to_done, Duration::from_micros(20));
        // Whole rounds: 13, 31 and 22.
        assert_eq!(medians.whole, Duration::from_micros(22));
        assert_eq!(Medians::of(&[]).whole, Duration::ZERO);
    }

    #[test]
    fn turns_run_both_kinds_on_every_executor() {
        for executor in Executor::all() {
            let turns = Turns::take(
                2,
                || components_phases(&executor, 50),
                || bare_components_phases(&executor, 50, BareStop::ChildTokens),
            );
            assert!(turns.lifecycle.phases.start_to_ready > Duration::ZERO);
            assert!(turns.bare.phases.stop_to_done > Duration::ZERO);
        }
    }
}
