//! The untyped ring: a header followed by `capacity` pointer slots.
//!
//! # Algorithm
//!
//! The lineage is `kfifo` (free-running indices masked by `capacity - 1`),
//! DPDK `rte_ring` (multi-producer head claim by compare-and-swap, with the
//! free count `capacity + cons - prod`), Linux `ptr_ring` (a NULL slot is an
//! empty slot) and rtrb (each side caches the other side's index), as
//! combined in the 2018 QEMU RFC "migration: introduce lockless ring buffer"
//! (`shared/seeds/lockless-multithread-compression.txt`).
//!
//! * `prod` is the next index a producer claims, `cons` the next index the
//!   consumer reads. Both are `u32` and run freely (they wrap at 2^32); a
//!   slot is `slots[index & mask]`. `prod - cons` (wrapping) is the number of
//!   claimed, unconsumed slots, at most `capacity` (≤ 2^30, so the
//!   difference is never ambiguous).
//! * Each side keeps a cached copy of the other side's index (a [`Cursor`])
//!   and reloads the real one only when the copy says "full" (producer) or
//!   "empty" (consumer), as rtrb does. A stale copy only under-estimates
//!   free space or ready items, never over-estimates it, so it is always
//!   safe; it saves pulling the other side's cache line on every operation.
//!   The typed API keeps the cursors in its handles, so the single-producer
//!   fast path reads no shared memory but the slot it uses; the C API, which
//!   has no per-thread state, keeps them in the header (`cons_cache` next to
//!   `prod`, `prod_cache` next to `cons`) and loads and stores them around
//!   each call. Multiple producers share `cons_cache` (R4/A4 below).
//!
//! ## Single producer (flags 0): an index hand-off
//!
//! The producer stores items into `[prod, prod + n)`, then publishes
//! `prod + n`; the consumer reads up to `prod`, then publishes `cons`. Slots
//! are written only by the producer; the consumer never writes them (no
//! cache line of slots bounces back to the producer).
//!
//! ## Multiple producers (`FLAG_MP`): a slot hand-off
//!
//! Producers prove space against `cons` and claim `[head, head + n)` with a
//! CAS on `prod`, then store their items. `prod` therefore says what is
//! claimed, not what is written, so the consumer does not read it: a slot
//! holds either NULL (empty) or an item, and the consumer takes
//! `slots[cons & mask]` if it is non-NULL, NULLs it and publishes `cons`.
//! If a producer has claimed a slot but not yet stored into it, the consumer
//! sees NULL and reports "empty" instead of spinning (DPDK and the RFC wait
//! for the slower producer; on a 2-core host that producer may be the
//! preempted thread). Items appear in claim order, which gives per-producer
//! FIFO, and a burst's claim is contiguous, so its items stay adjacent.
//!
//! The claimed slots are NULL: every index `j` in `[head, head + n)` has
//! `j - capacity < cons` for the `cons` the producer read, so the consumer
//! has taken and NULLed the item of the previous lap, and (R3/A3 below) that
//! NULL store happens before the producer's item store.
//!
//! A producer preempted between loading `prod` and its CAS for exactly 2^32
//! enqueues could succeed with a stale `cons` (ABA on a 32-bit index); DPDK
//! accepts the same bound.
//!
//! A producer that loses the CAS backs off exponentially (`CLAIM_SPIN_LIMIT`)
//! before retrying. Every enqueue costs one locked instruction, and on x86
//! it waits for the producer's previous slot store to reach its cache; when
//! the consumer is polling that very slot, that is one cache-line transfer
//! per item. crossbeam's `ArrayQueue` pays the same (a CAS and a stamp
//! store per item), so the two are at par when both producers share a CPU,
//! and vmig is ahead when they run on different CPUs (docs/ring.md).
//!
//! # Memory ordering (labels pair a Release with its Acquire)
//!
//! * R1 (MP producer stores the item, Release) pairs with A1 (MP consumer
//!   loads the slot, Acquire): what the producer wrote before enqueueing is
//!   visible to the consumer after dequeueing.
//! * R5 (SP producer publishes `prod`, Release) pairs with A5 (SP consumer
//!   reloads `prod`, Acquire): the same for the single-producer ring, whose
//!   slot accesses are then Relaxed.
//! * R3 (consumer publishes `cons`, Release) pairs with A3 (producer reloads
//!   `cons`, Acquire): the consumer's reads (SP) or NULL stores (MP) of the
//!   freed slots happen before a producer stores into them again.
//! * R4 (MP producer refreshes `cons_cache`, Release) pairs with A4 (MP
//!   producer loads `cons_cache`, Acquire): a producer that uses another
//!   producer's copy of `cons` inherits that producer's A3.

