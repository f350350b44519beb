//! The guest program every vCPU of the KVM guest runs, and the guest
//! physical layout it relies on.
//!
//! 64-bit long mode at CPL 3 (see `vm::boot_vcpu` for why), identity-mapped
//! with 2 MiB user pages, interrupts off, no stack, no I/O: the program never leaves guest mode on its own, so the
//! only exits are the ones the VMM causes (a kick) or KVM needs (a full
//! dirty ring). Each vCPU loops:
//!
//! 1. If `CONFIG.check_epoch` differs from its block's `check_done`, run
//!    the self-check over its partition (below), store the number of bad
//!    pages and the epoch.
//! 2. Pacing: with `period` > 0, each record is due `period` TSC ticks
//!    after the previous one. A record due within `window` ticks is
//!    written now (so records come in bursts of up to `window`); one due
//!    later parks the vCPU: it stores its deadline as its wake-up time
//!    and does `out 0x80` (an I/O exit, the VMM sleeps until then:
//!    QEMU's HLT with a timer, which ring 3 cannot do), so an idle guest
//!    leaves the host CPU to the migration. A deadline more than `max_lag`
//!    (1 ms) in the past (the vCPU was throttled, stalled or descheduled)
//!    is pulled up to `now - max_lag`: time not running is not made up,
//!    the rate is per second of running time (the simulated guest's rule,
//!    sim/src/guest.rs).
//! 3. Pick a page of its partition with xorshift64 (`r9`), `seq += 1`,
//!    write the record `{seq, index, seq * K ^ gpa}` into 64-byte slot
//!    `seq % 64` of that page, then `table[index] = seq`, then
//!    `block.progress = seq`.
//!
//! Self-check: for each index with `table[index] = v != 0`, slot `v % 64`
//! of the page must hold `{v, index, v * K ^ gpa}`. It runs at the loop
//! head, where every earlier record and table store has completed, so a
//! guest stopped anywhere (switch-over included) and resumed passes it
//! unless a page's contents were lost: a page sent before its last write
//! and never resent holds an older record in that slot.
//!
//! Registers the VMM sets (and migration carries): `rbx` = the vCPU's
//! block, `r8` = seq, `r9` = PRNG state, `r10` = next deadline (TSC);
//! `r11..r13` and `r15` are loaded from the block at entry, `r14` (the
//! period) at every loop head, so the VMM can change the rate while the
//! guest runs (the bursty reaper profile does).

use crate::config::PAGE_SIZE;
use crate::memory::GuestRam;

/// Global config page: `+0` check_epoch (the VMM bumps it to request a
/// self-check).
pub const CONFIG_GPA: u64 = 0x1000;
/// Per-vCPU control blocks, 128 bytes (two cache lines) each.
pub const CTRL_GPA: u64 = 0x2000;
/// Bytes per control block.
pub const CTRL_BYTES: u64 = 128;
/// Most vCPUs the layout has blocks for (one page of blocks).
pub const MAX_VCPUS: u32 = (PAGE_SIZE as u64 / CTRL_BYTES) as u32;
/// Guest code.
pub const CODE_GPA: u64 = 0x8000;
/// Page-table root (PML4), then the PDPT.
pub const PML4_GPA: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPT_GPA: u64 = 0xA000;
/// Page directories, one per GiB of RAM.
pub const PD_GPA: u64 = 0x10000;
/// Most RAM the page tables map: 64 GiB (64 directories below `TABLES_GPA`).
pub const MAX_MEM: u64 = 64 << 30;
/// Start of the per-vCPU version tables.
pub const TABLES_GPA: u64 = 0x100000;

/// Control block offsets (bytes).
pub mod block {
    /// gpa of the partition's first page (set by the VMM).
    pub const WS_BASE: u64 = 0;
    /// Pages in the partition.
    pub const WS_PAGES: u64 = 8;
    /// gpa of the vCPU's version table (8 bytes per partition page).
    pub const TABLE: u64 = 16;
    /// TSC ticks between writes; 0 = as fast as possible.
    pub const PERIOD: u64 = 24;
    /// Most lag the pacing makes up, TSC ticks.
    pub const MAX_LAG: u64 = 32;
    /// Records written so far (the guest's work units).
    pub const PROGRESS: u64 = 40;
    /// Epoch of the last completed self-check.
    pub const CHECK_DONE: u64 = 48;
    /// Bad pages the last self-check found.
    pub const CHECK_BAD: u64 = 56;
    /// Burst window, TSC ticks: records due within it are written at once,
    /// later ones park the vCPU (must be > 0 when `PERIOD` is).
    pub const WINDOW: u64 = 64;
    /// Written by the guest before it parks: the TSC to wake it at (its
    /// next record's deadline).
    pub const WAKE: u64 = 72;
}

