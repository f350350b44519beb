/* vmig_last_error(): every handle type's failures leave a message naming
 * the bad value; NULL and foreign handles (a live handle of another type)
 * are rejected by the one handle check; the message is per thread, survives
 * later successful calls, is truncated to len - 1 bytes plus a NUL, and
 * buf NULL / len 0 ask for its length only. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/check.h"
#include "vmig.h"

static char msg[2048];

/* The calling thread's message, checked for consistency with its length. */
static const char *last(void)
{
    size_t n = vmig_last_error(NULL, 0);
    CHECK(vmig_last_error(msg, sizeof msg) == n);
    CHECK(n < sizeof msg && strlen(msg) == n);
    if (getenv("VMIG_TEST_VERBOSE")) fprintf(stderr, "%s\n", msg);
    return msg;
}

/* The message contains every one of the given fragments. */
static void expect(const char *a, const char *b)
{
    const char *m = last();
    if (!strstr(m, a) || (b && !strstr(m, b))) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"%s%s\n", m, a, b ? " or " : "", b ? b : "");
        exit(1);
    }
}

static void *no_error_here(void *arg)
{
    (void)arg;
    char buf[8] = "xxxxxxx";
    CHECK(vmig_last_error(buf, sizeof buf) == 0 && buf[0] == 0);
    CHECK(vmig_ring_new(3, 0) == NULL);
    return NULL;
}

static void test_ring(vmig_throttle *foreign)
{
    errno = 0;
    CHECK(vmig_ring_new(1000, 0) == NULL && errno == EINVAL);
    expect("capacity 1000", "power of two");
    CHECK(vmig_ring_new(8, 0x10) == NULL && errno == EINVAL);
    expect("flags 0x10", "unknown ring flags");
    CHECK(vmig_ring_enqueue(NULL, msg) == -EINVAL);
    expect("vmig_ring_enqueue", "vmig_ring handle is NULL");
    /* A live handle of another type fails the one check. */
    CHECK(vmig_ring_enqueue((vmig_ring *)foreign, msg) == -EINVAL);
    expect("vmig_ring_enqueue", "not an initialised vmig_ring");
    CHECK(vmig_ring_count((vmig_ring *)foreign) == 0);
    expect("vmig_ring_count", "not an initialised vmig_ring");
    CHECK(vmig_ring_dequeue(NULL) == NULL);
    expect("vmig_ring_dequeue", "is NULL");
    vmig_ring *r = vmig_ring_new(2, 0);
    CHECK(r != NULL);
    CHECK(vmig_ring_enqueue(r, NULL) == -EINVAL);
    expect("vmig_ring_enqueue", "item is NULL");
    CHECK(vmig_ring_enqueue(r, msg) == 0 && vmig_ring_enqueue(r, msg) == 0);
    CHECK(vmig_ring_enqueue(r, msg) == -ENOBUFS);
    expect("ring is full", NULL);
    void *items[2] = { msg, NULL };
    CHECK(vmig_ring_enqueue_burst(r, items, 2) == 0);
    expect("vmig_ring_enqueue_burst", "an item is NULL");
    static _Alignas(128) unsigned char mem[4096];
    CHECK(vmig_ring_init(mem, 64, 16, 0) == -EINVAL);
    expect("size 64", "smaller than vmig_ring_memsize");
    CHECK(vmig_ring_init(mem + 8, sizeof mem - 8, 16, 0) == -EINVAL);
    expect("not aligned", NULL);
    vmig_ring_free(r);
    /* Freeing a foreign pointer is refused (and reported), not done. */
    vmig_ring_free((vmig_ring *)foreign);
    expect("vmig_ring_free", "not an initialised vmig_ring");
}

static void test_comp(vmig_ring *foreign)
{
    vmig_comp_config c = { .threads = 2, .level = 12, .page_size = 4096, .ring_depth = 0 };
    errno = 0;
    CHECK(vmig_comp_pool_new(&c) == NULL && errno == EINVAL);
    expect("level 12", "level must be 0..=9");
    c.level = 1;
    c.page_size = 1000;
    CHECK(vmig_comp_pool_new(&c) == NULL && errno == EINVAL);
    expect("page_size 1000", "power of two");
    c.page_size = 4096;
    c.threads = 300;
    CHECK(vmig_comp_pool_new(&c) == NULL && errno == EINVAL);
    expect("threads 300", "threads must be 1..=256");
    CHECK(vmig_comp_pool_new(NULL) == NULL && errno == EINVAL);
    expect("config is NULL", NULL);
    vmig_comp_result res;
    CHECK(vmig_comp_poll(NULL, &res) == -EINVAL);
    expect("vmig_comp_poll", "vmig_comp_pool handle is NULL");
    CHECK(vmig_comp_max_pending((vmig_comp_pool *)foreign) == -EINVAL);
    expect("vmig_comp_max_pending", "not a live vmig_comp_pool handle");
    c.threads = 1;
    vmig_comp_pool *p = vmig_comp_pool_new(&c);
    CHECK(p != NULL);
    CHECK(vmig_comp_submit(p, NULL, 0x5000, NULL, false) == -EINVAL);
    expect("key 0x5000", "page is NULL");
    CHECK(vmig_comp_stats(p, NULL) == -EINVAL);
    expect("vmig_comp_stats", "stats is NULL");
    vmig_comp_pool_free(p);
}

