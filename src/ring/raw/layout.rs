//! The ring memory: a header with the producer's and the consumer's indices
//! on separate cache-padded blocks, followed by `capacity` pointer slots;
//! its shape checks, allocation, teardown, and the cursors each side keeps
//! (the algorithm is in the parent module's doc).

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
pub(super) const FLAG_OWNED: u32 = 1 << 31;
/// Role bit: a consumer handle is live (a ring has one consumer).
pub const ROLE_CONSUMER: u32 = 1;
/// Role bit: the producer handle of a single-producer ring is live.
pub const ROLE_SP_PRODUCER: u32 = 2;
/// Role bit: `vmig_ring_free` has dropped the ring handle's reference.
pub const ROLE_RING_FREED: u32 = 4;
/// Most references a ring takes (the ring handle and its producer and
/// consumer handles); far above any real use, far below `u32` overflow.
const MAX_REFS: u32 = 1 << 24;
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
pub(super) struct ProdSide {
    /// Next index to claim. Written by producers only.
    pub(super) prod: AtomicU32,
    /// A value `cons` had; written by producers only (rtrb's cached index).
    pub(super) cons_cache: AtomicU32,
}

/// The consumer's cache line.
#[repr(C)]
pub(super) struct ConsSide {
    /// Next index to consume. Written by the consumer only.
    pub(super) cons: AtomicU32,
    /// SP rings: a value `prod` had; used by the consumer only.
    pub(super) prod_cache: AtomicU32,
}

/// Ring header, at the start of the ring memory.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`] while the ring is live. Written only by init and destroy.
    pub(super) magic: u32,
    /// [`FLAG_MP`] and [`FLAG_OWNED`]; constant after init.
    pub(super) flags: u32,
    /// Number of slots, a power of two; constant after init.
    pub(super) capacity: u32,
    /// C API only: references to the ring memory, the ring handle's (until
    /// `vmig_ring_free`) plus one per live producer or consumer handle; the
    /// ring is torn down when the count reaches 0 (R6/A6 in
    /// [`RawRing::release_ref`]). Shares the line of the constant fields
    /// above: written only when a handle is made or freed.
    pub(super) refs: AtomicU32,
    /// C API only: the roles a handle holds ([`ROLE_CONSUMER`],
    /// [`ROLE_SP_PRODUCER`]) and [`ROLE_RING_FREED`] (R7/A7 in
    /// [`RawRing::claim_role`]).
    pub(super) roles: AtomicU32,
    pub(super) prod: CachePadded<ProdSide>,
    pub(super) cons: CachePadded<ConsSide>,
}

/// A ring: the header and its slots in one allocation.
///
/// A dynamically sized type, so a `&RawRing` covers the slots too (a
/// reference to the header alone would not give access to the memory after
/// it: Miri's Stacked Borrows rejects that, and so does the language).
#[repr(C)]
pub struct RawRing {
    pub(super) hdr: Header,
    /// NULL or an item (MP); items between `cons` and `prod` (SP).
    pub(super) slots: [AtomicPtr<()>],
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
///
/// `repr(C)`: the C handles' inline fast path (`include/vmig_ring_inline.h`)
/// reads and writes a cursor inside the frozen `vmig_ring_fast` layout
/// (`src/ffi/ring_inline.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub(super) own: u32,
    pub(super) peer: u32,
}

impl Cursor {
    /// Offset of `own`, for the frozen layout of `src/ffi/ring_inline.rs`.
    pub(crate) const OWN_OFFSET: usize = std::mem::offset_of!(Cursor, own);
    /// Offset of `peer`, as [`Cursor::OWN_OFFSET`].
    pub(crate) const PEER_OFFSET: usize = std::mem::offset_of!(Cursor, peer);
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
            refs: AtomicU32::new(1),
            roles: AtomicU32::new(0),
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
            ptr::drop_in_place(ptr::addr_of_mut!((*r).hdr.refs));
            ptr::drop_in_place(ptr::addr_of_mut!((*r).hdr.roles));
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
    pub(super) fn slot(&self, index: u32) -> &AtomicPtr<()> {
        // `capacity` is a power of two, so `capacity - 1` is the index mask.
        let i = (index & (self.capacity() - 1)) as usize;
        debug_assert!(i < self.slots.len());
        // SAFETY: `slots` has `capacity` elements and `index & mask < capacity`.
        unsafe { self.slots.get_unchecked(i) }
    }

    /// The base of the slot array as plain pointers, for the bulk copies
    /// of `bulk.rs` (an `AtomicPtr<()>` has the layout of a `*mut ()`).
    /// Derived from the whole slice, so it may address every slot. Not
    /// under loom, whose atomics are not plain words (`bulk.rs`).
    #[cfg(not(vmig_loom))]
    #[inline]
    pub(super) fn slots_base(&self) -> *mut *mut () {
        self.slots.as_ptr().cast::<*mut ()>().cast_mut()
    }

    /// The producers' shared index `prod`, for the C handles' inline fast
    /// path, which publishes it from C (`src/ffi/ring_inline.rs`).
    pub(crate) fn prod_index(&self) -> &AtomicU32 {
        &self.hdr.prod.prod
    }

