/* Dirty-page scheduler C API: every vmig_dirty_* function, bad arguments,
 * the first pass, duplicates, overflow, and marks from several threads
 * racing the migration thread's takes (each producer writes a version into
 * its page before marking it; the taker checks it saw the last one). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/check.h"
#include "vmig.h"

static void test_bad_args(void)
{
    uint32_t bad_caps[] = {0, 1, 3, 6, (1u << 30) + 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_caps / sizeof bad_caps[0]; i++) {
        errno = 0;
        CHECK(vmig_dirty_new(16, bad_caps[i]) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(vmig_dirty_new(0, 4) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_dirty_new(UINT64_MAX, 4) == NULL && errno == EINVAL);
    vmig_dirty_free(NULL);

    uint64_t page = 77;
    uint64_t pages[2] = {1, 2};
    vmig_dirty_statistics st;
    CHECK(vmig_dirty_mark(NULL, 0) == -EINVAL);
    CHECK(vmig_dirty_mark_burst(NULL, pages, 2) == 0);
    CHECK(vmig_dirty_next(NULL, &page) == -EINVAL && page == 77);
    CHECK(vmig_dirty_pending(NULL) == 0);
    CHECK(vmig_dirty_stats(NULL, &st) == -EINVAL);

    vmig_dirty *d = vmig_dirty_new(16, 4);
    CHECK(d != NULL);
    CHECK(vmig_dirty_mark(d, 16) == -EINVAL);
    CHECK(vmig_dirty_mark(d, UINT64_MAX) == -EINVAL);
    CHECK(vmig_dirty_mark_burst(d, NULL, 3) == 0);
    CHECK(vmig_dirty_mark_burst(d, pages, 0) == 0);
    CHECK(vmig_dirty_next(d, NULL) == -EINVAL);
    CHECK(vmig_dirty_stats(d, NULL) == -EINVAL);
    CHECK(vmig_dirty_stats(d, &st) == 0 && st.marks == 0 && st.handed_out == 0);
    vmig_dirty_free(d);
}

static void test_first_pass_and_queue(void)
{
    enum { N = 100 };
    vmig_dirty *d = vmig_dirty_new(N, 8);
    CHECK(d != NULL);
    CHECK(vmig_dirty_pending(d) == N);
    uint64_t page;
    for (uint64_t p = 0; p < N; p++) {
        CHECK(vmig_dirty_next(d, &page) == 1 && page == p);
    }
    page = 12345;
    CHECK(vmig_dirty_next(d, &page) == 0 && page == 12345);
    CHECK(vmig_dirty_pending(d) == 0);

    CHECK(vmig_dirty_mark(d, 5) == 0);
    CHECK(vmig_dirty_mark(d, 5) == 0);
    uint64_t burst[] = {7, 5, 9, N, 3};
    CHECK(vmig_dirty_mark_burst(d, burst, 5) == 3); /* stops at N */
    CHECK(vmig_dirty_pending(d) == 3);
    vmig_dirty_statistics st;
    CHECK(vmig_dirty_stats(d, &st) == 0);
    CHECK(st.marks == 5 && st.duplicates == 2 && st.queued == 3 && st.overflowed == 0);
    CHECK(st.background_remaining == 0 && st.handed_out == N && st.from_background == N);
    CHECK(st.background_interval >= 1);
    uint64_t got[3];
    for (int i = 0; i < 3; i++) {
        CHECK(vmig_dirty_next(d, &got[i]) == 1);
    }
    CHECK(got[0] == 5 && got[1] == 7 && got[2] == 9); /* FIFO from one thread */
    CHECK(vmig_dirty_next(d, &page) == 0);
    vmig_dirty_free(d);
}

static void test_overflow(void)
{
    enum { N = 50000 };
    vmig_dirty *d = vmig_dirty_new(N, 2);
    CHECK(d != NULL);
    uint64_t page;
    while (vmig_dirty_next(d, &page) == 1) {
    }
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    uint64_t marked = 0;
    for (uint64_t p = 0; p < N; p += 3) {
        CHECK(vmig_dirty_mark(d, p) == 0);
        marked++;
    }
    vmig_dirty_statistics st;
    CHECK(vmig_dirty_stats(d, &st) == 0 && st.overflowed == marked - 2);
    CHECK(vmig_dirty_pending(d) == marked);
    uint64_t n = 0;
    while (vmig_dirty_next(d, &page) == 1) {
        CHECK(page < N && page % 3 == 0 && !seen[page]);
        seen[page] = 1;
        n++;
    }
    CHECK(n == marked);
    CHECK(vmig_dirty_stats(d, &st) == 0 && st.from_overflow == marked - 2 && st.queued == 0);
    vmig_dirty_free(d);
}

/* Several producers: each writes version v into its own pages' slots, then
 * marks the page. The taker records, per page, the version it read after
 * taking it. At the end (producers joined, queue drained), every page's
 * last read version must be the producer's last written version. */
enum { PRODUCERS = 3, PAGES_PER = 64, ROUNDS = 3000 };
static _Atomic uint64_t versions[PRODUCERS * PAGES_PER];
static vmig_dirty *shared_d;

static void *producer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t seed = 0x9e3779b97f4a7c15ull * (id + 1);
    for (uint64_t v = 1; v <= ROUNDS; v++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        uint64_t page = id * PAGES_PER + seed % PAGES_PER;
        atomic_store_explicit(&versions[page], v, memory_order_relaxed);
        if (v % 2) {
            CHECK(vmig_dirty_mark(shared_d, page) == 0);
        } else {
            uint64_t one[1] = {page};
            CHECK(vmig_dirty_mark_burst(shared_d, one, 1) == 1);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    enum { N = PRODUCERS * PAGES_PER };
    shared_d = vmig_dirty_new(N, 16);
    CHECK(shared_d != NULL);
    static uint64_t taken[N];
    pthread_t t[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++) {
        CHECK(pthread_create(&t[i], NULL, producer, (void *)i) == 0);
    }
    uint64_t page;
    for (int i = 0; i < 20000; i++) {
        if (vmig_dirty_next(shared_d, &page) == 1) {
            CHECK(page < N);
            taken[page] = atomic_load_explicit(&versions[page], memory_order_relaxed);
        }
    }
    for (int i = 0; i < PRODUCERS; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
    }
    while (vmig_dirty_next(shared_d, &page) == 1) {
        taken[page] = atomic_load_explicit(&versions[page], memory_order_relaxed);
    }
    for (int p = 0; p < N; p++) {
        CHECK(taken[p] == atomic_load_explicit(&versions[p], memory_order_relaxed));
    }
    vmig_dirty_statistics st;
    CHECK(vmig_dirty_stats(shared_d, &st) == 0);
    CHECK(st.marks == (uint64_t)PRODUCERS * ROUNDS && st.queued == 0 && vmig_dirty_pending(shared_d) == 0);
    vmig_dirty_free(shared_d);
}

int main(void)
{
    test_bad_args();
    test_first_pass_and_queue();
    test_overflow();
    test_threads();
    printf("test_dirty: ok\n");
    return 0;
}
