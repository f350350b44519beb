//! Bitmaps of guest pages: an atomic one shared between threads (write
//! protection, the harvested dirty log) and the migration thread's private
//! one (QEMU's `RAMBlock::bmap`).

use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-size bitmap whose bits any thread may set or clear.
pub struct AtomicBitmap {
    words: Box<[AtomicU64]>,
    bits: u64,
}

impl AtomicBitmap {
    /// `bits` bits, all clear.
    pub fn new(bits: u64) -> Self {
        let words = (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        AtomicBitmap { words, bits }
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.bits
    }

    /// Whether the bitmap has no bits.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Number of words.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// Word `w` (for callers that need their own orderings).
    pub fn word(&self, w: usize) -> &AtomicU64 {
        &self.words[w]
    }

    /// Sets every bit with one read-modify-write per word, `order` on
    /// each (an RMW, unlike a store, synchronises with the RMWs before it).
    pub fn set_all(&self, order: Ordering) {
        for (w, word) in self.words.iter().enumerate() {
            word.fetch_or(mask_for_word(self.bits, w), order);
        }
    }
}

/// The valid bits of word `w` in a bitmap of `bits` bits.
fn mask_for_word(bits: u64, w: usize) -> u64 {
    let start = w as u64 * 64;
    let n = (bits - start).min(64);
    if n == 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// The migration thread's own bitmap of pages still to send, with a count.
pub struct PageBitmap {
    words: Vec<u64>,
    bits: u64,
    count: u64,
}

impl PageBitmap {
    /// `bits` bits, all clear.
    pub fn new(bits: u64) -> Self {
        PageBitmap { words: vec![0; bits.div_ceil(64) as usize], bits, count: 0 }
    }

    /// Sets every bit (QEMU ram_init_bitmaps: everything is dirty at start).
    pub fn set_all(&mut self) {
        for w in 0..self.words.len() {
            self.words[w] = mask_for_word(self.bits, w);
        }
        self.count = self.bits;
    }

    /// ORs `bits` into word `w`; returns how many bits were newly set.
    pub fn or_word(&mut self, w: usize, bits: u64) -> u64 {
        let new = bits & !self.words[w];
        self.words[w] |= bits;
        let n = u64::from(new.count_ones());
        self.count += n;
        n
    }

    /// Bits set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether bit `i` is set.
    pub fn test(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Clears the first set bit at or after `from` and returns it.
    pub fn take_next(&mut self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut w = (from / 64) as usize;
        let mut word = self.words[w] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let bit = word.trailing_zeros() as u64;
                self.words[w] &= !(1 << bit);
                self.count -= 1;
                return Some(w as u64 * 64 + bit);
            }
            w += 1;
            if w == self.words.len() {
                return None;
            }
            word = self.words[w];
        }
    }
}

/// A plain bitmap (no count), for per-page flags one thread owns.
pub struct Flags {
    words: Vec<u64>,
}

impl Flags {
    /// `bits` flags, all clear.
    pub fn new(bits: u64) -> Self {
        Flags { words: vec![0; bits.div_ceil(64) as usize] }
    }
    /// Sets flag `i`.
    pub fn set(&mut self, i: u64) {
        self.words[(i / 64) as usize] |= 1 << (i % 64);
    }
    /// Clears flag `i`.
    pub fn clear(&mut self, i: u64) {
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
    }
    /// Whether flag `i` is set.
    pub fn test(&self, i: u64) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Clears every flag.
    pub fn clear_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_bitmap_take_next_walks_and_counts() {
        let mut b = PageBitmap::new(130);
        b.set_all();
        assert_eq!(b.count(), 130);
        assert_eq!(b.take_next(0), Some(0));
        assert_eq!(b.take_next(63), Some(63));
        assert_eq!(b.take_next(129), Some(129));
        assert_eq!(b.take_next(130), None);
        assert_eq!(b.count(), 127);
        let mut n = 0;
        let mut at = 0;
        while let Some(p) = b.take_next(at) {
            at = p + 1;
            n += 1;
        }
        assert_eq!(n, 127);
        assert_eq!(b.count(), 0);
        assert_eq!(b.or_word(2, 0b11), 2);
        assert_eq!(b.or_word(2, 0b111), 1);
        assert!(b.test(130) && !b.test(131) && b.test(128));
    }

    #[test]
    fn atomic_set_all_masks_the_tail() {
        let b = AtomicBitmap::new(70);
        b.set_all(Ordering::Relaxed);
        assert_eq!(b.word(1).load(Ordering::Relaxed), 0b11_1111);
        assert_eq!(b.word(0).load(Ordering::Relaxed), u64::MAX);
    }
}
