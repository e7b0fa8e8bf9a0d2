//! The nodes the run must look at again, taken in declaration order.
//!
//! A bit per node: inserting and taking the lowest never allocate, which a
//! tree set did for every node an input touched.

use alloc::vec;
use alloc::vec::Vec;

pub(super) struct Dirty {
    words: Vec<u64>,
    /// No word below this one has a bit set.
    low: usize,
}

impl Dirty {
    /// Every one of `nodes` nodes marked.
    pub(super) fn all(nodes: usize) -> Dirty {
        let mut words = vec![u64::MAX; nodes.div_ceil(64)];
        if let Some(last) = words.last_mut() {
            let used = nodes % 64;
            if used != 0 {
                *last = (1 << used) - 1;
            }
        }
        Dirty { words, low: 0 }
    }

    pub(super) fn insert(&mut self, node: usize) {
        let word = node / 64;
        self.words[word] |= 1 << (node % 64);
        self.low = self.low.min(word);
    }

    pub(super) fn extend(&mut self, nodes: impl IntoIterator<Item = usize>) {
        for node in nodes {
            self.insert(node);
        }
    }

    /// Takes the lowest marked node.
    pub(super) fn pop_first(&mut self) -> Option<usize> {
        while let Some(word) = self.words.get_mut(self.low) {
            if *word != 0 {
                let bit = word.trailing_zeros() as usize;
                *word &= *word - 1;
                return Some(self.low * 64 + bit);
            }
            self.low += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Dirty;
    use alloc::vec::Vec;

    fn drain(dirty: &mut Dirty) -> Vec<usize> {
        core::iter::from_fn(|| dirty.pop_first()).collect()
    }

    #[test]
    fn all_marks_exactly_the_nodes() {
        assert_eq!(drain(&mut Dirty::all(0)), Vec::<usize>::new());
        assert_eq!(drain(&mut Dirty::all(3)), [0, 1, 2]);
        assert_eq!(drain(&mut Dirty::all(64)).len(), 64);
        assert_eq!(drain(&mut Dirty::all(130)), (0..130).collect::<Vec<_>>());
    }

    #[test]
    fn takes_lowest_first_and_each_once() {
        let mut dirty = Dirty::all(200);
        drain(&mut dirty);
        dirty.extend([150, 3, 70, 3, 199]);
        assert_eq!(dirty.pop_first(), Some(3));
        // A node below the last one taken is still found.
        dirty.insert(1);
        assert_eq!(drain(&mut dirty), [1, 70, 150, 199]);
        assert_eq!(dirty.pop_first(), None);
    }
}