use std::alloc::{self, Layout};
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::sync::{AtomicPtr, AtomicU32, Ordering};

/// Smallest capacity: a ring of one slot cannot tell "empty" from "one item
/// being written" in the multi-producer case without extra state.
pub const MIN_CAPACITY: u32 = 2;
/// Largest capacity. `prod - cons` must stay unambiguous in a `u32`, and
/// 2^30 slots (8 GiB of pointers) is beyond any migration use.
pub const MAX_CAPACITY: u32 = 1 << 30;
/// Ring flag: several threads may enqueue concurrently.
pub const FLAG_MP: u32 = 1;
/// Flags a caller may pass.
pub const PUBLIC_FLAGS: u32 = FLAG_MP;
/// Internal flag: the memory was allocated by [`RawRing::alloc`].
const FLAG_OWNED: u32 = 1 << 31;
/// Marks initialised ring memory ("vmig" in ASCII); cleared by `destroy`, so
/// a ring laid out with `init_in` and then freed is rejected if used again.
const MAGIC: u32 = 0x766d_6967;

/// Alignment of ring memory. The header puts the producer's and the
/// consumer's indices on separate [`CachePadded`] blocks, 128 bytes on
/// x86-64 because the adjacent-line prefetcher pulls cache lines in pairs
/// (crossbeam-utils' reasoning).
pub const RING_ALIGN: usize = align_of::<Header>();

/// The producers' cache line.
#[repr(C)]
struct ProdSide {
    /// Next index to claim. Written by producers only.
    prod: AtomicU32,
    /// A value `cons` had; written by producers only (rtrb's cached index).
    cons_cache: AtomicU32,
}

/// The consumer's cache line.
#[repr(C)]
struct ConsSide {
    /// Next index to consume. Written by the consumer only.
    cons: AtomicU32,
    /// SP rings: a value `prod` had; used by the consumer only.
    prod_cache: AtomicU32,
}

/// Ring header, at the start of the ring memory.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`] while the ring is live. Written only by init and destroy.
    magic: u32,
    /// [`FLAG_MP`] and [`FLAG_OWNED`]; constant after init.
    flags: u32,
    /// Number of slots, a power of two; constant after init.
    capacity: u32,
    prod: CachePadded<ProdSide>,
    cons: CachePadded<ConsSide>,
}

/// A ring: the header and its slots in one allocation.
///
/// A dynamically sized type, so a `&RawRing` covers the slots too (a
/// reference to the header alone would not give access to the memory after
/// it: Miri's Stacked Borrows rejects that, and so does the language).
#[repr(C)]
pub struct RawRing {
    hdr: Header,
    /// NULL or an item (MP); items between `cons` and `prod` (SP).
    slots: [AtomicPtr<()>],
}

// The slots follow the header without padding (memsize relies on it).
const _: () = assert!(size_of::<Header>() % align_of::<AtomicPtr<()>>() == 0);

/// One side's private copy of the ring indices, as rtrb keeps it in its
/// handles: `own` is this side's index (exact: only this side moves it),
/// `peer` a value the other side's index had (SP only; an MP consumer does
/// not read `prod`).
///
/// The typed API keeps each side's cursor in its handle, so the fast path
/// touches no shared memory but the slots and the one index it publishes.
/// The C API has no per-thread state: its cursors live in the ring header
/// (`prod`/`cons_cache` and `cons`/`prod_cache`) and are loaded and stored
/// back around each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    own: u32,
    peer: u32,
}

/// Backoff after a producer loses the CAS on `prod` to another producer:
/// 1, 2, 4, … `1 << CLAIM_SPIN_LIMIT` spin-loop hints. Retrying at once
/// pulls the contended cache line back before the winner has stored its
/// slot. The limit is crossbeam-utils' `Backoff` spin limit; with it the
/// 2-producer benchmark (`cargo bench --bench ring -- mpsc`) moved from
/// 25 to 31 Mitems/s (median of 7, unpinned) against a single hint per
/// retry. Under loom one hint (a yield) per retry keeps the models small.
const CLAIM_SPIN_LIMIT: u32 = if cfg!(vmig_loom) { 0 } else { 6 };

struct ClaimBackoff(u32);

impl ClaimBackoff {
    fn new() -> Self {
        ClaimBackoff(0)
    }

