/* Ring C API, per-thread handles (vmig_ring_producer_*, vmig_ring_consumer_*):
 * every function and its bad-argument paths, the one-consumer and
 * one-SP-producer rules (EBUSY), the handles keeping a freed ring alive
 * (ASan's leak and use-after-free checks see the last handle free it),
 * bursts across the slot wrap, and threaded runs (SPSC and 3-producer MPSC)
 * whose items are heap payloads written before enqueue and read after
 * dequeue, checking no loss, no duplicate and per-producer FIFO (TSan sees
 * a missing happens-before). Built plain, with ASan+UBSan and with TSan by
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
#include "vmig.h"
#include "support/last_error.h"

static void *item(uintptr_t v) { return (void *)v; }

static void test_bad_arguments(void)
{
    /* NULL and foreign rings. */
    errno = 0;
    CHECK(vmig_ring_producer_new(NULL) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_ring_consumer_new(NULL) == NULL && errno == EINVAL);
    uint64_t not_a_ring[64] __attribute__((aligned(128))) = {0};
    errno = 0;
    CHECK(vmig_ring_consumer_new((vmig_ring *)not_a_ring) == NULL && errno == EINVAL);

    /* NULL handles. */
    void *out = item(7);
    CHECK(vmig_ring_producer_enqueue(NULL, item(1)) == -EINVAL);
    CHECK(vmig_ring_producer_enqueue_burst(NULL, (void *const[]){item(1)}, 1) == -EINVAL);
    CHECK(vmig_ring_consumer_dequeue(NULL, &out) == -EINVAL && out == item(7));
    CHECK(vmig_ring_consumer_dequeue_burst(NULL, &out, 1) == -EINVAL);
    CHECK(vmig_ring_producer_count(NULL) == -EINVAL);
    CHECK(vmig_ring_consumer_count(NULL) == -EINVAL);
    vmig_ring_producer_free(NULL);
    vmig_ring_consumer_free(NULL);

    vmig_ring *r = vmig_ring_new(4, 0);
    CHECK(r != NULL);
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(p != NULL && c != NULL);

    /* A handle of the other kind is rejected, not used. */
    CHECK(vmig_ring_producer_enqueue((vmig_ring_producer *)c, item(1)) == -EINVAL);
    CHECK(vmig_ring_consumer_dequeue((vmig_ring_consumer *)p, &out) == -EINVAL);
    CHECK(vmig_ring_producer_enqueue((vmig_ring_producer *)r, item(1)) == -EINVAL);

    /* One consumer handle per ring, one producer handle per SP ring. */
    errno = 0;
    CHECK(vmig_ring_consumer_new(r) == NULL && errno == EBUSY);
    CHECK(last_error_mentions("consumer handle"));
    errno = 0;
    CHECK(vmig_ring_producer_new(r) == NULL && errno == EBUSY);
    CHECK(last_error_mentions("producer handle"));

    /* NULL items and arrays: -EINVAL, nothing enqueued. */
    CHECK(vmig_ring_producer_enqueue(p, NULL) == -EINVAL);
    CHECK(vmig_ring_producer_enqueue_burst(p, NULL, 2) == -EINVAL);
    CHECK(vmig_ring_producer_enqueue_burst(p, (void *const[]){item(1), NULL, item(3)}, 3) == -EINVAL);
    CHECK(vmig_ring_producer_enqueue_burst(p, NULL, 0) == 0);
    CHECK(vmig_ring_producer_count(p) == 0);
    CHECK(vmig_ring_consumer_dequeue(c, NULL) == -EINVAL);
    CHECK(vmig_ring_consumer_dequeue_burst(c, NULL, 2) == -EINVAL);
    CHECK(vmig_ring_consumer_dequeue_burst(c, NULL, 0) == 0);

    /* Empty and full. */
    CHECK(vmig_ring_consumer_dequeue(c, &out) == -ENOENT && out == item(7));
    for (uintptr_t i = 1; i <= 4; i++) {
        CHECK(vmig_ring_producer_enqueue(p, item(i)) == 0);
    }
    CHECK(vmig_ring_producer_enqueue(p, item(5)) == -ENOBUFS);
    CHECK(vmig_ring_producer_enqueue_burst(p, (void *const[]){item(5)}, 1) == 0);
    CHECK(vmig_ring_consumer_count(c) == 4 && vmig_ring_count(r) == 4);

    /* Freed handles give their roles back; the items stay in the ring. */
    vmig_ring_consumer_free(c);
    c = vmig_ring_consumer_new(r);
    CHECK(c != NULL);
    CHECK(vmig_ring_consumer_dequeue(c, &out) == 0 && out == item(1));
    vmig_ring_producer_free(p);
    p = vmig_ring_producer_new(r);
    CHECK(p != NULL);
    CHECK(vmig_ring_producer_enqueue(p, item(5)) == 0);
    void *got[8];
    CHECK(vmig_ring_consumer_dequeue_burst(c, got, 8) == 4);
    for (uintptr_t i = 0; i < 4; i++) {
        CHECK(got[i] == item(i + 2));
    }
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);

    /* MP rings take any number of producer handles, still one consumer. */
    r = vmig_ring_new(8, VMIG_RING_MP);
    CHECK(r != NULL);
    vmig_ring_producer *ps[3];
    for (int i = 0; i < 3; i++) {
        ps[i] = vmig_ring_producer_new(r);
        CHECK(ps[i] != NULL);
        CHECK(vmig_ring_producer_enqueue(ps[i], item(10 + (uintptr_t)i)) == 0);
    }
    c = vmig_ring_consumer_new(r);
    CHECK(c != NULL);
    errno = 0;
    CHECK(vmig_ring_consumer_new(r) == NULL && errno == EBUSY);
    CHECK(vmig_ring_consumer_dequeue_burst(c, got, 8) == 3);
    CHECK(got[0] == item(10) && got[1] == item(11) && got[2] == item(12));
    for (int i = 0; i < 3; i++) {
        vmig_ring_producer_free(ps[i]);
    }
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);
}

