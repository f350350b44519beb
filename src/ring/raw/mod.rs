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
//!   each call, unless the caller uses the C API's per-thread producer and
//!   consumer handles (`src/ffi/ring_handle.rs`), which keep them as the
//!   typed handles do. Multiple producers share `cons_cache` (R4/A4 below).
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
//! * R6 (a holder drops its reference, Release) pairs with A6 (the last
//!   holder's Acquire fence before the teardown), `Arc::drop`'s protocol:
//!   every C handle's use of the ring happens before the ring is freed.
//! * R7 (a C handle gives its role back, Release) pairs with A7 (a new
//!   handle claims the role, Acquire): the previous consumer's (or SP
//!   producer's) last index store happens before the next one loads it.
//!
//! # Files
//!
//! * `layout.rs`: the ring memory (header, cache-padded indices, slots), its
//!   shape checks, allocation and the cursors each side keeps.
//! * `algorithm.rs`: the single- and multi-producer enqueue and the consumer.
//! * `bulk.rs`: single-producer bursts as one reservation, at most two
//!   slot copies and one publish (the C API's handles use them).
//! * `src/ffi/ring_cursor.rs`: the entry points only the C API needs, which
//!   keep the cursors in the ring header around each call.
//! * `src/ffi/ring_inline.rs` and `include/vmig_ring_inline.h`: the C
//!   handles' inline fast path, which runs the SP producer's and the
//!   consumer's single-item steps (R5/A5, R3/A3 above) in C on a frozen
//!   layout, sharing the handle's cursor with the Rust path.

mod algorithm;
mod bulk;
mod layout;
#[cfg(test)]
mod tests;

pub(crate) use layout::{memsize, Cursor, RawRing, FLAG_MP, MAX_CAPACITY, MIN_CAPACITY, RING_ALIGN, ROLE_CONSUMER, ROLE_RING_FREED, ROLE_SP_PRODUCER};
#[cfg(test)]
use layout::{check_shape, FLAG_OWNED};