    #[inline]
    // Under loom the limit is 0 and the `min` a no-op, on purpose.
    #[cfg_attr(vmig_loom, allow(clippy::unnecessary_min_or_max))]
    fn spin(&mut self) {
        for _ in 0..1u32 << self.0 {
            crate::sync::spin_loop();
        }
        self.0 = (self.0 + 1).min(CLAIM_SPIN_LIMIT);
    }
}

/// Whether an argument pair is a valid ring shape.
pub fn check_shape(capacity: u32, flags: u32) -> Result<()> {
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) || !capacity.is_power_of_two() {
        return Err(Error::InvalidArgument("capacity must be a power of two in 2..=2^30"));
    }
    if flags & !PUBLIC_FLAGS != 0 {
        return Err(Error::InvalidArgument("unknown ring flags"));
    }
    Ok(())
}

/// Layout of a ring of `capacity` slots: what `size_of_val` gives for the
/// `RawRing` (header, slots, padding to [`RING_ALIGN`]).
fn layout(capacity: u32) -> Option<Layout> {
    let slots = Layout::array::<AtomicPtr<()>>(capacity as usize).ok()?;
    let (layout, _) = Layout::new::<Header>().extend(slots).ok()?;
    Some(layout.pad_to_align())
}

/// Bytes needed for a ring of `capacity` slots (header included), or `None`
/// for an invalid capacity.
pub fn memsize(capacity: u32) -> Option<usize> {
    check_shape(capacity, 0).ok()?;
    layout(capacity).map(|l| l.size())
}

/// Free slots given a producer index and a value `cons` had, or `None` when
/// the pair is inconsistent (`head` older than `tail`, or `tail` more than a
/// lap behind `head`): then the caller reloads.
#[inline]
fn free_slots(capacity: u32, head: u32, tail: u32) -> Option<u32> {
    capacity.checked_sub(head.wrapping_sub(tail))
}

impl RawRing {
    /// Turns a pointer to ring memory into a (fat) ring pointer.
    fn from_raw_parts(mem: NonNull<u8>, capacity: u32) -> NonNull<RawRing> {
        let slots = ptr::slice_from_raw_parts_mut(mem.as_ptr().cast::<AtomicPtr<()>>(), capacity as usize);
        // SAFETY: `slots` is derived from a non-NULL pointer. The cast keeps
        // the slice length as the length of RawRing's slot tail.
        unsafe { NonNull::new_unchecked(slots as *mut RawRing) }
    }

    /// Allocates and initialises a ring on the heap.
    pub fn alloc(capacity: u32, flags: u32) -> Result<NonNull<RawRing>> {
        Self::alloc_at(capacity, flags, 0)
    }

    /// As [`RawRing::alloc`], with `prod` and `cons` starting at `start`
    /// instead of 0 (tests start near `u32::MAX` to cross the index wrap).
    pub(crate) fn alloc_at(capacity: u32, flags: u32, start: u32) -> Result<NonNull<RawRing>> {
        check_shape(capacity, flags)?;
        let layout = layout(capacity).ok_or(Error::InvalidArgument("capacity"))?;
        // SAFETY: `layout` has a non-zero size (the header alone is 384 bytes).
        let mem = unsafe { alloc::alloc(layout) };
        let Some(mem) = NonNull::new(mem) else {
            return Err(Error::OutOfMemory);
        };
        // SAFETY: `mem` is a fresh allocation of `memsize(capacity)` bytes
        // aligned to RING_ALIGN, exactly what `init_at` needs.
        Ok(unsafe { Self::init_at(mem, capacity, flags | FLAG_OWNED, start) })
    }

    /// Lays a ring into caller memory (`vmig_ring_init`).
    ///
    /// # Safety
    /// `mem` is NULL or valid for writes of `size` bytes, and stays valid,
    /// and is not accessed other than through the ring, for as long as the
    /// ring is used.
    pub unsafe fn init_in(mem: *mut u8, size: usize, capacity: u32, flags: u32) -> Result<NonNull<RawRing>> {
        check_shape(capacity, flags)?;
        let need = memsize(capacity).ok_or(Error::InvalidArgument("capacity"))?;
        let mem = NonNull::new(mem).ok_or(Error::InvalidArgument("mem is NULL"))?;
        if size < need {
            return Err(Error::InvalidArgument("size is smaller than vmig_ring_memsize(capacity)"));
        }
        if mem.as_ptr().align_offset(RING_ALIGN) != 0 {
            return Err(Error::InvalidArgument("mem is not aligned to VMIG_RING_ALIGN"));
        }
        // SAFETY: checked size and alignment above; validity is the caller's
        // contract.
        Ok(unsafe { Self::init_at(mem, capacity, flags, 0) })
    }

