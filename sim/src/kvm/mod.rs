//! A minimal VMM on KVM, so vmig-sim migrates a real virtual machine.
//!
//! * [`program`]: the guest program (hand-listed x86-64) and its memory
//!   layout: records with sequence numbers and checksums, a progress
//!   counter, TSC pacing, a self-check.
//! * [`vm`]: a VM over the existing [`crate::memory::GuestRam`] mapping,
//!   vCPUs in long mode, the vCPU state that migrates (registers, segments,
//!   TSC).
//! * [`vcpu`]: `KVM_RUN` loops, the kick (signal + `immediate_exit`), the
//!   throttle's kick timer, the stall on a full ring.
//! * [`guest`]: the source guest during migration, dirty pages from the
//!   real rings through `vmig::kvm`, harvested by the reaper thread the
//!   vmig (or legacy FIXED) controller drives.
//! * [`dest`]: the destination VM resuming after the switch-over.
//! * [`run`]: one whole migration.
//! * [`bench`]: the guest without a migration, for `vmig-kvm-bench`.
//!
//! docs/kvm.md has the design and the measurements.

pub mod bench;
pub mod dest;
pub mod guest;
pub mod program;
pub mod run;
pub mod vcpu;
pub mod vm;

pub use guest::KvmGuest;

/// `device` as the C string kvm-ioctls opens.
pub fn kvm_path(device: &str) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(device).map_err(|_| format!("--kvm-device '{device}' contains a NUL byte"))
}

/// Whether `device` gives a KVM with dirty rings; `Ok` carries the largest
/// ring the kernel allows (entries).
pub fn probe(device: &str) -> Result<u32, String> {
    let kvm = kvm_ioctls::Kvm::new_with_path(kvm_path(device)?).map_err(|e| format!("{device}: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("{device}: KVM_CREATE_VM: {e}"))?;
    vmig::kvm::ring_support(&vm)
        .map(|s| s.max_entries)
        .ok_or_else(|| format!("{device}: the kernel has no KVM_CAP_DIRTY_LOG_RING"))
}
