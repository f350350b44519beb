/* Ring C API: every exported vmig_ring_* function, the bad-argument paths,
 * rings laid into caller memory (aligned_alloc and mmap), and a
 * multi-threaded MP run (several producers, one consumer) checking no loss,
 * no duplicate and per-producer FIFO. Built plain, with ASan+UBSan and with
 * TSan by scripts/c-tests.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "support/check.h"
#include "vmig.h"

static void *item(uintptr_t v) { return (void *)v; }

/* Fill, overflow, drain, underflow, with singles and bursts, several laps. */
static void test_basic(vmig_ring *r, uint32_t cap)
{
    CHECK(vmig_ring_capacity(r) == cap);
    CHECK(vmig_ring_empty(r));
    CHECK(!vmig_ring_full(r));
    CHECK(vmig_ring_count(r) == 0);
    for (int lap = 0; lap < 5; lap++) {
        for (uintptr_t i = 1; i <= cap; i++) {
            CHECK(vmig_ring_enqueue(r, item(i)) == 0);
            CHECK(vmig_ring_count(r) == i);
        }
        CHECK(vmig_ring_full(r));
        CHECK(!vmig_ring_empty(r));
        CHECK(vmig_ring_enqueue(r, item(99)) == -ENOBUFS);
        CHECK(vmig_ring_enqueue_burst(r, (void *const[]){item(99)}, 1) == 0);
        for (uintptr_t i = 1; i <= cap; i++) {
            CHECK(vmig_ring_dequeue(r) == item(i));
        }
        CHECK(vmig_ring_dequeue(r) == NULL);
        CHECK(vmig_ring_empty(r));

        /* Bursts: partial when there is less room / fewer items than asked. */
        void *in[8], *out[8];
        for (uintptr_t i = 0; i < 8; i++) {
            in[i] = item(100 + i);
        }
        CHECK(vmig_ring_enqueue(r, item(1)) == 0);
        uint32_t moved = vmig_ring_enqueue_burst(r, in, 8);
        CHECK(moved == (cap - 1 < 8 ? cap - 1 : 8));
        CHECK(vmig_ring_dequeue(r) == item(1));
        memset(out, 0, sizeof(out));
        CHECK(vmig_ring_dequeue_burst(r, out, 8) == moved);
        for (uint32_t i = 0; i < moved; i++) {
            CHECK(out[i] == in[i]);
        }
        if (moved < 8) {
            CHECK(out[moved] == NULL); /* untouched beyond the count */
        }
        CHECK(vmig_ring_dequeue_burst(r, out, 8) == 0);
        CHECK(vmig_ring_enqueue_burst(r, in, 0) == 0);
        CHECK(vmig_ring_dequeue_burst(r, out, 0) == 0);
    }
}

