//! Every vCPU ring of one VM: enabling, harvesting, resetting, and the
//! stall of a vCPU that took a ring-full exit.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_enable_cap, KVM_CAP_DIRTY_LOG_RING, KVM_CAP_DIRTY_LOG_RING_ACQ_REL};
use kvm_ioctls::{VcpuFd, VmFd};
use parking_lot::{Condvar, Mutex};

use super::error::KvmError;
use super::ring::{page_size, DirtyGfn, VcpuRing};
use crate::reaper::Reaper;

/// `KVM_RESET_DIRTY_RINGS` = `_IO(KVMIO, 0xc7)` (include/uapi/linux/kvm.h);
/// kvm-ioctls 0.25 does not wrap it.
const KVM_RESET_DIRTY_RINGS: libc::c_ulong = (0xAE << 8) | 0xc7;

/// Bytes per ring entry (`sizeof(struct kvm_dirty_gfn)`).
const GFN_BYTES: u32 = std::mem::size_of::<kvm_bindings::kvm_dirty_gfn>() as u32;

/// Which capability the ring was enabled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingCap {
    /// `KVM_CAP_DIRTY_LOG_RING_ACQ_REL`: the kernel promises the
    /// acquire/release protocol this module follows (and requires it on
    /// weakly ordered hosts). Preferred when offered.
    AcqRel,
    /// `KVM_CAP_DIRTY_LOG_RING` (older kernels, x86 only; the same
    /// protocol is followed, which x86's ordering makes free).
    Plain,
}

/// What the kernel offers for a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSupport {
    /// Largest ring, entries per vCPU.
    pub max_entries: u32,
    /// The capability [`DirtyRings::enable`] will use.
    pub cap: RingCap,
}

/// Queries the dirty-ring capabilities of `vm` (`None`: not offered).
pub fn ring_support(vm: &VmFd) -> Option<RingSupport> {
    let acq = vm.check_extension_raw(libc::c_ulong::from(KVM_CAP_DIRTY_LOG_RING_ACQ_REL));
    let plain = vm.check_extension_raw(libc::c_ulong::from(KVM_CAP_DIRTY_LOG_RING));
    let (bytes, cap) = if acq > 0 { (acq, RingCap::AcqRel) } else { (plain, RingCap::Plain) };
    (bytes > 0).then_some(RingSupport { max_entries: bytes as u32 / GFN_BYTES, cap })
}

/// Smallest ring the kernel accepts: one page of entries
/// (`kvm_vm_ioctl_enable_dirty_log_ring` rejects `size < PAGE_SIZE`).
pub fn min_ring_entries() -> u32 {
    page_size() as u32 / GFN_BYTES
}

/// Checks `entries` against what the kernel accepts, without touching a VM.
pub fn check_ring_entries(entries: u32, max_entries: u32) -> Result<(), KvmError> {
    if !entries.is_power_of_two() || entries < min_ring_entries() || entries > max_entries {
        return Err(KvmError::BadRingSize { entries, max: max_entries });
    }
    Ok(())
}

/// What one harvest found: the reaper controller's inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Harvest {
    /// Entries found in the fullest ring (a ring-full exit is per vCPU, so
    /// the fullest ring predicts the next one).
    pub max_fill: u64,
    /// Entries found in all rings.
    pub total: u64,
    /// Ring-full exits since the previous harvest.
    pub ring_full_exits: u64,
}

impl Harvest {
    /// Feeds this harvest to the reaper controller; returns its next
    /// interval in microseconds.
    pub fn report(&self, reaper: &Reaper) -> u64 {
        reaper.update(self.max_fill, self.total, self.ring_full_exits)
    }
}

#[derive(Debug, Default)]
struct Reap {
    rings: Vec<VcpuRing>,
    scratch: Vec<DirtyGfn>,
    full_reported: u64,
}

/// Harvest generations, for vCPUs stalled on a full ring.
#[derive(Debug, Default)]
struct Gen {
    started: u64,
    done: u64,
    closed: bool,
}

/// The dirty rings of one VM. `Sync`: share it (in an `Arc`) between the
/// reaper thread, the migration thread (a sync harvests too) and the vCPU
/// threads (which report ring-full exits and wait on a harvest).
#[derive(Debug)]
pub struct DirtyRings {
    /// A duplicate of the VM fd, for `KVM_RESET_DIRTY_RINGS`: owning it
    /// keeps the ioctl valid whatever the caller does with its `VmFd`.
    vm: OwnedFd,
    entries: u32,
    cap: RingCap,
    /// Harvests are serialised (one `next` per ring, one reset at a time).
    reap: Mutex<Reap>,
    /// Ring-full exits so far, all vCPUs. Relaxed: a counter read by the
    /// harvest for the controller; nothing else is published with it.
    full_exits: AtomicU64,
    gen: Mutex<Gen>,
    gen_cv: Condvar,
}

