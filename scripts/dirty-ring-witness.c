// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * dirty-ring-witness: an independent check of KVM's dirty ring, without QEMU.
 *
 * Investigation tool for issue 16 (docs/dirty-ring-bug.md); not part of
 * libvmig.  It runs migration-test's guest loop (tests/migration/i386/
 * a-b-bootblock.S: increment one byte in every page from 1 MiB to 100 MiB,
 * sweep after sweep, a PIO write every 64 sweeps) in a one-vCPU VM and plays
 * a precopy migration against it the way QEMU 7.2 harvests the ring:
 *
 *   - the ring is reaped (entries collected, KVM_RESET_DIRTY_RINGS) by a
 *     reaper thread every --reaper-ms, by the vCPU thread after
 *     KVM_EXIT_DIRTY_RING_FULL, and by the "migration" thread at every
 *     bitmap sync; all reaps and the bitmap are under one lock, and the
 *     reset is done before the bits are visible (QEMU's rule);
 *   - a trial enables dirty logging on the slot, copies every page to a
 *     shadow ("the destination"), then runs --iters sync+copy rounds, stops
 *     the vCPU (immediate_exit + signal, waits until it is out of KVM_RUN),
 *     does the final sync, copies the dirty pages and compares the shadow
 *     with guest memory.  Any page that differs was written without being
 *     reported: a lost dirty page.
 *
 * Build: cc -O2 -pthread -o dirty-ring-witness scripts/dirty-ring-witness.c
 * Run:   ./dirty-ring-witness [--trials N] [--iters N] [--reaper-ms N]
 *                             [--ring N] [--split] [--no-kick] [--workaround]
 *                             [--wa-no-reprotect] [--wa-no-unstick]
 * --workaround detects an overrun of the ring and recovers (write-protect
 * every page again, mark every page dirty, hand a hole back to KVM); the
 * --wa-no-* options leave one part out, to show that each is needed.
 * Exit:  0 no page lost in any trial, 1 pages lost, 2 bad usage,
 *        77 /dev/kvm or the dirty ring unavailable (prints SKIP:).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MEM_SIZE (128UL << 20)
#define NPAGES (MEM_SIZE / PAGE)
#define SWEEP_START (1UL << 20)
#define SWEEP_END (100UL << 20)
#define CODE_GPA 0x1000UL
/* the low slot ends where PC RAM does (0xa0000) with --split */
#define LOW_END 0xa0000UL

/* the sweep loop of a-b-bootblock.S, assembled with as --32 */
static const uint8_t guest_code[] = {
    0xb8, 0x00, 0x00, 0x10, 0x00,   /* outer: mov $0x100000,%eax */
    0xfe, 0x00,                     /* inner: incb (%eax) */
    0x05, 0x00, 0x10, 0x00, 0x00,   /* add $0x1000,%eax */
    0x3d, 0x00, 0x00, 0x40, 0x06,   /* cmp $0x6400000,%eax */
    0x7c, 0xf2,                     /* jl inner */
    0xfe, 0xc3,                     /* inc %bl */
    0x80, 0xe3, 0x3f,               /* and $0x3f,%bl */
    0x75, 0xe6,                     /* jne outer */
    0xb0, 0x42,                     /* mov $'B',%al */
    0x66, 0xba, 0xf8, 0x03,         /* mov $0x3f8,%dx */
    0xee,                           /* out %al,(%dx) */
    0xeb, 0xdd,                     /* jmp outer */
};

struct slot {
    uint32_t id;
    uint64_t gpa, size;
};

static int kvm_fd, vm_fd, vcpu_fd;
static struct kvm_run *run;
static struct kvm_dirty_gfn *ring;
static uint32_t ring_entries = 4096;
static uint32_t fetch_index;
static uint8_t *mem;
static uint8_t *shadow;
static uint64_t *bitmap;         /* one bit per page, under lock */
static struct slot slots[2];
static int nslots;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t vcpu_thread;
static atomic_int stop_req, parked, quit;
static atomic_ulong ring_full_exits, reaps, reaped, io_exits, eintr_resets;
static unsigned long full_passes, short_resets, holes_total, recoveries;
static int workaround, logging, no_reprotect, no_unstick;
static uint64_t stop_rax, prev_rax;
static int reaper_ms = 1000;
static int kick_on_sync = 1;

static void die(const char *what)
{
    fprintf(stderr, "dirty-ring-witness: %s: %s\n", what, strerror(errno));
    exit(3);
}

static void set_slot(struct slot *s, uint32_t flags)
{
    struct kvm_userspace_memory_region r = {
        .slot = s->id, .flags = flags, .guest_phys_addr = s->gpa,
        .memory_size = s->size, .userspace_addr = (uint64_t)(mem + s->gpa),
    };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        die("KVM_SET_USER_MEMORY_REGION");
    }
}

