/* The C side of benches/ring.rs's "C inline SPSC" rows: a C caller's loops
 * around vmig_ring_inline.h's vmig_ring_fast_enqueue()/vmig_ring_fast_dequeue(),
 * the same loops as the bench's Rust ones (send_each, receive_each,
 * pair_latency) with the same waiting (Backoff: 64 spin hints, then a
 * yield). build.rs compiles it for the benches only (link-arg-benches):
 * it is never part of libvmig. */
#include <sched.h>
#include <stddef.h>
#include <stdint.h>

#include "vmig_ring_inline.h"

int ring_bench_inline_produce(vmig_ring_producer *p, size_t n);
int ring_bench_inline_consume(vmig_ring_consumer *c, size_t total);
uint64_t ring_bench_inline_pairs(vmig_ring_producer *p, vmig_ring_consumer *c, size_t pairs);

/* Rust's std::hint::spin_loop(). */
#if defined(__x86_64__) || defined(__i386__)
#define SPIN_HINT() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define SPIN_HINT() __asm__ __volatile__("yield")
#else
#define SPIN_HINT() ((void)0)
#endif

/* benches/ring.rs's Backoff. */
struct backoff {
    unsigned n;
};

static void backoff_wait(struct backoff *b)
{
    if (++b->n < 64) {
        SPIN_HINT();
    } else {
        b->n = 0;
        sched_yield();
    }
}

/* send_each: items 1..=n, one at a time, a fresh backoff per item.
 * Returns 0, or -1 without a fast path. */
int ring_bench_inline_produce(vmig_ring_producer *p, size_t n)
{
    vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(p);
    if (pf == NULL) {
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        struct backoff b = {0};
        while (vmig_ring_fast_enqueue(pf, (void *)(uintptr_t)(k + 1)) != 0) {
            backoff_wait(&b);
        }
    }
    return 0;
}

/* receive_each: `total` items, checking they come 1, 2, 3 ... Returns 0,
 * -1 without a fast path, -2 on a lost, duplicated or reordered item. */
int ring_bench_inline_consume(vmig_ring_consumer *c, size_t total)
{
    vmig_ring_consumer_fast *cf = vmig_ring_consumer_fast_view(c);
    if (cf == NULL) {
        return -1;
    }
    struct backoff b = {0};
    for (size_t k = 1; k <= total; k++) {
        void *v;
        while (vmig_ring_fast_dequeue(cf, &v) != 0) {
            backoff_wait(&b);
        }
        if ((uintptr_t)v != k) {
            return -2;
        }
    }
    return 0;
}

/* pair_latency: `pairs` enqueue+dequeue pairs on one thread. Returns the
 * sum of the items dequeued (pairs * (pairs + 1) / 2), or 0 on an error. */
uint64_t ring_bench_inline_pairs(vmig_ring_producer *p, vmig_ring_consumer *c, size_t pairs)
{
    vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(p);
    vmig_ring_consumer_fast *cf = vmig_ring_consumer_fast_view(c);
    if (pf == NULL || cf == NULL) {
        return 0;
    }
    uint64_t sum = 0;
    for (size_t k = 1; k <= pairs; k++) {
        void *v;
        if (vmig_ring_fast_enqueue(pf, (void *)(uintptr_t)k) != 0 || vmig_ring_fast_dequeue(cf, &v) != 0 ||
            (uintptr_t)v != k) {
            return 0;
        }
        sum += (uintptr_t)v;
    }
    return sum;
}
