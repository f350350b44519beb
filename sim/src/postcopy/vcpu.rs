//! The destination's vCPUs: started at the switch, they run the guest's
//! workload on the destination's RAM while it is still arriving, so their
//! accesses fault on missing pages and wait for them.
//!
//! Each write is journalled (page, slot, counter) so the destination can be
//! verified afterwards: the expected RAM is the source's, frozen at the
//! switch, with the journalled writes applied. vCPU `i` writes only slots
//! `s` with `s % vcpus == i`, so writes of different vCPUs never overlap and
//! each journal applies in its own order.
//!
//! The threads know only "a memory region and a flag": a KVM vCPU faulting
//! inside `KVM_RUN` on the same region waits the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vmig::postcopy::PostcopyDest;

use super::config::Access;
use crate::config::PAGE_SIZE;
use crate::memory::GuestRam;
use crate::prng::SplitMix64;

/// Slots of 64 bytes in a page.
pub const SLOTS: u64 = (PAGE_SIZE / 64) as u64;

/// One journalled write.
#[derive(Clone, Copy, Debug)]
pub struct Write {
    /// Page written.
    pub page: u64,
    /// 64-byte slot in the page.
    pub slot: u32,
    /// The write's counter (the record is derived from it).
    pub counter: u64,
    /// vCPU id.
    pub id: u32,
}

/// The 64-byte record a guest write stores (as the source's vCPUs do).
pub fn record(w: &Write) -> [u64; 8] {
    [w.counter, w.page, u64::from(w.id), w.counter.wrapping_mul(0x9E37_79B9), 0, 0, 0, 0]
}

/// What a destination vCPU does.
#[derive(Clone, Copy, Debug)]
pub struct DestWorkload {
    /// Writes per second of running time.
    pub rate: u64,
    /// First page of the working set.
    pub ws_start: u64,
    /// Pages in the working set.
    pub ws_pages: u64,
    /// PRNG seed.
    pub seed: u64,
    /// Access pattern.
    pub access: Access,
    /// vCPUs in the guest.
    pub vcpus: u32,
    /// The guest's write counter at the switch (moved vCPU state).
    pub counter_base: u64,
}

/// Shared by the destination's vCPUs.
#[derive(Debug, Default)]
pub struct DestGuest {
    /// Set to stop the vCPUs. Relaxed: a request; the stopper joins them.
    pub stop: AtomicBool,
    /// Writes completed. Relaxed: a statistic.
    pub writes: AtomicU64,
    /// Writes completed while memory was still arriving. Relaxed: a statistic.
    pub writes_postcopy: AtomicU64,
    /// Set once every page is placed. Relaxed: only splits the statistic.
    pub complete: AtomicBool,
}

/// Runs vCPU `id` until stopped or until the migration fails; returns its journal.
pub fn vcpu_loop(g: &DestGuest, ram: &GuestRam, pd: &PostcopyDest, id: u32, w: DestWorkload) -> Vec<Write> {
    let mut rng = SplitMix64::new(w.seed, 0xDE57 + u64::from(id));
    let mut journal = Vec::new();
    let batch = crate::guest::batch_for(w.rate);
    let per_batch = Duration::from_nanos(batch * 1_000_000_000 / w.rate.max(1));
    let share = (w.ws_pages / u64::from(w.vcpus)).max(1);
    let mut seq = (u64::from(id) * share) % w.ws_pages;
    let mut counter = w.counter_base + u64::from(id) * (1 << 40);
    let my_slots = (SLOTS / u64::from(w.vcpus)).max(1);
    let mut deadline = Instant::now();
    // Relaxed: a stop request carries no data (the stopper joins us).
    'run: while !g.stop.load(Ordering::Relaxed) {
        for _ in 0..batch {
            let page = match w.access {
                Access::Random => w.ws_start + rng.below(w.ws_pages),
                Access::Sequential => {
                    let p = w.ws_start + seq;
                    seq = (seq + 1) % w.ws_pages;
                    p
                }
            };
            counter += 1;
            let slot = (rng.below(my_slots) * u64::from(w.vcpus) + u64::from(id)) as u32;
            let wr = Write { page, slot, counter, id };
            let p = ram.page_ptr(page) as *mut u64;
            for (i, v) in record(&wr).iter().enumerate() {
                // SAFETY: slot < SLOTS, so slot*8 + i < PAGE_SIZE/8 words:
                // inside the page. Volatile: the placing threads fill guest
                // memory concurrently (module doc of `memory`). The first
                // store faults if the page has not arrived and returns once
                // it is placed.
                unsafe { std::ptr::write_volatile(p.add(slot as usize * 8 + i), *v) };
            }
            // F2 (Acquire, in is_failed): an access released by `fail` ran
            // on memory that is not the guest's: drop it and stop.
            if pd.is_failed() {
                break 'run;
            }
            journal.push(wr);
            // Relaxed: statistics.
            g.writes.fetch_add(1, Ordering::Relaxed);
            if !g.complete.load(Ordering::Relaxed) {
                g.writes_postcopy.fetch_add(1, Ordering::Relaxed);
            }
        }
        crate::guest::pace(&mut deadline, per_batch);
    }
    journal
}

/// Compares `dst` with `src` plus the journalled writes: (pages compared,
/// differing pages, first differing page).
///
/// Call only after every thread writing either RAM has stopped.
pub fn verify(src: &GuestRam, dst: &GuestRam, journals: &[Vec<Write>]) -> (u64, u64, Option<u64>) {
    let mut by_page: std::collections::HashMap<u64, Vec<&Write>> = std::collections::HashMap::new();
    for j in journals {
        for w in j {
            by_page.entry(w.page).or_default().push(w);
        }
    }
    let mut diff = 0;
    let mut first = None;
    let mut buf = vec![0u8; PAGE_SIZE];
    for p in 0..src.pages() {
        // SAFETY: the caller guarantees no thread writes either RAM now.
        let (s, d) = unsafe { (src.page_quiescent(p), dst.page_quiescent(p)) };
        let same = match by_page.get(&p) {
            None => s == d,
            Some(ws) => {
                buf.copy_from_slice(s);
                for w in ws {
                    for (i, v) in record(w).iter().enumerate() {
                        let o = w.slot as usize * 64 + i * 8;
                        buf[o..o + 8].copy_from_slice(&v.to_ne_bytes());
                    }
                }
                buf == d
            }
        };
        if !same {
            diff += 1;
            first.get_or_insert(p);
        }
    }
    (src.pages(), diff, first)
}