/*
 * --workaround: entries may have been lost.  Write-protect every page again
 * (dirty logging off and on: KVM write-protects the whole slot when logging
 * is enabled) and only then mark every page dirty, so that a page written
 * after the re-protection is logged and one written before it is copied.
 */
static void recover_locked(void)
{
    for (int i = 0; i < nslots; i++) {
        if (logging && !no_reprotect) {
            set_slot(&slots[i], 0);
            set_slot(&slots[i], KVM_MEM_LOG_DIRTY_PAGES);
        }
    }
    memset(bitmap, 0xff, NPAGES / 8);
    recoveries++;
}

static int dirty_at(uint32_t index)
{
    /* A1 (Acquire): pairs with KVM's store of DIRTY after slot/offset */
    return __atomic_load_n(&ring[index % ring_entries].flags, __ATOMIC_ACQUIRE) &
           KVM_DIRTY_GFN_F_DIRTY;
}

/*
 * --workaround: with the vCPU out of KVM_RUN, an entry at fetch_index that is
 * not dirty while a later one is means KVM wrote past the end of the ring and
 * then reset the overwritten slots as their old entries: its reset_index
 * lags our fetch_index by the k slots in between, which it counts as used.
 * Hand those k slots back (RESET) so the next KVM_RESET_DIRTY_RINGS counts
 * them and the ring is no longer "soft full" with nothing to collect.
 * Returns k.
 */
