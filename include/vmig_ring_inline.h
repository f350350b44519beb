/*
 * vmig_ring_inline.h: the inline fast path of the C ring handles.
 *
 * Hand-written (vmig.h next to it is generated). C11 only: it uses
 * <stdatomic.h>. C++ callers use the out-of-line calls of vmig.h.
 *
 * What it is
 * ----------
 * vmig_ring_producer_enqueue() and vmig_ring_consumer_dequeue() are real
 * calls into libvmig: a handle check, a panic boundary, and no inlining
 * into the caller. For single items that call is most of the cost. This
 * header does what DPDK's rte_ring does: the single-item enqueue and
 * dequeue of a single-producer ring are static inline functions here,
 * working on a frozen, versioned layout (struct vmig_ring_fast) that each
 * producer and consumer handle embeds:
 *
 *   own         this side's index, exact (only this handle moves it);
 *   peer        a value the other side's index had (rtrb's cached index);
 *   mask        capacity - 1;
 *   index       the shared index this side publishes (prod or cons);
 *   peer_index  the other side's shared index (cons or prod);
 *   slots       the ring's slots;
 *   owner       the handle, for the fallback.
 *
 * rtrb's algorithm, in the caller's code: trust the cached peer index;
 * only when it says full (enqueue) or empty (dequeue), reload the real one
 * from peer_index. When there is room (an item), the inline function moves
 * the item and publishes its index itself: no call, and no access to the
 * other side's cache line while the cached copy suffices. When the ring
 * really is full (empty), or the item pointer is NULL, it calls the
 * out-of-line function on the same handle, which reports -ENOBUFS /
 * -ENOENT / -EINVAL and records vmig_last_error(). Both paths work on the
 * same cursor (the handle's own/peer above), so inline and out-of-line
 * calls (single items and bursts) may be mixed on one handle in any order.
 *
 *   vmig_ring_producer *p = vmig_ring_producer_new(ring);
 *   vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(p);
 *   if (pf)
 *       rc = vmig_ring_fast_enqueue(pf, item);   // 0 or -ENOBUFS/-EINVAL
 *   else
 *       rc = vmig_ring_producer_enqueue(p, item); // MP ring, other layout
 *
 * What the caller guarantees
 * --------------------------
 * - The rules of the handle (vmig_ring_producer_new() and
 *   vmig_ring_consumer_new() in vmig.h): one thread at a time per handle;
 *   a fast view is that handle's and follows the same rule (it is the
 *   handle's memory, written without atomics).
 * - A fast view is valid until its handle is freed; not after.
 * - The fields of struct vmig_ring_fast are read and written only by these
 *   functions (they are not an API: the layout is frozen so that these
 *   functions can be inline, not so that callers can use it).
 * - Single-producer rings only: vmig_ring_*_fast_view() returns NULL on a
 *   VMIG_RING_MP ring (its producers claim slots with a CAS).
 *
 * The layout check
 * ----------------
 * vmig_ring_producer_fast_view()/vmig_ring_consumer_fast_view() pass the
 * layout this header was compiled with (VMIG_RING_FAST_LAYOUT: version,
 * size and every field's offset) to the library, which returns NULL
 * (errno EOPNOTSUPP) unless it is its own: a program built against another
 * libvmig's header falls back to the out-of-line calls. The Rust side pins
 * the layout with compile-time asserts (src/ffi/ring_inline.rs), and
 * c-tests/test_ring_inline.c checks the two agree.
 *
 * Memory ordering (the labels of src/ring/raw/mod.rs; each Release pairs
 * with an Acquire, and either side of a pair may run here or in libvmig)
 * ---------------
 * - R5 (Release store of prod, vmig_ring_fast_enqueue() here or sp_publish
 *   in src/ring/raw/algorithm.rs) publishes the slot stored before it, and
 *   everything the caller wrote before the enqueue; pairs with A5.
 * - A5 (Acquire load of prod, vmig_ring_fast_dequeue() here or sp_ready in
 *   algorithm.rs): the slots below the value loaded are stored and
 *   visible, so the consumer's slot load is Relaxed.
 * - R3 (Release store of cons, vmig_ring_fast_dequeue() or
 *   consumer_publish): the consumer is done reading the slots below it;
 *   pairs with A3.
 * - A3 (Acquire load of cons, vmig_ring_fast_enqueue() or sp_room): the
 *   producer may store into those slots again, so its slot store is
 *   Relaxed (R5 publishes it).
 * - own and peer are this handle's private words (plain accesses): only the
 *   handle's thread reads or writes them, inline or out of line.
 * The Rust side's loom models (tests/loom_ring.rs) cannot run C: they stay
 * the proof of the out-of-line algorithm, and the TSan run of
 * c-tests/test_ring_inline.c (inline producer against inline and
 * out-of-line consumers, mixed calls, wraparound) is the proof of this
 * header's ordering.
 */
#ifndef VMIG_RING_INLINE_H
#define VMIG_RING_INLINE_H

#ifdef __cplusplus
#error "vmig_ring_inline.h is C11 (<stdatomic.h>); from C++ use vmig_ring_producer_enqueue()/vmig_ring_consumer_dequeue()"
#endif

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "vmig.h"

/* The frozen layout (version VMIG_RING_FAST_VERSION, from vmig.h). */
struct vmig_ring_fast {
    uint32_t version;
    uint32_t mask;
    uint32_t own;
    uint32_t peer;
    _Atomic uint32_t *index;
    _Atomic uint32_t *peer_index;
    _Atomic(void *) *slots;
    void *owner;
};

/* Completes the opaque types of vmig.h: one per side, so a producer's view
 * cannot be passed to the dequeue. */
