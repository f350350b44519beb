//! Unit tests of the untyped ring, through the C API's header-cursor entry
//! points and the private cursors the typed API uses.

use std::alloc::{self, Layout};
use std::mem::size_of;
use std::ptr::{self, NonNull};

use super::*;
use crate::error::Error;
use crate::sync::{AtomicPtr, Ordering};


/// Ring memory owned by a test; destroyed on drop.
struct Owned(NonNull<RawRing>);
impl Owned {
    fn new(capacity: u32, flags: u32, start: u32) -> Self {
        Owned(RawRing::alloc_at(capacity, flags, start).unwrap())
    }
}
impl std::ops::Deref for Owned {
    type Target = RawRing;
    fn deref(&self) -> &RawRing {
        // SAFETY: live until drop.
        unsafe { self.0.as_ref() }
    }
}
impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the test is done with the ring.
        unsafe { RawRing::destroy(self.0) }
    }
}

fn p(v: usize) -> *mut () {
    ptr::without_provenance_mut(v)
}
fn nn(v: usize) -> NonNull<()> {
    NonNull::new(p(v)).unwrap()
}

const MODES: [u32; 2] = [0, FLAG_MP];

#[test]
fn bad_shapes_are_rejected() {
    for cap in [0, 1, 3, 6, 100, MAX_CAPACITY + 1, 1 << 31, u32::MAX] {
        assert!(check_shape(cap, 0).is_err(), "capacity {cap}");
        assert!(memsize(cap).is_none(), "capacity {cap}");
        assert_eq!(RawRing::alloc(cap, 0).unwrap_err(), Error::InvalidArgument("capacity must be a power of two in 2..=2^30"));
    }
    for flags in [2, 4, FLAG_OWNED, u32::MAX] {
        assert!(RawRing::alloc(4, flags).is_err(), "flags {flags:#x}");
    }
    assert!(check_shape(MIN_CAPACITY, FLAG_MP).is_ok());
    assert!(check_shape(MAX_CAPACITY, 0).is_ok());
    // The slots follow a 3-block header; the total is padded to RING_ALIGN.
    assert_eq!(memsize(2), Some(3 * RING_ALIGN + RING_ALIGN));
    assert_eq!(memsize(1024), Some(3 * RING_ALIGN + 1024 * size_of::<AtomicPtr<()>>()));
    assert_eq!(memsize(MAX_CAPACITY), Some(3 * RING_ALIGN + (1usize << 30) * size_of::<AtomicPtr<()>>()));
}

#[test]
fn init_in_checks_memory() {
    let size = memsize(8).unwrap();
    let layout = Layout::from_size_align(size + RING_ALIGN, RING_ALIGN).unwrap();
    // SAFETY: non-zero size.
    let mem = unsafe { alloc::alloc(layout) };
    assert!(!mem.is_null());
    // SAFETY: `mem` is valid for `size + RING_ALIGN` bytes; one thread.
    unsafe {
        assert!(RawRing::init_in(ptr::null_mut(), size, 8, 0).is_err());
        assert!(RawRing::init_in(mem.add(8), size, 8, 0).is_err(), "misaligned");
        assert!(RawRing::init_in(mem, size - 1, 8, 0).is_err(), "too small");
        assert!(RawRing::init_in(mem, size, 6, 0).is_err(), "bad capacity");
        assert!(RawRing::init_in(mem, size, 8, 2).is_err(), "unknown flag");
        assert!(RawRing::init_in(mem, size, 8, FLAG_OWNED).is_err(), "internal flag");
        for flags in MODES {
            let ring = RawRing::init_in(mem, size, 8, flags).unwrap();
            let handle = RawRing::from_handle(NonNull::new(mem).unwrap()).expect("live");
            assert_eq!(handle, ring);
            let r = ring.as_ref();
            assert_eq!(r.capacity(), 8);
            assert_eq!(r.is_mp(), flags == FLAG_MP);
            for v in 1..=8 {
                r.enqueue(nn(v)).unwrap();
            }
            assert_eq!(r.enqueue(nn(9)), Err(Error::Full));
            for v in 1..=8 {
                assert_eq!(r.dequeue(), Some(nn(v)));
            }
            RawRing::destroy(ring);
            // The memory is the caller's: still there, but no longer a ring.
            assert!(RawRing::from_handle(NonNull::new(mem).unwrap()).is_none());
        }
        alloc::dealloc(mem, layout);
    }
}