    /// # Safety
    /// `mem` is valid for writes of `memsize(capacity)` bytes, aligned to
    /// RING_ALIGN, and `capacity` passed `check_shape`.
    unsafe fn init_at(mem: NonNull<u8>, capacity: u32, flags: u32, start: u32) -> NonNull<RawRing> {
        let header = Header {
            magic: MAGIC,
            flags,
            capacity,
            prod: CachePadded::new(ProdSide { prod: AtomicU32::new(start), cons_cache: AtomicU32::new(start) }),
            cons: CachePadded::new(ConsSide { cons: AtomicU32::new(start), prod_cache: AtomicU32::new(start) }),
        };
        let ring = Self::from_raw_parts(mem, capacity);
        // SAFETY: per the contract, `mem` is valid and aligned for the header
        // and the slots that follow it; `ptr::write` does not read the old,
        // uninitialised contents. The slot pointers are derived from `mem`.
        unsafe {
            ptr::write(mem.as_ptr().cast::<Header>(), header);
            let slots = ptr::addr_of_mut!((*ring.as_ptr()).slots).cast::<AtomicPtr<()>>();
            for i in 0..capacity as usize {
                ptr::write(slots.add(i), AtomicPtr::new(ptr::null_mut()));
            }
        }
        ring
    }

    /// Checks a pointer handed in through the C API: the (fat) pointer to a
    /// live ring, or `None`. The result keeps `mem`'s provenance, so it may
    /// be passed to [`RawRing::destroy`].
    ///
    /// # Safety
    /// `mem` points at memory that `alloc` or `init_in` initialised (its
    /// header is readable).
    pub unsafe fn from_handle(mem: NonNull<u8>) -> Option<NonNull<RawRing>> {
        // SAFETY: the header is readable per the contract; `magic` and
        // `capacity` are written only by init and destroy, which do not run
        // concurrently with users of the ring.
        let (magic, capacity) = unsafe {
            let hdr = mem.cast::<Header>().as_ptr();
            ((*hdr).magic, (*hdr).capacity)
        };
        (magic == MAGIC).then(|| Self::from_raw_parts(mem, capacity))
    }

    /// Tears a ring down: drops its atomics and, for a ring from
    /// [`RawRing::alloc`], frees the memory. Items still queued are not
    /// touched (they are the caller's; drain first if they own memory).
    ///
    /// # Safety
    /// `ring` came from `alloc` or `init_in`, is live, and no other thread
    /// uses it now or later.
    pub unsafe fn destroy(ring: NonNull<RawRing>) {
        // SAFETY: the caller guarantees exclusive access to a live ring.
        unsafe {
            let r = ring.as_ptr();
            let capacity = (*r).hdr.capacity;
            let owned = (*r).hdr.flags & FLAG_OWNED != 0;
            // Atomics have no drop glue in std; loom's do (its model tracks them).
            ptr::drop_in_place(ptr::addr_of_mut!((*r).slots));
            ptr::drop_in_place(ptr::addr_of_mut!((*r).hdr.prod));
            ptr::drop_in_place(ptr::addr_of_mut!((*r).hdr.cons));
            (*r).hdr.magic = 0;
            if owned {
                let layout = layout(capacity).expect("a live ring has a valid capacity");
                alloc::dealloc(r.cast(), layout);
            }
        }
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        // The slice length is in the fat pointer: no load from the header.
        // `init_at` made it `capacity` (at most 2^30, so it fits).
        self.slots.len() as u32
    }

    /// Whether the ring accepts concurrent producers.
    pub fn is_mp(&self) -> bool {
        self.hdr.flags & FLAG_MP != 0
    }

    #[inline]
    fn slot(&self, index: u32) -> &AtomicPtr<()> {
        // `capacity` is a power of two, so `capacity - 1` is the index mask.
        let i = (index & (self.capacity() - 1)) as usize;
        debug_assert!(i < self.slots.len());
        // SAFETY: `slots` has `capacity` elements and `index & mask < capacity`.
        unsafe { self.slots.get_unchecked(i) }
    }

    // ---- Cursors: where each side keeps its private copy of the indices ----