struct vmig_ring_producer_fast {
    struct vmig_ring_fast f;
};
struct vmig_ring_consumer_fast {
    struct vmig_ring_fast f;
};

/* This header's layout, in the order libvmig checks it. */
#define VMIG_RING_FAST_LAYOUT                                                  \
    {                                                                          \
        VMIG_RING_FAST_VERSION, (uint32_t)sizeof(struct vmig_ring_fast),       \
            (uint32_t)offsetof(struct vmig_ring_fast, mask),                   \
            (uint32_t)offsetof(struct vmig_ring_fast, own),                    \
            (uint32_t)offsetof(struct vmig_ring_fast, peer),                   \
            (uint32_t)offsetof(struct vmig_ring_fast, index),                  \
            (uint32_t)offsetof(struct vmig_ring_fast, peer_index),             \
            (uint32_t)offsetof(struct vmig_ring_fast, slots),                  \
            (uint32_t)offsetof(struct vmig_ring_fast, owner)                   \
    }

/* The slots and index are the library's atomics: same size as the plain types. */
_Static_assert(sizeof(_Atomic(void *)) == sizeof(void *), "_Atomic(void *) is not a plain pointer");
_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t), "_Atomic uint32_t is not a plain uint32_t");

/*
 * The inline fast path of a producer handle, or NULL (errno EINVAL: NULL or
 * foreign handle, VMIG_RING_MP ring; EOPNOTSUPP: this header is not the
 * library's layout). Valid until the handle is freed. Call once, after
 * vmig_ring_producer_new(), on the handle's thread.
 */
static inline vmig_ring_producer_fast *vmig_ring_producer_fast_view(vmig_ring_producer *producer)
{
    static const uint32_t layout[] = VMIG_RING_FAST_LAYOUT;
    return vmig_ring_producer_get_fast(producer, layout, (uint32_t)(sizeof layout / sizeof layout[0]));
}

/* The consumer handle's inline fast path, or NULL: as above. */
static inline vmig_ring_consumer_fast *vmig_ring_consumer_fast_view(vmig_ring_consumer *consumer)
{
    static const uint32_t layout[] = VMIG_RING_FAST_LAYOUT;
    return vmig_ring_consumer_get_fast(consumer, layout, (uint32_t)(sizeof layout / sizeof layout[0]));
}

/*
 * Enqueues one item: vmig_ring_producer_enqueue(), inline unless the ring
 * is full or the item NULL. Returns 0, -ENOBUFS (full) or -EINVAL (NULL
 * item). Thread-safety: the handle's thread (see the top of this file).
 */
static inline int vmig_ring_fast_enqueue(vmig_ring_producer_fast *producer, void *item)
{
    struct vmig_ring_fast *f = &producer->f;
    uint32_t own = f->own;

    /* own - peer: slots in use by a value cons had, at most the capacity
     * (mask + 1); there is room while it is at most mask. The indices run
     * freely and wrap at 2^32: the difference is taken modulo 2^32, as in
     * src/ring/raw (the cast keeps it so where int is wider than 32 bits). */
    if ((uint32_t)(own - f->peer) > f->mask) {
        /* A3 (Acquire): pairs with R3 in vmig_ring_fast_dequeue() or in
         * consumer_publish (src/ring/raw/algorithm.rs): the consumer is
         * done with the slots below the value loaded. */
        f->peer = atomic_load_explicit(f->peer_index, memory_order_acquire);
        if ((uint32_t)(own - f->peer) > f->mask)
            return vmig_ring_producer_enqueue((vmig_ring_producer *)f->owner, item);
    }
    if (item == NULL)
        return vmig_ring_producer_enqueue((vmig_ring_producer *)f->owner, item);
    /* Relaxed: R5 below publishes it. */
    atomic_store_explicit(&f->slots[own & f->mask], item, memory_order_relaxed);
    f->own = (uint32_t)(own + 1);
    /* R5 (Release): publishes the slot; pairs with A5 in
     * vmig_ring_fast_dequeue() or in sp_ready (algorithm.rs). */
    atomic_store_explicit(f->index, (uint32_t)(own + 1), memory_order_release);
    return 0;
}

/*
 * Dequeues the oldest item into *item: vmig_ring_consumer_dequeue(), inline
 * unless the ring is empty or item NULL. Returns 0, -ENOENT (empty, *item
 * untouched) or -EINVAL (NULL item). Thread-safety: the handle's thread
 * (the ring's consumer).
 */
static inline int vmig_ring_fast_dequeue(vmig_ring_consumer_fast *consumer, void **item)
{
    struct vmig_ring_fast *f = &consumer->f;
    uint32_t own = f->own;

    if (own == f->peer) {
        /* A5 (Acquire): pairs with R5 in vmig_ring_fast_enqueue() or in
         * sp_publish (algorithm.rs): the slots below the value loaded are
         * stored and visible. */
        f->peer = atomic_load_explicit(f->peer_index, memory_order_acquire);
        if (own == f->peer)
            return vmig_ring_consumer_dequeue((vmig_ring_consumer *)f->owner, item);
    }
    if (item == NULL)
        return vmig_ring_consumer_dequeue((vmig_ring_consumer *)f->owner, item);
    /* Relaxed: below a prod loaded with A5 (here or out of line, on this
     * thread), which made the store visible. */
    *item = atomic_load_explicit(&f->slots[own & f->mask], memory_order_relaxed);
    f->own = (uint32_t)(own + 1);
    /* R3 (Release): the consumer is done with the slot; pairs with A3 in
     * vmig_ring_fast_enqueue() or in sp_room (algorithm.rs). */
    atomic_store_explicit(f->index, (uint32_t)(own + 1), memory_order_release);
    return 0;
}

#endif /* VMIG_RING_INLINE_H */
