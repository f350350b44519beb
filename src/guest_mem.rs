//! Copying guest memory that a running vCPU may write at the same time.
//!
//! A plain copy (`ptr::copy_nonoverlapping`, a slice) of memory another
//! thread writes is a data race, undefined behaviour in Rust: the compiler
//! may assume the bytes do not change under it (re-read them, split or
//! merge the loads). rust-vmm's vm-memory therefore touches guest memory
//! only with volatile accesses (its `volatile_memory.rs` module doc), and
//! so does vmig: the compression workers read the pages they compress with
//! [`copy_from_guest`], the decompression workers write pages with
//! [`copy_to_guest`]. VMMs written in Rust can use the same helpers.
//!
//! Each aligned 8-byte word is one volatile `u64` access (the bytes before
//! the first aligned word and after the last one are single-byte volatile
//! accesses), so a racing guest write can tear the copy only between
//! words, as with vm-memory, and a torn page is what a live migration
//! expects anyway: the page is dirty again and will be sent again. The cost
//! against `memcpy` is in docs/pool.md ("Volatile page reads").

use std::ptr;

/// Word size of the volatile accesses.
const WORD: usize = std::mem::size_of::<u64>();

/// Copies `dst.len()` bytes of guest memory at `src` into `dst` with
/// volatile loads, one per aligned `u64` word.
///
/// # Safety
/// `src` is valid for reads of `dst.len()` bytes for the whole call (the
/// mapping stays; other threads may write the bytes, never unmap them) and
/// does not overlap `dst`.
///
/// ```
/// let guest = vec![7u64; 512]; // a page of guest RAM
/// let mut copy = [0u8; 4096];
/// // SAFETY: `guest` is 4096 readable bytes that outlive the call.
/// unsafe { vmig::guest_mem::copy_from_guest(guest.as_ptr().cast(), &mut copy) };
/// assert!(copy.chunks(8).all(|w| w == 7u64.to_ne_bytes()));
/// ```
#[inline]
pub unsafe fn copy_from_guest(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = src.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let d = dst.as_mut_ptr();
    // SAFETY: every offset below is < len, inside `src` (contract) and
    // `dst`; `src + head` is 8-aligned, so the word loads are aligned.
    // `dst` is a distinct Rust buffer: plain (unaligned) stores.
    unsafe {
        for i in 0..head {
            d.add(i).write(ptr::read_volatile(src.add(i)));
        }
        let s = src.add(head).cast::<u64>();
        let dw = d.add(head);
        for w in 0..words {
            dw.add(w * WORD).cast::<u64>().write_unaligned(ptr::read_volatile(s.add(w)));
        }
        for i in head + words * WORD..len {
            d.add(i).write(ptr::read_volatile(src.add(i)));
        }
    }
}

/// Copies `src` into guest memory at `dst` with volatile stores, one per
/// aligned `u64` word.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes for the whole call and
/// does not overlap `src`.
#[inline]
pub unsafe fn copy_to_guest(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let head = dst.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let s = src.as_ptr();
    // SAFETY: every offset below is < len, inside `dst` (contract) and
    // `src`; `dst + head` is 8-aligned, so the word stores are aligned.
    unsafe {
        for i in 0..head {
            ptr::write_volatile(dst.add(i), s.add(i).read());
        }
        let dw = dst.add(head).cast::<u64>();
        let sw = s.add(head);
        for w in 0..words {
            ptr::write_volatile(dw.add(w), sw.add(w * WORD).cast::<u64>().read_unaligned());
        }
        for i in head + words * WORD..len {
            ptr::write_volatile(dst.add(i), s.add(i).read());
        }
    }
}

/// Fills `len` bytes of guest memory at `dst` with `byte`, with volatile
/// stores, one per aligned `u64` word.
///
/// # Safety
/// `dst` is valid for writes of `len` bytes for the whole call.
pub unsafe fn fill_guest(dst: *mut u8, len: usize, byte: u8) {
    let head = dst.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    let pattern = u64::from_ne_bytes([byte; WORD]);
    // SAFETY: every offset below is < len, inside `dst` (contract);
    // `dst + head` is 8-aligned.
    unsafe {
        for i in 0..head {
            ptr::write_volatile(dst.add(i), byte);
        }
        let dw = dst.add(head).cast::<u64>();
        for w in 0..words {
            ptr::write_volatile(dw.add(w), pattern);
        }
        for i in head + words * WORD..len {
            ptr::write_volatile(dst.add(i), byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment of source and destination and lengths around the
    /// word size and a page: the copy equals the bytes. Small enough for
    /// Miri (`cargo +nightly miri test --lib guest_mem`).
    #[test]
    fn copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..4096 + 32).map(|i| (i * 7 + 3) as u8).collect();
        let lens: &[usize] = if cfg!(miri) { &[0, 1, 7, 8, 9, 23, 64] } else { &[0, 1, 7, 8, 9, 23, 64, 4095, 4096] };
        for off in 0..WORD {
            for &len in lens {
                let mut out = vec![0u8; len + WORD];
                // SAFETY: src[off..off + len] is in bounds and readable.
                unsafe { copy_from_guest(src.as_ptr().add(off), &mut out[off % 3..off % 3 + len]) };
                assert_eq!(&out[off % 3..off % 3 + len], &src[off..off + len], "from: off {off} len {len}");

                let mut guest = vec![0u8; len + WORD];
                // SAFETY: guest[off..off + len] is in bounds and writable.
                unsafe { copy_to_guest(guest.as_mut_ptr().add(off), &src[3..3 + len]) };
                assert_eq!(&guest[off..off + len], &src[3..3 + len], "to: off {off} len {len}");
                assert!(guest[..off].iter().chain(&guest[off + len..]).all(|&b| b == 0), "to: wrote outside");

                // SAFETY: as above.
                unsafe { fill_guest(guest.as_mut_ptr().add(off), len, 0xa5) };
                assert!(guest[off..off + len].iter().all(|&b| b == 0xa5), "fill: off {off} len {len}");
                assert!(guest[..off].iter().chain(&guest[off + len..]).all(|&b| b == 0), "fill: wrote outside");
            }
        }
    }
}
