/* Ring C API, the inline fast path (include/vmig_ring_inline.h): the layout
 * check (views on SP rings only; another header's layout, a short or NULL
 * layout and foreign handles are refused with errno and a message), the
 * fallback's results (-ENOBUFS, -ENOENT, -EINVAL, vmig_last_error), inline
 * and out-of-line calls mixed on one handle across many laps of the slots,
 * and threaded runs: inline producer against an inline consumer, against an
 * out-of-line consumer (single items and bursts), and both sides mixing the
 * two, with reused payloads written before enqueue and read and written
 * after dequeue (no loss, no duplicate, FIFO; under TSan a weakened R5, A5,
 * R3 or A3 is a reported race: the loom models cannot run this header,
 * this run is the proof of its ordering). Built plain, with ASan+UBSan and with TSan by
 * scripts/c-tests.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/check.h"
#include "vmig_ring_inline.h"
#include "support/last_error.h"

static void *item(uintptr_t v) { return (void *)v; }

static void test_layout(void)
{
    static const uint32_t ours[] = VMIG_RING_FAST_LAYOUT;
    uint32_t n = (uint32_t)(sizeof ours / sizeof ours[0]);
    vmig_ring *r = vmig_ring_new(8, 0);
    CHECK(r != NULL);
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(p != NULL && c != NULL);

    /* This header and this library agree (the drift check). */
    CHECK(vmig_ring_producer_fast_view(p) != NULL);
    CHECK(vmig_ring_consumer_fast_view(c) != NULL);
    /* The view is the handle's: asking again gives the same one. */
    CHECK(vmig_ring_producer_fast_view(p) == vmig_ring_producer_fast_view(p));

    /* Another layout: each entry changed in turn, then a short table. */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t other[sizeof ours / sizeof ours[0]];
        memcpy(other, ours, sizeof other);
        other[i] += 4;
        errno = 0;
        CHECK(vmig_ring_producer_get_fast(p, other, n) == NULL && errno == EOPNOTSUPP);
        CHECK(last_error_mentions("vmig_ring_inline.h layout"));
        errno = 0;
        CHECK(vmig_ring_consumer_get_fast(c, other, n) == NULL && errno == EOPNOTSUPP);
    }
    errno = 0;
    CHECK(vmig_ring_producer_get_fast(p, ours, n - 1) == NULL && errno == EOPNOTSUPP);
    errno = 0;
    CHECK(vmig_ring_consumer_get_fast(c, ours, 0) == NULL && errno == EOPNOTSUPP);
    errno = 0;
    CHECK(vmig_ring_producer_get_fast(p, NULL, n) == NULL && errno == EINVAL);

    /* NULL and foreign handles. */
    errno = 0;
    CHECK(vmig_ring_producer_fast_view(NULL) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_ring_consumer_fast_view(NULL) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_ring_producer_fast_view((vmig_ring_producer *)c) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_ring_consumer_fast_view((vmig_ring_consumer *)r) == NULL && errno == EINVAL);
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);

    /* An MP ring has no inline path: its producers claim by CAS. */
    r = vmig_ring_new(8, VMIG_RING_MP);
    CHECK(r != NULL);
    p = vmig_ring_producer_new(r);
    c = vmig_ring_consumer_new(r);
    CHECK(p != NULL && c != NULL);
    errno = 0;
    CHECK(vmig_ring_producer_fast_view(p) == NULL && errno == EINVAL && last_error_mentions("VMIG_RING_MP"));
    errno = 0;
    CHECK(vmig_ring_consumer_fast_view(c) == NULL && errno == EINVAL);
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);
}

/* One thread: the fallback's results, and calls mixed on one handle. */
static void test_single_thread(void)
{
    vmig_ring *r = vmig_ring_new(4, 0);
    CHECK(r != NULL);
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    vmig_ring_free(r); /* the handles keep it */
    vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(p);
    vmig_ring_consumer_fast *cf = vmig_ring_consumer_fast_view(c);
    CHECK(pf != NULL && cf != NULL);

    void *out = item(99);
    CHECK(vmig_ring_fast_dequeue(cf, &out) == -ENOENT && out == item(99));
    CHECK(last_error_mentions("empty"));
    for (uintptr_t v = 1; v <= 4; v++) {
        CHECK(vmig_ring_fast_enqueue(pf, item(v)) == 0);
    }
    CHECK(vmig_ring_fast_enqueue(pf, item(5)) == -ENOBUFS && last_error_mentions("full"));
    CHECK(vmig_ring_fast_enqueue(pf, NULL) == -EINVAL && last_error_mentions("item is NULL"));
    CHECK(vmig_ring_consumer_count(c) == 4);
    CHECK(vmig_ring_fast_dequeue(cf, NULL) == -EINVAL && last_error_mentions("item is NULL"));
    for (uintptr_t v = 1; v <= 4; v++) {
        CHECK(vmig_ring_fast_dequeue(cf, &out) == 0 && out == item(v));
    }
    CHECK(vmig_ring_fast_dequeue(cf, &out) == -ENOENT && out == item(4));

    /* Many laps of the slots, each side picking inline, out-of-line single
     * or burst by a pattern that shifts every lap: whatever mix, FIFO. */
    uintptr_t sent = 0, seen = 0;
    for (unsigned step = 0; step < 20000; step++) {
        unsigned way = (step * 7 + step / 13) % 5;
        if (way < 2) {
            int rc = way == 0 ? vmig_ring_fast_enqueue(pf, item(sent + 1))
                              : vmig_ring_producer_enqueue(p, item(sent + 1));
            CHECK(rc == 0 || rc == -ENOBUFS);
            sent += rc == 0;
        } else if (way == 2) {
            void *batch[3] = {item(sent + 1), item(sent + 2), item(sent + 3)};
            int n = vmig_ring_producer_enqueue_burst(p, batch, 3);
            CHECK(n >= 0 && n <= 3);
            sent += (uintptr_t)n;
        } else if (way == 3) {
            int rc = step % 2 ? vmig_ring_fast_dequeue(cf, &out) : vmig_ring_consumer_dequeue(c, &out);
            CHECK(rc == 0 || rc == -ENOENT);
            if (rc == 0) {
                CHECK(out == item(++seen));
            }
        } else {
            void *batch[2];
            int n = vmig_ring_consumer_dequeue_burst(c, batch, 2);
            CHECK(n >= 0 && n <= 2);
            for (int i = 0; i < n; i++) {
                CHECK(batch[i] == item(++seen));
            }
        }
        CHECK(sent - seen <= 4);
    }
    while (vmig_ring_fast_dequeue(cf, &out) == 0) {
        CHECK(out == item(++seen));
    }
    CHECK(seen == sent && sent > 10000);
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c); /* the last reference: frees the ring */
}