/* Handles outlive vmig_ring_free: the last one frees the ring. */
static void test_lifetime(void)
{
    for (int mp = 0; mp < 2; mp++) {
        vmig_ring *r = vmig_ring_new(4, mp ? VMIG_RING_MP : 0);
        CHECK(r != NULL);
        vmig_ring_producer *p = vmig_ring_producer_new(r);
        vmig_ring_consumer *c = vmig_ring_consumer_new(r);
        CHECK(p != NULL && c != NULL);
        vmig_ring_free(r);
        /* The ring handle's reference is gone; the handles still work. */
        CHECK(vmig_ring_producer_enqueue(p, item(1)) == 0);
        void *out = NULL;
        CHECK(vmig_ring_consumer_dequeue(c, &out) == 0 && out == item(1));
        vmig_ring_producer_free(p);
        CHECK(vmig_ring_producer_enqueue(NULL, item(2)) == -EINVAL);
        CHECK(vmig_ring_consumer_dequeue(c, &out) == -ENOENT);
        vmig_ring_consumer_free(c); /* frees the ring: ASan checks no leak */
    }

    /* A second vmig_ring_free of a ring its handle keeps alive is refused. */
    vmig_ring *r = vmig_ring_new(4, 0);
    CHECK(r != NULL);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(c != NULL);
    vmig_ring_free(r);
    vmig_ring_free(r);
    CHECK(last_error_mentions("freed already"));
    errno = 0;
    CHECK(vmig_ring_producer_new(r) == NULL && errno == EINVAL);
    vmig_ring_consumer_free(c);

    /* A ring in caller memory: the handles go first, then the ring, then
     * the memory. */
    size_t size = vmig_ring_memsize(8);
    void *mem = aligned_alloc(VMIG_RING_ALIGN, size);
    CHECK(mem != NULL);
    CHECK(vmig_ring_init(mem, size, 8, 0) == 0);
    r = (vmig_ring *)mem;
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    c = vmig_ring_consumer_new(r);
    CHECK(p != NULL && c != NULL);
    CHECK(vmig_ring_producer_enqueue(p, item(3)) == 0);
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    /* The per-call API sees what the handles did. */
    CHECK(vmig_ring_dequeue(r) == item(3));
    CHECK(vmig_ring_empty(r));
    vmig_ring_free(r);
    free(mem);
}

