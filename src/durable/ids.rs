//! The dedupe window: the ids of messages seen lately, and which of them
//! the application finished, held once for the inbox (is this message new?)
//! and the ledger (was it finished? what goes in the state file?).
//!
//! An id is remembered as an 8-byte digest, not as its text: SipHash-2-4
//! with fixed keys (stable across processes and Rust versions, since the
//! state file stores it), with the lowest bit used as the "finished" flag.
//! So an entry costs the same whatever the id's length: 8 bytes in the
//! order ring and 8 in a slot of the set, which is kept at most 3/4 full,
//! at most 30 bytes in all (22 for the default window of 10,000; a unit
//! test checks it).
//!
//! Two different ids share a digest with odds of about one in 2^63 per
//! pair: with a window of 10,000 ids, a new message is taken for one
//! already seen about once in 10^15 messages.

use std::collections::VecDeque;
use std::hash::Hasher;

/// An id's (or a payload's) digest, lowest bit clear.
pub(crate) type Digest = u64;

/// The "finished" flag, in the lowest bit of a stored digest.
const FINISHED: u64 = 1;

/// The digest of a message id.
pub(crate) fn of_id(id: &str) -> Digest {
    sip(0, id.as_bytes())
}

/// The digest of a payload without an id (a poll item), in a space of its
/// own: never equal to an id's by construction of the keys.
pub(crate) fn of_content(bytes: &[u8]) -> Digest {
    sip(0x6865_6172_746c_696e, bytes) // "heartlin"
}

#[allow(deprecated)] // SipHasher is SipHash-2-4, fixed: what a stored digest needs
fn sip(key: u64, bytes: &[u8]) -> Digest {
    let mut h = std::hash::SipHasher::new_with_keys(key, 0);
    h.write(bytes);
    h.finish() & !FINISHED
}

/// A set of digests: open addressing with linear probing, deletion by
/// shifting back (no tombstones, so no growth under churn), at most 3/4
/// full. 0 marks an empty slot; a digest of 0 is stored as 2.
struct Table {
    slots: Box<[u64]>,
    mask: usize,
}

impl Table {
    fn new() -> Self {
        Table {
            slots: Box::new([]),
            mask: 0,
        }
    }

