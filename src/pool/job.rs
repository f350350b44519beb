//! What travels through the rings: one preallocated slot per page in flight,
//! and the in-flight table that keeps same-key submissions in order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One page in flight. Boxed once at pool creation and recycled, so the hot
/// path never allocates: the box moves submitter -> worker ring -> worker ->
/// done ring -> submitter (or the caller, as a result) -> free list.
#[derive(Debug)]
pub(crate) struct Slot<J> {
    /// The routing key (compression: the caller's key; decompression: the
    /// destination address).
    pub key: u64,
    /// Index of the worker the slot was queued on.
    pub worker: u32,
    /// The engine-specific payload.
    pub job: J,
}

/// Keys in flight -> (worker holding them, submissions not yet collected).
///
/// **Single-thread rule**: only the submitting thread touches the table
/// (insert at submit, decrement at collection), so it needs no lock and no
/// atomics. Workers never see it.
///
/// Capacity is reserved for every slot in flight at creation, so inserts
/// never reallocate.
#[derive(Debug)]
pub(crate) struct RouteTable {
    map: HashMap<u64, Route, BuildHasherDefault<KeyHasher>>,
}

#[derive(Debug, Clone, Copy)]
struct Route {
    worker: u32,
    pending: u32,
}

impl RouteTable {
    pub fn with_capacity(n: usize) -> crate::Result<Self> {
        let mut map = HashMap::default();
        map.try_reserve(n).map_err(|_| crate::Error::OutOfMemory)?;
        Ok(RouteTable { map })
    }

    /// The worker still holding an earlier submission of `key`, if any.
    #[inline]
    pub fn worker_of(&self, key: u64) -> Option<u32> {
        self.map.get(&key).map(|r| r.worker)
    }

    /// Records a submission of `key` queued on `worker`.
    #[inline]
    pub fn add(&mut self, key: u64, worker: u32) {
        self.map
            .entry(key)
            .and_modify(|r| {
                debug_assert_eq!(r.worker, worker, "same key routed to two workers");
                r.pending += 1;
            })
            .or_insert(Route { worker, pending: 1 });
    }

    /// Records that one submission of `key` was collected.
    #[inline]
    pub fn remove(&mut self, key: u64) {
        if let Some(r) = self.map.get_mut(&key) {
            r.pending -= 1;
            if r.pending == 0 {
                self.map.remove(&key);
            }
        } else {
            debug_assert!(false, "collected a key that was not in flight");
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Hash for `u64` keys (guest addresses): one multiply by 2^64/phi
/// (Fibonacci hashing, Knuth 6.4), then the high half folded into the low
/// half. SipHash would cost ~20 ns a page and its DoS resistance buys
/// nothing: keys come from the VMM, not the network.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the low bits as the bucket and the top 7 bits as
        // the tag. A multiply carries input bits only upwards, so the low 12
        // bits of a page-aligned key's product are zero (QEMU's keys are
        // `block->offset + offset`, DecompPool's are `dest` addresses):
        // every key would start probing at the same group. The top half is
        // where the page number is mixed in; xor it into the low half.
        self.0 ^ (self.0 >> 32)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Page-aligned keys, as QEMU and DecompPool pass them, spread over a
    /// table's buckets (low bits) and tags (top 7 bits).
    #[test]
    fn page_aligned_keys_spread_over_buckets() {
        let build = BuildHasherDefault::<KeyHasher>::default();
        for (base, stride) in [(0u64, 4096u64), (0x7f12_3456_7000, 4096), (1 << 32, 2 << 20)] {
            let hashes: Vec<u64> = (0..1024).map(|i| build.hash_one(base + i * stride)).collect();
            for buckets in [64u64, 1024] {
                let mut used = vec![false; buckets as usize];
                for h in &hashes {
                    used[(h & (buckets - 1)) as usize] = true;
                }
                let n = used.iter().filter(|&&u| u).count() as u64;
                // 1024 random keys fill ~63% of 1024 buckets, all of 64.
                assert!(n >= buckets / 2, "stride {stride:#x}: {n} of {buckets} buckets used");
            }
            let mut tags = [false; 128];
            for h in &hashes {
                tags[(h >> 57) as usize] = true;
            }
            assert!(tags.iter().filter(|&&t| t).count() >= 64, "stride {stride:#x}: tags collide");
        }
    }

    #[test]
    fn routes_count_down() {
        let mut t = RouteTable::with_capacity(8).unwrap();
        assert_eq!(t.worker_of(7), None);
        t.add(7, 1);
        t.add(7, 1);
        t.add(9, 0);
        assert_eq!(t.worker_of(7), Some(1));
        t.remove(7);
        assert_eq!(t.worker_of(7), Some(1));
        t.remove(7);
        assert_eq!(t.worker_of(7), None);
        assert_eq!(t.len(), 1);
    }
}
