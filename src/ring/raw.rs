//! The untyped ring: a header followed by `capacity` pointer slots.
//!
//! # Algorithm
//!
//! The lineage is Linux `ptr_ring` (a NULL slot is a free slot), `kfifo`
//! (free-running indices masked by `capacity - 1`) and DPDK `rte_ring`
//! (multi-producer head claim by compare-and-swap), as combined in the 2018
//! QEMU RFC "migration: introduce lockless ring buffer"
//! (`shared/seeds/lockless-multithread-compression.txt`).
//!
//! * `prod` is the next index a producer claims, `cons` the next index the
//!   consumer reads. Both are `u32` and run freely; a slot is
//!   `slots[index & mask]`. `prod - cons` (wrapping) is the number of claimed,
//!   unconsumed slots, at most `capacity` (≤ 2^30, so it never wraps ambiguously).
//! * A slot holds either NULL (free) or an item. The slot itself is the
//!   hand-off: the consumer never reads `prod`, and the single producer never
//!   reads `cons`. Each side writes only its own index and the slots, which
//!   keeps the two index cache lines from bouncing (ptr_ring's insight).
//! * **Single producer**: slot `prod & mask` is free exactly when it is NULL,
//!   because the only writer of that slot before us was ourselves, one lap
//!   ago, and the consumer NULLs a slot when it takes the item.
//! * **Multiple producers**: a NULL slot is *not* proof of a free slot here,
//!   because a producer that claimed the same slot one lap earlier may not
//!   have written it yet. So producers first prove space with `cons` (DPDK's
//!   `free = capacity + cons - prod`), then claim the index with a CAS on
//!   `prod`, then store the item. The claimed slot is NULL: the consumer
//!   NULLed it before publishing the `cons` value that proved the space.
//! * **Consumer**: takes `slots[cons & mask]` if it is non-NULL, NULLs it and
//!   publishes `cons + 1`. If a producer has claimed the slot but not yet
//!   stored into it, the consumer sees NULL and reports "empty" rather than
//!   spinning (the RFC spun; on a 2-core host the producer it waits for may
//!   be the preempted thread). Items therefore appear in claim order, which
//!   gives per-producer FIFO.
//!
//! # Memory ordering (labels pair a Release with its Acquire)
//!
//! * R1 (producer stores the item, Release) pairs with A1 (consumer loads the
//!   slot, Acquire): whatever the producer wrote before enqueueing is visible
//!   to the consumer after dequeueing.
//! * R2 (consumer stores NULL, Release) pairs with A2 (single producer checks
//!   the slot is NULL, Acquire): the consumer's read of the old item is done
//!   before the producer reuses the slot.
//! * R3 (consumer publishes `cons`, Release) pairs with A3 (multi-producer
//!   loads `cons`, Acquire): the NULL stores of the consumed slots are visible
//!   before a producer claims them again, so the producer's item store comes
//!   after the NULL in the slot's modification order.

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
/// Marks initialised ring memory ("vmig" in ASCII); cleared when freed, so a
/// double free or a stray pointer is rejected instead of corrupting memory.
const MAGIC: u32 = 0x766d_6967;

/// Alignment of ring memory. The header holds two
/// [`CachePadded`] indices, 128 bytes on x86-64 because the adjacent-line
/// prefetcher pulls cache lines in pairs (crossbeam-utils' reasoning).
pub const RING_ALIGN: usize = align_of::<RawRing>();

/// Ring header. The slots follow it in the same allocation.
#[repr(C)]
pub struct RawRing {
    /// [`MAGIC`] while the ring is live. Written only by init and free.
    magic: u32,
    /// [`FLAG_MP`] and [`FLAG_OWNED`]; constant after init.
    flags: u32,
    /// Number of slots, a power of two; constant after init.
    capacity: u32,
    /// `capacity - 1`; constant after init.
    mask: u32,
    /// Next index to claim. Written by producers only.
    prod: CachePadded<AtomicU32>,
    /// Next index to consume. Written by the consumer only.
    cons: CachePadded<AtomicU32>,
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

/// Bytes needed for a ring of `capacity` slots (header included), or `None`
/// for an invalid capacity.
pub fn memsize(capacity: u32) -> Option<usize> {
    check_shape(capacity, 0).ok()?;
    Some(size_of::<RawRing>() + capacity as usize * size_of::<AtomicPtr<()>>())
}

impl RawRing {
    /// Allocates and initialises a ring on the heap.
    pub fn alloc(capacity: u32, flags: u32) -> Result<NonNull<RawRing>> {
        check_shape(capacity, flags)?;
        let size = memsize(capacity).ok_or(Error::InvalidArgument("capacity"))?;
        let layout = Layout::from_size_align(size, RING_ALIGN).map_err(|_| Error::OutOfMemory)?;
        // SAFETY: `layout` has a non-zero size (the header alone is 384 bytes).
        let mem = unsafe { alloc::alloc(layout) };
        let Some(mem) = NonNull::new(mem) else {
            return Err(Error::OutOfMemory);
        };
        // SAFETY: `mem` is a fresh allocation of `size` bytes aligned to
        // RING_ALIGN, exactly what `init_at` needs.
        unsafe { Self::init_at(mem.cast(), capacity, flags | FLAG_OWNED) };
        Ok(mem.cast())
    }

