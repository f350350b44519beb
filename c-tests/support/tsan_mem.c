/* rustc (LLVM >= 15) lowers memcpy/memmove/memset in TSan-instrumented code
 * to __tsan_memcpy/__tsan_memmove/__tsan_memset; GCC 12's libtsan predates
 * those entry points. Forward them to the libc functions, which libtsan
 * intercepts and checks, so the Rust side's block copies stay checked.
 * Linked only into the tsan build of the C tests (scripts/c-tests.sh). */
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n);
void *__tsan_memmove(void *dst, const void *src, size_t n);
void *__tsan_memset(void *dst, int c, size_t n);

void *__tsan_memcpy(void *dst, const void *src, size_t n) { return memcpy(dst, src, n); }
void *__tsan_memmove(void *dst, const void *src, size_t n) { return memmove(dst, src, n); }
void *__tsan_memset(void *dst, int c, size_t n) { return memset(dst, c, n); }
