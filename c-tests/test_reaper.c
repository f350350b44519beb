/* Reaper C API: defaults, validation, every policy's bounds, kick paths. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/check.h"
#include "vmig.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static vmig_reaper_config defaults(void)
{
    vmig_reaper_config c;
    memset(&c, 0xa5, sizeof(c)); /* every field must be written */
    CHECK(vmig_reaper_config_default(&c) == 0);
    return c;
}

static void expect_einval(const vmig_reaper_config *c)
{
    errno = 0;
    CHECK(vmig_reaper_new(c) == NULL);
    CHECK(errno == EINVAL);
}

static void test_defaults_and_validation(void)
{
    CHECK(vmig_reaper_config_default(NULL) == -EINVAL);
    vmig_reaper_config c = defaults();
    CHECK(c.policy == VMIG_REAPER_PREDICTIVE);
    CHECK(c.ring_size == 4096);
    CHECK(c.min_interval_us >= 1 && c.min_interval_us <= c.max_interval_us);
    CHECK(c.fixed_interval_us == 1000000);
    CHECK(c.levels_interval_us[0] == 1000000);
    CHECK(c.levels_interval_us[VMIG_REAPER_NR_LEVELS - 1] == 80000);

    expect_einval(NULL);
    c = defaults(); c.ring_size = 0; expect_einval(&c);
    c = defaults(); c.min_interval_us = 0; expect_einval(&c);
    c = defaults(); c.min_interval_us = c.max_interval_us + 1; expect_einval(&c);
    c = defaults(); c.fixed_interval_us = 0; expect_einval(&c);
    c = defaults(); c.levels_interval_us[2] = 0; expect_einval(&c);
    c = defaults(); c.levels_ratio_step_permille = 0; expect_einval(&c);
    c = defaults(); c.aimd_low_permille = c.aimd_high_permille; expect_einval(&c);
    c = defaults(); c.aimd_high_permille = 1001; expect_einval(&c);
    c = defaults(); c.predictive_target_permille = 0; expect_einval(&c);
    c = defaults(); c.predictive_target_permille = 1001; expect_einval(&c);
    c = defaults(); c.predictive_probe_us = 0; expect_einval(&c);
    /* An out-of-range policy value, as C code may store. */
    c = defaults(); c.policy = (vmig_reaper_policy)42; expect_einval(&c);
    c = defaults(); c.policy = (vmig_reaper_policy)-1; expect_einval(&c);
}

static void test_null_handles(void)
{
    CHECK(vmig_reaper_update(NULL, 1, 1, 1) == 0);
    CHECK(vmig_reaper_wait(NULL) == -EINVAL);
    CHECK(vmig_reaper_kick(NULL) == -EINVAL);
    CHECK(vmig_reaper_interval_us(NULL) == 0);
    vmig_reaper_free(NULL);
}

static void test_every_policy_bounded(void)
{
    const vmig_reaper_policy all[] = {VMIG_REAPER_FIXED, VMIG_REAPER_LEVELS,
                                      VMIG_REAPER_AIMD, VMIG_REAPER_PREDICTIVE};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        vmig_reaper_config c = defaults();
        c.policy = all[i];
        vmig_reaper *r = vmig_reaper_new(&c);
        CHECK(r != NULL);
        uint64_t iv = vmig_reaper_interval_us(r);
        CHECK(iv >= c.min_interval_us && iv <= c.max_interval_us);
        uint64_t x = 88172645463325252u;
        for (int k = 0; k < 2000; k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint64_t fill = (k % 3 == 0) ? UINT64_MAX : x % 8192;
            iv = vmig_reaper_update(r, fill, x, (x >> 50) % 2);
            CHECK(iv >= c.min_interval_us && iv <= c.max_interval_us);
            CHECK(iv == vmig_reaper_interval_us(r));
        }
        vmig_reaper_free(r);
    }
}

static void *kicker(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(vmig_reaper_kick(arg) == 0);
    return NULL;
}

static void test_kick(void)
{
    vmig_reaper_config c = defaults();
    c.policy = VMIG_REAPER_FIXED;
    c.fixed_interval_us = 5000;
    c.min_interval_us = 1000;
    vmig_reaper *r = vmig_reaper_new(&c);
    CHECK(r != NULL);
    CHECK(vmig_reaper_update(r, 0, 0, 0) == 5000);

    /* Timeout. */
    uint64_t t0 = now_us();
    CHECK(vmig_reaper_wait(r) == 0);
    CHECK(now_us() - t0 >= 5000);

    /* A kick before the wait is kept (1, not a timeout), and only once. */
    CHECK(vmig_reaper_kick(r) == 0);
    CHECK(vmig_reaper_kick(r) == 0);
    CHECK(vmig_reaper_wait(r) == 1);
    CHECK(vmig_reaper_wait(r) == 0);
    vmig_reaper_free(r);

    /* A kick from another thread ends a 2 s wait (generous margin: the
     * machine running the tests may be heavily loaded). */
    c.fixed_interval_us = 2000000;
    r = vmig_reaper_new(&c);
    CHECK(r != NULL);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, kicker, r) == 0);
    t0 = now_us();
    CHECK(vmig_reaper_wait(r) == 1);
    CHECK(now_us() - t0 < 1500000);
    CHECK(pthread_join(th, NULL) == 0);
    vmig_reaper_free(r);
}

int main(void)
{
    test_defaults_and_validation();
    test_null_handles();
    test_every_policy_bounded();
    test_kick();
    printf("test_reaper: ok\n");
    return 0;
}
