//! The dedupe window: the ids of messages seen lately, and which of them
//! the application finished, held once for the inbox (is this message new?)
//! and the ledger (was it finished? what goes in the state file?).
//!
//! An id is remembered as an 8-byte digest, not as its text: SipHash-2-4
//! with fixed keys (stable across processes and Rust versions, since the
//! state file stores it), with the lowest bit used as the "finished" flag.
//! So an entry costs the same whatever the id's length: 8 bytes in the
//! order ring and 9 in the set (a control byte), times the tables' spare
//! room, at most 32 bytes in all (a unit test checks it).
//!
//! Two different ids share a digest with odds of about one in 2^63 per
//! pair: with a window of 10,000 ids, a new message is taken for one
//! already seen about once in 10^15 messages.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

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

/// The set's hasher: the keys are digests already, evenly spread.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this is for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // The low bit is the flag; the table's bucket comes from the low
        // bits and its tag from the high ones, so mix a little.
        self.0 = n.rotate_right(1) ^ (n >> 29);
    }
}

/// See the module documentation.
pub(crate) struct Ids {
    /// Digests, with [`FINISHED`] set once the application finished it.
    set: HashSet<u64, BuildHasherDefault<PassThrough>>,
    /// Digests (flag clear), oldest first: the first to be forgotten.
    order: VecDeque<Digest>,
    window: usize,
}

impl Ids {
    pub(crate) fn new(window: usize) -> Self {
        Ids {
            set: HashSet::default(),
            order: VecDeque::new(),
            window,
        }
    }

    /// Seen, finished or not.
    pub(crate) fn contains(&self, d: Digest) -> bool {
        self.set.contains(&d) || self.set.contains(&(d | FINISHED))
    }

    pub(crate) fn is_finished(&self, d: Digest) -> bool {
        self.set.contains(&(d | FINISHED))
    }

    /// Remembers a message as seen (a no-op if it was).
    pub(crate) fn remember(&mut self, d: Digest) {
        if !self.contains(d) {
            self.set.insert(d);
            self.push(d);
        }
    }

    /// Marks a message finished; `true` when it was not already. One that
    /// was forgotten meanwhile (the window moved on while the application
    /// held it) is remembered again, as the newest.
    pub(crate) fn finish(&mut self, d: Digest) -> bool {
        if self.set.remove(&d) {
            self.set.insert(d | FINISHED);
            return true;
        }
        if self.set.contains(&(d | FINISHED)) {
            return false;
        }
        self.set.insert(d | FINISHED);
        self.push(d);
        true
    }

    fn push(&mut self, d: Digest) {
        if self.order.capacity() == 0 {
            // The ring is as large as the window will be, once; a small
            // window does not hold a large ring.
            self.order.reserve_exact(self.window.min(1024));
        }
        self.order.push_back(d);
        while self.order.len() > self.window {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
                self.set.remove(&(old | FINISHED));
            }
        }
    }

    /// The finished ones, oldest first: what the state file keeps.
    pub(crate) fn finished(&self) -> Vec<Digest> {
        self.order
            .iter()
            .copied()
            .filter(|d| self.is_finished(*d))
            .collect()
    }

    /// Heap bytes held: the ring's capacity, and the set's buckets (its
    /// capacity is 7/8 of them), 8 bytes and a control byte each.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let buckets = (self.set.capacity() * 8 / 7 + 1).next_power_of_two();
        buckets * 9 + 16 + self.order.capacity() * 8
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