    /// The consumer's shared index `cons`, as [`RawRing::prod_index`].
    pub(crate) fn cons_index(&self) -> &AtomicU32 {
        &self.hdr.cons.cons
    }

    /// The slot array, for the C handles' inline fast path: `capacity`
    /// slots, each an `AtomicPtr<()>` (the layout of a C `_Atomic(void *)`).
    pub(crate) fn slots_ptr(&self) -> *const AtomicPtr<()> {
        self.slots.as_ptr()
    }

    // ---- References and roles: what C handles hold (src/ffi/ring_handle.rs) ----

    /// Takes one more reference for a producer or consumer handle.
    ///
    /// The caller holds a reference (the ring handle) for the duration of
    /// the call, so the count cannot reach 0 meanwhile.
    pub fn acquire_ref(&self) -> Result<()> {
        // Relaxed: taking a reference while holding one orders nothing (as
        // `Arc::clone`); the teardown is ordered by R6/A6.
        let prev = self.hdr.refs.fetch_add(1, Ordering::Relaxed);
        if prev >= MAX_REFS {
            // Relaxed: undoes the increment above, still holding a reference.
            self.hdr.refs.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::InvalidArgument("too many handles on one ring"));
        }
        Ok(())
    }

    /// Drops one reference; the last one tears the ring down
    /// ([`RawRing::destroy`]).
    ///
    /// # Safety
    /// `ring` is live, the caller owns one of its references and uses
    /// neither `ring` nor anything it gave out after the call.
    pub unsafe fn release_ref(ring: NonNull<RawRing>) {
        // SAFETY: live while the caller's reference is.
        let refs = unsafe { &ring.as_ref().hdr.refs };
        // R6 (Release): this holder's uses of the ring happen before the
        // teardown; pairs with A6 below, in whichever holder drops the last
        // reference (`Arc::drop`'s protocol).
        if refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // A6 (Acquire): pairs with every holder's R6.
        crate::sync::fence(Ordering::Acquire);
        // SAFETY: the last reference: no other holder is left, and the
        // caller uses nothing of the ring after this call.
        unsafe { Self::destroy(ring) };
    }

    /// Takes `role` (one of the `ROLE_*` bits) for a new handle; `false`
    /// when a live handle holds it already.
    pub fn claim_role(&self, role: u32) -> bool {
        // A7 (Acquire): pairs with R7 in `release_role`: the previous
        // holder's last index store (e.g. the consumer's `cons`) happens
        // before the new holder loads its cursor.
        self.hdr.roles.fetch_or(role, Ordering::Acquire) & role == 0
    }

    /// Gives `role` back when its handle is freed.
    pub fn release_role(&self, role: u32) {
        // R7 (Release): publishes this holder's index stores to the next
        // holder of the role; pairs with A7 in `claim_role`.
        self.hdr.roles.fetch_and(!role, Ordering::Release);
    }

    /// Whether `vmig_ring_free` already dropped the ring handle's
    /// reference (a snapshot; only catches a caller's use after free
    /// while handles keep the ring alive).
    pub fn ring_handle_freed(&self) -> bool {
        // Relaxed: a check for a caller bug; it hands off no data.
        self.hdr.roles.load(Ordering::Relaxed) & ROLE_RING_FREED != 0
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

    /// A cursor for a new SP producer handle: `own` from `prod`, `peer` a
    /// lap behind it, which shows no free room, so the first enqueue loads
    /// `cons` (A3) rather than trust the header's copy.
    pub fn fresh_producer_cursor(&self) -> Cursor {
        // Relaxed: only the producer writes `prod`, and the caller's thread
        // is the producer now (a previous producer handed over through the
        // caller's synchronisation or R7/A7 of its handle's role).
        let own = self.hdr.prod.prod.load(Ordering::Relaxed);
        Cursor { own, peer: own.wrapping_sub(self.capacity()) }
    }

    /// A cursor for a new consumer handle: `own` from `cons`, `peer == own`,
    /// which shows nothing ready, so the first SP dequeue loads `prod` (A5).
    pub fn fresh_consumer_cursor(&self) -> Cursor {
        // Relaxed: only the consumer writes `cons`, and the caller's thread
        // is the consumer now (as in `fresh_producer_cursor`).
        let own = self.hdr.cons.cons.load(Ordering::Relaxed);
        Cursor { own, peer: own }
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
    pub(crate) fn save_producer_peer(&self, before: Cursor, after: Cursor) {
        if after.peer != before.peer {
            // Relaxed: producer-private in SP mode (see `producer_cursor`).
            self.hdr.prod.cons_cache.store(after.peer, Ordering::Relaxed);
        }
    }

    /// Stores back the `peer` of a consumer cursor taken by [`RawRing::consumer_cursor`].
    #[inline]
    pub(crate) fn save_consumer_peer(&self, before: Cursor, after: Cursor) {
        if after.peer != before.peer {
            // Relaxed: consumer-private (see `consumer_cursor`).
            self.hdr.cons.prod_cache.store(after.peer, Ordering::Relaxed);
        }
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
