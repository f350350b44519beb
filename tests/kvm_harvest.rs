//! vmig::kvm against the real /dev/kvm: a tiny real-mode guest writes a
//! known set of pages; the harvester must report exactly them, and after
//! the reset the same writes must be logged again (the pages were
//! write-protected by `KVM_RESET_DIRTY_RINGS`). Skips loudly without a
//! usable /dev/kvm or dirty-ring support.
#![cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]

use std::collections::BTreeSet;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit, VmFd};
use vmig::kvm::{check_ring_entries, ring_support, DirtyRings, KvmError};

const MEM: usize = 1 << 20;
const CODE: usize = 0x1000;
/// First written page: segment 0x1000 = physical 0x10000.
const FIRST: u64 = 0x10;

/// Real-mode guest writing one byte into each of `n` consecutive pages from
/// physical 0x10000, then halting (assembled with GNU as, .code16):
///
/// ```text
///  0: b8 00 10        mov  $0x1000,%ax
///  3: b9 nn nn        mov  $n,%cx
///  6: 8e d8        1: mov  %ax,%ds
///  8: c6 06 00 00 55  movb $0x55,(0)
///  d: 05 00 01        add  $0x100,%ax      ; next 4 KiB page
/// 10: e2 f4           loop 1b
/// 12: f4              hlt
/// ```
fn program(n: u16) -> Vec<u8> {
    let [lo, hi] = n.to_le_bytes();
    vec![0xb8, 0x00, 0x10, 0xb9, lo, hi, 0x8e, 0xd8, 0xc6, 0x06, 0x00, 0x00, 0x55, 0x05, 0x00, 0x01, 0xe2, 0xf4, 0xf4]
}

fn kvm_or_skip() -> Option<(Kvm, VmFd)> {
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("SKIP: /dev/kvm is not usable here ({e}); vmig::kvm not tested against a real kernel");
            return None;
        }
    };
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    if ring_support(&vm).is_none() {
        eprintln!("SKIP: this kernel has no KVM_CAP_DIRTY_LOG_RING");
        return None;
    }
    Some((kvm, vm))
}

struct Mem(*mut u8);
impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map_guest`.
        unsafe { libc::munmap(self.0.cast(), MEM) };
    }
}

fn map_guest(vm: &VmFd) -> Mem {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(p, libc::MAP_FAILED);
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: 0,
        memory_size: MEM as u64,
        userspace_addr: p as u64,
    };
    // SAFETY: the mapping stays valid while the VM can touch it: the test
    // drops the vCPU and the VM before the mapping.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
    Mem(p.cast())
}

fn run_to_hlt(vcpu: &mut kvm_ioctls::VcpuFd, rings: &DirtyRings, got: &mut BTreeSet<u64>) {
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = CODE as u64;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::Hlt => return,
            VcpuExit::Unsupported(r) if r == vmig::kvm::KVM_EXIT_DIRTY_RING_FULL => {
                rings.harvest(&mut |g| {
                    got.insert(g.offset);
                })
                .unwrap();
            }
            e => panic!("unexpected exit {e:?}"),
        }
    }
}

#[test]
fn harvester_reports_exactly_the_pages_the_guest_wrote_and_relogs_after_reset() {
    let Some((_kvm, vm)) = kvm_or_skip() else { return };
    let rings = DirtyRings::enable(&vm, 4096).expect("enable dirty ring");
    let mem = map_guest(&vm);
    let n = 200u16;
    let code = program(n);
    // SAFETY: CODE + len is inside the mapping; no vCPU runs yet.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.0.add(CODE), code.len()) };
    let mut vcpu = vm.create_vcpu(0).unwrap();
    rings.add_vcpu(&vcpu).unwrap();
    let want: BTreeSet<u64> = (FIRST..FIRST + u64::from(n)).collect();
    for round in 0..2 {
        let mut got = BTreeSet::new();
        run_to_hlt(&mut vcpu, &rings, &mut got);
        let h = rings
            .harvest(&mut |g| {
                assert_eq!(g.slot, 0);
                got.insert(g.offset);
            })
            .unwrap();
        assert_eq!(got, want, "round {round}: harvested pages");
        assert_eq!(h.total, u64::from(n), "round {round}: one entry per page");
        assert_eq!(h.max_fill, u64::from(n));
        // Nothing more until the guest writes again.
        let h = rings.harvest(&mut |_| panic!("spurious entry")).unwrap();
        assert_eq!(h.total, 0);
        for p in &want {
            // SAFETY: inside the mapping; the vCPU is halted.
            assert_eq!(unsafe { *mem.0.add(*p as usize * 4096) }, 0x55);
        }
    }
    drop(vcpu);
    drop(vm);
}

#[test]
fn bad_ring_sizes_are_refused_with_the_kernel_range() {
    let Some((_kvm, vm)) = kvm_or_skip() else { return };
    let max = ring_support(&vm).unwrap().max_entries;
    assert!(matches!(check_ring_entries(3000, max), Err(KvmError::BadRingSize { .. })));
    assert!(matches!(DirtyRings::enable(&vm, 3000), Err(KvmError::BadRingSize { .. })));
    assert!(matches!(DirtyRings::enable(&vm, max * 2), Err(KvmError::BadRingSize { .. })));
    assert!(matches!(DirtyRings::enable(&vm, 16), Err(KvmError::BadRingSize { .. })));
    let msg = DirtyRings::enable(&vm, 3000).unwrap_err().to_string();
    assert!(msg.contains("3000") && msg.contains(&max.to_string()), "{msg}");
}

#[test]
fn enabling_after_a_vcpu_exists_fails_cleanly() {
    let Some((_kvm, vm)) = kvm_or_skip() else { return };
    let _vcpu = vm.create_vcpu(0).unwrap();
    match DirtyRings::enable(&vm, 4096) {
        Err(KvmError::Os { errno, .. }) => assert_eq!(errno, libc::EINVAL),
        other => panic!("{other:?}"),
    }
}
