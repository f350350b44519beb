/* Postcopy C API: a destination region under userfaultfd with toucher
 * threads faulting on it, a fault-service loop turning faults into
 * requests, each request answered twice and every page streamed too
 * (placed exactly once, contents checked), vmig_postcopy_dest_fail()
 * releasing waiters, the source's urgent queue and sent map, and the
 * bad-argument paths. Skips (exit 0, loud) where userfaultfd is unusable.
 * Built plain, with ASan+UBSan and with TSan by scripts/c-tests.sh. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "support/check.h"
#include "vmig.h"

#define PAGES 256
#define TOUCHERS 3

static size_t page_size;
static unsigned char *region;
static vmig_postcopy_dest *dest;

static uint64_t word_of(uint64_t page) { return (page << 20) | 0xabcULL; }

static void *toucher(void *arg)
{
    uintptr_t t = (uintptr_t)arg;
    for (uint64_t i = 0; i < PAGES; i++) {
        uint64_t p = (i * 5 + t * 17) % PAGES;
        if (p == 7) {
            continue; /* never placed: the waiter's page */
        }
        volatile uint64_t *w = (volatile uint64_t *)(region + p * page_size);
        uint64_t v = *w;
        CHECK(!vmig_postcopy_dest_failed(dest));
        CHECK(v == word_of(p));
    }
    return NULL;
}

static void fill(unsigned char *buf, uint64_t page)
{
    memset(buf, 0, page_size);
    uint64_t w = word_of(page);
    memcpy(buf, &w, sizeof(w));
}

static atomic_int blocked_released;

static void *waiter(void *arg)
{
    (void)arg;
    volatile unsigned char *b = region + 7 * page_size;
    (void)*b;
    CHECK(vmig_postcopy_dest_failed(dest));
    atomic_fetch_add(&blocked_released, 1);
    return NULL;
}

static void test_dest(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = PAGES * page_size;
    region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(region != MAP_FAILED);

    CHECK(vmig_postcopy_dest_new(NULL, len, page_size) == NULL && errno == EINVAL);
    CHECK(vmig_postcopy_dest_new(region + 1, len, page_size) == NULL && errno == EINVAL);
    CHECK(vmig_postcopy_dest_new(region, len, 512) == NULL && errno == EINVAL);
    dest = vmig_postcopy_dest_new(region, len, page_size);
    if (!dest) {
        fprintf(stderr, "****************************************************\n"
                        "SKIP: test_postcopy destination: userfaultfd: %s\n"
                        "****************************************************\n",
                strerror(errno));
        munmap(region, len);
        return;
    }
    unsigned char *buf = malloc(page_size);
    CHECK(buf);
    CHECK(vmig_postcopy_dest_remaining(dest) == PAGES);
    CHECK(vmig_postcopy_dest_place(dest, PAGES, buf, page_size) == -EINVAL);
    CHECK(vmig_postcopy_dest_place(dest, 0, buf, page_size - 1) == -EINVAL);
    CHECK(vmig_postcopy_dest_place(dest, 0, NULL, page_size) == -EINVAL);
    CHECK(vmig_postcopy_dest_place(NULL, 0, buf, page_size) == -EINVAL);
    uint64_t reqs[VMIG_POSTCOPY_MAX_REQUESTS];
    CHECK(vmig_postcopy_dest_wait_requests(dest, 0, reqs, 1) == -EINVAL);
    CHECK(vmig_postcopy_dest_mark_present(dest, PAGES) == -EINVAL);

    pthread_t th[TOUCHERS];
    for (uintptr_t t = 0; t < TOUCHERS; t++) {
        CHECK(pthread_create(&th[t], NULL, toucher, (void *)t) == 0);
    }
    /* Fault service + answers (each twice) + background stream (one page
     * per loop), all on this thread, interleaved. Page 7 is never placed. */
    uint64_t next_bg = 0, bg = 0, requests = 0, placed = 0, dups = 0;
    int seen7 = 0;
    while (vmig_postcopy_dest_remaining(dest) > 1) {
        int n = vmig_postcopy_dest_wait_requests(dest, 1, reqs, VMIG_POSTCOPY_MAX_REQUESTS);
        CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            requests++;
            if (reqs[i] == 7) {
                seen7 = 1;
                continue;
            }
            for (int k = 0; k < 2; k++) {
                fill(buf, reqs[i]);
                int r = vmig_postcopy_dest_place(dest, reqs[i], buf, page_size);
                CHECK(r == 0 || r == 1);
                placed += r == 0;
                dups += r == 1;
            }
        }
        if (next_bg < PAGES) {
            if (next_bg != 7) {
                fill(buf, next_bg);
                int r = vmig_postcopy_dest_place(dest, next_bg, buf, page_size);
                CHECK(r == 0 || r == 1);
                bg++;
                placed += r == 0;
                dups += r == 1;
            }
            next_bg++;
        }
    }
    CHECK(!seen7);
    for (int t = 0; t < TOUCHERS; t++) {
        CHECK(pthread_join(th[t], NULL) == 0);
    }
    CHECK(placed == PAGES - 1);
    CHECK(placed + dups == 2 * requests + bg);
    /* A thread waiting on a page that never comes is released by fail. */
    pthread_t w;
    CHECK(pthread_create(&w, NULL, waiter, NULL) == 0);
    for (int i = 0; i < 1000 && !seen7; i++) {
        int n = vmig_postcopy_dest_wait_requests(dest, 10, reqs, VMIG_POSTCOPY_MAX_REQUESTS);
        CHECK(n >= 0);
        for (int k = 0; k < n; k++) {
            seen7 |= reqs[k] == 7;
        }
    }
    CHECK(seen7);
    CHECK(vmig_postcopy_dest_remaining(dest) == 1);
    CHECK(vmig_postcopy_dest_fail(dest) == 0);
    CHECK(vmig_postcopy_dest_fail(dest) == 0);
    CHECK(pthread_join(w, NULL) == 0);
    CHECK(atomic_load(&blocked_released) == 1);
    CHECK(vmig_postcopy_dest_place(dest, 1, buf, page_size) == -ESHUTDOWN);
    for (uint64_t p = 0; p < PAGES; p++) {
        if (p == 7) {
            continue;
        }
        uint64_t v;
        memcpy(&v, region + p * page_size, sizeof(v));
        CHECK(v == word_of(p));
    }
    vmig_postcopy_latency lat;
    CHECK(vmig_postcopy_dest_latency(dest, NULL) == -EINVAL);
    CHECK(vmig_postcopy_dest_latency(dest, &lat) == 0);
    uint64_t sum = 0;
    for (size_t i = 0; i < VMIG_POSTCOPY_LATENCY_BUCKETS; i++) {
        sum += lat.buckets[i];
    }
    CHECK(sum == lat.count && lat.count <= requests && lat.count > 0);
    vmig_postcopy_dest_free(dest);
    vmig_postcopy_dest_free(NULL);
    free(buf);
    munmap(region, len);
    printf("test_postcopy: destination: %llu requests, %llu duplicates dropped\n",
           (unsigned long long)requests, (unsigned long long)dups);
}

