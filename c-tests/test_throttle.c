/* Throttle C API: bad arguments, the timer API cycle, kicks and setting
 * changes while vCPU threads sleep in vmig_throttle_vcpu_run(). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "support/check.h"
#include "vmig.h"

#define MS 1000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_bad_args(void)
{
    errno = 0;
    CHECK(vmig_throttle_new(0, 10 * MS) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_throttle_new(1, 0) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(vmig_throttle_new(VMIG_THROTTLE_MAX_VCPUS + 1, 10 * MS) == NULL && errno == EINVAL);
    vmig_throttle_free(NULL);

    CHECK(vmig_throttle_set(NULL, 10) == -EINVAL);
    CHECK(vmig_throttle_get(NULL) == 0);
    CHECK(vmig_throttle_vcpu_sleep_ns(NULL, 0, 0) == 0);
    CHECK(vmig_throttle_vcpu_next_ns(NULL, 0, 0) == UINT64_MAX);
    CHECK(vmig_throttle_vcpu_run(NULL, 0) == -EINVAL);
    CHECK(vmig_throttle_kick(NULL, 0) == -EINVAL);

    vmig_throttle *t = vmig_throttle_new(2, VMIG_THROTTLE_QEMU_TIMESLICE_NS);
    CHECK(t != NULL);
    CHECK(vmig_throttle_get(t) == 0);
    CHECK(vmig_throttle_set(t, 100) == -EINVAL);
    CHECK(vmig_throttle_set(t, UINT32_MAX) == -EINVAL);
    CHECK(vmig_throttle_get(t) == 0);
    CHECK(vmig_throttle_set(t, VMIG_THROTTLE_PCT_MAX) == 0);
    CHECK(vmig_throttle_get(t) == 99);
    CHECK(vmig_throttle_set(t, 1) == 0);
    CHECK(vmig_throttle_get(t) == 1);
    /* vCPU 2 does not exist. */
    CHECK(vmig_throttle_vcpu_sleep_ns(t, 2, 0) == 0);
    CHECK(vmig_throttle_vcpu_next_ns(t, 2, 0) == UINT64_MAX);
    CHECK(vmig_throttle_vcpu_run(t, 2) == -EINVAL);
    CHECK(vmig_throttle_kick(t, 2) == -EINVAL);
    vmig_throttle_free(t);
}

static void test_timer_api(void)
{
    vmig_throttle *t = vmig_throttle_new(1, 10 * MS);
    CHECK(t != NULL);
    /* Off: no timer. */
    CHECK(vmig_throttle_vcpu_next_ns(t, 0, 0) == UINT64_MAX);
    CHECK(vmig_throttle_vcpu_sleep_ns(t, 0, 5 * MS) == 0);
    CHECK(vmig_throttle_set(t, 50) == 0);
    CHECK(vmig_throttle_vcpu_next_ns(t, 0, 100 * MS) == 110 * MS);
    /* Timer 2 ms late: 12 ms of run owe 12 ms at 50%. */
    CHECK(vmig_throttle_vcpu_sleep_ns(t, 0, 112 * MS) == 12 * MS);
    /* Overslept 1 ms (13 ms): run 10 ms, then owe 10 - 1 = 9 ms. */
    CHECK(vmig_throttle_vcpu_next_ns(t, 0, 125 * MS) == 135 * MS);
    CHECK(vmig_throttle_vcpu_sleep_ns(t, 0, 135 * MS) == 9 * MS);
    CHECK(vmig_throttle_vcpu_next_ns(t, 0, 144 * MS) == 154 * MS);
    /* Off again: no timer. */
    CHECK(vmig_throttle_set(t, 0) == 0);
    CHECK(vmig_throttle_vcpu_next_ns(t, 0, 150 * MS) == UINT64_MAX);
    vmig_throttle_free(t);
}

struct sleeper {
    vmig_throttle *t;
    uint32_t vcpu;
    atomic_int ready;
    int ret;
    uint64_t took_ns;
};

/* Starts the vCPU's accounting, runs past its 10 ms timeslice, then sleeps
 * in vmig_throttle_vcpu_run(): 12 ms of run owe 1188 ms at 99%. */
static void *sleeper_main(void *p)
{
    struct sleeper *s = p;
    CHECK(vmig_throttle_vcpu_run(s->t, s->vcpu) == 0);
    sleep_ms(12);
    atomic_store(&s->ready, 1);
    uint64_t t0 = now_ns();
    s->ret = vmig_throttle_vcpu_run(s->t, s->vcpu);
    s->took_ns = now_ns() - t0;
    return NULL;
}

static void start(struct sleeper *s, pthread_t *th, vmig_throttle *t, uint32_t vcpu)
{
    s->t = t;
    s->vcpu = vcpu;
    atomic_store(&s->ready, 0);
    CHECK(pthread_create(th, NULL, sleeper_main, s) == 0);
    while (!atomic_load(&s->ready)) {
        sleep_ms(1);
    }
    sleep_ms(10); /* let it fall asleep */
}

