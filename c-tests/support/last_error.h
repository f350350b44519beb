/* Shared by the C tests: whether the calling thread's vmig_last_error()
 * message contains `word`. Include it after vmig.h (vmig_ring_inline.h
 * includes that). */
#ifndef VMIG_CTEST_LAST_ERROR_H
#define VMIG_CTEST_LAST_ERROR_H

#include <string.h>

static inline int last_error_mentions(const char *word)
{
    char buf[512];
    vmig_last_error(buf, sizeof(buf));
    return strstr(buf, word) != NULL;
}

#endif
