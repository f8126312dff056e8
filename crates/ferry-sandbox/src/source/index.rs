//! The source's order: which record sits where in `(changed_at, id)` order, with page lookups
//! in O(page_size · log n) and counts in O(log n), and touches that move records to the end.
//!
//! # How it works
//!
//! Every version of a record occupies a *slot*. Slots are numbered in sort-key order: slot `i`
//! for `i` in `1..=n` is record `i` as generated (`changed_at` = 2024-01-01 + `i` s), and every
//! touch appends new slots after all existing ones with a time strictly after every existing
//! `changed_at` (ids ascending within one touch). So slot order *is* `(changed_at, id)` order,
//! and a slot's key never changes. A touch marks the record's old slot dead.
//!
//! A Fenwick tree over slots counts live ones: "how many records have `changed_at >= since`",
//! "the k-th live record from here" and "the first live record after this key" are all
//! O(log n). Memory is 4 bytes per slot plus an entry per touched record; untouched records
//! cost nothing beyond their slot, since their key is computed from their id.
//!
//! The trade-off: the time of a touch is one second after the newest `changed_at`, not the wall
//! clock, so touched records sort last and get strictly increasing times even when touched
//! many times per second.

use std::collections::HashMap;

use super::data::EPOCH_UNIX;

/// The sort key of a record version: `(changed_at unix seconds, id)`.
pub(crate) type SortKey = (i64, u64);

/// A Fenwick (binary indexed) tree of 0/1 counts over slots `1..=len`, growable at the end.
#[derive(Debug, Clone)]
struct Fenwick {
    /// `tree[i]` is the sum of slots `(i - lowbit(i), i]`; index 0 is unused.
    tree: Vec<u32>,
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl Fenwick {
    /// A tree of `n` slots, each counting 1.
    fn all_ones(n: usize) -> Self {
        let mut tree = Vec::with_capacity(n + 1);
        tree.push(0);
        // With every value 1, node i covers exactly lowbit(i) slots.
        tree.extend((1..=n).map(|i| lowbit(i) as u32));
        Fenwick { tree }
    }

    fn len(&self) -> usize {
        self.tree.len() - 1
    }

    /// Sum of slots `1..=i` (`i` is clamped to the length).
    fn prefix(&self, i: usize) -> u64 {
        let mut i = i.min(self.len());
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i]);
            i -= lowbit(i);
        }
        sum
    }

    /// Appends a slot with value `value`.
    fn push(&mut self, value: u32) {
        let i = self.tree.len();
        let covered_from = i - lowbit(i); // node i covers (covered_from, i]
        let inner = self.prefix(i - 1) - self.prefix(covered_from);
        // `inner` counts at most lowbit(i) - 1 slots, which fits the u32 slot count bound.
        self.tree.push(inner as u32 + value);
    }

    /// Subtracts one from slot `i`, which must currently count 1.
    fn remove_one(&mut self, mut i: usize) {
        while i < self.tree.len() {
            self.tree[i] -= 1;
            i += lowbit(i);
        }
    }

    /// The smallest slot `i` with `prefix(i) >= k`, for `k >= 1`; `None` past the end.
    fn find_kth(&self, mut k: u64) -> Option<usize> {
        if k == 0 || k > self.prefix(self.len()) {
            return None;
        }
        let mut pos = 0usize;
        let mut step = if self.len() == 0 {
            0
        } else {
            1usize << (usize::BITS - 1 - self.len().leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= self.len() && u64::from(self.tree[next]) < k {
                pos = next;
                k -= u64::from(self.tree[next]);
            }
            step >>= 1;
        }
        Some(pos + 1)
    }
}

/// A slot appended by a touch.
#[derive(Debug, Clone, Copy)]
struct TouchedSlot {
    id: u64,
    time: i64,
}

/// Where a touched record lives now.
#[derive(Debug, Clone, Copy)]
struct Current {
    slot: u64,
    version: u32,
}

/// A live record version found by a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) slot: u64,
    pub(crate) id: u64,
    pub(crate) changed_at: i64,
    pub(crate) version: u32,
}

impl Located {
    pub(crate) fn key(&self) -> SortKey {
        (self.changed_at, self.id)
    }
}

/// The slot index of the source (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Index {
    records: u64,
    live: Fenwick,
    touched_slots: Vec<TouchedSlot>,
    current: HashMap<u64, Current>,
}

/// Slots are counted in u32 by the Fenwick tree; touches stop growing it past this.
const MAX_SLOTS: u64 = u32::MAX as u64 - 1;

impl Index {
    /// An index of records `1..=records`, all untouched. `records` is bounded by
    /// [`crate::config::MAX_RECORDS`], far below the slot limit.
    pub(crate) fn new(records: u64) -> Self {
        Index {
            records,
            live: Fenwick::all_ones(records as usize),
            touched_slots: Vec::new(),
            current: HashMap::new(),
        }
    }

    /// Number of records (ids `1..=len`).
    pub(crate) fn len(&self) -> u64 {
        self.records
    }

