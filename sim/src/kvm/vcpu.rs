//! vCPU threads: `KVM_RUN` in a loop, the throttle at each exit, the stall
//! on a full dirty ring, and the kick that gets a vCPU out of `KVM_RUN`.
//!
//! # Kick
//!
//! A kick is QEMU's `qemu_cpu_kick` for KVM: set a flag, then send the vCPU
//! thread a signal whose handler sets `kvm_run.immediate_exit`. A vCPU in
//! guest mode leaves with `EINTR`; one about to enter finds
//! `immediate_exit` set and returns `EINTR` at once (the handler ran
//! between its last check and the ioctl). The vCPU clears `immediate_exit`
//! and *then* re-reads the flags, so a kick landing before the clear is seen
//! by the re-read, one after it by the ioctl. Kicks are sent only when
//! needed: to stop the VM, and while the throttle is on, when a vCPU's
//! sleep falls due (vmig's per-vCPU due time; the QEMU-style replica gets
//! one kick per timeslice): the safe point where the throttle sleeps.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use parking_lot::{Condvar, Mutex};
use vmig::kvm::{DirtyRings, KVM_EXIT_DIRTY_RING_FULL};

use super::program::{get, PARK_PORT};
use crate::engines::{GuestThrottle, ReaperCtl};
use crate::memory::GuestRam;

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick handler.
    /// `const` and `Cell<*mut u8>` (no destructor, no lazy init), so the
    /// access from a signal handler is a plain TLS load.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int) {
    let p = IMMEDIATE_EXIT.with(Cell::get);
    if !p.is_null() {
        // SAFETY: set by this thread to its own vCPU's kvm_run, which
        // outlives the thread's loop (cleared before the VcpuFd is handed
        // back); volatile because the kernel reads it.
        unsafe { p.write_volatile(1) };
    }
}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Installs the kick handler once per process (no `SA_RESTART`: `KVM_RUN`
/// must return `EINTR`).
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty
        // mask is a valid argument; the handler only does a TLS load and a
        // volatile store (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// What the VMM and a vCPU thread share.
#[derive(Debug, Default)]
pub struct VcpuCtl {
    /// Leave the loop (vm_stop).
    pub stop: AtomicBool,
    /// A kick asked for a safe point.
    kicked: AtomicBool,
    /// The thread, once it runs (for pthread_kill).
    thread: Mutex<Option<libc::pthread_t>>,
    /// Exits caused by kicks. Relaxed: a statistic.
    pub kick_exits: AtomicU64,
    /// Ring-full exits. Relaxed: a statistic.
    pub full_exits: AtomicU64,
    /// Nanoseconds stalled on full rings. Relaxed: a statistic.
    pub stall_ns: AtomicU64,
    /// Nanoseconds spent at the throttle's safe point (its sleeps).
    /// Relaxed: a statistic.
    pub throttle_ns: AtomicU64,
    /// Exits where the guest parked (idle until its next record is due).
    /// Relaxed: a statistic.
    pub park_exits: AtomicU64,
    /// A parked vCPU sleeps here; `kick` ends the sleep.
    park: (Mutex<()>, Condvar),
    /// Why the loop ended early, if it did.
    pub error: Mutex<Option<String>>,
}

impl VcpuCtl {
    /// Kicks the vCPU out of `KVM_RUN` (see the module doc).
    pub fn kick(&self) {
        // SeqCst: the flag must be visible to the vCPU's re-read after it
        // clears immediate_exit; the signal is the other half (a syscall,
        // ordered after this store in this thread).
        self.kicked.store(true, Ordering::SeqCst);
        if let Some(t) = *self.thread.lock() {
            // SAFETY: `t` is a live thread: the vCPU thread clears it
            // under this mutex before it exits.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
        // A parked vCPU is not in KVM_RUN: wake its sleep (the flag is
        // re-read under the mutex, so this cannot slip in between).
        let _g = self.park.0.lock();
        self.park.1.notify_all();
    }

    /// Sleeps up to `d` unless kicked or stopped.
    fn park_for(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut g = self.park.0.lock();
        // SeqCst: pairs with the SeqCst stores in `kick` and the stopper.
        while !self.kicked.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
            if self.park.1.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
    }
}

/// Everything a vCPU thread uses.
pub struct VcpuEnv {
    /// This vCPU's index.
    pub id: u32,
    /// Shared control.
    pub ctl: Arc<VcpuCtl>,
    /// The throttle (vmig's per vCPU, or the VM-wide legacy replica).
    pub throttle: Arc<dyn GuestThrottle>,
    /// Dirty rings and the reaper, on the source.
    pub rings: Option<(Arc<DirtyRings>, Arc<dyn ReaperCtl>)>,
    /// Pin this vCPU thread to host CPU `cpu % online CPUs`, at nice -20
    /// (benchmarks).
    pub cpu: Option<u32>,
    /// Where the guest says when to wake it after parking.
    pub park: Option<ParkEnv>,
}

/// What a parking exit needs: the guest's wake-up TSC and the TSC rate.
pub struct ParkEnv {
    /// Guest RAM.
    pub ram: Arc<GuestRam>,
    /// gpa of the vCPU's wake-up TSC.
    pub wake_gpa: u64,
    /// Guest TSC, kHz.
    pub tsc_khz: u64,
}

/// Longest park: a guest asking for more (a very low rate) checks in again.
const MAX_PARK: Duration = Duration::from_millis(100);

fn guest_tsc(vcpu: &VcpuFd) -> Option<u64> {
    let mut m = Msrs::from_entries(&[kvm_msr_entry { index: 0x10, ..Default::default() }]).ok()?;
    (vcpu.get_msrs(&mut m).ok()? == 1).then(|| m.as_slice()[0].data)
}

/// Runs `vcpu` until `env.ctl.stop`; returns it (stopped) for its state.
pub fn vcpu_loop(mut vcpu: VcpuFd, env: VcpuEnv) -> VcpuFd {
    let ctl = &env.ctl;
    if let Some(cpu) = env.cpu {
        pin_to(cpu);
    }
    let imm: *mut u8 = std::ptr::addr_of_mut!(vcpu.get_kvm_run().immediate_exit);
    IMMEDIATE_EXIT.with(|c| c.set(imm));
    // SAFETY: pthread_self has no preconditions.
    *ctl.thread.lock() = Some(unsafe { libc::pthread_self() });
    loop {
        // SeqCst (both loads): pairs with the SeqCst stores in `kick` and
        // the stopper (see the module doc for the order of clear and read).
        if ctl.stop.load(Ordering::SeqCst) {
            break;
        }
        if ctl.kicked.swap(false, Ordering::SeqCst) {
            // Safe point: the throttle's sleep, if one is owed.
            let t0 = Instant::now();
            env.throttle.vcpu_run(env.id);
            // Relaxed: a statistic.
            ctl.throttle_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // SAFETY: this vCPU's kvm_run, mapped while `vcpu` lives.
        unsafe { imm.write_volatile(0) };
        if ctl.stop.load(Ordering::SeqCst) || ctl.kicked.load(Ordering::SeqCst) {
            continue;
        }
        match vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => {
                // Relaxed: a statistic.
                ctl.kick_exits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(VcpuExit::IoOut(port, _)) if port == PARK_PORT && env.park.is_some() => {
                // Relaxed: a statistic.
                ctl.park_exits.fetch_add(1, Ordering::Relaxed);
                let p = env.park.as_ref().expect("checked");
                let wake = get(&p.ram, p.wake_gpa);
                if let Some(now) = guest_tsc(&vcpu) {
                    let ns = u128::from(wake.saturating_sub(now)) * 1_000_000 / u128::from(p.tsc_khz.max(1));
                    ctl.park_for(Duration::from_nanos(ns.min(MAX_PARK.as_nanos()) as u64));
                }
            }
            Ok(VcpuExit::Unsupported(r)) if r == KVM_EXIT_DIRTY_RING_FULL => {
                let Some((rings, reaper)) = &env.rings else {
                    *ctl.error.lock() = Some("dirty ring full without rings".into());
                    break;
                };
                let t0 = Instant::now();
                rings.ring_full(|| reaper.kick());
                // Relaxed: statistics.
                ctl.full_exits.fetch_add(1, Ordering::Relaxed);
                ctl.stall_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            Ok(e) => {
                let what = format!("{e:?}");
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                *ctl.error.lock() = Some(format!("vCPU {} left the guest program: {what} at rip {rip:#x}", env.id));
                break;
            }
            Err(e) => {
                *ctl.error.lock() = Some(format!("vCPU {}: KVM_RUN: {e}", env.id));
                break;
            }
        }
    }
    *ctl.thread.lock() = None;
    IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    vcpu
}

fn pin_to(cpu: u32) {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds
    // (cpu % n < CPU_SETSIZE on any machine this runs on); pid 0 = this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET((cpu % n) as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        // Nice -20 (root only; ignored otherwise): a benchmark of the
        // throttle on a host shared with other work must measure the
        // throttle's share, not the host scheduler's.
        libc::setpriority(libc::PRIO_PROCESS, 0, -20);
    }
}

/// The kick timer: brings each vCPU to the throttle's safe point when it
/// needs one, and never otherwise (an exit costs the guest far more under
/// nested KVM than the few cycles it takes on bare metal: docs/kvm.md,
/// "Kicks from the per-vCPU due time").
///
/// A throttle with per-vCPU due times (vmig's) gets each vCPU kicked at its
/// own due time, so every kick ends in a sleep: one exit per throttle
/// cycle. Any other (the replica of QEMU's VM-wide timer) gets every vCPU
/// kicked once per `timeslice`, as QEMU's timer does with its
/// `async_run_on_cpu`. Off, it sends nothing.
pub fn kicker_loop(ctls: &[Arc<VcpuCtl>], throttle: &dyn GuestThrottle, stop: &AtomicBool, timeslice: Duration) {
    if throttle.per_vcpu_due() {
        return due_kicker_loop(ctls, throttle, stop, timeslice);
    }
    // Relaxed: a stop request carries no data (the stopper joins us).
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(timeslice);
        if throttle.get() > 0 {
            for c in ctls {
                c.kick();
            }
        }
    }
}

/// Kicks vCPU i when `throttle.vcpu_due_ns(i)` falls due, once per due
/// time (the vCPU may take a while to leave `KVM_RUN`; its due time moves
/// when it reaches the safe point). Sleeps until the earliest due time, at
/// most `timeslice` (how late it notices a throttle turned on).
fn due_kicker_loop(ctls: &[Arc<VcpuCtl>], throttle: &dyn GuestThrottle, stop: &AtomicBool, timeslice: Duration) {
    let slice_ns = timeslice.as_nanos() as u64;
    let mut kicked_for: Vec<Option<u64>> = vec![None; ctls.len()];
    // Relaxed: a stop request carries no data (the stopper joins us).
    while !stop.load(Ordering::Relaxed) {
        let now = vmig::throttle::monotonic_ns();
        let mut next = now.saturating_add(slice_ns);
        for (i, c) in ctls.iter().enumerate() {
            match throttle.vcpu_due_ns(i as u32) {
                // Kicked for this due time already: it has not reached its
                // safe point yet. Kick again only if a whole timeslice
                // passed (a kick is sticky, so this is a safety net).
                Some(d) if kicked_for[i] == Some(d) && now < d.saturating_add(slice_ns) => {
                    next = next.min(d.saturating_add(slice_ns));
                }
                Some(d) if d <= now => {
                    c.kick();
                    kicked_for[i] = Some(d);
                }
                Some(d) => next = next.min(d),
                None => kicked_for[i] = None,
            }
        }
        std::thread::sleep(Duration::from_nanos(next.saturating_sub(vmig::throttle::monotonic_ns())));
    }
}
