//! One KVM virtual machine of the minimal VMM: the VM fd, its RAM slot
//! (the existing [`GuestRam`] mapping), the dirty rings, vCPU set-up in
//! long mode, and the vCPU state that migrates.

use std::sync::Arc;

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, Msrs};
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmig::kvm::DirtyRings;

use super::program::{CODE_GPA, PML4_GPA};
use crate::memory::GuestRam;

/// `MSR_IA32_TSC`: migrated so the guest's TSC pacing continues where it
/// stopped (QEMU migrates it too).
const MSR_IA32_TSC: u32 = 0x10;

/// A VM over one [`GuestRam`].
pub struct Vm {
    /// The system fd.
    pub kvm: Kvm,
    /// The VM fd.
    pub fd: VmFd,
    /// Dirty rings, when tracking is wanted (the source).
    pub rings: Option<Arc<DirtyRings>>,
    region: kvm_userspace_memory_region,
}

fn err(what: &str) -> impl Fn(kvm_ioctls::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Vm {
    /// Opens `device`, creates a VM, enables `ring_entries`-entry dirty
    /// rings if given, and registers `ram` as slot 0 at gpa 0 (not logged
    /// yet). `ram` must outlive the VM.
    pub fn new(device: &str, ram: &GuestRam, ring_entries: Option<u32>) -> Result<Vm, String> {
        let kvm = Kvm::new_with_path(super::kvm_path(device)?).map_err(|e| format!("open {device}: {e}"))?;
        let fd = kvm.create_vm().map_err(err("KVM_CREATE_VM"))?;
        let rings = match ring_entries {
            Some(n) => Some(Arc::new(DirtyRings::enable(&fd, n).map_err(|e| e.to_string())?)),
            None => None,
        };
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.len() as u64,
            userspace_addr: ram.page_ptr(0) as u64,
        };
        // SAFETY: the region is `ram`'s whole mapping, which the caller
        // keeps alive as long as the VM (run() drops the VM first).
        unsafe { fd.set_user_memory_region(region) }.map_err(err("KVM_SET_USER_MEMORY_REGION"))?;
        Ok(Vm { kvm, fd, rings, region })
    }

    /// Starts dirty logging on the slot (QEMU's `log_start`): from now on
    /// every first write to a page pushes it into the writing vCPU's ring.
    pub fn start_logging(&self) -> Result<(), String> {
        let region = kvm_userspace_memory_region { flags: KVM_MEM_LOG_DIRTY_PAGES, ..self.region };
        // SAFETY: the same mapping as in `new`, only the flags change.
        unsafe { self.fd.set_user_memory_region(region) }.map_err(err("KVM_SET_USER_MEMORY_REGION(log)"))
    }

    /// Creates vCPU `id` with the host's supported CPUID (long mode needs
    /// `LM` in the guest's CPUID) and maps its dirty ring.
    pub fn create_vcpu(&self, id: u64) -> Result<VcpuFd, String> {
        let vcpu = self.fd.create_vcpu(id).map_err(err("KVM_CREATE_VCPU"))?;
        let cpuid = self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
        if let Some(r) = &self.rings {
            r.add_vcpu(&vcpu).map_err(|e| e.to_string())?;
        }
        Ok(vcpu)
    }
}

/// The guest TSC frequency, kHz (KVM_GET_TSC_KHZ on a throwaway vCPU):
/// what the guest's pacing counts in.
pub fn tsc_khz(device: &str) -> Result<u64, String> {
    let kvm = Kvm::new_with_path(super::kvm_path(device)?).map_err(|e| format!("open {device}: {e}"))?;
    let vm = kvm.create_vm().map_err(err("KVM_CREATE_VM"))?;
    let vcpu = vm.create_vcpu(0).map_err(err("KVM_CREATE_VCPU"))?;
    vcpu.get_tsc_khz().map(u64::from).map_err(err("KVM_GET_TSC_KHZ"))
}