    /// Room for `n` digests at most 3/4 full: 8 bytes a slot, so at most
    /// 8 × 2 × 4/3 ≈ 21.3 bytes a digest (a power of two of slots).
    fn allocate(&mut self, n: usize) {
        let slots = (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(8);
        // Zeroed pages come from the kernel untouched: memory is used as
        // slots are.
        self.slots = vec![0; slots].into_boxed_slice();
        self.mask = slots - 1;
    }

    fn home(&self, d: Digest) -> usize {
        // The digest's high bits: evenly spread already.
        (d >> 32) as usize & self.mask
    }

    /// The slot holding `d` (flag ignored).
    fn find(&self, d: Digest) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let d = stored(d);
        let mut i = self.home(d);
        loop {
            match self.slots[i] {
                0 => return None,
                s if s & !FINISHED == d => return Some(i),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Adds `value` (a digest with its flag), known to be absent.
    fn insert(&mut self, value: u64) {
        let value = stored(value & !FINISHED) | (value & FINISHED);
        let mut i = self.home(value & !FINISHED);
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = value;
    }

    fn remove(&mut self, d: Digest) {
        let Some(mut hole) = self.find(d) else { return };
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            // Move back what the hole would make unreachable: an entry
            // whose home is not cyclically within (hole, j].
            let home = self.home(s & !FINISHED);
            let reachable = if hole < j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !reachable {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }
}

/// A digest as stored: never 0, which marks an empty slot.
fn stored(d: Digest) -> Digest {
    if d == 0 {
        2
    } else {
        d
    }
}

/// See the module documentation.
pub(crate) struct Ids {
    /// Digests, with [`FINISHED`] set once the application finished it.
    set: Table,
    /// Digests (flag clear), oldest first: the first to be forgotten.
    order: VecDeque<Digest>,
    window: usize,
}

impl Ids {
    pub(crate) fn new(window: usize) -> Self {
        Ids {
            set: Table::new(),
            order: VecDeque::new(),
            window,
        }
    }

    /// Seen, finished or not.
    pub(crate) fn contains(&self, d: Digest) -> bool {
        self.set.find(d).is_some()
    }

    pub(crate) fn is_finished(&self, d: Digest) -> bool {
        self.set
            .find(d)
            .is_some_and(|i| self.set.slots[i] & FINISHED != 0)
    }

    /// Remembers a message as seen (a no-op if it was).
    pub(crate) fn remember(&mut self, d: Digest) {
        if !self.contains(d) {
            self.push(d);
        }
    }

    /// Marks a message finished; `true` when it was not already. One that
    /// was forgotten meanwhile (the window moved on while the application
    /// held it) is remembered again, as the newest.
    pub(crate) fn finish(&mut self, d: Digest) -> bool {
        match self.set.find(d) {
            Some(i) if self.set.slots[i] & FINISHED != 0 => false,
            Some(i) => {
                self.set.slots[i] |= FINISHED;
                true
            }
            None => {
                self.push(d | FINISHED);
                true
            }
        }
    }

    /// Adds a digest (with its flag) as the newest, forgetting the oldest
    /// beyond the window.
    fn push(&mut self, value: u64) {
        if self.order.capacity() == 0 {
            // Both tables at their final size, once, at the first id: no
            // doubling later, which would hold the old and the new table
            // at once.
            self.order.reserve_exact(self.window);
            self.set.allocate(self.window);
        }
        if self.order.len() >= self.window {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(old);
            }
        }
        self.set.insert(value);
        self.order.push_back(value & !FINISHED);
    }

    /// The finished ones, oldest first: what the state file keeps.
    pub(crate) fn finished(&self) -> Vec<Digest> {
        self.order
            .iter()
            .copied()
            .filter(|d| self.is_finished(*d))
            .collect()
    }

    /// Heap bytes held: the ring's and the table's slots.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.set.slots.len() * 8 + self.order.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_keep_ids_and_contents_apart() {
        // Stored in state files: these values must never change.
        assert_eq!(of_id("m-1"), of_id("m-1"));
        assert_eq!(of_id("m-1") & FINISHED, 0);
        assert_ne!(of_id("m-1"), of_id("m-2"));
        assert_ne!(of_id("m-1"), of_content(b"m-1"));
        assert_eq!(of_id(""), 0x1e92_4b9d_7377_00d6 & !FINISHED);
    }

    #[test]
    fn seen_finished_and_forgotten_in_window_order() {
        let mut ids = Ids::new(3);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(of_id);
        ids.remember(a);
        ids.remember(b);
        assert!(ids.contains(a) && !ids.is_finished(a));
        assert!(ids.finish(a));
        assert!(!ids.finish(a), "once");
        assert!(ids.is_finished(a) && ids.contains(a));
        ids.remember(a); // seen again: still finished, not moved
        assert!(ids.is_finished(a));
        ids.remember(c);
        ids.remember(d); // the window of 3 forgets a
        assert!(!ids.contains(a));
        assert!(ids.finish(b));
        assert_eq!(ids.finished(), [b]);
        // Finished after it was forgotten: remembered again, as the newest.
        assert!(ids.finish(a));
        assert!(!ids.contains(b), "b was the oldest");
        assert_eq!(ids.finished(), [a]);
    }

    #[test]
    fn the_table_agrees_with_a_model_under_churn() {
        // Crowded homes (small digests) exercise the shifting back.
        let mut ids = Ids::new(50);
        let mut model: VecDeque<(Digest, bool)> = VecDeque::new();
        let mut x: u64 = 7;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 0 and collisions of homes included: few distinct high bits.
            let d = ((x % 97) << 33) & !FINISHED;
            if step % 3 == 0 {
                let was = model.iter().any(|&(m, f)| m == d && f);
                let newly = ids.finish(d);
                assert_eq!(newly, !was, "step {step}");
                match model.iter_mut().find(|(m, _)| *m == d) {
                    Some(e) => e.1 = true,
                    None => model.push_back((d, true)),
                }
            } else {
                ids.remember(d);
                if !model.iter().any(|&(m, _)| m == d) {
                    model.push_back((d, false));
                }
            }
            while model.len() > 50 {
                model.pop_front();
            }
            for k in 0..97u64 {
                let k = k << 33;
                let m = model.iter().find(|(m, _)| *m == k);
                assert_eq!(ids.contains(k), m.is_some(), "step {step}, {k:x}");
                assert_eq!(ids.is_finished(k), m.is_some_and(|e| e.1));
            }
        }
        assert_eq!(
            ids.finished(),
            model
                .iter()
                .filter(|e| e.1)
                .map(|e| e.0)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_full_window_costs_at_most_32_bytes_an_id_whatever_their_length() {
        let mut ids = Ids::new(10_000);
        for i in 0..25_000 {
            let id = format!("{i:0>200}"); // 200-byte ids
            let d = of_id(&id);
            ids.remember(d);
            if i % 2 == 0 {
                ids.finish(d);
            }
        }
        assert_eq!(ids.order.len(), 10_000);
        let per_id = ids.heap_bytes() / 10_000;
        assert!(per_id <= 32, "{per_id} bytes per id");
    }
}