static void test_bad_arguments(void)
{
    /* Constructors: NULL with errno EINVAL. */
    const uint32_t bad_caps[] = {0, 1, 3, 6, 1000, (1u << 30) + 1, 1u << 31, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
        errno = 0;
        CHECK(vmig_ring_new(bad_caps[i], 0) == NULL && errno == EINVAL);
        CHECK(vmig_ring_memsize(bad_caps[i]) == 0);
    }
    errno = 0;
    CHECK(vmig_ring_new(4, 2) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_ring_new(4, 0x80000000u) == NULL && errno == EINVAL);
    CHECK(vmig_ring_memsize(VMIG_RING_MIN_CAPACITY) > 0);
    CHECK(vmig_ring_memsize(1024) >= 1024 * sizeof(void *));

    /* NULL handles. */
    CHECK(vmig_ring_enqueue(NULL, item(1)) == -EINVAL);
    CHECK(vmig_ring_dequeue(NULL) == NULL);
    CHECK(vmig_ring_enqueue_burst(NULL, (void *const[]){item(1)}, 1) == 0);
    void *out[2];
    CHECK(vmig_ring_dequeue_burst(NULL, out, 2) == 0);
    CHECK(vmig_ring_count(NULL) == 0);
    CHECK(vmig_ring_capacity(NULL) == 0);
    CHECK(vmig_ring_empty(NULL));
    CHECK(!vmig_ring_full(NULL));
    vmig_ring_free(NULL);

    /* NULL items and arrays. */
    vmig_ring *r = vmig_ring_new(4, VMIG_RING_MP);
    CHECK(r != NULL);
    CHECK(vmig_ring_enqueue(r, NULL) == -EINVAL);
    CHECK(vmig_ring_enqueue_burst(r, NULL, 3) == 0);
    CHECK(vmig_ring_enqueue_burst(r, (void *const[]){item(1), NULL, item(3)}, 3) == 0);
    CHECK(vmig_ring_empty(r)); /* checked before any was enqueued */
    CHECK(vmig_ring_enqueue(r, item(1)) == 0);
    CHECK(vmig_ring_dequeue_burst(r, NULL, 3) == 0);
    CHECK(vmig_ring_count(r) == 1);
    vmig_ring_free(r);

    /* vmig_ring_init: NULL, misaligned, too small, bad capacity/flags. */
    size_t size = vmig_ring_memsize(8);
    unsigned char *mem = aligned_alloc(VMIG_RING_ALIGN, size + VMIG_RING_ALIGN);
    CHECK(mem != NULL);
    CHECK(vmig_ring_init(NULL, size, 8, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem + 8, size, 8, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem + 64, size, 8, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem, size - 1, 8, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem, 0, 8, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem, size, 6, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem, size, 0, 0) == -EINVAL);
    CHECK(vmig_ring_init(mem, size, 8, 4) == -EINVAL);
    CHECK(vmig_ring_init(mem, size + VMIG_RING_ALIGN, 8, 0) == 0); /* larger is fine */
    vmig_ring *in_place = (vmig_ring *)mem;
    CHECK(vmig_ring_capacity(in_place) == 8);
    vmig_ring_free(in_place);
    /* Freed: the memory no longer holds a ring. */
    CHECK(vmig_ring_enqueue(in_place, item(1)) == -EINVAL);
    CHECK(vmig_ring_capacity(in_place) == 0);
    free(mem);
}

/* ---- multi-threaded MP: producers send (p, seq), one consumer checks ---- */

#define PRODUCERS 4

struct mp_run {
    vmig_ring *ring;
    uintptr_t per; /* items per producer */
    int id;
};

/* Item value: producer in the low bits, sequence above; never 0. */
static uintptr_t encode(int p, uintptr_t seq) { return ((seq << 3) | (uintptr_t)p) + 1; }

static void *producer(void *arg)
{
    struct mp_run *run = arg;
    /* Payload handed through the ring: written here, read by the consumer;
     * TSan checks the ring orders the two. */
    uintptr_t *payload = malloc(run->per * sizeof(*payload));
    CHECK(payload != NULL);
    uintptr_t seq = 0;
    while (seq < run->per) {
        if ((seq / 5 + (uintptr_t)run->id) % 2) {
            payload[seq] = encode(run->id, seq);
            if (vmig_ring_enqueue(run->ring, &payload[seq]) == 0) {
                seq++;
            } else {
                sched_yield();
            }
        } else {
            void *burst[8];
            uint32_t n = 0;
            while (n < 8 && seq + n < run->per) {
                payload[seq + n] = encode(run->id, seq + n);
                burst[n] = &payload[seq + n];
                n++;
            }
            uint32_t moved = vmig_ring_enqueue_burst(run->ring, burst, n);
            if (moved == 0) {
                sched_yield();
            }
            seq += moved;
        }
    }
    return payload; /* freed by the consumer once everything arrived */
}