static void test_decomp(vmig_throttle *foreign)
{
    errno = 0;
    CHECK(vmig_decomp_pool_new(0, 4096) == NULL && errno == EINVAL);
    expect("threads 0", "threads must be 1..=256");
    CHECK(vmig_decomp_pool_new(1, 3000) == NULL && errno == EINVAL);
    expect("page_size 3000", "power of two");
    CHECK(vmig_decomp_wait((vmig_decomp_pool *)foreign) == -EINVAL);
    expect("vmig_decomp_wait", "not a live vmig_decomp_pool handle");
    vmig_decomp_pool *d = vmig_decomp_pool_new(1, 4096);
    CHECK(d != NULL);
    static uint8_t dest[4096], junk[16] = { 0x78, 0x9c, 1, 2, 3 };
    CHECK(vmig_decomp_submit(d, NULL, 7, dest) == -EINVAL);
    expect("len 7", "zdata is NULL");
    CHECK(vmig_decomp_submit(d, junk, sizeof junk, dest) == 0);
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    expect("bad message", "zlib stream");
    vmig_decomp_pool_free(d);
}

static void test_reaper(vmig_ring *foreign)
{
    vmig_reaper_config cfg;
    CHECK(vmig_reaper_config_default(&cfg) == 0);
    cfg.aimd_low_permille = 900;
    errno = 0;
    CHECK(vmig_reaper_new(&cfg) == NULL && errno == EINVAL);
    expect("aimd_low_permille 900, aimd_high_permille 800", "aimd marks");
    CHECK(vmig_reaper_config_default(&cfg) == 0);
    cfg.ring_size = 0;
    CHECK(vmig_reaper_new(&cfg) == NULL && errno == EINVAL);
    expect("vmig_reaper_new", "ring_size is 0");
    cfg.ring_size = 4096;
    cfg.min_interval_us = 3000000;
    CHECK(vmig_reaper_new(&cfg) == NULL && errno == EINVAL);
    expect("min_interval_us 3000000, max_interval_us 2000000", NULL);
    CHECK(vmig_reaper_config_default(&cfg) == 0);
    *(uint32_t *)&cfg.policy = 7; /* as a C caller could */
    CHECK(vmig_reaper_new(&cfg) == NULL && errno == EINVAL);
    expect("policy 7", "unknown reaper policy");
    CHECK(vmig_reaper_new(NULL) == NULL && errno == EINVAL);
    expect("cfg is NULL", NULL);
    CHECK(vmig_reaper_kick(NULL) == -EINVAL);
    expect("vmig_reaper_kick", "vmig_reaper handle is NULL");
    CHECK(vmig_reaper_interval_us((vmig_reaper *)foreign) == 0);
    expect("vmig_reaper_interval_us", "not a live vmig_reaper handle");
    CHECK(vmig_reaper_wait((vmig_reaper *)foreign) == -EINVAL);
    expect("vmig_reaper_wait", "not a live vmig_reaper handle");
}

static void test_throttle(vmig_ring *foreign)
{
    errno = 0;
    CHECK(vmig_throttle_new(0, 10000000) == NULL && errno == EINVAL);
    expect("nr_vcpus 0", "nr_vcpus must be");
    CHECK(vmig_throttle_new(1, 0) == NULL && errno == EINVAL);
    expect("timeslice_ns 0", "timeslice_ns is 0");
    vmig_throttle *t = vmig_throttle_new(2, VMIG_THROTTLE_QEMU_TIMESLICE_NS);
    CHECK(t != NULL);
    CHECK(vmig_throttle_set(t, 100) == -EINVAL);
    expect("pct 100", "0..=99");
    CHECK(vmig_throttle_kick(t, 5) == -EINVAL);
    expect("vcpu 5", "vcpu out of range");
    CHECK(vmig_throttle_vcpu_next_ns(t, 9, 0) == UINT64_MAX);
    expect("vcpu 9", "vcpu out of range");
    CHECK(vmig_throttle_get((vmig_throttle *)foreign) == 0);
    expect("vmig_throttle_get", "not a live vmig_throttle handle");
    vmig_throttle_free(t);
}

int main(void)
{
    /* No failed call on this thread yet. */
    CHECK(vmig_last_error(NULL, 0) == 0);

    vmig_ring *ring = vmig_ring_new(4, 0);
    vmig_throttle *thr = vmig_throttle_new(1, VMIG_THROTTLE_QEMU_TIMESLICE_NS);
    CHECK(ring != NULL && thr != NULL);
    test_ring(thr);
    test_comp(ring);
    test_decomp(thr);
    test_reaper(ring);
    test_throttle(ring);

    /* Truncation and the length-only query. */
    CHECK(vmig_throttle_set(NULL, 1) == -EINVAL);
    const char *full = last();
    size_t n = strlen(full);
    char small[6];
    memset(small, 'x', sizeof small);
    CHECK(vmig_last_error(small, sizeof small) == n);
    CHECK(memcmp(small, full, 5) == 0 && small[5] == 0);
    CHECK(vmig_last_error(small, 0) == n && small[0] == full[0]);
    /* A successful call keeps the message; another thread has its own. */
    CHECK(vmig_throttle_set(thr, 0) == 0);
    CHECK(vmig_last_error(NULL, 0) == n);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, no_error_here, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(vmig_last_error(NULL, 0) == n);

    vmig_throttle_free(thr);
    vmig_ring_free(ring);
    printf("test_last_error: ok\n");
    return 0;
}
