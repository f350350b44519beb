# A boot sector that dirties guest memory at a set rate on every vCPU, for
# make qemu-bench (qemu-patches/bench-smp.py).  Packaged like QEMU's
# migration-test boot sector (tests/qtest/migration/i386): assembled with
# gcc -m32 -c, the 512 bytes at 0x7c00 cut out of objcopy -O binary's
# output, and booted by SeaBIOS from a raw drive.
#
# The bootstrap processor enters 32-bit protected mode (flat segments),
# reads the TSC frequency from KVM's kvmclock parameters, then wakes every
# other vCPU with INIT and two start-up IPIs into a real-mode trampoline
# that enters protected mode the same way.  Each vCPU then writes one
# byte in every 4 KiB page of its own SLICE of memory, in order, round
# and round: one page every TSC_HZ / RATE ticks when RATE (pages per
# second per vCPU, the dword at offset RATE_OFFSET of the sector, set by
# the bench) is non-zero, as fast as it can when it is zero.  A vCPU that
# falls behind (descheduled by a loaded host) catches up, so the rate holds
# on average, but by at most BACKLOG_10MS * 10 ms of pages: after a longer
# pause (the VM stopped, a throttle sleep) it drops the rest of the backlog.
#
# What the host can read: on the serial port, 'A' + the vCPU's APIC ID
# once that vCPU starts dirtying; at COUNTERS + 16 * APIC ID, a dword
# counting the pages that vCPU has written (the guest's own progress).
#
# Needs APIC IDs 0..N-1 (QEMU's default topology for -smp N with one
# socket) and at least MEM_START + N * SLICE bytes of RAM.

.set MEM_START,    0x200000        # 2 MiB: above the BIOS and this code
.set SLICE_SHIFT,  26              # 64 MiB per vCPU: 16384 pages, four
                                   # times the 4096-entry dirty ring
.set TRAMPOLINE,   0x8000          # 4 KiB aligned: start-up IPI vector 8
.set COUNTERS,     0x9000          # per-vCPU progress, 16 bytes each
.set APIC_ID,      0xfee00020
.set APIC_SVR,     0xfee000f0
.set APIC_ICR_LO,  0xfee00300
.set ICR_INIT_ALL_BUT_SELF, 0x000c4500
.set ICR_SIPI_ALL_BUT_SELF, 0x000c4600
.set MSR_KVM_SYSTEM_TIME_NEW, 0x4b564d01
.set PVCLOCK,      0xa000          # kvmclock's time info (BSP, once)
.set BACKLOG_10MS, 10              # catch up on at most 100 ms
.set COM1,         0x3f8

.code16
.org 0x7c00
        .text
        .globl  start
start:
        cli
        cld
        xor     %ax, %ax
        mov     %ax, %ds
        lgdtl   gdtdesc
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $8, $bsp32

# Copied to TRAMPOLINE; an AP starts here in real mode (CS = 0x800, IP =
# 0).  Every address it uses is an absolute one in this sector.
ap_trampoline:
        cli
        cld
        xor     %ax, %ax
        mov     %ax, %ds
        lgdtl   gdtdesc
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $8, $ap32
ap_trampoline_end:

.code32
# Busy-wait 10 ms (tsc_10ms ticks); clobbers eax, edx, ebx.
.macro  wait_10ms
        rdtsc
        mov     %eax, %ebx
1:      pause
        rdtsc
        sub     %ebx, %eax
        cmp     tsc_10ms, %eax
        jb      1b
.endm

bsp32:
        mov     $16, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        # A20
        inb     $0x92, %al
        or      $2, %al
        outb    %al, $0x92

        # TSC ticks in 10 ms, from the parameters KVM gives kvmclock
        # (exact; polling a PIT from a vCPU of a loaded host is not): KVM
        # fills the pvclock_vcpu_time_info at PVCLOCK with tsc_to_system_mul
        # (+24) and tsc_shift (+28), ns = ((tsc << shift) * mul) >> 32, so
        # 10 ms is (10^7 << 32) / mul, shifted back.  mul >= 2^31, so the
        # quotient fits.  kvmclock is switched off again afterwards.
        mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
        mov     $(PVCLOCK | 1), %eax
        xor     %edx, %edx
        wrmsr
        mov     $10000000, %edx
        xor     %eax, %eax
        divl    PVCLOCK + 24
        movsbl  PVCLOCK + 28, %ecx
        test    %ecx, %ecx
        js      1f
        shr     %cl, %eax
        jmp     2f
