//! KVM dirty-ring harvesting for rust-vmm VMMs (feature `kvm`, Linux x86-64).
//!
//! kvm-ioctls knows `KVM_CAP_DIRTY_LOG_RING` but cannot map, harvest or
//! reset the rings; this module does, so a VMM built on kvm-ioctls gets
//! dirty-ring tracking, driven by [`crate::reaper`], without writing its own:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use vmig::kvm::DirtyRings;
//! # use vmig::reaper::{Reaper, ReaperConfig};
//! let kvm = kvm_ioctls::Kvm::new().unwrap();
//! let vm = kvm.create_vm().unwrap();
//! let rings = Arc::new(DirtyRings::enable(&vm, 4096).unwrap()); // before any vCPU
//! let vcpu = vm.create_vcpu(0).unwrap();
//! rings.add_vcpu(&vcpu).unwrap();
//! // ... memory slots with KVM_MEM_LOG_DIRTY_PAGES start the tracking ...
//! let reaper = Reaper::new(&ReaperConfig::default()).unwrap();
//! loop {
//!     reaper.wait();
//!     let h = rings.harvest(&mut |gfn| { /* mark gfn.slot/gfn.offset dirty */ }).unwrap();
//!     h.report(&reaper);
//! }
//! ```
//! A vCPU thread whose `KVM_RUN` returns `KVM_EXIT_DIRTY_RING_FULL` calls
//! [`DirtyRings::ring_full`]`(|| reaper.kick())` and re-enters once it returns.
//!
//! # Protocol
//!
//! As `Documentation/virt/kvm/api.rst` (`KVM_CAP_DIRTY_LOG_RING`) gives it:
//! enable the capability on the VM before creating vCPUs, with the ring's
//! size in bytes; `mmap` each vCPU fd at `KVM_DIRTY_LOG_PAGE_OFFSET` pages;
//! harvest each ring in order, stopping at the first entry without
//! `DIRTY`; set `RESET` on each harvested entry; then `KVM_RESET_DIRTY_RINGS`
//! on the VM fd, which reclaims the entries and write-protects their pages
//! again. A ring that reaches its soft limit makes `KVM_RUN` exit with
//! `KVM_EXIT_DIRTY_RING_FULL` until a reset makes room.
//!
//! # Memory ordering, against the kernel's (virt/kvm/dirty_ring.c)
//!
//! * Publication. `kvm_dirty_ring_push` writes `slot` and `offset`, then
//!   `kvm_dirty_gfn_set_dirtied` does `smp_store_release(&gfn->flags, DIRTY)`.
//!   The harvester's A1 is an Acquire load of `flags` ([`ring`]); seeing
//!   `DIRTY` it reads `slot`/`offset` after it, so it sees the kernel's
//!   values, never a previous lap's.
//! * Hand-back. The harvester's R1 stores `RESET` with Release after reading
//!   `slot`/`offset`. `kvm_dirty_ring_reset` reads `flags` with
//!   `smp_load_acquire` and only then reclaims the entry (sets it invalid;
//!   a later push rewrites `slot`/`offset`). So the harvester's reads are
//!   complete before the kernel can overwrite the entry. The reset ioctl
//!   is issued by the thread that did R1 after R1 (program order plus the
//!   syscall), or by a later harvest that took the same mutex.
//! * No lost write. A guest write to a tracked page either finds the page
//!   write-protected (it faults, the kernel pushes an entry, and a later
//!   harvest sees it) or the page was already unprotected by a fault whose
//!   entry is not yet reset. `DirtyRings::harvest` hands pages to its sink
//!   only after `KVM_RESET_DIRTY_RINGS` has returned: the reset
//!   write-protects the pages and flushes the guest TLBs (kick of every
//!   vCPU out of guest mode) before returning, so from then on every write
//!   to a handed-out page faults and is logged anew, and every write before
//!   it is globally visible (x86-TSO plus the exit from guest mode) to a
//!   thread that acquires the sink's publication. A copy of the page made
//!   after the sink therefore holds every write not logged again.
//! * `EINTR`: since Linux 6.16 the reset loop stops for a pending signal;
//!   the entries it did not reach are still `RESET` and the retry finishes
//!   them (QEMU's reaper lost this case; this project found it there).
//!
//! Harvests take one mutex, so the reaper thread and a migration thread's
//! sync may both call [`DirtyRings::harvest`] while the vCPUs run. Stalled
//! vCPUs wait on a generation count under a second mutex: a vCPU that took
//! a ring-full exit waits for a harvest that *started* after its exit,
//! because one already under way may have passed its ring.

pub mod error;
pub mod ring;
pub mod rings;

pub use error::KvmError;
pub use ring::{DirtyGfn, VcpuRing, DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET};
pub use rings::{check_ring_entries, min_ring_entries, ring_support, DirtyRings, Harvest, RingCap, RingSupport};

/// Smallest ring on a 4 KiB-page host, entries (one page; see
/// [`min_ring_entries`] for the running host's value).
pub const MIN_RING_ENTRIES: u32 = 256;

/// `KVM_EXIT_DIRTY_RING_FULL`: the exit reason kvm-ioctls reports as
/// `VcpuExit::Unsupported(KVM_EXIT_DIRTY_RING_FULL)`.
pub const KVM_EXIT_DIRTY_RING_FULL: u32 = kvm_bindings::KVM_EXIT_DIRTY_RING_FULL;