    /// The producer's cursor as the ring header stores it (the C API keeps
    /// no per-thread state, so its cursors live in the ring).
    #[inline]
    pub fn producer_cursor(&self) -> Cursor {
        let side = &self.hdr.prod;
        // Relaxed: in SP mode only the producer writes `prod` and
        // `cons_cache`; `peer` is only a hint (`sp_room` reloads `cons` with
        // A3 before trusting more room than it shows).
        Cursor { own: side.prod.load(Ordering::Relaxed), peer: side.cons_cache.load(Ordering::Relaxed) }
    }

    /// The consumer's cursor as the ring header stores it.
    #[inline]
    pub fn consumer_cursor(&self) -> Cursor {
        let side = &self.hdr.cons;
        // Relaxed: only the consumer writes `cons` and `prod_cache`; `peer`
        // is only a hint (`sp_ready` reloads `prod` with A5 before trusting
        // more items than it shows).
        Cursor { own: side.cons.load(Ordering::Relaxed), peer: side.prod_cache.load(Ordering::Relaxed) }
    }

    /// The consumer's cursor with `peer` loaded from `prod` itself: exact
    /// whatever the header's copy holds (for `Shared::drop`, after handles
    /// that kept their cursors to themselves for any number of laps).
    pub fn consumer_cursor_exact(&self) -> Cursor {
        // Relaxed: only the consumer writes `cons`.
        let own = self.hdr.cons.cons.load(Ordering::Relaxed);
        // A5 (Acquire): pairs with R5 in `sp_publish`, as in `sp_ready`.
        Cursor { own, peer: self.hdr.prod.prod.load(Ordering::Acquire) }
    }

    /// Stores back the `peer` of a producer cursor taken by [`RawRing::producer_cursor`].
    #[inline]
    fn save_producer_peer(&self, before: Cursor, after: Cursor) {
        if after.peer != before.peer {
            // Relaxed: producer-private in SP mode (see `producer_cursor`).
            self.hdr.prod.cons_cache.store(after.peer, Ordering::Relaxed);
        }
    }

    /// Stores back the `peer` of a consumer cursor taken by [`RawRing::consumer_cursor`].
    #[inline]
    fn save_consumer_peer(&self, before: Cursor, after: Cursor) {
        if after.peer != before.peer {
            // Relaxed: consumer-private (see `consumer_cursor`).
            self.hdr.cons.prod_cache.store(after.peer, Ordering::Relaxed);
        }
    }

    // ---- The C API's entry points: cursors in the ring ----