    /// Lays a ring into caller memory (`vmig_ring_init`).
    ///
    /// # Safety
    /// `mem` must be valid for writes of `size` bytes and stay valid, and not
    /// be accessed other than through the ring, for as long as the ring is used.
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
        unsafe { Self::init_at(mem.cast(), capacity, flags) };
        Ok(mem.cast())
    }

    /// # Safety
    /// `mem` is valid for writes of `memsize(capacity)` bytes, aligned to
    /// RING_ALIGN, and `capacity` passed `check_shape`.
    unsafe fn init_at(mem: NonNull<RawRing>, capacity: u32, flags: u32) {
        let header = RawRing {
            magic: MAGIC,
            flags,
            capacity,
            mask: capacity - 1,
            prod: CachePadded::new(AtomicU32::new(0)),
            cons: CachePadded::new(AtomicU32::new(0)),
        };
        // SAFETY: per the contract, `mem` is valid and aligned for the header
        // and the slots that follow it; `ptr::write` does not read the old,
        // uninitialised contents.
        unsafe {
            ptr::write(mem.as_ptr(), header);
            let slots = mem.as_ptr().add(1).cast::<AtomicPtr<()>>();
            for i in 0..capacity as usize {
                ptr::write(slots.add(i), AtomicPtr::new(ptr::null_mut()));
            }
        }
    }

    /// Whether `ring` points at live, initialised ring memory.
    pub fn is_live(&self) -> bool {
        self.magic == MAGIC
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
            let capacity = (*r).capacity as usize;
            let owned = (*r).flags & FLAG_OWNED != 0;
            let slots = r.add(1).cast::<AtomicPtr<()>>();
            for i in 0..capacity {
                ptr::drop_in_place(slots.add(i));
            }
            ptr::drop_in_place(ptr::addr_of_mut!((*r).prod));
            ptr::drop_in_place(ptr::addr_of_mut!((*r).cons));
            (*r).magic = 0;
            if owned {
                let size = size_of::<RawRing>() + capacity * size_of::<AtomicPtr<()>>();
                let layout = Layout::from_size_align_unchecked(size, RING_ALIGN);
                alloc::dealloc(r.cast(), layout);
            }
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Whether the ring accepts concurrent producers.
    pub fn is_mp(&self) -> bool {
        self.flags & FLAG_MP != 0
    }

    #[inline]
    fn slot(&self, index: u32) -> &AtomicPtr<()> {
        // SAFETY: `init_at` wrote `capacity` slots right after the header, and
        // `index & mask < capacity`. The reference lives no longer than `self`.
        unsafe {
            let slots = (self as *const RawRing).add(1).cast::<AtomicPtr<()>>();
            &*slots.add((index & self.mask) as usize)
        }
    }

    /// Enqueues one non-NULL item; `Err(Full)` when there is no free slot.
    ///
    /// # Safety
    /// In single-producer mode, no other thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue(&self, item: NonNull<()>) -> Result<()> {
        // SAFETY: forwarded producer contract.
        if unsafe { self.enqueue_burst(&[item.as_ptr()]) } == 1 {
            Ok(())
        } else {
            Err(Error::Full)
        }
    }