/* Threaded runs. Items point into a pool of RING_CAP * 2 payloads that
 * the producer reuses: it writes payload k % POOL before enqueueing item
 * k, and the consumer reads and then overwrites it after dequeueing, all
 * with plain accesses. The producer may reuse a payload only after the
 * consumer's later dequeues published cons (R3) and the producer loaded it
 * (A3): so each of the four orderings (R5/A5 for the payload's write
 * before its read, R3/A3 for the consumer's accesses before the reuse)
 * guards these accesses, and TSan reports a race if any one is weakened.
 * (Heap payloads would hide R3/A3: the allocator's own locks order a free
 * before the malloc that reuses the memory.) */
#define RING_CAP 16
#define POOL (2 * RING_CAP)

struct payload {
    uintptr_t seq;
};

enum way { INLINE, OUT_OF_LINE, MIXED };

struct run {
    vmig_ring_producer *handle;
    enum way way;
    uintptr_t total;
    struct payload *pool;
};

static void *producer(void *arg)
{
    struct run *run = arg;
    vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(run->handle);
    CHECK(pf != NULL);
    for (uintptr_t k = 0; k < run->total;) {
        struct payload *pl = &run->pool[k % POOL];
        pl->seq = k; /* written before enqueue */
        int rc;
        if (run->way == INLINE || (run->way == MIXED && (k / 7) % 3 != 0)) {
            while ((rc = vmig_ring_fast_enqueue(pf, pl)) == -ENOBUFS) {
                sched_yield();
            }
        } else {
            while ((rc = vmig_ring_producer_enqueue(run->handle, pl)) == -ENOBUFS) {
                sched_yield();
            }
        }
        CHECK(rc == 0);
        k++;
    }
    vmig_ring_producer_free(run->handle);
    return NULL;
}

/* The consumer side, on this thread: `way` picks its calls. */
static int consume(vmig_ring_consumer *c, vmig_ring_consumer_fast *cf, enum way way, uintptr_t seen, void **out)
{
    if (way == INLINE || (way == MIXED && (seen / 5) % 4 == 0)) {
        return vmig_ring_fast_dequeue(cf, &out[0]) == 0;
    }
    if (way == OUT_OF_LINE && seen % 2 == 0) {
        return vmig_ring_consumer_dequeue(c, &out[0]) == 0;
    }
    int n = vmig_ring_consumer_dequeue_burst(c, out, 1 + (uint32_t)(seen % 8));
    CHECK(n >= 0);
    return n;
}

static void run_threads(enum way produce, enum way consume_way, uintptr_t total)
{
    vmig_ring *r = vmig_ring_new(RING_CAP, 0);
    CHECK(r != NULL);
    struct payload pool[POOL];
    memset(pool, 0, sizeof pool);
    struct run run = {.handle = vmig_ring_producer_new(r), .way = produce, .total = total, .pool = pool};
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(run.handle != NULL && c != NULL);
    vmig_ring_free(r); /* the handles keep it */
    vmig_ring_consumer_fast *cf = vmig_ring_consumer_fast_view(c);
    CHECK(cf != NULL);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, producer, &run) == 0);
    uintptr_t seen = 0;
    void *out[8];
    while (seen < total) {
        int n = consume(c, cf, consume_way, seen, out);
        if (n == 0) {
            sched_yield();
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct payload *pl = out[i];
            CHECK(pl == &pool[seen % POOL]);
            CHECK(pl->seq == seen); /* read after dequeue: no loss, no duplicate, FIFO */
            pl->seq = UINTPTR_MAX;  /* and written: the producer's reuse must come after */
            seen++;
        }
    }
    CHECK(pthread_join(thread, NULL) == 0);
    void *one;
    CHECK(vmig_ring_fast_dequeue(cf, &one) == -ENOENT);
    vmig_ring_consumer_free(c); /* the last reference: frees the ring */
}

int main(void)
{
    const char *mode = getenv("VMIG_TEST_MODE");
    /* Sanitizers slow everything down ~10x. */
    uintptr_t total = (mode && strcmp(mode, "plain") != 0) ? 20000 : 200000;

    test_layout();
    test_single_thread();
    run_threads(INLINE, INLINE, total);
    run_threads(INLINE, OUT_OF_LINE, total);
    run_threads(OUT_OF_LINE, INLINE, total);
    run_threads(MIXED, MIXED, total);

    printf("test_ring_inline: ok\n");
    return 0;
}