/* A fresh throttle at 99% with QEMU's 10 ms timeslice. A sleep that ends
 * in under WOKEN_MS was ended early (it owes over 1 s); the margin is wide
 * because the machine running the tests may be heavily loaded. */
#define WOKEN_MS 1000
static vmig_throttle *fresh(void)
{
    vmig_throttle *t = vmig_throttle_new(2, 10 * MS);
    CHECK(t != NULL);
    CHECK(vmig_throttle_set(t, 99) == 0);
    return t;
}

static void test_kick_and_changes_while_sleeping(void)
{
    struct sleeper a, b;
    pthread_t ta, tb;

    /* A kick ends vCPU 0's sleep and only vCPU 0's. */
    vmig_throttle *t = fresh();
    start(&a, &ta, t, 0);
    start(&b, &tb, t, 1);
    CHECK(vmig_throttle_kick(t, 0) == 0);
    CHECK(pthread_join(ta, NULL) == 0);
    CHECK(a.ret == 1 && a.took_ns < WOKEN_MS * MS);
    CHECK(pthread_join(tb, NULL) == 0);
    CHECK(b.ret == 0 && b.took_ns >= WOKEN_MS * MS);
    vmig_throttle_free(t);

    /* Lowering the throttle while both sleep wakes both at once. */
    t = fresh();
    start(&a, &ta, t, 0);
    start(&b, &tb, t, 1);
    CHECK(vmig_throttle_set(t, 10) == 0);
    CHECK(pthread_join(ta, NULL) == 0);
    CHECK(pthread_join(tb, NULL) == 0);
    CHECK(a.ret == 0 && a.took_ns < WOKEN_MS * MS);
    CHECK(b.ret == 0 && b.took_ns < WOKEN_MS * MS);
    vmig_throttle_free(t);

    /* Turning it off while asleep: woken, and no more sleeps. */
    t = fresh();
    start(&a, &ta, t, 0);
    CHECK(vmig_throttle_set(t, 0) == 0);
    CHECK(pthread_join(ta, NULL) == 0);
    CHECK(a.ret == 0 && a.took_ns < WOKEN_MS * MS);
    uint64_t t0 = now_ns();
    for (int i = 0; i < 100; i++) {
        CHECK(vmig_throttle_vcpu_run(t, 0) == 0);
    }
    CHECK(now_ns() - t0 < WOKEN_MS * MS);
    vmig_throttle_free(t);

    /* A kick before the sleep is kept: the next sleep ends at once. */
    t = fresh();
    CHECK(vmig_throttle_vcpu_run(t, 1) == 0);
    CHECK(vmig_throttle_kick(t, 1) == 0);
    sleep_ms(12);
    t0 = now_ns();
    CHECK(vmig_throttle_vcpu_run(t, 1) == 1);
    CHECK(now_ns() - t0 < WOKEN_MS * MS);
    vmig_throttle_free(t);
}

/* vmig_throttle_vcpu_due_ns(): when a kick-driven VMM must kick the vCPU. */
static void test_due_ns(void)
{
    uint64_t due = 42;
    CHECK(vmig_throttle_vcpu_due_ns(NULL, 0, &due) == -EINVAL && due == 42);
    vmig_throttle *t = vmig_throttle_new(2, 10 * MS);
    CHECK(t != NULL);
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, NULL) == -EINVAL);
    CHECK(vmig_throttle_vcpu_due_ns(t, 2, &due) == -EINVAL && due == 42);
    /* Off: no kick, output untouched. */
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, &due) == 0 && due == 42);
    /* On, never measured: kick now. */
    CHECK(vmig_throttle_set(t, 50) == 0);
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, &due) == 1 && due == 0);
    /* Measuring from the safe point: due one timeslice after it. */
    uint64_t before = now_ns();
    CHECK(vmig_throttle_vcpu_run(t, 0) == 0);
    uint64_t after = now_ns();
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, &due) == 1);
    CHECK(due >= before + 10 * MS && due <= after + 10 * MS);
    /* vCPU 1 has not reached a safe point yet: still now. */
    CHECK(vmig_throttle_vcpu_due_ns(t, 1, &due) == 1 && due == 0);
    /* A new setting is a new regime: kick now again. */
    CHECK(vmig_throttle_set(t, 60) == 0);
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, &due) == 1 && due == 0);
    /* Off again: no kick. */
    due = 42;
    CHECK(vmig_throttle_set(t, 0) == 0);
    CHECK(vmig_throttle_vcpu_due_ns(t, 0, &due) == 0 && due == 42);
    vmig_throttle_free(t);
}

int main(void)
{
    test_bad_args();
    test_timer_api();
    test_due_ns();
    test_kick_and_changes_while_sleeping();
    printf("test_throttle: ok\n");
    return 0;
}
