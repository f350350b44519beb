/* Ring C API: every exported vmig_ring_* function, including bad arguments. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmig.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static void *item(uintptr_t v) { return (void *)v; }

static void test_basic(uint32_t flags)
{
    vmig_ring *r = vmig_ring_new(4, flags);
    CHECK(r != NULL);
    CHECK(vmig_ring_capacity(r) == 4);
    CHECK(vmig_ring_empty(r));
    for (uintptr_t i = 1; i <= 4; i++) {
        CHECK(vmig_ring_enqueue(r, item(i)) == 0);
    }
    CHECK(vmig_ring_full(r));
    CHECK(vmig_ring_count(r) == 4);
    CHECK(vmig_ring_enqueue(r, item(5)) == -ENOBUFS);
    for (uintptr_t i = 1; i <= 4; i++) {
        CHECK(vmig_ring_dequeue(r) == item(i));
    }
    CHECK(vmig_ring_dequeue(r) == NULL);
    vmig_ring_free(r);
}

int main(void)
{
    CHECK(strcmp(vmig_version(), VMIG_VERSION) == 0);
    test_basic(0);
    test_basic(VMIG_RING_MP);
    errno = 0;
    CHECK(vmig_ring_new(3, 0) == NULL && errno == EINVAL);
    CHECK(vmig_ring_enqueue(NULL, item(1)) == -EINVAL);
    vmig_ring_free(NULL);
    printf("test_ring: ok\n");
    return 0;
}