    /// Claims up to `want` consecutive indices; returns the first and how many.
    #[inline]
    fn claim(&self, want: u32) -> (u32, u32) {
        if self.is_mp() {
            loop {
                // Relaxed: only a candidate for the CAS below, which rejects
                // it if another producer moved `prod` meanwhile.
                let head = self.prod.load(Ordering::Relaxed);
                // A3 (Acquire): pairs with R3 in `dequeue_burst`; makes the
                // consumer's NULL stores of slots below `tail` visible.
                let tail = self.cons.load(Ordering::Acquire);
                // DPDK's formula. `tail` was loaded after `head`, so this is
                // never below the true free count at the time of the `head`
                // load; if `head` is stale it may exceed capacity, and then
                // the CAS fails and we retry.
                let free = self.capacity.wrapping_add(tail).wrapping_sub(head);
                let n = want.min(free);
                if n == 0 {
                    return (head, 0);
                }
                // Relaxed: the CAS only hands out distinct indices; the data
                // hand-off is ordered by A3 above and R1/A1 on the slots.
                if self
                    .prod
                    .compare_exchange_weak(head, head.wrapping_add(n), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return (head, n);
                }
                crate::sync::spin_loop();
            }
        } else {
            // Relaxed: in single-producer mode only this thread writes `prod`.
            let head = self.prod.load(Ordering::Relaxed);
            let mut n = 0;
            // A2 (Acquire): pairs with R2 in `dequeue_burst`; a NULL slot was
            // fully consumed, so overwriting it is safe.
            while n < want && self.slot(head.wrapping_add(n)).load(Ordering::Acquire).is_null() {
                n += 1;
            }
            (head, n)
        }
    }

    /// Enqueues as many of `items` as fit, in order; returns how many.
    /// Every item must be non-NULL (the FFI layer checks).
    ///
    /// # Safety
    /// In single-producer mode, no other thread enqueues concurrently.
    #[inline]
    pub unsafe fn enqueue_burst(&self, items: &[*mut ()]) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX).min(self.capacity);
        if want == 0 {
            return 0;
        }
        let (head, n) = self.claim(want);
        for (i, &item) in items.iter().take(n as usize).enumerate() {
            let slot = self.slot(head.wrapping_add(i as u32));
            debug_assert!(slot.load(Ordering::Relaxed).is_null(), "claimed slot not free");
            // R1 (Release): publishes the item and everything written before
            // it; pairs with A1 in `dequeue_burst`.
            slot.store(item, Ordering::Release);
        }
        if !self.is_mp() && n > 0 {
            // Relaxed: in single-producer mode `prod` is read only by
            // `count()`, a snapshot that hands off no data (R1 does that).
            self.prod.store(head.wrapping_add(n), Ordering::Relaxed);
        }
        n
    }

    /// Dequeues one item, or `None` when nothing is ready.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue(&self) -> Option<NonNull<()>> {
        let mut out = [ptr::null_mut(); 1];
        // SAFETY: forwarded single-consumer contract.
        if unsafe { self.dequeue_burst(&mut out) } == 1 {
            NonNull::new(out[0])
        } else {
            None
        }
    }

    /// Dequeues up to `out.len()` ready items, in order; returns how many.
    ///
    /// # Safety
    /// Only one thread dequeues at a time (the ring is single-consumer).
    #[inline]
    pub unsafe fn dequeue_burst(&self, out: &mut [*mut ()]) -> u32 {
        // Relaxed: only the consumer writes `cons`.
        let tail = self.cons.load(Ordering::Relaxed);
        let mut n = 0u32;
        for dst in out.iter_mut() {
            let slot = self.slot(tail.wrapping_add(n));
            // A1 (Acquire): pairs with R1 in `enqueue_burst`.
            let item = slot.load(Ordering::Acquire);
            if item.is_null() {
                break;
            }
            *dst = item;
            // R2 (Release): hands the slot back; pairs with A2 in `claim`.
            slot.store(ptr::null_mut(), Ordering::Release);
            n += 1;
        }
        if n > 0 {
            // R3 (Release): publishes the freed slots; pairs with A3 in `claim`.
            self.cons.store(tail.wrapping_add(n), Ordering::Release);
        }
        n
    }

    /// Claimed but not yet consumed slots: a snapshot, exact only when no
    /// other thread is using the ring. In multi-producer mode it counts items
    /// a producer has claimed but not finished storing.
    pub fn count(&self) -> u32 {
        // Relaxed on both: a snapshot that hands off no data. The two loads
        // are not atomic together, so the difference is clamped: a stale
        // `prod` (the single producer publishes it after the items, so the
        // consumer may already be past it) reads as 0, a `prod` that raced
        // ahead of a stale `cons` reads as full.
        let tail = self.cons.load(Ordering::Relaxed);
        let head = self.prod.load(Ordering::Relaxed);
        let diff = head.wrapping_sub(tail) as i32;
        (diff.max(0) as u32).min(self.capacity)
    }
}
