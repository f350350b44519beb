/*
 * fill: the realistic guest's workload (qemu-patches/guest/linux-fill).
 *
 * Runs as a child of /init in the busybox initramfs.  It fills all but
 * RESERVE_MIB of the guest's free memory with a deterministic mix of
 * page kinds, the mix of benches/pool.rs's corpus so that the QEMU
 * figures and the pool benchmark's are comparable:
 *
 *   40 % code    pages of ELF files: busybox and this program (both static)
 *   35 % text    pages of the text corpus the initramfs carries (/corpus)
 *   15 % zero    written as zeros (so they are zero whatever the page held)
 *   10 % random  xorshift64* output (incompressible)
 *
 * The kind of each page is drawn from one xorshift64* stream with a fixed
 * seed, so the kinds are shuffled as the pool benchmark shuffles its
 * pages, and two boots of the same initramfs on the same RAM size hold
 * the same pages in the same order of the mapping.  Then it prints
 * MARKER with the counts on the console (/dev/console: the serial port)
 * and sleeps for good, holding the memory.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#define PAGE 4096
/* left to the kernel (page cache of the initramfs, slab): enough that the
 * OOM killer never runs at 256 MiB of guest RAM */
#define RESERVE_MIB 40
#define MARKER "VMIG-FILL-DONE"

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint64_t xorshift64s(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}

struct source {
    unsigned char *data;
    size_t pages;       /* non-zero pages in data */
    size_t next;
};

/* Appends the non-zero pages of @path to @s (zero pages are a kind of their own). */
static void add_file(struct source *s, const char *path)
{
    unsigned char page[PAGE];
    int fd = open(path, O_RDONLY);
    ssize_t n;

    if (fd < 0) {
        perror(path);
        exit(1);
    }
    while ((n = read(fd, page, PAGE)) == PAGE) {
        size_t i;

        for (i = 0; i < PAGE && !page[i]; i++) {
        }
        if (i == PAGE) {
            continue;
        }
        s->data = realloc(s->data, (s->pages + 1) * PAGE);
        if (!s->data) {
            perror("realloc");
            exit(1);
        }
        memcpy(s->data + s->pages * PAGE, page, PAGE);
        s->pages++;
    }
    close(fd);
}

static void copy_next(struct source *s, unsigned char *dst)
{
    memcpy(dst, s->data + s->next * PAGE, PAGE);
    s->next = (s->next + 1) % s->pages;
}

int main(int argc, char **argv)
{
    struct source code = { 0 }, text = { 0 };
    size_t counts[4] = { 0 }, npages, i;
    struct sysinfo si;
    unsigned char *mem;
    int a;

    add_file(&code, "/bin/busybox");
    add_file(&code, "/proc/self/exe");
    for (a = 1; a < argc; a++) {
        add_file(&text, argv[a]);
    }
    if (!code.pages || !text.pages) {
        fprintf(stderr, "fill: no code or no text pages\n");
        return 1;
    }
    if (sysinfo(&si) < 0) {
        perror("sysinfo");
        return 1;
    }
    npages = ((uint64_t)si.freeram * si.mem_unit) / PAGE;
    if (npages <= (RESERVE_MIB << 20) / PAGE) {
        fprintf(stderr, "fill: only %zu free pages\n", npages);
        return 1;
    }
    npages -= (RESERVE_MIB << 20) / PAGE;
    mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (i = 0; i < npages; i++) {
        unsigned char *p = mem + i * PAGE;
        unsigned kind = xorshift64s() % 100;

        if (kind < 40) {
            copy_next(&code, p);
            counts[0]++;
        } else if (kind < 75) {
            copy_next(&text, p);
            counts[1]++;
        } else if (kind < 90) {
            memset(p, 0, PAGE);
            counts[2]++;
        } else {
            uint64_t *w = (uint64_t *)p;
            size_t j;

            for (j = 0; j < PAGE / 8; j++) {
                w[j] = xorshift64s();
            }
            counts[3]++;
        }
    }
    printf("%s pages=%zu code=%zu text=%zu zero=%zu random=%zu "
           "(code from %zu pages of ELF, text from %zu pages)\n",
           MARKER, npages, counts[0], counts[1], counts[2], counts[3],
           code.pages, text.pages);
    fflush(stdout);
    for (;;) {
        pause();
    }
}