/// The I/O port the guest writes to park (`out 0x80, al`).
pub const PARK_PORT: u16 = 0x80;

/// The program: `guest.S` next to this file (GNU as, `.intel_syntax
/// noprefix`, `.code64`) as `objdump -d -Mintel` lists it. Loaded at [`CODE_GPA`], entered at offset 0.
#[rustfmt::skip]
pub const CODE: &[u8] = &[
    // entry:
    0x4c, 0x8b, 0x1b,                            //   0: mov r11,[rbx]
    0x4c, 0x8b, 0x63, 0x08,                      //   3: mov r12,[rbx+0x8]
    0x4c, 0x8b, 0x6b, 0x10,                      //   7: mov r13,[rbx+0x10]
    0x4c, 0x8b, 0x7b, 0x20,                      //   b: mov r15,[rbx+0x20]
    // head:
    0x4c, 0x8b, 0x73, 0x18,                      //   f: mov r14,[rbx+0x18]
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x10, 0x00,    //  13: mov rax,ds:0x1000
    0x00,
    0x48, 0x3b, 0x43, 0x30,                      //  1b: cmp rax,[rbx+0x30]
    0x0f, 0x85, 0x9a, 0x00, 0x00, 0x00,          //  1f: jne bf <check>
    0x4d, 0x85, 0xf6,                            //  25: test r14,r14
    0x74, 0x30,                                  //  28: je 5a <write>
    // wait:
    0x0f, 0x31,                                  //  2a: rdtsc
    0x48, 0xc1, 0xe2, 0x20,                      //  2c: shl rdx,0x20
    0x48, 0x09, 0xd0,                            //  30: or rax,rdx
    0x48, 0x89, 0xc1,                            //  33: mov rcx,rax
    0x4c, 0x29, 0xd0,                            //  36: sub rax,r10
    0x79, 0x11,                                  //  39: jns 4c <due>
    0x48, 0xf7, 0xd8,                            //  3b: neg rax
    0x48, 0x3b, 0x43, 0x40,                      //  3e: cmp rax,[rbx+0x40]
    0x76, 0x13,                                  //  42: jbe 57 <ahead>
    0x4c, 0x89, 0x53, 0x48,                      //  44: mov [rbx+0x48],r10
    0xe6, 0x80,                                  //  48: out 0x80,al
    0xeb, 0xde,                                  //  4a: jmp 2a <wait>
    // due:
    0x4c, 0x39, 0xf8,                            //  4c: cmp rax,r15
    0x76, 0x06,                                  //  4f: jbe 57 <ahead>
    0x49, 0x89, 0xca,                            //  51: mov r10,rcx
    0x4d, 0x29, 0xfa,                            //  54: sub r10,r15
    // ahead:
    0x4d, 0x01, 0xf2,                            //  57: add r10,r14
    // write:
    0x4c, 0x89, 0xc8,                            //  5a: mov rax,r9
    0x48, 0xc1, 0xe0, 0x0d,                      //  5d: shl rax,0xd
    0x49, 0x31, 0xc1,                            //  61: xor r9,rax
    0x4c, 0x89, 0xc8,                            //  64: mov rax,r9
    0x48, 0xc1, 0xe8, 0x07,                      //  67: shr rax,0x7
    0x49, 0x31, 0xc1,                            //  6b: xor r9,rax
    0x4c, 0x89, 0xc8,                            //  6e: mov rax,r9
    0x48, 0xc1, 0xe0, 0x11,                      //  71: shl rax,0x11
    0x49, 0x31, 0xc1,                            //  75: xor r9,rax
    0x4c, 0x89, 0xc8,                            //  78: mov rax,r9
    0x31, 0xd2,                                  //  7b: xor edx,edx
    0x49, 0xf7, 0xf4,                            //  7d: div r12
    0x49, 0xff, 0xc0,                            //  80: inc r8
    0x48, 0x89, 0xd7,                            //  83: mov rdi,rdx
    0x48, 0xc1, 0xe7, 0x0c,                      //  86: shl rdi,0xc
    0x4c, 0x01, 0xdf,                            //  8a: add rdi,r11
    0x4c, 0x89, 0xc6,                            //  8d: mov rsi,r8
    0x83, 0xe6, 0x3f,                            //  90: and esi,0x3f
    0xc1, 0xe6, 0x06,                            //  93: shl esi,0x6
    0x48, 0x01, 0xfe,                            //  96: add rsi,rdi
    0x4c, 0x89, 0x06,                            //  99: mov [rsi],r8
    0x48, 0x89, 0x56, 0x08,                      //  9c: mov [rsi+0x8],rdx
    0x4c, 0x89, 0xc0,                            //  a0: mov rax,r8
    0x48, 0x69, 0xc0, 0x91, 0xf4, 0x45, 0x25,    //  a3: imul rax,rax,0x2545f491
    0x48, 0x31, 0xf8,                            //  aa: xor rax,rdi
    0x48, 0x89, 0x46, 0x10,                      //  ad: mov [rsi+0x10],rax
    0x4d, 0x89, 0x44, 0xd5, 0x00,                //  b1: mov [r13+rdx*8+0x0],r8
    0x4c, 0x89, 0x43, 0x28,                      //  b6: mov [rbx+0x28],r8
    0xe9, 0x50, 0xff, 0xff, 0xff,                //  ba: jmp f <head>
    // check:
    0x48, 0x89, 0xc5,                            //  bf: mov rbp,rax
    0x31, 0xc9,                                  //  c2: xor ecx,ecx
    0x31, 0xf6,                                  //  c4: xor esi,esi
    // next:
    0x4c, 0x39, 0xe1,                            //  c6: cmp rcx,r12
    0x73, 0x43,                                  //  c9: jae 10e <done>
    0x49, 0x8b, 0x44, 0xcd, 0x00,                //  cb: mov rax,[r13+rcx*8+0x0]
    0x48, 0x85, 0xc0,                            //  d0: test rax,rax
    0x74, 0x34,                                  //  d3: je 109 <skip>
    0x48, 0x89, 0xcf,                            //  d5: mov rdi,rcx
    0x48, 0xc1, 0xe7, 0x0c,                      //  d8: shl rdi,0xc
    0x4c, 0x01, 0xdf,                            //  dc: add rdi,r11
    0x48, 0x89, 0xc2,                            //  df: mov rdx,rax
    0x83, 0xe2, 0x3f,                            //  e2: and edx,0x3f
    0xc1, 0xe2, 0x06,                            //  e5: shl edx,0x6
    0x48, 0x01, 0xfa,                            //  e8: add rdx,rdi
    0x48, 0x39, 0x02,                            //  eb: cmp [rdx],rax
    0x75, 0x16,                                  //  ee: jne 106 <bad>
    0x48, 0x39, 0x4a, 0x08,                      //  f0: cmp [rdx+0x8],rcx
    0x75, 0x10,                                  //  f4: jne 106 <bad>
    0x48, 0x69, 0xc0, 0x91, 0xf4, 0x45, 0x25,    //  f6: imul rax,rax,0x2545f491
    0x48, 0x31, 0xf8,                            //  fd: xor rax,rdi
    0x48, 0x39, 0x42, 0x10,                      // 100: cmp [rdx+0x10],rax
    0x74, 0x03,                                  // 104: je 109 <skip>
    // bad:
    0x48, 0xff, 0xc6,                            // 106: inc rsi
    // skip:
    0x48, 0xff, 0xc1,                            // 109: inc rcx
    0xeb, 0xb8,                                  // 10c: jmp c6 <next>
    // done:
    0x48, 0x89, 0x73, 0x38,                      // 10e: mov [rbx+0x38],rsi
    0x48, 0x89, 0x6b, 0x30,                      // 112: mov [rbx+0x30],rbp
    0xe9, 0xf4, 0xfe, 0xff, 0xff,                // 116: jmp f <head>
];