/// Fills and drains a ring repeatedly across the `u32` index wrap, with
/// single and burst operations of every size, checking FIFO, counts,
/// and the full/empty edges.
fn fill_drain(flags: u32, capacity: u32, start: u32) {
    let r = Owned::new(capacity, flags, start);
    let mut next_in = 1usize;
    let mut next_out = 1usize;
    let laps = if cfg!(miri) { 3 } else { 40 };
    for round in 0..laps * capacity as usize {
        let burst_in = round % (capacity as usize + 2);
        let burst_out = (round * 13 + round / 3) % (capacity as usize + 3);
        let held = next_in - next_out;
        // Enqueue `burst_in` items, as a burst or one by one.
        let items: Vec<*mut ()> = (0..burst_in).map(|i| p(next_in + i)).collect();
        let moved = if round % 2 == 0 {
            // SAFETY: single thread; items are non-NULL.
            unsafe { r.enqueue_burst(&items) as usize }
        } else {
            let mut m = 0;
            for &it in &items {
                // SAFETY: single thread.
                if unsafe { r.enqueue(NonNull::new(it).unwrap()) }.is_err() {
                    break;
                }
                m += 1;
            }
            m
        };
        assert_eq!(moved, burst_in.min(capacity as usize - held), "round {round}");
        next_in += moved;
        let held = next_in - next_out;
        assert_eq!(r.count() as usize, held);
        if held == capacity as usize {
            // SAFETY: single thread.
            assert_eq!(unsafe { r.enqueue(nn(usize::MAX)) }, Err(Error::Full));
            // SAFETY: single thread; non-NULL item.
            assert_eq!(unsafe { r.enqueue_burst(&[p(usize::MAX)]) }, 0);
        }
        // Dequeue `burst_out` items, as a burst or one by one.
        let mut out = vec![ptr::null_mut(); burst_out];
        let got = if round % 3 == 0 {
            // SAFETY: single thread.
            unsafe { r.dequeue_burst(&mut out) as usize }
        } else {
            let mut g = 0;
            while g < burst_out {
                // SAFETY: single thread.
                match unsafe { r.dequeue() } {
                    Some(it) => out[g] = it.as_ptr(),
                    None => break,
                }
                g += 1;
            }
            g
        };
        assert_eq!(got, burst_out.min(held), "round {round}");
        for &it in &out[..got] {
            assert_eq!(it.addr(), next_out);
            next_out += 1;
        }
        assert_eq!(r.count() as usize, next_in - next_out);
        if next_in == next_out {
            // SAFETY: single thread.
            assert_eq!(unsafe { r.dequeue() }, None);
            // SAFETY: single thread.
            assert_eq!(unsafe { r.dequeue_burst(&mut [ptr::null_mut(); 4]) }, 0);
        }
    }
    // The indices really crossed u32::MAX.
    let crossed = start.checked_add((next_in - 1) as u32).is_none();
    assert!(start < u32::MAX - 1000 || crossed, "test did not wrap the indices: start {start}, {} items", next_in - 1);
}

#[test]
fn fill_drain_every_edge() {
    for flags in MODES {
        for capacity in [2, 4, 8] {
            fill_drain(flags, capacity, 0);
            fill_drain(flags, capacity, u32::MAX - 2);
            fill_drain(flags, capacity, u32::MAX - capacity);
        }
    }
}

#[test]
fn bursts_are_partial_and_capped() {
    for flags in MODES {
        let r = Owned::new(4, flags, u32::MAX - 1);
        let items: Vec<*mut ()> = (1..=6).map(p).collect();
        // SAFETY: single thread; non-NULL items.
        unsafe {
            assert_eq!(r.enqueue_burst(&[]), 0);
            assert_eq!(r.enqueue_burst(&items[..1]), 1);
            assert_eq!(r.enqueue_burst(&items[1..]), 3, "only 3 free");
            assert_eq!(r.enqueue_burst(&items[4..]), 0, "full");
            let mut out = [ptr::null_mut(); 3];
            assert_eq!(r.dequeue_burst(&mut out), 3);
            assert_eq!(out, [p(1), p(2), p(3)]);
            let mut out = [ptr::null_mut(); 8];
            assert_eq!(r.dequeue_burst(&mut out), 1, "only 1 ready");
            assert_eq!(out[0], p(4));
            assert_eq!(out[1], ptr::null_mut(), "untouched beyond what was dequeued");
            assert_eq!(r.dequeue_burst(&mut []), 0);
            // A burst larger than the ring moves one ring's worth.
            let many: Vec<*mut ()> = (1..=100).map(p).collect();
            assert_eq!(r.enqueue_burst(&many), 4);
            assert_eq!(r.count(), 4);
        }
    }
}