    /// Enqueues one non-NULL item; `Err(Full)` when there is no free slot.
    ///
    /// # Safety
    /// In single-producer mode, no other thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue(&self, item: NonNull<()>) -> Result<()> {
        if self.is_mp() {
            // SAFETY: an MP ring.
            unsafe { self.mp_enqueue(item) }
        } else {
            let before = self.producer_cursor();
            let mut cur = before;
            // SAFETY: forwarded single-producer contract; the cursor is the
            // producer's own, from the ring.
            let r = unsafe { self.sp_enqueue(&mut cur, item) };
            self.save_producer_peer(before, cur);
            r
        }
    }

    /// Enqueues as many of `items` as fit, in order; returns how many.
    ///
    /// # Safety
    /// Every item is non-NULL. In single-producer mode, no other thread
    /// enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue_burst(&self, items: &[*mut ()]) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        // SAFETY: forwarded contract; the iterator yields `n` of `items`.
        unsafe { self.enqueue_burst_with(want, |n| items[..n as usize].iter().copied()) }
    }

    /// Claims room for up to `want` items, calls `items(n)` with the number
    /// `n` it got, stores the `n` pointers the returned iterator yields, in
    /// order, and returns `n`. This lets the typed API hand over items only
    /// once it knows how many fit, without staging them.
    ///
    /// # Safety
    /// The iterator yields at least `n` non-NULL pointers, and neither
    /// `items` nor the iterator panics (in MP mode a claimed slot left empty
    /// would stall the consumer for good). In single-producer mode, no other
    /// thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue_burst_with<I>(&self, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        if self.is_mp() {
            // SAFETY: forwarded contract.
            unsafe { self.mp_enqueue_burst_with(want, items) }
        } else {
            let before = self.producer_cursor();
            let mut cur = before;
            // SAFETY: forwarded contract; the cursor is the producer's own.
            let n = unsafe { self.sp_enqueue_burst_with(&mut cur, want, items) };
            self.save_producer_peer(before, cur);
            n
        }
    }

    /// Dequeues one item, or `None` when nothing is ready.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue(&self) -> Option<NonNull<()>> {
        let before = self.consumer_cursor();
        let mut cur = before;
        // SAFETY: forwarded contract; the cursor is the consumer's own.
        let item = unsafe { self.dequeue_one(&mut cur, self.is_mp()) };
        self.save_consumer_peer(before, cur);
        item
    }

    /// Dequeues up to `out.len()` ready items, in order; returns how many.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue_burst(&self, out: &mut [*mut ()]) -> u32 {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let mut i = 0;
        // SAFETY: forwarded contract; at most `out.len()` items arrive, and
        // the sink cannot panic.
        unsafe {
            self.dequeue_burst_with(want, |p| {
                *out.get_unchecked_mut(i) = p.as_ptr();
                i += 1;
            })
        }
    }

    /// Dequeues up to `max` ready items, oldest first, handing each to
    /// `sink`; returns how many.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer), and
    /// `sink` does not panic (the items it was given would be handed out
    /// again).
    #[inline]
    pub unsafe fn dequeue_burst_with(&self, max: u32, sink: impl FnMut(NonNull<()>)) -> u32 {
        let before = self.consumer_cursor();
        let mut cur = before;
        // SAFETY: forwarded contract; the cursor is the consumer's own.
        let n = unsafe { self.dequeue_with(&mut cur, self.is_mp(), max, sink) };
        self.save_consumer_peer(before, cur);
        n
    }

    // ---- Single producer: the index hand-off (R5/A5, R3/A3) ----

    /// Enqueues one item with the producer's cursor.
    ///
    /// # Safety
    /// SP ring; the caller is its only producer and `cur` is that
    /// producer's cursor (from [`RawRing::producer_cursor`], then only
    /// passed to these `sp_*` functions).
    #[inline]
    pub unsafe fn sp_enqueue(&self, cur: &mut Cursor, item: NonNull<()>) -> Result<()> {
        if self.sp_room(cur, 1) == 0 {
            return Err(Error::Full);
        }
        // Relaxed: R5 in `sp_publish` publishes it.
        self.slot(cur.own).store(item.as_ptr(), Ordering::Relaxed);
        self.sp_publish(cur, 1);
        Ok(())
    }

    /// [`RawRing::enqueue_burst_with`] with the producer's cursor.
    ///
    /// # Safety
    /// As [`RawRing::sp_enqueue`], and the iterator contract of
    /// [`RawRing::enqueue_burst_with`].
    #[inline]
    pub unsafe fn sp_enqueue_burst_with<I>(&self, cur: &mut Cursor, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        let n = self.sp_room(cur, want.min(self.capacity()));
        if n == 0 {
            return 0;
        }
        let mut stored = 0;
        for item in items(n).into_iter().take(n as usize) {
            debug_assert!(!item.is_null(), "NULL item");
            // Relaxed: R5 in `sp_publish` publishes the slots.
            self.slot(cur.own.wrapping_add(stored)).store(item, Ordering::Relaxed);
            stored += 1;
        }
        debug_assert_eq!(stored, n, "enqueue_burst_with: iterator yielded too few items");
        self.sp_publish(cur, n);
        n
    }

    /// Free room for up to `want` items, from the cached `cons`, reloaded
    /// only when it shows too little.
    #[inline]
    fn sp_room(&self, cur: &mut Cursor, want: u32) -> u32 {
        let capacity = self.capacity();
        // A cursor from the ring header may hold a `peer` older than a lap
        // (the typed API keeps its cursor in the handle): `free_slots`
        // rejects it and the reload below replaces it.
        let free = free_slots(capacity, cur.own, cur.peer).unwrap_or(0);
        if free >= want {
            return want;
        }
        // A3 (Acquire): pairs with R3 in `consumer_publish`; the consumer is
        // done with the slots below the value loaded.
        cur.peer = self.hdr.cons.cons.load(Ordering::Acquire);
        // `own` is exact and `peer` a value `cons` had: a consistent pair.
        want.min(free_slots(capacity, cur.own, cur.peer).unwrap_or(0))
    }

    #[inline]
    fn sp_publish(&self, cur: &mut Cursor, n: u32) {
        cur.own = cur.own.wrapping_add(n);
        // R5 (Release): publishes the slots stored before it; pairs with A5
        // in `sp_ready`.
        self.hdr.prod.prod.store(cur.own, Ordering::Release);
    }

    // ---- Multiple producers: CAS claim, slot hand-off (R1/A1, R3/A3, R4/A4) ----

    /// Enqueues one item on an MP ring.
    ///
    /// # Safety
    /// MP ring.
    #[inline]
    unsafe fn mp_enqueue(&self, item: NonNull<()>) -> Result<()> {
        let (head, n) = self.claim_mp(1);
        if n == 0 {
            return Err(Error::Full);
        }
        // R1 (Release): publishes the item and everything written before
        // it; pairs with A1 in `mp_dequeue`.
        self.slot(head).store(item.as_ptr(), Ordering::Release);
        Ok(())
    }

    /// # Safety
    /// MP ring; the iterator contract of [`RawRing::enqueue_burst_with`].
    #[inline]
    unsafe fn mp_enqueue_burst_with<I>(&self, want: u32, items: impl FnOnce(u32) -> I) -> u32
    where
        I: IntoIterator<Item = *mut ()>,
    {
        let want = want.min(self.capacity());
        if want == 0 {
            return 0;
        }
        let (head, n) = self.claim_mp(want);
        if n == 0 {
            return 0;
        }
        let mut stored = 0;
        for item in items(n).into_iter().take(n as usize) {
            debug_assert!(!item.is_null(), "NULL item");
            // R1 (Release): as in `mp_enqueue`; pairs with A1.
            self.slot(head.wrapping_add(stored)).store(item, Ordering::Release);
            stored += 1;
        }
        debug_assert_eq!(stored, n, "enqueue_burst_with: iterator yielded too few items");
        n
    }

    /// Claims up to `want` indices by CAS on `prod`.
    #[inline]
    fn claim_mp(&self, want: u32) -> (u32, u32) {
        let capacity = self.capacity();
        let side = &self.hdr.prod;
        // Relaxed: only a candidate for the CAS below, which rejects it if
        // another producer moved `prod` meanwhile.
        let mut head = side.prod.load(Ordering::Relaxed);
        let mut backoff = ClaimBackoff::new();
        loop {
            // A4 (Acquire): pairs with R4 below, run by whichever producer
            // refreshed the copy.
            let cached = side.cons_cache.load(Ordering::Acquire);
            let mut free = free_slots(capacity, head, cached);
            if free.is_none_or(|f| f < want) {
                // A3 (Acquire): pairs with R3 in `consumer_publish`; makes
                // the consumer's NULL stores of slots below `tail` visible.
                let tail = self.hdr.cons.cons.load(Ordering::Acquire);
                if tail != cached {
                    // R4 (Release): passes A3 on to producers that use this
                    // copy; pairs with A4. Racing producers may store an
                    // older value over a newer one: that only under-states
                    // free room, and `free_slots` rejects a copy more than a
                    // lap behind.
                    side.cons_cache.store(tail, Ordering::Release);
                }
                free = free_slots(capacity, head, tail);
            }
            let n = match free {
                // Full even by a possibly stale `head` (which can only
                // under-state what is claimed): really full when `tail` was read.
                Some(0) => return (head, 0),
                Some(free) => want.min(free),
                // Inconsistent pair: `head` is older than `tail` (another
                // producer moved `prod`), or `tail` is more than a lap old.
                // The CAS below refreshes `head` (a plain reload could return
                // the same stale value again), and the next round reloads `tail`.
                None => 0,
            };
            // Relaxed: the CAS only hands out distinct indices; the data
            // hand-off is ordered by A3/A4 above and R1/A1 on the slots.
            match side.prod.compare_exchange_weak(head, head.wrapping_add(n), Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) if n > 0 => return (head, n),
                Ok(_) => {}
                Err(current) => head = current,
            }
            backoff.spin();
        }
    }

    // ---- The consumer (both modes) ----

    /// Dequeues up to `max` ready items with the consumer's cursor; `mp`
    /// says which hand-off the ring uses (the typed API knows it statically).
    ///
    /// # Safety
    /// The caller is the ring's only consumer, `cur` is the consumer's
    /// cursor (from [`RawRing::consumer_cursor`], then only passed here),
    /// `mp == self.is_mp()`, and `sink` does not panic.
    #[inline]
    pub unsafe fn dequeue_with(&self, cur: &mut Cursor, mp: bool, max: u32, sink: impl FnMut(NonNull<()>)) -> u32 {
        debug_assert_eq!(mp, self.is_mp());
        let max = max.min(self.capacity());
        if max == 0 {
            return 0;
        }
        let n = if mp { self.mp_dequeue(cur.own, max, sink) } else { self.sp_dequeue(cur, max, sink) };
        if n > 0 {
            self.consumer_publish(cur, n);
        }
        n
    }

    /// [`RawRing::dequeue_with`] for one item, without the burst loop (the
    /// single-item call is the hot path of the throughput benchmarks).
    ///
    /// # Safety
    /// As [`RawRing::dequeue_with`].
    #[inline]
    pub unsafe fn dequeue_one(&self, cur: &mut Cursor, mp: bool) -> Option<NonNull<()>> {
        debug_assert_eq!(mp, self.is_mp());
        let slot = self.slot(cur.own);
        let item = if mp {
            // A1 (Acquire): as in `mp_dequeue`; pairs with R1.
            let item = NonNull::new(slot.load(Ordering::Acquire))?;
            // Relaxed: as in `mp_dequeue`; R3 publishes it.
            slot.store(ptr::null_mut(), Ordering::Relaxed);
            item
        } else {
            if self.sp_ready(cur, 1) == 0 {
                return None;
            }
            // Relaxed: as in `sp_dequeue`; A5 made the store visible.
            let item = slot.load(Ordering::Relaxed);
            debug_assert!(!item.is_null(), "SP slot below prod is empty");
            // SAFETY: producers store only non-NULL items.
            unsafe { NonNull::new_unchecked(item) }
        };
        self.consumer_publish(cur, 1);
        Some(item)
    }

    #[inline]
    fn consumer_publish(&self, cur: &mut Cursor, n: u32) {
        cur.own = cur.own.wrapping_add(n);
        // R3 (Release): the consumer is done with the slots below `own`
        // (read them, and in MP mode NULLed them); pairs with A3 in
        // `sp_room`/`claim_mp`.
        self.hdr.cons.cons.store(cur.own, Ordering::Release);
    }

    /// Items known ready from the cached `prod`, reloaded only when it
    /// shows fewer than `want`.
    #[inline]
    fn sp_ready(&self, cur: &mut Cursor, want: u32) -> u32 {
        let ready = cur.peer.wrapping_sub(cur.own);
        // `ready > capacity`: a `peer` from the ring header older than a lap
        // (see `sp_room`); reload it.
        if ready >= want && ready <= self.capacity() {
            return want;
        }
        // A5 (Acquire): pairs with R5 in `sp_publish`; the slots below the
        // value loaded are stored and visible.
        cur.peer = self.hdr.prod.prod.load(Ordering::Acquire);
        // `peer` is now exact, and the consumer never passes `prod`.
        want.min(cur.peer.wrapping_sub(cur.own))
    }

    #[inline]
    fn sp_dequeue(&self, cur: &mut Cursor, max: u32, mut sink: impl FnMut(NonNull<()>)) -> u32 {
        let n = self.sp_ready(cur, max);
        for i in 0..n {
            // Relaxed: A5 made the store visible; the producer does not
            // overwrite the slot before R3 tells it the slot is free.
            let item = self.slot(cur.own.wrapping_add(i)).load(Ordering::Relaxed);
            debug_assert!(!item.is_null(), "SP slot below prod is empty");
            // SAFETY: producers store only non-NULL items.
            sink(unsafe { NonNull::new_unchecked(item) });
        }
        n
    }

    #[inline]
    fn mp_dequeue(&self, tail: u32, max: u32, mut sink: impl FnMut(NonNull<()>)) -> u32 {
        let mut n = 0;
        while n < max {
            let slot = self.slot(tail.wrapping_add(n));
            // A1 (Acquire): pairs with R1 in `mp_enqueue`/`mp_enqueue_burst_with`.
            let Some(item) = NonNull::new(slot.load(Ordering::Acquire)) else {
                break;
            };
            // Relaxed: R3 in `consumer_publish` publishes the NULL to the
            // producers before they can claim this slot again.
            slot.store(ptr::null_mut(), Ordering::Relaxed);
            sink(item);
            n += 1;
        }
        n
    }

    /// Claimed but not yet consumed slots: a snapshot, exact only when no
    /// other thread is using the ring. In multi-producer mode it counts items
    /// a producer has claimed but not finished storing.
    pub fn count(&self) -> u32 {
        // Relaxed on both: a snapshot that hands off no data. The two loads
        // are not atomic together, so the difference is clamped: a `prod`
        // loaded before the consumer moved past it reads as 0, a `prod`
        // that raced ahead of a stale `cons` reads as full.
        let tail = self.hdr.cons.cons.load(Ordering::Relaxed);
        let head = self.hdr.prod.prod.load(Ordering::Relaxed);
        let diff = head.wrapping_sub(tail) as i32;
        (diff.max(0) as u32).min(self.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