/// Where everything of one KVM guest lives.
#[derive(Clone, Debug)]
pub struct Layout {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest pages.
    pub pages: u64,
    /// First page of the working set.
    pub ws_start: u64,
    /// Pages per vCPU partition of the working set.
    pub part_pages: u64,
    /// Pages below the working set's lowest possible start.
    pub reserved_pages: u64,
}

impl Layout {
    /// The layout for `vcpus` vCPUs over `pages` pages with a working set
    /// of `ws_pages` starting at a seeded page at or above the reserved area.
    pub fn new(vcpus: u32, pages: u64, ws_pages: u64, seed: u64) -> Result<Layout, String> {
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(format!("--vcpus must be in 1..={MAX_VCPUS} for the KVM guest"));
        }
        if pages * PAGE_SIZE as u64 > MAX_MEM {
            return Err(format!("--mem must be at most {} GiB for the KVM guest", MAX_MEM >> 30));
        }
        let part_pages = ws_pages / u64::from(vcpus);
        if part_pages == 0 {
            return Err("--working-set must have at least one page per vCPU".into());
        }
        let table_pages = (part_pages * 8).div_ceil(PAGE_SIZE as u64);
        let reserved_pages = TABLES_GPA / PAGE_SIZE as u64 + table_pages * u64::from(vcpus);
        let ws = part_pages * u64::from(vcpus);
        if reserved_pages + ws > pages {
            return Err(format!(
                "--working-set too large for the KVM guest: {} MiB of --mem are taken by its code and tables",
                (reserved_pages * PAGE_SIZE as u64) >> 20
            ));
        }
        let ws_start = reserved_pages + crate::prng::SplitMix64::new(seed, 0x3753).below(pages - reserved_pages - ws + 1);
        Ok(Layout { vcpus, pages, ws_start, part_pages, reserved_pages })
    }

    /// gpa of vCPU `i`'s control block.
    pub fn block_gpa(&self, i: u32) -> u64 {
        CTRL_GPA + u64::from(i) * CTRL_BYTES
    }

    /// gpa of vCPU `i`'s version table.
    pub fn table_gpa(&self, i: u32) -> u64 {
        TABLES_GPA + u64::from(i) * (self.part_pages * 8).div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64
    }

    /// gpa of vCPU `i`'s first working-set page.
    pub fn part_gpa(&self, i: u32) -> u64 {
        (self.ws_start + u64::from(i) * self.part_pages) * PAGE_SIZE as u64
    }

    /// Writes page tables, code, config and control blocks, and zeroes the
    /// version tables. Call before any vCPU runs.
    pub fn install(&self, ram: &GuestRam, period_tsc: u64, max_lag_tsc: u64, window_tsc: u64) {
        for p in 0..self.reserved_pages {
            ram.fill_page(p, 0);
        }
        put(ram, PML4_GPA, PDPT_GPA | 7);
        let gib = (self.pages * PAGE_SIZE as u64).div_ceil(1 << 30);
        for g in 0..gib {
            let pd = PD_GPA + g * PAGE_SIZE as u64;
            put(ram, PDPT_GPA + g * 8, pd | 7);
            for e in 0..512u64 {
                // Present | writable | user | 2 MiB page.
                put(ram, pd + e * 8, ((g << 30) | (e << 21)) | 0x87);
            }
        }
        for (i, b) in CODE.iter().enumerate() {
            let p = ram.page_ptr(CODE_GPA / PAGE_SIZE as u64);
            // SAFETY: CODE is shorter than a page; no vCPU runs yet.
            unsafe { p.add(i).write_volatile(*b) };
        }
        for i in 0..self.vcpus {
            let b = self.block_gpa(i);
            put(ram, b + block::WS_BASE, self.part_gpa(i));
            put(ram, b + block::WS_PAGES, self.part_pages);
            put(ram, b + block::TABLE, self.table_gpa(i));
            put(ram, b + block::PERIOD, period_tsc);
            put(ram, b + block::MAX_LAG, max_lag_tsc);
            put(ram, b + block::WINDOW, window_tsc);
        }
    }
}

/// Writes `v` at guest physical `gpa` (8-aligned).
pub fn put(ram: &GuestRam, gpa: u64, v: u64) {
    let p = ram.page_ptr(gpa / PAGE_SIZE as u64);
    // SAFETY: inside the page (gpa % PAGE_SIZE <= PAGE_SIZE - 8, 8-aligned);
    // volatile: vCPUs may access guest memory concurrently.
    unsafe { p.add((gpa % PAGE_SIZE as u64) as usize).cast::<u64>().write_volatile(v) };
}

/// Reads the u64 at guest physical `gpa` (8-aligned); a running vCPU may be
/// writing it (aligned 8-byte accesses are atomic on x86).
pub fn get(ram: &GuestRam, gpa: u64) -> u64 {
    let p = ram.page_ptr(gpa / PAGE_SIZE as u64);
    // SAFETY: as in `put`.
    unsafe { p.add((gpa % PAGE_SIZE as u64) as usize).cast::<u64>().read_volatile() }
}
