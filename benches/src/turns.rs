//! Lifecycle and bare rounds taken in turn, compared by their medians.
//!
//! Criterion measures one line after the other, so a host that slows down
//! between two lines moves their ratio. Here each lifecycle round is
//! followed by its bare round, phase by phase, and the ratio is that of the
//! two medians: a slow spell touches both kinds alike, and a few outliers
//! do not move a median. The `turns` bench prints these ratios for the
//! 10,000 components and the 1,000-node supervisor.

use std::time::Duration;

use crate::supervisors::Phases;

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
    /// and keeps the medians of each kind.
    pub fn take(
        rounds: usize,
        mut lifecycle: impl FnMut() -> Phases,
        mut bare: impl FnMut() -> Phases,
    ) -> Turns {
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
    /// From the start until every unit is ready.
    pub start_to_ready: Duration,
    /// From the stop until every unit is done.
    pub stop_to_done: Duration,
    /// Both phases of a round together.
    pub whole: Duration,
}

impl Medians {
    /// The medians of `rounds`; zero for none.
    pub fn of(rounds: &[Phases]) -> Medians {
        let middle = |time: fn(&Phases) -> Duration| {
            let mut times: Vec<Duration> = rounds.iter().map(time).collect();
            times.sort_unstable();
            times.get(times.len() / 2).copied().unwrap_or_default()
        };
        Medians {
            start_to_ready: middle(|round| round.start_to_ready),
            stop_to_done: middle(|round| round.stop_to_done),
            whole: middle(|round| round.start_to_ready + round.stop_to_done),
        }
    }

    /// Each median with its name, in the order the `turns` bench prints
    /// them.
    pub fn named(&self) -> [(&'static str, Duration); 3] {
        [
            ("start_to_ready", self.start_to_ready),
            ("stop_to_done", self.stop_to_done),
            ("whole_round", self.whole),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{components_phases, BareStop, Executor};
    use crate::supervisors::bare_round;

    #[test]
    fn medians_are_taken_phase_by_phase() {
        let phases = |start, stop| Phases {
            start_to_ready: Duration::from_micros(start),
            stop_to_done: Duration::from_micros(stop),
        };
        let rounds = [phases(3, 10), phases(1, 30), phases(2, 20)];
        let medians = Medians::of(&rounds);
        assert_eq!(medians.start_to_ready, Duration::from_micros(2));
        assert_eq!(medians.stop_to_done, Duration::from_micros(20));
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
                || bare_round(&executor, 50, BareStop::ChildTokens),
            );
            assert!(turns.lifecycle.start_to_ready > Duration::ZERO);
            assert!(turns.bare.stop_to_done > Duration::ZERO);
        }
    }
}