static uint32_t unstick_locked(void)
{
    uint32_t k;

    if (dirty_at(fetch_index)) {
        return 0;
    }
    for (k = 1; k < ring_entries; k++) {
        if (dirty_at(fetch_index + k)) {
            break;
        }
    }
    if (k == ring_entries) {
        return 0;
    }
    for (uint32_t j = 0; j < k; j++) {
        /* R2 (Release): as R1 */
        __atomic_store_n(&ring[(fetch_index + j) % ring_entries].flags,
                         KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
    }
    fetch_index += k;
    return k;
}

/* Collect the vCPU's ring and reset it; lock held.  Returns entries. */
static uint32_t reap_locked(int vcpu_out)
{
    uint32_t count = 0, holes = 0;
    int suspect = 0;

    if (workaround && vcpu_out && !no_unstick) {
        holes = unstick_locked();
        if (holes) {
            holes_total += holes;
            suspect = 1;
        }
    }
    for (;;) {
        struct kvm_dirty_gfn *e = &ring[fetch_index % ring_entries];
        if (!dirty_at(fetch_index)) {
            break;
        }
        uint32_t as_slot = e->slot & 0xffff;
        uint64_t gpa = 0;
        int ok = 0;
        for (int i = 0; i < nslots; i++) {
            if (slots[i].id == as_slot && e->offset < slots[i].size / PAGE) {
                gpa = slots[i].gpa + e->offset * PAGE;
                ok = 1;
            }
        }
        if (!ok) {
            fprintf(stderr, "entry with bad slot %u offset %llu\n", e->slot,
                    (unsigned long long)e->offset);
        } else {
            uint64_t pfn = gpa / PAGE;
            bitmap[pfn / 64] |= 1ULL << (pfn % 64);
        }
        /* R1 (Release): hands the entry back; pairs with KVM's reset read */
        __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        fetch_index++;
        count++;
    }
    /* a pass that finds every slot dirty: KVM pushed >= ring size */
    if (count >= ring_entries) {
        full_passes++;
        suspect = 1;
    }
    count += holes;
    if (count) {
        uint64_t reset = 0;
        while (reset < count) {
            int r = ioctl(vm_fd, KVM_RESET_DIRTY_RINGS);
            if (r < 0 && errno == EINTR) {
                eintr_resets++;
                continue;
            }
            if (r < 0) {
                die("KVM_RESET_DIRTY_RINGS");
            }
            if (r == 0) {
                break;
            }
            reset += r;
        }
        if (reset != count) {
            short_resets++;
            suspect = 1;
        }
    }
    if (workaround && suspect) {
        recover_locked();
    }
    reaps++;
    reaped += count;
    return count;
}

static void sigusr1(int sig)
{
    (void)sig;
}

static void *vcpu_main(void *arg)
{
    (void)arg;
    while (!quit) {
        if (stop_req) {
            parked = 1;
            while (stop_req && !quit) {
                usleep(100);
            }
            parked = 0;
            continue;
        }
        int r = ioctl(vcpu_fd, KVM_RUN, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                run->immediate_exit = 0;
                continue;
            }
            die("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            io_exits++;
            break;
        case KVM_EXIT_DIRTY_RING_FULL:
            ring_full_exits++;
            pthread_mutex_lock(&lock);
            reap_locked(1);
            pthread_mutex_unlock(&lock);
            break;
        case KVM_EXIT_INTR:
            run->immediate_exit = 0;
            break;
        default:
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            exit(3);
        }
    }
    return NULL;
}

static void kick_vcpu(void)
{
    run->immediate_exit = 1;
    pthread_kill(vcpu_thread, SIGUSR1);
}

/* Stop the vCPU and wait until it is out of KVM_RUN. */
static void stop_vcpu(void)
{
    stop_req = 1;
    while (!parked) {
        kick_vcpu();
        usleep(50);
    }
}

static void resume_vcpu(void)
{
    stop_req = 0;
    while (parked) {
        usleep(50);
    }
}

static void *reaper_main(void *arg)
{
    (void)arg;
    while (!quit) {
        usleep(reaper_ms * 1000);
        pthread_mutex_lock(&lock);
        reap_locked(parked);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void copy_page(uint64_t pfn)
{
    const volatile uint64_t *src = (const volatile uint64_t *)(mem + pfn * PAGE);
    uint64_t *dst = (uint64_t *)(shadow + pfn * PAGE);
    for (size_t i = 0; i < PAGE / 8; i++) {
        dst[i] = src[i];
    }
}

/* QEMU's migration_bitmap_sync: kick (kvm_dirty_ring_flush) + reap; then
 * copy and clear every dirty page. Returns pages copied. */
static uint64_t sync_and_copy(void)
{
    static uint64_t local[NPAGES / 64];
    uint64_t n = 0;

    if (kick_on_sync && !stop_req) {
        /* like kvm_cpu_synchronize_kick_all, but without waiting */
        kick_vcpu();
    }
    pthread_mutex_lock(&lock);
    reap_locked(parked);
    memcpy(local, bitmap, sizeof(local));
    memset(bitmap, 0, sizeof(local));
    pthread_mutex_unlock(&lock);
    for (uint64_t w = 0; w < NPAGES / 64; w++) {
        uint64_t bits = local[w];
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            copy_page(w * 64 + b);
            n++;
        }
    }
    return n;
}

static int trial(int t, int iters)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    srand(ts.tv_nsec ^ t);

    /* migration start: log dirty pages, every page dirty in the bitmap */
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nslots; i++) {
        set_slot(&slots[i], KVM_MEM_LOG_DIRTY_PAGES);
    }
    logging = 1;
    memset(bitmap, 0xff, NPAGES / 8);
    pthread_mutex_unlock(&lock);

    uint64_t copied = 0;
    for (int i = 0; i < iters; i++) {
        copied += sync_and_copy();
        usleep(rand() % 40000);
    }
    stop_vcpu();
    struct kvm_regs regs;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) < 0) {
        die("KVM_GET_REGS");
    }
    stop_rax = regs.rax;
    uint64_t final = sync_and_copy();

    /* the check: every page the guest changed must have been reported */
    uint64_t lost = 0, first = 0, last = 0, runs = 0, prev = 0;
    for (uint64_t pfn = 0; pfn < NPAGES; pfn++) {
        if (memcmp(mem + pfn * PAGE, shadow + pfn * PAGE, PAGE)) {
            if (!lost) {
                first = pfn;
            }
            if (!lost || pfn != prev + 1) {
                runs++;
                if (runs <= 8) {
                    fprintf(stderr, "  trial %d: lost from 0x%llx (guest %02x, copy %02x)\n",
                            t, (unsigned long long)(pfn * PAGE),
                            mem[pfn * PAGE], shadow[pfn * PAGE]);
                }
            }
            last = pfn;
            prev = pfn;
            lost++;
        }
    }
    printf("trial %d: copied %llu, final %llu, vCPU stopped at eax=0x%llx, lost %llu",
           t, (unsigned long long)copied, (unsigned long long)final,
           (unsigned long long)regs.rax, (unsigned long long)lost);
    if (lost) {
        printf(" (0x%llx..0x%llx, %llu runs)", (unsigned long long)(first * PAGE),
               (unsigned long long)(last * PAGE + PAGE), (unsigned long long)runs);
    }
    printf("\n");
    fflush(stdout);

    /* migration end: stop logging, resume the guest for the next trial */
    pthread_mutex_lock(&lock);
    reap_locked(1);
    for (int i = 0; i < nslots; i++) {
        set_slot(&slots[i], 0);
    }
    logging = 0;
    pthread_mutex_unlock(&lock);
    resume_vcpu();
    return lost != 0;
}