    fn slots(&self) -> u64 {
        self.live.len() as u64
    }

    /// The sort key of a slot in `1..=slots()`.
    fn key_of(&self, slot: u64) -> SortKey {
        if slot <= self.records {
            (EPOCH_UNIX.saturating_add_unsigned(slot), slot)
        } else {
            let touched = self.touched_slots[(slot - self.records - 1) as usize];
            (touched.time, touched.id)
        }
    }

    /// The smallest slot in `1..=slots()+1` for which `pred(key)` is false, given that `pred`
    /// is true on a prefix of the slots.
    fn partition_point(&self, pred: impl Fn(SortKey) -> bool) -> u64 {
        let (mut lo, mut hi) = (1u64, self.slots() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key_of(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The first slot whose `changed_at >= since` (unix seconds).
    pub(crate) fn first_slot_since(&self, since: Option<i64>) -> u64 {
        match since {
            None => 1,
            Some(since) => self.partition_point(|(time, _)| time < since),
        }
    }

    /// The first slot whose key is strictly after `key`.
    pub(crate) fn first_slot_after(&self, key: SortKey) -> u64 {
        self.partition_point(|k| k <= key)
    }

    /// Number of live records in slots `from..`.
    pub(crate) fn count_from(&self, from: u64) -> u64 {
        let before = self.live.prefix(from.saturating_sub(1) as usize);
        self.live.prefix(self.live.len()) - before
    }

    /// The live record `skip` places after the first live record at or after slot `from`.
    pub(crate) fn nth_from(&self, from: u64, skip: u64) -> Option<Located> {
        let rank = self
            .live
            .prefix(from.saturating_sub(1) as usize)
            .checked_add(skip)?
            .checked_add(1)?;
        let slot = self.live.find_kth(rank)? as u64;
        self.locate_live(slot)
    }

    /// The first live record at or after slot `from`.
    pub(crate) fn first_live_from(&self, from: u64) -> Option<Located> {
        let from = from.max(1);
        if from > self.slots() {
            return None;
        }
        // Fast path: most slots are live; only dead ones need the tree.
        self.locate_live(from).or_else(|| self.nth_from(from, 0))
    }

    /// The record at `slot` if that slot is live.
    fn locate_live(&self, slot: u64) -> Option<Located> {
        if slot == 0 || slot > self.slots() {
            return None;
        }
        let (changed_at, id) = self.key_of(slot);
        match self.current.get(&id) {
            None if slot <= self.records => Some(Located {
                slot,
                id,
                changed_at,
                version: 1,
            }),
            Some(current) if current.slot == slot => Some(Located {
                slot,
                id,
                changed_at,
                version: current.version,
            }),
            _ => None,
        }
    }

    /// Up to `limit` live records starting at slot `from`, in order.
    pub(crate) fn page_from(&self, from: u64, limit: usize) -> Vec<Located> {
        let mut page = Vec::with_capacity(limit.min(4096));
        let mut next = from;
        while page.len() < limit {
            match self.first_live_from(next) {
                Some(found) => {
                    next = found.slot + 1;
                    page.push(found);
                }
                None => break,
            }
        }
        page
    }

    /// The current version of record `id`, or `None` when no such record exists.
    pub(crate) fn current(&self, id: u64) -> Option<Located> {
        if id == 0 || id > self.records {
            return None;
        }
        match self.current.get(&id) {
            None => self.locate_live(id),
            Some(current) => self.locate_live(current.slot),
        }
    }

    /// The newest `changed_at` of any slot (live or not).
    fn newest_time(&self) -> i64 {
        if self.slots() == 0 {
            EPOCH_UNIX
        } else {
            self.key_of(self.slots()).0
        }
    }

    /// Moves the given records to the end with a new `changed_at` one second after the newest
    /// one and a bumped version. Unknown ids and repeats are ignored. Returns how many records
    /// were touched.
    pub(crate) fn touch(&mut self, ids: &[u64]) -> usize {
        let mut ids: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| id >= 1 && id <= self.records)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return 0;
        }
        if self.slots() + ids.len() as u64 > MAX_SLOTS {
            tracing::warn!(
                touched = ids.len(),
                "Sandbox source slot limit reached; touch ignored"
            );
            return 0;
        }
        let time = self.newest_time().saturating_add(1);
        for &id in &ids {
            let (old_slot, old_version) = match self.current.get(&id) {
                Some(current) => (current.slot, current.version),
                None => (id, 1),
            };
            self.live.remove_one(old_slot as usize);
            self.live.push(1);
            self.touched_slots.push(TouchedSlot { id, time });
            self.current.insert(
                id,
                Current {
                    slot: self.slots(),
                    version: old_version.saturating_add(1),
                },
            );
        }
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The naive model: every live record's key, sorted.
    fn model(index: &Index) -> Vec<(SortKey, u32)> {
        let mut all: Vec<(SortKey, u32)> = (1..=index.len())
            .filter_map(|id| index.current(id))
            .map(|l| (l.key(), l.version))
            .collect();
        all.sort();
        all
    }

    fn walk(index: &Index) -> Vec<(SortKey, u32)> {
        index
            .page_from(1, usize::MAX)
            .iter()
            .map(|l| (l.key(), l.version))
            .collect()
    }

    #[test]
    fn fenwick_matches_a_naive_count() {
        let mut tree = Fenwick::all_ones(37);
        let mut naive = vec![1u32; 37];
        for i in [3usize, 17, 1, 37, 20] {
            tree.remove_one(i);
            naive[i - 1] = 0;
        }
        for _ in 0..30 {
            tree.push(1);
        }
        naive.extend(std::iter::repeat_n(1, 30));
        tree.remove_one(50);
        naive[49] = 0;
        for i in 0..=naive.len() {
            let expected: u64 = naive[..i].iter().map(|&v| u64::from(v)).sum();
            assert_eq!(tree.prefix(i), expected, "prefix({i})");
        }
        let total: u64 = naive.iter().map(|&v| u64::from(v)).sum();
        for k in 1..=total {
            let expected = (1..=naive.len())
                .find(|&i| naive[..i].iter().map(|&v| u64::from(v)).sum::<u64>() >= k);
            assert_eq!(tree.find_kth(k), expected, "find_kth({k})");
        }
        assert_eq!(tree.find_kth(total + 1), None);
        assert_eq!(tree.find_kth(0), None);
        assert_eq!(Fenwick::all_ones(0).find_kth(1), None);
    }

    #[test]
    fn untouched_index_is_in_id_order() {
        let index = Index::new(10);
        let page = index.page_from(1, 3);
        assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(page[0].changed_at, EPOCH_UNIX + 1);
        assert_eq!(index.count_from(1), 10);
        assert_eq!(index.first_slot_since(Some(EPOCH_UNIX + 4)), 4);
        assert_eq!(
            index.count_from(index.first_slot_since(Some(EPOCH_UNIX + 4))),
            7
        );
        assert_eq!(index.first_slot_since(Some(0)), 1);
        assert_eq!(index.first_slot_since(Some(i64::MAX)), 11);
        assert_eq!(index.nth_from(1, 9).map(|l| l.id), Some(10));
        assert_eq!(index.nth_from(1, 10), None);
        assert_eq!(index.current(0), None);
        assert_eq!(index.current(11), None);
    }

    #[test]
    fn touches_move_records_to_the_end_and_keep_order_consistent() {
        let mut index = Index::new(20);
        assert_eq!(index.touch(&[5, 3, 5, 0, 99]), 2);
        assert_eq!(index.touch(&[3]), 1);
        assert_eq!(index.touch(&[]), 0);
        let walked = walk(&index);
        assert_eq!(walked, model(&index));
        assert_eq!(walked.len(), 20);
        let ids: Vec<u64> = walked.iter().map(|(k, _)| k.1).collect();
        assert_eq!(&ids[18..], &[5, 3]);
        let three = index.current(3).expect("record 3");
        assert_eq!(three.version, 3);
        assert_eq!(three.changed_at, EPOCH_UNIX + 22);
        assert_eq!(
            index.current(5).map(|l| l.changed_at),
            Some(EPOCH_UNIX + 21)
        );
        // Keys are strictly increasing along the walk.
        assert!(walked.windows(2).all(|w| w[0].0 < w[1].0));
        // A key-based continuation after record 4: 6..=20, then the touched 5 and 3.
        let after = index.first_slot_after((EPOCH_UNIX + 4, 4));
        let rest: Vec<u64> = index.page_from(after, 100).iter().map(|l| l.id).collect();
        let mut expected: Vec<u64> = (6..=20).collect();
        expected.extend([5, 3]);
        assert_eq!(rest, expected);
        assert_eq!(
            index.count_from(index.first_slot_since(Some(EPOCH_UNIX + 21))),
            2
        );
    }

    #[test]
    fn pseudo_random_touch_sequences_match_the_model() {
        let mut rng = crate::rng::SplitMix::new(9);
        let mut index = Index::new(300);
        for round in 0..60 {
            let ids: Vec<u64> = (0..rng.below(12)).map(|_| 1 + rng.below(310)).collect();
            index.touch(&ids);
            let walked = walk(&index);
            assert_eq!(walked, model(&index), "round {round}");
            assert_eq!(walked.len(), 300);
            // Counting from any time agrees with a scan.
            let since = EPOCH_UNIX + rng.below(400) as i64;
            let scanned = walked.iter().filter(|(k, _)| k.0 >= since).count() as u64;
            assert_eq!(
                index.count_from(index.first_slot_since(Some(since))),
                scanned
            );
            // Positional lookups agree with the walk.
            let skip = rng.below(300);
            assert_eq!(
                index.nth_from(1, skip).map(|l| l.key()),
                walked.get(skip as usize).map(|w| w.0)
            );
        }
    }
}