1:      neg     %ecx
        shl     %cl, %eax
2:      mov     %eax, tsc_10ms
        mov     $MSR_KVM_SYSTEM_TIME_NEW, %ecx
        xor     %eax, %eax
        xor     %edx, %edx
        wrmsr
        mov     tsc_10ms, %eax
        mov     $BACKLOG_10MS, %edx
        mul     %edx
        mov     %eax, backlog_max

        # period = TSC ticks per page = tsc_10ms * 100 / RATE (0: no wait)
        xor     %ebx, %ebx
        mov     rate, %ecx
        test    %ecx, %ecx
        jz      1f
        mov     tsc_10ms, %eax
        mov     $100, %edx
        mul     %edx
        div     %ecx
        mov     %eax, %ebx
1:      mov     %ebx, period

        # the trampoline, then INIT and two start-up IPIs to all but self
        mov     $ap_trampoline, %esi
        mov     $TRAMPOLINE, %edi
        mov     $(ap_trampoline_end - ap_trampoline), %ecx
        rep movsb
        orl     $0x100, APIC_SVR
        movl    $ICR_INIT_ALL_BUT_SELF, APIC_ICR_LO
        wait_10ms
        movl    $(ICR_SIPI_ALL_BUT_SELF | (TRAMPOLINE >> 12)), APIC_ICR_LO
        wait_10ms
        movl    $(ICR_SIPI_ALL_BUT_SELF | (TRAMPOLINE >> 12)), APIC_ICR_LO

ap32:
        mov     $16, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss

        mov     APIC_ID, %esi
        shr     $24, %esi                   # esi: this vCPU's APIC ID
        mov     %esi, %ebp
        shl     $SLICE_SHIFT, %ebp
        add     $MEM_START, %ebp            # ebp: first page of the slice
        mov     %ebp, %edi
        add     $(1 << SLICE_SHIFT), %edi   # edi: end of the slice
        mov     %ebp, %ebx                  # ebx: next page to write
        mov     %esi, %ecx
        shl     $4, %ecx
        add     $COUNTERS, %ecx             # ecx: this vCPU's counters
        movl    $0, (%ecx)                  # +0 pages written
        rdtsc
        mov     %eax, 4(%ecx)               # +4 +8 next deadline (TSC)
        mov     %edx, 8(%ecx)

        mov     %esi, %eax
        add     $'A', %al
        mov     $COM1, %dx
        outb    %al, %dx

dirty:
        mov     period, %eax
        test    %eax, %eax
        jz      write
        add     %eax, 4(%ecx)               # next deadline += period
        adcl    $0, 8(%ecx)
1:      rdtsc                               # wait for it: now - next >= 0
        sub     4(%ecx), %eax
        sbb     8(%ecx), %edx
        jns     2f
        pause
        jmp     1b
2:      test    %edx, %edx                  # too far behind: drop the
        jnz     3f                          # backlog, deadline = now
        cmp     backlog_max, %eax
        jb      write
3:      rdtsc
        mov     %eax, 4(%ecx)
        mov     %edx, 8(%ecx)
write:
        incb    (%ebx)
        incl    (%ecx)
        add     $4096, %ebx
        cmp     %edi, %ebx
        jb      dirty
        mov     %ebp, %ebx
        jmp     dirty

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff          # code: flat 4 GiB, 32-bit
        .quad   0x00cf92000000ffff          # data: flat 4 GiB
gdtdesc:
        .word   gdtdesc - gdt - 1
        .long   gdt

tsc_10ms:
        .long   0
period:
        .long   0
backlog_max:
        .long   0

.org 0x7df0                                 # RATE_OFFSET = 0x1f0
rate:
        .long   0

.org 0x7dfe
        .byte   0x55
        .byte   0xaa