/// Puts `vcpu` at the program's entry in 64-bit mode with flat segments,
/// `rbx` = its control block, `r9` = its PRNG seed.
///
/// The program runs at CPL 3 (user segments, user page tables): it needs
/// no privilege (`rdtsc` and `pause` work in ring 3), and the KVM of these
/// hosts is PVM (`kvm_pvm`, KVM without hardware virtualization, nested in
/// a cloud VM), which runs guest user mode natively but emulates guest
/// kernel mode one instruction at a time: measured 6 k records/s at CPL 0
/// against 39 M/s at CPL 3 (docs/kvm.md). On VMX/SVM hosts CPL 3 costs
/// nothing.
pub fn boot_vcpu(vcpu: &VcpuFd, block_gpa: u64, seed: u64) -> Result<(), String> {
    let mut s = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x33,
        type_: 11, // execute/read, accessed
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment { selector: 0x2b, type_: 3, db: 1, l: 0, ..code };
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    // VMX refuses guest state outside real mode with a reset-style TR (a
    // 16-bit TSS) and falls back to emulating every instruction: TR must be
    // a present 64-bit busy TSS (never used: no interrupts, no privilege
    // changes) and LDTR unusable, as the kernel's KVM selftests set them.
    s.tr = kvm_segment { base: 0, limit: 0x67, selector: 0x18, type_: 11, present: 1, ..Default::default() };
    s.ldt = kvm_segment { unusable: 1, ..Default::default() };
    s.cr3 = PML4_GPA;
    s.cr4 = 1 << 5; // PAE
    s.cr0 = 0x8000_0011 | (1 << 5); // PG | ET | PE | NE
    s.efer = 0x500; // LME | LMA
    vcpu.set_sregs(&s).map_err(err("KVM_SET_SREGS"))?;
    // IOPL 3: the guest's `out` (its park) is allowed at CPL 3.
    let regs = kvm_regs { rip: CODE_GPA, rflags: 0x3002, rbx: block_gpa, r9: seed | 1, ..Default::default() };
    vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))
}

/// What the guest program needs of a vCPU to go on elsewhere: its general
/// registers, its segment/control state and its TSC.
#[derive(Clone, Copy)]
pub struct VcpuState {
    /// General registers (rip, rflags, rbx, r8..r15, ...).
    pub regs: kvm_regs,
    /// Segments, control registers, EFER.
    pub sregs: kvm_sregs,
    /// IA32_TSC.
    pub tsc: u64,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("rip", &self.regs.rip).field("tsc", &self.tsc).finish()
    }
}

const REGS_LEN: usize = std::mem::size_of::<kvm_regs>();
const SREGS_LEN: usize = std::mem::size_of::<kvm_sregs>();
/// Bytes of one serialised [`VcpuState`].
pub const STATE_LEN: usize = REGS_LEN + SREGS_LEN + 8;

fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only used for kvm_regs and kvm_sregs, plain C structs of
    // integers with no implicit padding (kvm-bindings asserts their sizes:
    // 144 and 312 bytes, the sums of their fields), so every byte is
    // initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn from_bytes<T: Copy + Default>(b: &[u8]) -> T {
    assert_eq!(b.len(), std::mem::size_of::<T>());
    let mut v = T::default();
    // SAFETY: `b` has exactly size_of::<T>() bytes and every bit pattern is
    // a valid kvm_regs/kvm_sregs (integers only).
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), b.len()) };
    v
}

impl VcpuState {
    /// Reads the state of a stopped vCPU.
    pub fn save(vcpu: &VcpuFd) -> Result<VcpuState, String> {
        let regs = vcpu.get_regs().map_err(err("KVM_GET_REGS"))?;
        let sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() }])
            .map_err(|e| format!("MSR list: {e:?}"))?;
        let n = vcpu.get_msrs(&mut msrs).map_err(err("KVM_GET_MSRS"))?;
        if n != 1 {
            return Err("KVM_GET_MSRS: IA32_TSC not read".into());
        }
        Ok(VcpuState { regs, sregs, tsc: msrs.as_slice()[0].data })
    }

    /// Loads the state into a fresh vCPU.
    pub fn restore(&self, vcpu: &VcpuFd) -> Result<(), String> {
        vcpu.set_sregs(&self.sregs).map_err(err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&self.regs).map_err(err("KVM_SET_REGS"))?;
        let msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_IA32_TSC, data: self.tsc, ..Default::default() }])
            .map_err(|e| format!("MSR list: {e:?}"))?;
        match vcpu.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))? {
            1 => Ok(()),
            _ => Err("KVM_SET_MSRS: IA32_TSC not written".into()),
        }
    }

    /// Appends the serialised state (the stream's device record payload).
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytes_of(&self.regs));
        out.extend_from_slice(bytes_of(&self.sregs));
        out.extend_from_slice(&self.tsc.to_le_bytes());
    }

    /// Parses `n` states from a device record payload.
    pub fn parse_all(b: &[u8]) -> Result<Vec<VcpuState>, String> {
        if b.is_empty() || b.len() % STATE_LEN != 0 {
            return Err(format!("vCPU state of {} bytes is not a whole number of {STATE_LEN}-byte states", b.len()));
        }
        Ok(b.chunks_exact(STATE_LEN)
            .map(|c| VcpuState {
                regs: from_bytes(&c[..REGS_LEN]),
                sregs: from_bytes(&c[REGS_LEN..REGS_LEN + SREGS_LEN]),
                tsc: u64::from_le_bytes(c[REGS_LEN + SREGS_LEN..].try_into().expect("8 bytes")),
            })
            .collect())
    }
}