static void run_mp(vmig_ring *r, uintptr_t per)
{
    pthread_t threads[PRODUCERS];
    struct mp_run runs[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) {
        runs[p] = (struct mp_run){.ring = r, .per = per, .id = p};
        CHECK(pthread_create(&threads[p], NULL, producer, &runs[p]) == 0);
    }
    uintptr_t next[PRODUCERS] = {0};
    uintptr_t total = 0;
    void *out[16];
    while (total < per * PRODUCERS) {
        uint32_t n = vmig_ring_dequeue_burst(r, out, 1 + total % 16);
        if (n == 0) {
            void *one = vmig_ring_dequeue(r);
            if (one == NULL) {
                sched_yield();
                continue;
            }
            out[0] = one;
            n = 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            uintptr_t v = *(uintptr_t *)out[i] - 1;
            int p = (int)(v & 7);
            CHECK(p < PRODUCERS);
            CHECK((v >> 3) == next[p]); /* no loss, no duplicate, FIFO */
            next[p]++;
        }
        total += n;
    }
    for (int p = 0; p < PRODUCERS; p++) {
        void *payload;
        CHECK(pthread_join(threads[p], &payload) == 0);
        free(payload);
        CHECK(next[p] == per);
    }
    CHECK(vmig_ring_empty(r));
    CHECK(vmig_ring_dequeue(r) == NULL);
}

/* SPSC: one producer thread, the consumer here. */
static void *sp_producer(void *arg)
{
    struct mp_run *run = arg;
    for (uintptr_t v = 1; v <= run->per;) {
        if (vmig_ring_enqueue(run->ring, item(v)) == 0) {
            v++;
        } else {
            sched_yield();
        }
    }
    return NULL;
}

static void run_sp(vmig_ring *r, uintptr_t per)
{
    pthread_t t;
    struct mp_run run = {.ring = r, .per = per, .id = 0};
    CHECK(pthread_create(&t, NULL, sp_producer, &run) == 0);
    for (uintptr_t v = 1; v <= per;) {
        void *got = vmig_ring_dequeue(r);
        if (got == NULL) {
            sched_yield();
            continue;
        }
        CHECK(got == item(v));
        v++;
    }
    CHECK(pthread_join(t, NULL) == 0);
}

int main(void)
{
    const char *mode = getenv("VMIG_TEST_MODE");
    /* Sanitizers slow everything down ~10x. */
    uintptr_t per = (mode && strcmp(mode, "plain") != 0) ? 50000 : 500000;

    CHECK(strcmp(vmig_version(), VMIG_VERSION) == 0);
    test_bad_arguments();

    /* Heap rings from vmig_ring_new. */
    for (uint32_t cap = 2; cap <= 64; cap *= 2) {
        vmig_ring *r = vmig_ring_new(cap, 0);
        CHECK(r != NULL);
        test_basic(r, cap);
        vmig_ring_free(r);
        r = vmig_ring_new(cap, VMIG_RING_MP);
        CHECK(r != NULL);
        test_basic(r, cap);
        vmig_ring_free(r);
    }
    vmig_ring *r = vmig_ring_new(64, VMIG_RING_MP);
    run_mp(r, per);
    vmig_ring_free(r);
    r = vmig_ring_new(16, 0);
    run_sp(r, per);
    vmig_ring_free(r);

    /* A ring laid into aligned_alloc'd memory, used from threads. */
    size_t size = vmig_ring_memsize(32);
    void *mem = aligned_alloc(VMIG_RING_ALIGN, size);
    CHECK(mem != NULL);
    CHECK(vmig_ring_init(mem, size, 32, VMIG_RING_MP) == 0);
    test_basic((vmig_ring *)mem, 32);
    run_mp((vmig_ring *)mem, per / 2);
    vmig_ring_free((vmig_ring *)mem);
    free(mem);

    /* A ring laid into mmap'd memory (what a VMM shares), both modes. */
    size = vmig_ring_memsize(128);
    mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    CHECK(vmig_ring_init(mem, size, 128, 0) == 0);
    test_basic((vmig_ring *)mem, 128);
    run_sp((vmig_ring *)mem, per / 2);
    vmig_ring_free((vmig_ring *)mem);
    CHECK(vmig_ring_init(mem, size, 128, VMIG_RING_MP) == 0);
    run_mp((vmig_ring *)mem, per / 2);
    vmig_ring_free((vmig_ring *)mem);
    CHECK(munmap(mem, size) == 0);

    printf("test_ring: ok\n");
    return 0;
}