/* Bursts, partial and across the slot wrap, several laps. */
static void test_bursts(uint32_t flags)
{
    vmig_ring *r = vmig_ring_new(8, flags);
    CHECK(r != NULL);
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(p != NULL && c != NULL);
    void *in[12], *out[12];
    uintptr_t next_in = 1, next_out = 1;
    for (int round = 0; round < 40; round++) {
        uint32_t want = 1 + (uint32_t)round % 11;
        for (uint32_t i = 0; i < want; i++) {
            in[i] = item(next_in + i);
        }
        int moved = vmig_ring_producer_enqueue_burst(p, in, want);
        CHECK(moved >= 0 && (uint32_t)moved <= want);
        next_in += (uintptr_t)moved;
        CHECK(vmig_ring_producer_count(p) == (int)(next_in - next_out));
        memset(out, 0, sizeof(out));
        uint32_t take = 1 + (uint32_t)round % 7;
        int got = vmig_ring_consumer_dequeue_burst(c, out, take);
        CHECK(got >= 0 && (uint32_t)got <= take);
        for (int i = 0; i < got; i++) {
            CHECK(out[i] == item(next_out++));
        }
        if ((uint32_t)got < take) {
            CHECK(out[got] == NULL); /* untouched beyond the count */
        }
    }
    int got;
    while ((got = vmig_ring_consumer_dequeue_burst(c, out, 12)) > 0) {
        for (int i = 0; i < got; i++) {
            CHECK(out[i] == item(next_out++));
        }
    }
    CHECK(got == 0 && next_out == next_in);
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);
}

/* Threaded runs: items are heap payloads {producer, seq}. */
struct payload {
    uintptr_t producer, seq;
};

struct run {
    vmig_ring_producer *handle;
    uintptr_t id, per;
};

static void *producer(void *arg)
{
    struct run *run = arg;
    void *batch[16];
    for (uintptr_t k = 0; k < run->per;) {
        uint32_t want = (uint32_t)((k / 5 + run->id) % 3 == 0 ? 1 : 1 + k % 16);
        if (want > run->per - k) {
            want = (uint32_t)(run->per - k);
        }
        for (uint32_t i = 0; i < want; i++) {
            struct payload *pl = malloc(sizeof(*pl));
            CHECK(pl != NULL);
            pl->producer = run->id; /* written before enqueue */
            pl->seq = k + i;
            batch[i] = pl;
        }
        uint32_t done = 0;
        while (done < want) {
            int n = want - done == 1 ? (vmig_ring_producer_enqueue(run->handle, batch[done]) == 0)
                                     : vmig_ring_producer_enqueue_burst(run->handle, batch + done, want - done);
            CHECK(n >= 0);
            if (n == 0) {
                sched_yield();
            }
            done += (uint32_t)n;
        }
        k += want;
    }
    vmig_ring_producer_free(run->handle);
    return NULL;
}

static void run_threads(uint32_t flags, int producers, uintptr_t per)
{
    vmig_ring *r = vmig_ring_new(32, flags);
    CHECK(r != NULL);
    pthread_t threads[3];
    struct run runs[3];
    for (int i = 0; i < producers; i++) {
        runs[i] = (struct run){.handle = vmig_ring_producer_new(r), .id = (uintptr_t)i, .per = per};
        CHECK(runs[i].handle != NULL);
    }
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    CHECK(c != NULL);
    vmig_ring_free(r); /* the handles keep it */
    for (int i = 0; i < producers; i++) {
        CHECK(pthread_create(&threads[i], NULL, producer, &runs[i]) == 0);
    }
    uintptr_t next[3] = {0};
    uintptr_t total = 0;
    void *out[20];
    while (total < per * (uintptr_t)producers) {
        int n = vmig_ring_consumer_dequeue_burst(c, out, 1 + (uint32_t)(total % 20));
        CHECK(n >= 0);
        if (n == 0) {
            if (vmig_ring_consumer_dequeue(c, &out[0]) != 0) {
                sched_yield();
                continue;
            }
            n = 1;
        }
        for (int i = 0; i < n; i++) {
            struct payload *pl = out[i];
            CHECK(pl->producer < (uintptr_t)producers); /* read after dequeue */
            CHECK(pl->seq == next[pl->producer]);   /* no loss, no duplicate, FIFO */
            next[pl->producer]++;
            free(pl);
        }
        total += (uintptr_t)n;
    }
    for (int i = 0; i < producers; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(next[i] == per);
    }
    void *one;
    CHECK(vmig_ring_consumer_dequeue(c, &one) == -ENOENT);
    vmig_ring_consumer_free(c); /* the last reference: frees the ring */
}

int main(void)
{
    const char *mode = getenv("VMIG_TEST_MODE");
    /* Sanitizers slow everything down ~10x. */
    uintptr_t per = (mode && strcmp(mode, "plain") != 0) ? 20000 : 200000;

    test_bad_arguments();
    test_lifetime();
    test_bursts(0);
    test_bursts(VMIG_RING_MP);
    run_threads(0, 1, per);
    run_threads(VMIG_RING_MP, 3, per / 2);

    printf("test_ring_handles: ok\n");
    return 0;
}