static void setup_vcpu(void)
{
    vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
    if (vcpu_fd < 0) {
        die("KVM_CREATE_VCPU");
    }
    int run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
    if (run == MAP_FAILED) {
        die("mmap kvm_run");
    }
    ring = mmap(NULL, ring_entries * sizeof(*ring), PROT_READ | PROT_WRITE,
                MAP_SHARED, vcpu_fd, KVM_DIRTY_LOG_PAGE_OFFSET * PAGE);
    if (ring == MAP_FAILED) {
        die("mmap dirty ring");
    }

    struct kvm_sregs sregs;
    if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
        die("KVM_GET_SREGS");
    }
    struct kvm_segment code = {
        .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
    struct kvm_segment data = code;
    data.type = 3;
    data.selector = 16;
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.cr0 |= 1;
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
        die("KVM_SET_SREGS");
    }
    struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
    if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0) {
        die("KVM_SET_REGS");
    }
}

int main(int argc, char **argv)
{
    int trials = 10, iters = 5, split = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trials") && i + 1 < argc) {
            trials = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--reaper-ms") && i + 1 < argc) {
            reaper_ms = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--ring") && i + 1 < argc) {
            ring_entries = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--split")) {
            split = 1;
        } else if (!strcmp(argv[i], "--workaround")) {
            workaround = 1;
        } else if (!strcmp(argv[i], "--wa-no-reprotect")) {
            /* ablation: recover by marking all dirty only */
            workaround = no_reprotect = 1;
        } else if (!strcmp(argv[i], "--wa-no-unstick")) {
            /* ablation: no hole hand-back */
            workaround = no_unstick = 1;
        } else if (!strcmp(argv[i], "--no-kick")) {
            kick_on_sync = 0;
        } else {
            fprintf(stderr, "usage: %s [--trials N] [--iters N] [--reaper-ms N] "
                    "[--ring N] [--split] [--no-kick] [--workaround]\n"
                    "       [--wa-no-reprotect] [--wa-no-unstick]\n", argv[0]);
            return 2;
        }
    }
    if (trials <= 0 || iters < 0 || reaper_ms <= 0 || ring_entries < 64 ||
        (ring_entries & (ring_entries - 1))) {
        fprintf(stderr, "dirty-ring-witness: bad argument\n");
        return 2;
    }

    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0) {
        fprintf(stderr, "SKIP: /dev/kvm: %s\n", strerror(errno));
        return 77;
    }
    vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm_fd < 0) {
        die("KVM_CREATE_VM");
    }
    int cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    int max = ioctl(vm_fd, KVM_CHECK_EXTENSION, cap);
    if (max <= 0) {
        cap = KVM_CAP_DIRTY_LOG_RING;
        max = ioctl(vm_fd, KVM_CHECK_EXTENSION, cap);
    }
    if (max <= 0) {
        fprintf(stderr, "SKIP: no dirty ring in this kernel\n");
        return 77;
    }
    struct kvm_enable_cap ec = { .cap = cap };
    ec.args[0] = ring_entries * sizeof(struct kvm_dirty_gfn);
    if (ioctl(vm_fd, KVM_ENABLE_CAP, &ec) < 0) {
        die("KVM_ENABLE_CAP dirty ring");
    }
    printf("dirty ring: %s, %u entries (max %d bytes), reaper %d ms, %s slot(s)\n",
           cap == KVM_CAP_DIRTY_LOG_RING_ACQ_REL ? "ACQ_REL" : "plain",
           ring_entries, max, reaper_ms, split ? "two" : "one");

    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    shadow = malloc(MEM_SIZE);
    bitmap = calloc(NPAGES / 64, 8);
    if (mem == MAP_FAILED || !shadow || !bitmap) {
        die("memory");
    }
    memcpy(mem + CODE_GPA, guest_code, sizeof(guest_code));
    if (split) {
        slots[0] = (struct slot){ 0, 0, LOW_END };
        slots[1] = (struct slot){ 1, SWEEP_START, MEM_SIZE - SWEEP_START };
        nslots = 2;
    } else {
        slots[0] = (struct slot){ 0, 0, MEM_SIZE };
        nslots = 1;
    }
    for (int i = 0; i < nslots; i++) {
        set_slot(&slots[i], 0);
    }
    setup_vcpu();

    struct sigaction sa = { .sa_handler = sigusr1 };
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t reaper;
    if (pthread_create(&vcpu_thread, NULL, vcpu_main, NULL) ||
        pthread_create(&reaper, NULL, reaper_main, NULL)) {
        die("pthread_create");
    }
    usleep(200000);

    int failed = 0, frozen = 0;
    for (int t = 0; t < trials; t++) {
        failed += trial(t, iters);
        if (t > 0 && stop_rax == prev_rax) {
            frozen++;
        }
        prev_rax = stop_rax;
    }
    printf("%d of %d trials lost pages, guest frozen in %d; ring-full exits %lu, reaps %lu, "
           "entries %lu, PIO exits %lu, RESET -EINTR %lu; overflow signs: full passes %lu, "
           "short resets %lu, hole slots %lu; recoveries %lu (%s)\n", failed, trials, frozen,
           ring_full_exits, reaps, reaped, io_exits, eintr_resets, full_passes, short_resets,
           holes_total, recoveries, workaround ? "workaround on" : "workaround off");
    quit = 1;
    stop_req = 1;
    kick_vcpu();
    return failed ? 1 : 0;
}
