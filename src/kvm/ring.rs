//! One vCPU's dirty ring: the kernel's `kvm_dirty_gfn` array mapped from
//! the vCPU fd, and the harvester's side of the protocol.
//!
//! The kernel produces (`kvm_dirty_ring_push`); this side consumes entries
//! in order from `next` and hands them back by setting `RESET`. The kernel
//! reclaims handed-back entries in `KVM_RESET_DIRTY_RINGS`
//! ([`super::DirtyRings::harvest`] issues it). See the module doc of
//! [`super`] for the memory-ordering argument (labels A1, R1 below).

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use kvm_bindings::{kvm_dirty_gfn, KVM_DIRTY_LOG_PAGE_OFFSET};
use kvm_ioctls::VcpuFd;

use super::error::KvmError;

/// `KVM_DIRTY_GFN_F_DIRTY` (include/uapi/linux/kvm.h): the kernel published
/// this entry.
pub const DIRTY_GFN_F_DIRTY: u32 = 1 << 0;
/// `KVM_DIRTY_GFN_F_RESET`: userspace harvested this entry and hands it back.
pub const DIRTY_GFN_F_RESET: u32 = 1 << 1;

/// A dirty page as the kernel names it: memory slot and page offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirtyGfn {
    /// `slot` of `kvm_dirty_gfn`: `(address space id << 16) | slot id`.
    pub slot: u32,
    /// Page offset inside the slot.
    pub offset: u64,
}

/// One vCPU's mapped ring.
#[derive(Debug)]
pub struct VcpuRing {
    base: NonNull<kvm_dirty_gfn>,
    entries: u32,
    /// Next entry to look at; only the harvester (which owns `&mut self`)
    /// reads or writes it. Free-running, masked on use, as the kernel's
    /// `reset_index`.
    next: u32,
}

// SAFETY: the mapping is owned by this struct and stays valid until drop;
// the only state shared with another party (the kernel) is accessed through
// atomics and volatile reads, so moving the owner to another thread (the
// reaper) is sound.
unsafe impl Send for VcpuRing {}

impl VcpuRing {
    /// Maps `vcpu`'s ring of `entries` entries (the size the VM's ring was
    /// enabled with). The mapping is independent of `vcpu`'s lifetime: the
    /// kernel keeps the ring pages until the last mapping goes.
    pub fn map(vcpu: &VcpuFd, entries: u32) -> Result<Self, KvmError> {
        let len = entries as usize * std::mem::size_of::<kvm_dirty_gfn>();
        let page = page_size();
        // SAFETY: a fresh shared mapping of the vCPU fd at the offset the
        // kernel documents for the ring (api.rst, KVM_CAP_DIRTY_LOG_RING);
        // no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                KVM_DIRTY_LOG_PAGE_OFFSET as libc::off_t * page as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(KvmError::last_os("mmap of the vCPU dirty ring"));
        }
        let base = NonNull::new(p.cast::<kvm_dirty_gfn>()).ok_or(KvmError::Os { what: "mmap", errno: libc::EFAULT })?;
        Ok(VcpuRing { base, entries, next: 0 })
    }

    /// Entries in the ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Collects every entry the kernel has published since the last call
    /// into `out`, handing each back (`RESET`). Returns how many. The pages
    /// are *not* write-protected again until `KVM_RESET_DIRTY_RINGS`.
    pub fn collect(&mut self, out: &mut Vec<DirtyGfn>) -> u32 {
        let mask = self.entries - 1;
        let mut n = 0;
        // At most one lap: the kernel never has more than `entries`
        // un-reset entries outstanding.
        while n < self.entries {
            // SAFETY: `next & mask < entries`: inside the mapping.
            let e = unsafe { self.base.as_ptr().add((self.next & mask) as usize) };
            // SAFETY: `flags` is a naturally aligned u32 in the shared
            // mapping, written by the kernel concurrently; accessing it as
            // an atomic is what the kernel's READ_ONCE/smp_* side expects.
            let flags = unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*e).flags)) };
            // A1 (Acquire): pairs with the kernel's smp_store_release of
            // DIRTY in kvm_dirty_gfn_set_dirtied (virt/kvm/dirty_ring.c):
            // slot and offset, written before it, are visible below.
            if flags.load(Ordering::Acquire) & DIRTY_GFN_F_DIRTY == 0 {
                break;
            }
            // SAFETY: in the mapping; volatile because the memory is shared
            // with the kernel (it does not write these fields again until
            // this entry is reset and reclaimed, after R1).
            let (slot, offset) =
                unsafe { (std::ptr::addr_of!((*e).slot).read_volatile(), std::ptr::addr_of!((*e).offset).read_volatile()) };
            out.push(DirtyGfn { slot, offset });
            // R1 (Release): hands the entry back; pairs with the kernel's
            // smp_load_acquire of flags in kvm_dirty_ring_reset, so the
            // reads of slot/offset above complete before the kernel can
            // reclaim and refill the entry.
            flags.store(DIRTY_GFN_F_RESET, Ordering::Release);
            self.next = self.next.wrapping_add(1);
            n += 1;
        }
        n
    }
}

impl Drop for VcpuRing {
    fn drop(&mut self) {
        let len = self.entries as usize * std::mem::size_of::<kvm_dirty_gfn>();
        // SAFETY: unmaps exactly the mapping `map` made; nothing refers to
        // it after drop.
        unsafe { libc::munmap(self.base.as_ptr().cast(), len) };
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}
