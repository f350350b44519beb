/* Compression/decompression pools: wire compatibility with system zlib both
 * ways at every level and with every deflate backend this build has (the
 * others must fail with EOPNOTSUPP), same-key ordering, zero pages, the busy path, bad
 * arguments, freeing with pages in flight (leaks show under ASan/LSan). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "support/check.h"
#include "vmig.h"

#define PAGE 4096u
#define NPAGES 12

/* Sanitizer builds run ~10x slower: shrink the stress loops there. */
static unsigned scale(unsigned n)
{
    const char *m = getenv("VMIG_TEST_MODE");
    return (m && strcmp(m, "plain") != 0) ? n / 8 + 1 : n;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* A small corpus: text, code-like, sparse, random, zero, constant. */
static void make_page(unsigned i, uint8_t *p)
{
    static const char text[] = "Live migration moves a running guest between hosts. ";
    switch (i % 6) {
    case 0:
        for (unsigned j = 0; j < PAGE; j++) p[j] = (uint8_t)text[(j + i) % (sizeof text - 1)];
        break;
    case 1:
        for (unsigned j = 0; j < PAGE; j++) p[j] = (uint8_t)((j & 7) ? (j * 31 + i) >> 3 : 0x48);
        break;
    case 2:
        memset(p, 0, PAGE);
        for (unsigned j = 0; j < 40; j++) p[next_rand() % PAGE] = (uint8_t)next_rand();
        break;
    case 3:
        for (unsigned j = 0; j < PAGE; j++) p[j] = (uint8_t)next_rand();
        break;
    case 4:
        memset(p, 0, PAGE);
        break;
    default:
        memset(p, 0xa5, PAGE);
    }
}

static vmig_comp_pool *new_pool(uint32_t threads, int32_t level, uint32_t depth)
{
    vmig_comp_config c = { .threads = threads, .level = level, .page_size = PAGE, .ring_depth = depth };
    vmig_comp_pool *p = vmig_comp_pool_new(&c);
    CHECK(p != NULL);
    return p;
}

/* The pool options with `backend`, or false (after checking the error is
 * EOPNOTSUPP and printing a SKIP line) when this build lacks it. */
static bool backend_options(uint32_t backend, vmig_pool_options *o)
{
    CHECK(vmig_pool_options_init(o) == 0);
    CHECK(o->backend == VMIG_POOL_BACKEND_DEFAULT && o->spin_ns == VMIG_COMP_DEFAULT_SPIN_NS);
    o->backend = backend;
    vmig_comp_config c = { .threads = 1, .level = 1, .page_size = PAGE, .ring_depth = 0 };
    errno = 0;
    vmig_comp_pool *p = vmig_comp_pool_new_opts(&c, o);
    if (p == NULL) {
        CHECK(errno == EOPNOTSUPP);
        errno = 0;
        CHECK(vmig_decomp_pool_new_opts(1, PAGE, o) == NULL && errno == EOPNOTSUPP);
        fprintf(stderr, "SKIP: test_comp: backend %u is not in this build (cargo feature off)\n", backend);
        return false;
    }
    vmig_comp_pool_free(p);
    return true;
}

/* Pool -> system zlib uncompress(), byte-exact, at every level, with every
 * backend. */
static void test_pool_to_zlib(void)
{
    static uint8_t pages[NPAGES][PAGE];
    for (unsigned i = 0; i < NPAGES; i++) make_page(i, pages[i]);
    for (uint32_t backend = VMIG_POOL_BACKEND_DEFAULT; backend <= VMIG_POOL_BACKEND_ZLIB; backend++)
    for (int level = 0; level <= 9; level++) {
        vmig_pool_options o;
        if (!backend_options(backend, &o)) break;
        vmig_comp_config c = { .threads = 2, .level = level, .page_size = PAGE, .ring_depth = 0 };
        vmig_comp_pool *p = vmig_comp_pool_new_opts(&c, &o);
        CHECK(p != NULL);
        for (unsigned i = 0; i < NPAGES; i++)
            CHECK(vmig_comp_submit(p, pages[i], i, &pages[i], true) == 0);
        CHECK(vmig_comp_flush(p) == 0);
        vmig_comp_result r;
        unsigned got = 0, zero = 0;
        while (vmig_comp_poll(p, &r) == 1) {
            CHECK(r.key < NPAGES && r.opaque == &pages[r.key] && r.status == 0);
            if (r.key % 6 == 4) {
                CHECK(r.zero_page && r.data == NULL && r.len == 0);
                zero++;
            } else {
                uint8_t out[PAGE + 16];
                uLongf n = sizeof out;
                CHECK(!r.zero_page && r.data != NULL && r.len > 0);
                CHECK(uncompress(out, &n, r.data, r.len) == Z_OK);
                CHECK(n == PAGE && memcmp(out, pages[r.key], PAGE) == 0);
            }
            vmig_comp_release(p, &r);
            vmig_comp_release(p, &r); /* a second release, before the buffer is reused, is ignored */
            got++;
        }
        CHECK(got == NPAGES);
        CHECK(vmig_comp_wait_result(p, &r) == 0); /* nothing in flight */
        vmig_comp_statistics st;
        CHECK(vmig_comp_stats(p, &st) == 0);
        CHECK(st.zero_pages == zero && st.pages == NPAGES - zero && st.failed == 0);
        CHECK(st.bytes_in == (uint64_t)st.pages * PAGE && st.bytes_out > 0);
        CHECK(st.threads == 2 && st.pages_per_worker[0] + st.pages_per_worker[1] == NPAGES);
        vmig_comp_pool_free(p);
    }
}

/* System zlib compress2() -> decompression pool, byte-exact, every level,
 * with every backend's inflater. */
static void test_zlib_to_pool(void)
{
    static uint8_t pages[NPAGES][PAGE], dest[NPAGES][PAGE];
    static uint8_t z[NPAGES][PAGE + 64];
    uLongf zlen[NPAGES];
    for (unsigned i = 0; i < NPAGES; i++) make_page(i + 100, pages[i]);
    for (uint32_t backend = VMIG_POOL_BACKEND_DEFAULT; backend <= VMIG_POOL_BACKEND_ZLIB; backend++) {
    vmig_pool_options o;
    if (!backend_options(backend, &o)) continue;
    vmig_decomp_pool *d = backend == VMIG_POOL_BACKEND_DEFAULT ? vmig_decomp_pool_new(3, PAGE)
                                                               : vmig_decomp_pool_new_opts(3, PAGE, &o);
    CHECK(d != NULL);
    for (int level = 0; level <= 9; level++) {
        memset(dest, 0x5a, sizeof dest);
        for (unsigned i = 0; i < NPAGES; i++) {
            zlen[i] = sizeof z[i];
            CHECK(compress2(z[i], &zlen[i], pages[i], PAGE, level) == Z_OK);
            CHECK(vmig_decomp_submit(d, z[i], (uint32_t)zlen[i], dest[i]) == 0);
        }
        CHECK(vmig_decomp_wait(d) == 0);
        for (unsigned i = 0; i < NPAGES; i++) CHECK(memcmp(dest[i], pages[i], PAGE) == 0);
    }
    vmig_decomp_pool_free(d);
    }
}

/* Many submissions on a few keys: per key, results arrive in submission
 * order. Each submission has its own buffer (recycled only once its result
 * is back) holding its sequence number. */
static void test_same_key_order(void)
{
    enum { KEYS = 5, BUFS = 64 };
    static uint8_t bufs[BUFS][PAGE];
    static uint32_t last[KEYS];
    unsigned freebuf[BUFS], nfree = BUFS;
    const unsigned total = scale(20000);
    vmig_comp_pool *p = new_pool(3, 1, 2);
    CHECK(vmig_comp_max_pending(p) <= BUFS);
    memset(last, 0, sizeof last);
    for (unsigned i = 0; i < BUFS; i++) freebuf[i] = i;
    unsigned seq = 1, got = 0;
    vmig_comp_result r;
    while (got < total) {
        if (seq <= total) {
            CHECK(nfree > 0);
            unsigned idx = freebuf[nfree - 1];
            uint8_t *b = bufs[idx];
            memset(b, (int)(seq & 0xff), PAGE);
            memcpy(b, &seq, sizeof seq);
            int rc = vmig_comp_submit(p, b, next_rand() % KEYS, (void *)(uintptr_t)idx, false);
            CHECK(rc == 0 || rc == -EBUSY);
            if (rc == 0) {
                seq++;
                nfree--;
            }
        }
        while (vmig_comp_poll(p, &r) == 1) {
            unsigned idx = (unsigned)(uintptr_t)r.opaque;
            uint8_t out[PAGE];
            uLongf n = sizeof out;
            CHECK(r.status == 0 && !r.zero_page);
            CHECK(uncompress(out, &n, r.data, r.len) == Z_OK && n == PAGE);
            uint32_t v, s;
            memcpy(&v, out, sizeof v);
            memcpy(&s, bufs[idx], sizeof s);
            CHECK(v == s); /* the worker saw this submission's page */
            CHECK(s > last[r.key]);
            last[r.key] = s;
            vmig_comp_release(p, &r);
            freebuf[nfree++] = idx;
            got++;
        }
    }
    vmig_comp_statistics st;
    CHECK(vmig_comp_stats(p, &st) == 0 && st.pages == total);
    vmig_comp_pool_free(p);
}

/* Without polling, submissions with wait=false end in -EBUSY; with polling
 * they all go through. Same key on a full worker is refused too. */
static void test_busy(void)
{
    static uint8_t page[PAGE];
    make_page(0, page);
    vmig_comp_pool *p = new_pool(1, 9, 2);
    int max = vmig_comp_max_pending(p);
    CHECK(max > 0);
    int rc = 0, n = 0;
    while (n <= max && (rc = vmig_comp_submit(p, page, 7, NULL, false)) == 0) n++;
    CHECK(rc == -EBUSY && n >= 1 && n <= max);
    /* wait=true also refuses once max_pending results are uncollected. */
    while (n < max) {
        if (vmig_comp_submit(p, page, (uint64_t)n, NULL, true) == 0) n++;
    }
    CHECK(vmig_comp_submit(p, page, 1000, NULL, true) == -EBUSY);
    vmig_comp_statistics st;
    CHECK(vmig_comp_stats(p, &st) == 0 && st.busy >= 2);
    vmig_comp_result r;
    int got = 0;
    while (vmig_comp_wait_result(p, &r) == 1) {
        vmig_comp_release(p, &r);
        got++;
    }
    CHECK(got == n);
    vmig_comp_pool_free(p);
}

static void test_bad_arguments(void)
{
    static uint8_t page[PAGE];
    vmig_comp_config bad[] = {
        { 0, 1, PAGE, 0 }, { 257, 1, PAGE, 0 }, { 1, -1, PAGE, 0 }, { 1, 10, PAGE, 0 },
        { 1, 1, 256, 0 },  { 1, 1, 4095, 0 },   { 1, 1, 131072, 0 }, { 1, 1, PAGE, 3 },
        { 1, 1, PAGE, 1 },
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(vmig_comp_pool_new(&bad[i]) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(vmig_comp_pool_new(NULL) == NULL && errno == EINVAL);
    vmig_pool_options o;
    CHECK(vmig_pool_options_init(NULL) == -EINVAL);
    CHECK(vmig_pool_options_init(&o) == 0);
    vmig_comp_config ok = { 1, 1, PAGE, 0 };
    errno = 0;
    CHECK(vmig_comp_pool_new_opts(&ok, NULL) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_comp_pool_new_opts(NULL, &o) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_decomp_pool_new_opts(1, PAGE, NULL) == NULL && errno == EINVAL);
    o.backend = VMIG_POOL_BACKEND_ZLIB + 1;
    errno = 0;
    CHECK(vmig_comp_pool_new_opts(&ok, &o) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_decomp_pool_new_opts(1, PAGE, &o) == NULL && errno == EINVAL);
    CHECK(vmig_pool_options_init(&o) == 0);
    o.spin_ns = VMIG_COMP_MAX_SPIN_NS + 1;
    errno = 0;
    CHECK(vmig_comp_pool_new_opts(&ok, &o) == NULL && errno == EINVAL);
    vmig_comp_result r;
    vmig_comp_statistics st;
    CHECK(vmig_comp_submit(NULL, page, 0, NULL, false) == -EINVAL);
    CHECK(vmig_comp_poll(NULL, &r) == -EINVAL);
    CHECK(vmig_comp_wait_result(NULL, &r) == -EINVAL);
    CHECK(vmig_comp_flush(NULL) == -EINVAL);
    CHECK(vmig_comp_stats(NULL, &st) == -EINVAL);
    CHECK(vmig_comp_max_pending(NULL) == -EINVAL);
    vmig_comp_release(NULL, &r);
    vmig_comp_pool_free(NULL);
    vmig_comp_pool *p = new_pool(1, 1, 0);
    CHECK(vmig_comp_submit(p, NULL, 0, NULL, false) == -EINVAL);
    CHECK(vmig_comp_poll(p, NULL) == -EINVAL);
    CHECK(vmig_comp_wait_result(p, NULL) == -EINVAL);
    CHECK(vmig_comp_stats(p, NULL) == -EINVAL);
    vmig_comp_release(p, NULL);
    vmig_comp_pool_free(p);

    errno = 0;
    CHECK(vmig_decomp_pool_new(0, PAGE) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_decomp_pool_new(1, 1000) == NULL && errno == EINVAL);
    CHECK(vmig_decomp_submit(NULL, page, 1, page) == -EINVAL);
    CHECK(vmig_decomp_wait(NULL) == -EINVAL);
    vmig_decomp_pool_free(NULL);
    vmig_decomp_pool *d = vmig_decomp_pool_new(1, PAGE);
    CHECK(d != NULL);
    CHECK(vmig_decomp_submit(d, page, 1, NULL) == -EINVAL);
    CHECK(vmig_decomp_submit(d, NULL, 1, page) == -EINVAL);
    CHECK(vmig_decomp_wait(d) == 0);
    vmig_decomp_pool_free(d);
}

/* Corrupt, truncated, oversized, wrong-length: -EBADMSG from wait, and the
 * guard bytes around dest are never touched. */
static void test_decomp_errors(void)
{
    static uint8_t page[PAGE], z[2 * PAGE], area[3 * PAGE];
    uint8_t *dest = area + PAGE;
    make_page(0, page);
    uLongf zlen = sizeof z;
    CHECK(compress2(z, &zlen, page, PAGE, 6) == Z_OK);
    vmig_decomp_pool *d = vmig_decomp_pool_new(2, PAGE);
    CHECK(d != NULL);
    memset(area, 0xee, sizeof area);

    CHECK(vmig_decomp_submit(d, z, (uint32_t)zlen - 3, dest) == 0); /* truncated */
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    CHECK(vmig_decomp_wait(d) == 0); /* error cleared */
    uint8_t bad[2 * PAGE];
    memcpy(bad, z, zlen);
    bad[zlen / 2] ^= 0x55; /* corrupt */
    CHECK(vmig_decomp_submit(d, bad, (uint32_t)zlen, dest) == 0);
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    memcpy(bad, z, zlen);
    bad[zlen] = 0; /* trailing garbage */
    CHECK(vmig_decomp_submit(d, bad, (uint32_t)zlen + 1, dest) == 0);
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    uLongf slen = sizeof bad; /* wrong length: half a page */
    CHECK(compress2(bad, &slen, page, PAGE / 2, 6) == Z_OK);
    CHECK(vmig_decomp_submit(d, bad, (uint32_t)slen, dest) == 0);
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    static uint8_t big[2 * PAGE + 1]; /* longer page: wrong length */
    uLongf blen = compressBound(2 * PAGE);
    uint8_t *bz = malloc(blen);
    CHECK(bz != NULL);
    memset(big, 1, sizeof big);
    CHECK(compress2(bz, &blen, big, sizeof big, 1) == Z_OK);
    CHECK(vmig_decomp_submit(d, bz, (uint32_t)blen, dest) == 0);
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    free(bz);
    CHECK(vmig_decomp_submit(d, z, 0, dest) == 0); /* empty */
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    CHECK(vmig_decomp_submit(d, z, (uint32_t)compressBound(PAGE) + 1, dest) == -EBADMSG); /* oversized */
    CHECK(vmig_decomp_wait(d) == -EBADMSG);
    for (unsigned i = 0; i < sizeof area; i++) CHECK(area[i] == 0xee);

    /* Same dest, many versions: the last one wins. */
    for (unsigned v = 0; v < scale(400); v++) {
        uint8_t pg[PAGE];
        memset(pg, (int)(v & 0xff), PAGE);
        zlen = sizeof z;
        CHECK(compress2(z, &zlen, pg, PAGE, 1) == Z_OK);
        CHECK(vmig_decomp_submit(d, z, (uint32_t)zlen, dest) == 0);
    }
    CHECK(vmig_decomp_wait(d) == 0);
    for (unsigned i = 0; i < PAGE; i++) CHECK(dest[i] == (uint8_t)((scale(400) - 1) & 0xff));
    CHECK(area[PAGE - 1] == 0xee && area[2 * PAGE] == 0xee);
    vmig_decomp_pool_free(d);
}

/* Free with pages queued, running and done, and results not released. */
static void test_free_in_flight(void)
{
    static uint8_t pages[64][PAGE];
    for (unsigned i = 0; i < 64; i++) make_page(i, pages[i]);
    for (unsigned round = 0; round < 20; round++) {
        vmig_comp_pool *p = new_pool(1 + round % 4, 6, 0);
        vmig_comp_result r;
        for (unsigned i = 0; i < 64; i++) {
            int rc = vmig_comp_submit(p, pages[i], i, NULL, false);
            CHECK(rc == 0 || rc == -EBUSY);
            if (i == 10 && vmig_comp_wait_result(p, &r) == 1) {
                /* kept, never released: freed with the pool */
            }
        }
        vmig_comp_pool_free(p);

        vmig_decomp_pool *d = vmig_decomp_pool_new(1 + round % 3, PAGE);
        CHECK(d != NULL);
        static uint8_t z[PAGE + 64], dest[8][PAGE];
        uLongf zlen = sizeof z;
        CHECK(compress2(z, &zlen, pages[round], PAGE, 1) == Z_OK);
        for (unsigned i = 0; i < 8; i++) CHECK(vmig_decomp_submit(d, z, (uint32_t)zlen, dest[i]) == 0);
        vmig_decomp_pool_free(d);
    }
}

/* A constructor that cannot start all its threads (address space capped,
 * so thread stacks cannot be mapped) returns NULL with errno EAGAIN or
 * ENOMEM, after stopping the threads it did start; the process lives on.
 * Plain mode only: the sanitizers need far more address space. */
/* One attempt in a child process; returns its wait status. The child's
 * stderr goes to `errlog`. */
static int spawn_failure_child(FILE *errlog)
{
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fileno(errlog), 2);
        /* Leave ~48 MiB of address space: a few 2 MiB thread stacks. */
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(2);
        fclose(f);
        struct rlimit rl = { pages * (unsigned long)sysconf(_SC_PAGESIZE) + (48ul << 20), RLIM_INFINITY };
        rl.rlim_max = rl.rlim_cur;
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
        int failed = 0;
        for (int i = 0; i < 4; i++) {
            vmig_comp_config c = { .threads = 256, .level = 9, .page_size = PAGE, .ring_depth = 0 };
            errno = 0;
            vmig_comp_pool *p = vmig_comp_pool_new(&c);
            if (p == NULL) {
                if (errno != EAGAIN && errno != ENOMEM) _exit(4);
                failed++;
            } else {
                vmig_comp_pool_free(p);
            }
            vmig_decomp_pool *d = vmig_decomp_pool_new(256, PAGE);
            if (d == NULL) {
                if (errno != EAGAIN && errno != ENOMEM) _exit(5);
                failed++;
            } else {
                vmig_decomp_pool_free(d);
            }
        }
        /* The cap must have bitten, and small pools must still work. */
        if (failed == 0) _exit(6);
        vmig_comp_config small = { .threads = 1, .level = 1, .page_size = PAGE, .ring_depth = 0 };
        vmig_comp_pool *p = vmig_comp_pool_new(&small);
        if (p == NULL) _exit(7);
        vmig_comp_pool_free(p);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    return status;
}

/* glibc itself aborts a thread that cannot allocate its TLS destructor list
 * ("Fatal glibc error: failed to register TLS destructor: out of memory"):
 * with the address space capped, a thread vmig starts may die there before
 * vmig sees the failure. That abort is glibc's, not vmig's, so an attempt
 * that ends in it is retried; any other outcome counts. */
static void test_spawn_failure(void)
{
    const char *m = getenv("VMIG_TEST_MODE");
    if (m && strcmp(m, "plain") != 0) return;
    for (int attempt = 1;; attempt++) {
        FILE *errlog = tmpfile();
        CHECK(errlog != NULL);
        int status = spawn_failure_child(errlog);
        char buf[4096] = { 0 };
        rewind(errlog);
        size_t got = fread(buf, 1, sizeof buf - 1, errlog);
        buf[got] = 0;
        fclose(errlog);
        bool glibc_abort = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT &&
                           strstr(buf, "Fatal glibc error: failed to register TLS destructor");
        if (glibc_abort && attempt < 8) {
            fprintf(stderr, "spawn-failure child: glibc TLS abort under the cap, attempt %d; retrying\n", attempt);
            continue;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "spawn-failure child: status %#x, stderr:\n%s\n", status, buf);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return;
    }
}

int main(void)
{
    test_bad_arguments();
    test_pool_to_zlib();
    test_zlib_to_pool();
    test_decomp_errors();
    test_busy();
    test_same_key_order();
    test_free_in_flight();
    test_spawn_failure();
    printf("test_comp: ok\n");
    return 0;
}