impl DirtyRings {
    /// Enables `entries`-entry dirty rings on `vm`. Must run before the
    /// VM's first vCPU is created (the kernel refuses afterwards); uses
    /// `KVM_CAP_DIRTY_LOG_RING_ACQ_REL` where offered. Dirty tracking then
    /// starts per memory slot when the slot gets `KVM_MEM_LOG_DIRTY_PAGES`.
    pub fn enable(vm: &VmFd, entries: u32) -> Result<Self, KvmError> {
        let sup = ring_support(vm).ok_or(KvmError::Unsupported)?;
        check_ring_entries(entries, sup.max_entries)?;
        let mut cap = kvm_enable_cap {
            cap: match sup.cap {
                RingCap::AcqRel => KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
                RingCap::Plain => KVM_CAP_DIRTY_LOG_RING,
            },
            ..Default::default()
        };
        cap.args[0] = u64::from(entries) * u64::from(GFN_BYTES);
        vm.enable_cap(&cap).map_err(|e| KvmError::Os { what: "KVM_ENABLE_CAP(dirty ring)", errno: e.errno() })?;
        // SAFETY: dup of a valid open fd (the VmFd is alive for this call).
        let fd = unsafe { libc::fcntl(vm.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(KvmError::last_os("dup of the VM fd"));
        }
        // SAFETY: `fd` is a fresh descriptor this struct now owns alone.
        let vm = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(DirtyRings {
            vm,
            entries,
            cap: sup.cap,
            reap: Mutex::default(),
            full_exits: AtomicU64::new(0),
            gen: Mutex::default(),
            gen_cv: Condvar::new(),
        })
    }

    /// Entries per vCPU ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The capability in use.
    pub fn cap(&self) -> RingCap {
        self.cap
    }

    /// Maps `vcpu`'s ring and adds it to the harvest; returns its index.
    pub fn add_vcpu(&self, vcpu: &VcpuFd) -> Result<usize, KvmError> {
        let ring = VcpuRing::map(vcpu, self.entries)?;
        let mut g = self.reap.lock();
        g.rings.push(ring);
        Ok(g.rings.len() - 1)
    }

    /// Harvests every ring, then `KVM_RESET_DIRTY_RINGS` (re-protects the
    /// harvested pages; retried on `EINTR`, which Linux >= 6.16 returns when
    /// a signal is pending), then hands each harvested page to `sink`.
    ///
    /// `sink` runs only after the reset, so a guest write after the page
    /// reached `sink` faults again and is logged again; handing pages out
    /// before the reset would let a write between the two go unlogged
    /// after the caller has already copied the page.
    ///
    /// On a reset error the harvested pages still reach `sink` (they are
    /// dirty) but are not write-protected: tracking is then incomplete and
    /// the caller must fail the migration. Any thread; harvests serialise.
    pub fn harvest(&self, sink: &mut dyn FnMut(DirtyGfn)) -> Result<Harvest, KvmError> {
        let mut r = self.reap.lock();
        let my_gen = {
            let mut g = self.gen.lock();
            g.started += 1;
            g.started
        };
        let Reap { rings, scratch, full_reported } = &mut *r;
        scratch.clear();
        let mut h = Harvest::default();
        for ring in rings.iter_mut() {
            let n = u64::from(ring.collect(scratch));
            h.total += n;
            h.max_fill = h.max_fill.max(n);
        }
        let reset = if h.total > 0 { self.reset() } else { Ok(()) };
        for gfn in scratch.drain(..) {
            sink(gfn);
        }
        // Relaxed: a counter (see the field).
        let full = self.full_exits.load(Ordering::Relaxed);
        h.ring_full_exits = full - *full_reported;
        *full_reported = full;
        drop(r);
        {
            let mut g = self.gen.lock();
            g.done = my_gen;
        }
        self.gen_cv.notify_all();
        reset.map(|()| h)
    }

    fn reset(&self) -> Result<(), KvmError> {
        loop {
            // SAFETY: KVM_RESET_DIRTY_RINGS takes no argument; the fd is a
            // VM fd this struct owns.
            let rc = unsafe { libc::ioctl(self.vm.as_raw_fd(), KVM_RESET_DIRTY_RINGS as _) };
            if rc >= 0 {
                return Ok(());
            }
            let e = KvmError::last_os("KVM_RESET_DIRTY_RINGS");
            if e.errno() != libc::EINTR {
                return Err(e);
            }
            // EINTR: the reset stopped early (Linux >= 6.16 checks for a
            // pending signal); entries not yet reclaimed are still marked
            // RESET, so calling again finishes the job.
        }
    }

    /// For a vCPU thread whose `KVM_RUN` returned `KVM_EXIT_DIRTY_RING_FULL`:
    /// counts the exit, calls `kick` (wake the reaper) and waits until a
    /// harvest that started after this call has finished (or [`close`](Self::close)).
    /// Returns how long the vCPU stalled. Re-entering `KVM_RUN` before
    /// that would only exit again.
    pub fn ring_full(&self, kick: impl FnOnce()) -> Duration {
        let t0 = Instant::now();
        // Relaxed: a counter (see the field).
        self.full_exits.fetch_add(1, Ordering::Relaxed);
        let mut g = self.gen.lock();
        let want = g.started + 1;
        kick();
        while g.done < want && !g.closed {
            self.gen_cv.wait(&mut g);
        }
        t0.elapsed()
    }

    /// Releases every vCPU stalled in [`ring_full`](Self::ring_full) now and
    /// in future (shutdown).
    pub fn close(&self) {
        self.gen.lock().closed = true;
        self.gen_cv.notify_all();
    }

    /// Ring-full exits so far, all vCPUs.
    pub fn ring_full_exits(&self) -> u64 {
        // Relaxed: a counter (see the field).
        self.full_exits.load(Ordering::Relaxed)
    }
}
