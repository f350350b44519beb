//! Guest RAM: an anonymous mapping shared by vCPU threads (which write it),
//! the migration thread and compression workers (which read it while it is
//! being written) and, on the destination, the stream parser and
//! decompression workers (which fill it).
//!
//! Like every VMM (rust-vmm's vm-memory uses volatile accessors for the same
//! reason), the simulator never forms a Rust reference to guest memory while
//! another thread may write it: pages are read and written through raw
//! pointers with volatile accesses only (`vmig::guest_mem`, the helpers the
//! library's own workers use; the vCPUs' stores are volatile too), and a
//! page read racing a guest write may see a torn page — exactly what a real
//! migration sees, and why the page is then dirty again and resent. Slices
//! are formed only once every writer has stopped
//! ([`GuestRam::page_quiescent`]).

use memmap2::{MmapMut, MmapOptions};

use crate::config::PAGE_SIZE;

/// One guest's RAM.
pub struct GuestRam {
    map: MmapMut,
    base: *mut u8,
    pages: u64,
}

// SAFETY: the mapping is plain memory owned by this struct; all concurrent
// access goes through raw pointers under the rules in the module doc.
unsafe impl Send for GuestRam {}
// SAFETY: as above; `&GuestRam` hands out only raw pointers and
// `page_quiescent`, whose caller promises there is no concurrent writer.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Maps `pages` zero-filled pages (anonymous, private, lazily backed;
    /// MAP_NORESERVE, so a 64 GiB guest that touches only part of it maps
    /// on a 24 GiB machine, like an idle large guest's memory).
    pub fn new(pages: u64) -> std::io::Result<Self> {
        let len = pages as usize * PAGE_SIZE;
        let mut map = MmapOptions::new().len(len).no_reserve_swap().map_anon()?;
        let base = map.as_mut_ptr();
        Ok(GuestRam { map, base, pages })
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Start of page `page`. Panics if out of range.
    pub fn page_ptr(&self, page: u64) -> *mut u8 {
        assert!(page < self.pages, "page {page} out of range");
        // SAFETY: page < pages, so the offset stays inside the mapping.
        unsafe { self.base.add(page as usize * PAGE_SIZE) }
    }

    /// Copies page `page` into `out` (a racing guest write may tear it; see
    /// the module doc).
    pub fn read_page(&self, page: u64, out: &mut [u8; PAGE_SIZE]) {
        let src = self.page_ptr(page);
        // SAFETY: src is PAGE_SIZE bytes inside the mapping; `out` is a
        // distinct buffer. A concurrent writer only changes bytes, never the
        // mapping (it lives as long as `self`); the loads are volatile.
        unsafe { vmig::guest_mem::copy_from_guest(src, out) };
    }

    /// Overwrites page `page` with `data`.
    pub fn write_page(&self, page: u64, data: &[u8; PAGE_SIZE]) {
        let dst = self.page_ptr(page);
        // SAFETY: dst is PAGE_SIZE bytes inside the mapping; `data` is a
        // distinct buffer. Volatile stores: other threads may read the page.
        unsafe { vmig::guest_mem::copy_to_guest(dst, data) };
    }

    /// Fills page `page` with `byte`.
    pub fn fill_page(&self, page: u64, byte: u8) {
        // SAFETY: PAGE_SIZE bytes inside the mapping; volatile stores.
        unsafe { vmig::guest_mem::fill_guest(self.page_ptr(page), PAGE_SIZE, byte) };
    }

    /// Whether page `page` is all zero (read with the same caveat as
    /// [`read_page`](Self::read_page)).
    pub fn page_is_zero(&self, page: u64) -> bool {
        let p = self.page_ptr(page) as *const u64;
        // SAFETY: the page is PAGE_SIZE bytes, 8-aligned (the mapping is
        // page-aligned); volatile reads because a vCPU may write it now.
        (0..PAGE_SIZE / 8).all(|i| unsafe { std::ptr::read_volatile(p.add(i)) } == 0)
    }

    /// Page `page` as a slice.
    ///
    /// # Safety
    /// No thread writes this page while the slice lives (every vCPU and
    /// every destination writer has stopped).
    pub unsafe fn page_quiescent(&self, page: u64) -> &[u8] {
        // SAFETY: in bounds (page_ptr checks); no writer per the contract.
        unsafe { std::slice::from_raw_parts(self.page_ptr(page), PAGE_SIZE) }
    }

    /// The mapping length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never: `new` needs at least a page).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Whether `a` is all zero (QEMU's buffer_is_zero).
pub fn is_zero(a: &[u8]) -> bool {
    let (pre, words, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to keeps bounds.
        unsafe { a.align_to::<u64>() }
    };
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}
