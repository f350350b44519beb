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
//! needed: to stop the VM, and while the throttle is on, once per throttle
//! timeslice (the safe point where the throttle takes its sleep).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use kvm_ioctls::{VcpuExit, VcpuFd};
use parking_lot::Mutex;
use vmig::kvm::{DirtyRings, KVM_EXIT_DIRTY_RING_FULL};

use crate::engines::{GuestThrottle, ReaperCtl};

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
}

/// Runs `vcpu` until `env.ctl.stop`; returns it (stopped) for its state.
pub fn vcpu_loop(mut vcpu: VcpuFd, env: VcpuEnv) -> VcpuFd {
    let ctl = &env.ctl;
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
            env.throttle.vcpu_run(env.id);
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

/// The kick timer: while the throttle is on, kicks every vCPU once per
/// `timeslice` so it reaches the throttle's safe point (QEMU: the throttle
/// timer's `async_run_on_cpu`, which kicks the vCPU). Off, it sends nothing.
pub fn kicker_loop(ctls: &[Arc<VcpuCtl>], throttle: &dyn GuestThrottle, stop: &AtomicBool, timeslice: Duration) {
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