/// A ring driven through private cursors (as the typed API does) leaves
/// the header's copies stale by laps; the header-cursor entry points
/// (the C API's) must still see the true state.
#[test]
fn header_cursors_stale_by_laps_are_reloaded() {
    for start in [0, u32::MAX - 5] {
        let r = Owned::new(4, 0, start);
        // SAFETY: single thread; this test is the ring's only producer and consumer.
        unsafe {
            let mut tx = r.producer_cursor();
            let mut rx = r.consumer_cursor();
            // Ten laps through private cursors; the header copies stay at `start`.
            for v in 1..=40 {
                r.sp_enqueue(&mut tx, nn(v)).unwrap();
                assert_eq!(r.dequeue_one(&mut rx, false), Some(nn(v)));
            }
            for v in 41..=43 {
                r.sp_enqueue(&mut tx, nn(v)).unwrap();
            }
            // Header-cursor calls: exactly 3 queued, 1 free.
            assert_eq!(r.count(), 3);
            assert_eq!(r.enqueue(nn(44)), Ok(()));
            assert_eq!(r.enqueue(nn(45)), Err(Error::Full));
            for v in 41..=44 {
                assert_eq!(r.dequeue(), Some(nn(v)));
            }
            assert_eq!(r.dequeue(), None);
        }
    }
}

/// An MP claim that fails to get room leaves the ring untouched, and a
/// claimed-but-unwritten slot reads as empty (the consumer does not spin).
#[test]
fn mp_unwritten_claim_reads_as_empty() {
    let r = Owned::new(4, FLAG_MP, 0);
    let (head, n) = r.claim_mp(2);
    assert_eq!((head, n), (0, 2));
    // SAFETY: single thread.
    unsafe {
        assert_eq!(r.dequeue(), None, "claimed, not written");
        r.slot(1).store(p(2), Ordering::Release);
        assert_eq!(r.dequeue(), None, "slot 0 still unwritten: FIFO holds");
        r.slot(0).store(p(1), Ordering::Release);
        assert_eq!(r.dequeue(), Some(nn(1)));
        assert_eq!(r.dequeue(), Some(nn(2)));
    }
}

/// Producers on several threads, one consumer; every item arrives once,
/// in per-producer order, and each burst call's items stay adjacent.
#[test]
fn mp_threads_bursts_stay_contiguous() {
    const PRODUCERS: usize = 3;
    let per = if cfg!(miri) { 200 } else { 200_000 };
    let r = Owned::new(16, FLAG_MP, u32::MAX - 100);
    // Item: producer in bits 40.., run start in bits 20..40, seq in 0..20 (+1: non-NULL).
    let pack = |prod: usize, start: usize, seq: usize| p((prod << 40 | start << 20 | seq) + 1);
    let unpack = |v: usize| ((v - 1) >> 40, ((v - 1) >> 20) & 0xf_ffff, (v - 1) & 0xf_ffff);
    std::thread::scope(|s| {
        for prod in 0..PRODUCERS {
            let r = &*r;
            s.spawn(move || {
                let mut seq = 0;
                while seq < per {
                    let len = (1 + (seq * 7 + prod) % 9).min(per - seq);
                    // Every enqueue call re-tags its items with its first seq.
                    let items: Vec<*mut ()> = (seq..seq + len).map(|q| pack(prod, seq, q)).collect();
                    // SAFETY: MP ring; non-NULL items.
                    let n = unsafe { r.enqueue_burst(&items) } as usize;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    seq += n;
                }
            });
        }
        let mut next = [0usize; PRODUCERS];
        let mut last: Option<(usize, usize)> = None;
        let mut got = 0;
        let mut out = [ptr::null_mut(); 5];
        while got < PRODUCERS * per {
            // SAFETY: the only consumer.
            let n = unsafe { r.dequeue_burst(&mut out) } as usize;
            if n == 0 {
                std::thread::yield_now();
            }
            for &it in &out[..n] {
                let (prod, start, seq) = unpack(it.addr());
                assert_eq!(seq, next[prod], "producer {prod}: lost, duplicated or reordered");
                next[prod] += 1;
                if seq != start {
                    assert_eq!(last, Some((prod, seq - 1)), "a burst was split by another producer");
                }
                last = Some((prod, seq));
                got += 1;
            }
        }
        // SAFETY: the only consumer.
        assert_eq!(unsafe { r.dequeue() }, None);
    });
}

