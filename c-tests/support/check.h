/* Shared by the C tests: a CHECK that reports the failing expression and
 * its location, then fails the test program with exit status 1. */
#ifndef VMIG_CTEST_CHECK_H
#define VMIG_CTEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#endif