struct producer_arg {
    vmig_postcopy_src *s;
    uint64_t first;
};

static void *producer(void *arg)
{
    struct producer_arg *a = arg;
    for (uint64_t i = 0; i < 1000; i++) {
        while (vmig_postcopy_src_request(a->s, a->first + i) == -ENOBUFS) {
        }
    }
    return NULL;
}

static atomic_int claims_won;

static void *claimer(void *arg)
{
    vmig_postcopy_src *s = arg;
    for (uint64_t p = 0; p < 4000; p++) {
        int r = vmig_postcopy_src_claim(s, p);
        CHECK(r == 0 || r == 1);
        atomic_fetch_add(&claims_won, r);
    }
    return NULL;
}

static void test_src(void)
{
    CHECK(vmig_postcopy_src_new(0, 16) == NULL && errno == EINVAL);
    CHECK(vmig_postcopy_src_new(10, 3) == NULL && errno == EINVAL);
    vmig_postcopy_src *s = vmig_postcopy_src_new(4000, 64);
    CHECK(s);
    uint64_t page = 99;
    CHECK(vmig_postcopy_src_next_urgent(s, &page) == 0 && page == 99);
    CHECK(vmig_postcopy_src_request(s, 4000) == -EINVAL);
    CHECK(vmig_postcopy_src_request(NULL, 1) == -EINVAL);
    CHECK(vmig_postcopy_src_next_urgent(s, NULL) == -EINVAL);
    /* Two producers, this thread consumes: no loss, per-producer FIFO. */
    pthread_t pt[2];
    struct producer_arg pa[2] = {{s, 0}, {s, 2000}};
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&pt[i], NULL, producer, &pa[i]) == 0);
    }
    uint64_t next[2] = {0, 2000};
    int got = 0;
    while (got < 2000) {
        int r = vmig_postcopy_src_next_urgent(s, &page);
        CHECK(r == 0 || r == 1);
        if (r == 1) {
            int k = page >= 2000;
            CHECK(page == next[k]);
            next[k]++;
            got++;
        }
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_join(pt[i], NULL) == 0);
    }
    /* Sent map: three racing claimers, each page won once. */
    pthread_t ct[3];
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_create(&ct[i], NULL, claimer, s) == 0);
    }
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_join(ct[i], NULL) == 0);
    }
    CHECK(atomic_load(&claims_won) == 4000);
    CHECK(vmig_postcopy_src_next_unsent(s, 0, &page) == 0);
    CHECK(vmig_postcopy_src_claim(s, 4000) == -EINVAL);
    vmig_postcopy_src_free(s);
    vmig_postcopy_src_free(NULL);
    s = vmig_postcopy_src_new(8, 2);
    CHECK(vmig_postcopy_src_claim(s, 3) == 1);
    CHECK(vmig_postcopy_src_next_unsent(s, 3, &page) == 1 && page == 4);
    vmig_postcopy_src_free(s);
}

int main(void)
{
    test_dest();
    test_src();
    printf("test_postcopy: ok\n");
    return 0;
}