/// One producer thread, one consumer thread, across the index wrap.
#[test]
fn sp_threads_fifo() {
    let total = if cfg!(miri) { 500 } else { 500_000 };
    let r = Owned::new(8, 0, u32::MAX - 3);
    std::thread::scope(|s| {
        let rr = &*r;
        s.spawn(move || {
            let mut v = 1;
            while v <= total {
                let items: Vec<*mut ()> = (v..(v + v % 5 + 1).min(total + 1)).map(p).collect();
                // SAFETY: the only producer; non-NULL items.
                let n = unsafe { rr.enqueue_burst(&items) } as usize;
                if n == 0 {
                    std::thread::yield_now();
                }
                v += n;
            }
        });
        let mut next = 1;
        while next <= total {
            // SAFETY: the only consumer.
            match unsafe { r.dequeue() } {
                Some(it) => {
                    assert_eq!(it.as_ptr().addr(), next);
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
    });
}

/// The SP bulk copies (`bulk.rs`): partial bursts, bursts that cross the
/// slot array's end (two copies) and the `u32` index wrap, several laps,
/// FIFO throughout; under Miri also the plain accesses to the slots.
#[test]
fn sp_bulk_copies_cross_the_wrap() {
    for start in [0, u32::MAX - 5] {
        let r = Owned::new(8, 0, start);
        let mut tx = r.fresh_producer_cursor();
        let mut rx = r.fresh_consumer_cursor();
        let (mut next_in, mut next_out) = (1usize, 1usize);
        for round in 0..60usize {
            let want = 1 + round % 11;
            let items: Vec<*mut ()> = (next_in..next_in + want).map(p).collect();
            let queued = (next_in - next_out) as u32;
            // SAFETY: SP ring, this test is its only producer, `tx` its cursor; non-NULL items.
            let n = unsafe { r.sp_enqueue_copy(&mut tx, &items) };
            assert_eq!(n, (want as u32).min(8 - queued), "start {start} round {round}");
            next_in += n as usize;
            let mut out = vec![ptr::null_mut(); 1 + round % 7];
            // SAFETY: the only consumer, `rx` its cursor.
            let m = unsafe { r.sp_dequeue_copy(&mut rx, &mut out) } as usize;
            assert_eq!(m, out.len().min(next_in - next_out));
            for o in &out[..m] {
                assert_eq!(o.addr(), next_out);
                next_out += 1;
            }
            assert!(out[m..].iter().all(|o| o.is_null()), "written beyond the count");
        }
        let mut out = [ptr::null_mut(); 8];
        // SAFETY: as above.
        let m = unsafe { r.sp_dequeue_copy(&mut rx, &mut out) } as usize;
        assert_eq!(next_out + m, next_in);
        // The per-call API agrees with the handles' cursors.
        assert_eq!(r.count(), 0);
        // SAFETY: the only producer now (the cursor above is dropped).
        unsafe { r.enqueue(nn(99)).unwrap() };
        // SAFETY: the only consumer.
        assert_eq!(unsafe { r.dequeue() }, Some(nn(99)));
    }
}

/// References and roles (what C handles hold): the last reference tears
/// the ring down (Miri reports a leak or a use after free otherwise), and
/// a role is held by one handle at a time.
#[test]
fn last_reference_frees_and_roles_are_exclusive() {
    let r = RawRing::alloc(4, 0).unwrap();
    // SAFETY: live until the last `release_ref` below.
    let ring = unsafe { r.as_ref() };
    ring.acquire_ref().unwrap();
    ring.acquire_ref().unwrap();
    assert!(ring.claim_role(ROLE_CONSUMER));
    assert!(!ring.claim_role(ROLE_CONSUMER), "second consumer");
    assert!(ring.claim_role(ROLE_SP_PRODUCER));
    ring.release_role(ROLE_CONSUMER);
    assert!(ring.claim_role(ROLE_CONSUMER), "the role came back");
    assert!(!ring.ring_handle_freed());
    assert!(ring.claim_role(ROLE_RING_FREED));
    assert!(ring.ring_handle_freed());
    // SAFETY: three references taken (alloc's and two), three dropped; the
    // ring is not used after the last.
    unsafe {
        RawRing::release_ref(r);
        RawRing::release_ref(r);
        RawRing::release_ref(r);
    }
}
