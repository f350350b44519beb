//! C ABI of the per-vCPU throttle (`vmig_throttle_*`). Engine:
//! `crate::throttle`.

use super::handle::{self, box_handle};
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::Error;
use crate::throttle::Throttle;

/// Largest percentage vmig_throttle_set() accepts (QEMU's
/// CPU_THROTTLE_PCT_MAX).
pub const VMIG_THROTTLE_PCT_MAX: u32 = 99;
/// Most vCPUs a throttle handles.
pub const VMIG_THROTTLE_MAX_VCPUS: u32 = 1 << 16;
/// QEMU's timeslice (CPU_THROTTLE_TIMESLICE_NS), a sensible timeslice_ns.
pub const VMIG_THROTTLE_QEMU_TIMESLICE_NS: u64 = 10_000_000;
const _: () = assert!(VMIG_THROTTLE_PCT_MAX == crate::throttle::MAX_PCT);
const _: () = assert!(VMIG_THROTTLE_MAX_VCPUS == crate::throttle::MAX_VCPUS);
const _: () = assert!(VMIG_THROTTLE_QEMU_TIMESLICE_NS == crate::throttle::QEMU_TIMESLICE_NS);

/// A VM's auto-converge throttle with one closed-loop account per vCPU
/// (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_throttle {
    _opaque: [u8; 0],
}

// Tag "vmth"; see `ffi::handle`. Every call takes `&Throttle` (it is
// shared by the vCPU threads), so `*mut` handles are only ever read here.
box_handle!(vmig_throttle, Throttle, 0x766d_7468);

/// Creates a throttle for `nr_vcpus` vCPUs (1..=VMIG_THROTTLE_MAX_VCPUS)
/// that run `timeslice_ns` (> 0; QEMU uses 10 ms) between sleeps. It starts
/// off (0%).
///
/// Returns the throttle, or NULL with errno EINVAL (bad count or timeslice)
/// or ENOMEM. Free it with vmig_throttle_free().
///
/// Thread-safety: may be called from any thread.
#[no_mangle]
pub extern "C" fn vmig_throttle_new(nr_vcpus: u32, timeslice_ns: u64) -> *mut vmig_throttle {
    catch_ptr(|| {
        let t = Throttle::new(nr_vcpus, timeslice_ns)
            .map_err(|e| e.in_call(|| format!("vmig_throttle_new(nr_vcpus {nr_vcpus}, timeslice_ns {timeslice_ns})")))?;
        Ok(vmig_throttle::new_box(t))
    })
}

/// Frees a throttle. NULL is a no-op.
///
/// Thread-safety: no other thread may use the throttle during or after the
/// call; no vCPU may be sleeping in vmig_throttle_vcpu_run() (set 0 or kick
/// it and let it return first).
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_free(t: *mut vmig_throttle) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(t) }.map_err(|e| e.in_call(|| format!("vmig_throttle_free({t:p})"))))
}

/// Sets the throttle to `pct` percent of each vCPU's time asleep: 0 turns
/// it off, 1..=99 as QEMU's cpu_throttle_set(). A change wakes vCPUs
/// sleeping in vmig_throttle_vcpu_run() so it applies at once, and starts a
/// new accounting regime (sleep owed under the old value is dropped).
///
/// Returns 0, or -EINVAL for a NULL throttle or `pct` > 99.
///
/// Thread-safety: any thread, concurrently with every other call except
/// vmig_throttle_free().
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_set(t: *mut vmig_throttle, pct: u32) -> i32 {
    catch_int(|| {
        let call = || format!("vmig_throttle_set(throttle {t:p}, pct {pct})");
        // SAFETY: per this function's contract.
        unsafe { handle::try_ref(t.cast_const()) }.and_then(|t| t.set(pct)).map_err(|e| e.in_call(call))?;
        Ok(0)
    })
}

/// The current percentage; 0 for a NULL throttle.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_get(t: *const vmig_throttle) -> u32 {
    catch_or_err(0, || {
        // SAFETY: per this function's contract.
        let t = unsafe { handle::try_ref(t) }.map_err(|e| e.in_call(|| format!("vmig_throttle_get({t:p})")))?;
        Ok(t.get())
    })
}

/// For a VMM with its own per-vCPU timers: `vcpu`'s timer fired at `now_ns`
/// (any monotonic clock, the same for every call on this throttle; use
/// CLOCK_MONOTONIC if you also call vmig_throttle_vcpu_run()). Returns how
/// long the vCPU must sleep now, in ns: its run time since its last sleep
/// times pct/(100-pct), plus any sleep still owed, minus any oversleep. 0
/// when the throttle is off, on the first call, for a NULL throttle or an
/// out-of-range `vcpu`. Call vmig_throttle_vcpu_next_ns() when the sleep
/// ends.
///
/// Thread-safety: any thread; calls for one vCPU are serialised internally
/// and should come from that vCPU's thread or timer.
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_vcpu_sleep_ns(t: *mut vmig_throttle, vcpu: u32, now_ns: u64) -> u64 {
    catch_or_err(0, || {
        // SAFETY: per this function's contract.
        unsafe { handle::try_ref(t.cast_const()) }
            .and_then(|t| t.vcpu_sleep_ns(vcpu, now_ns))
            .map_err(|e| e.in_call(|| format!("vmig_throttle_vcpu_sleep_ns(throttle {t:p}, vcpu {vcpu})")))
    })
}

/// For a VMM with its own per-vCPU timers: `vcpu` runs again from `now_ns`
/// (its sleep ended, or throttling starts). Returns the absolute time (same
/// clock) at which its timer should fire next; the time actually slept is
/// measured here and any difference is carried into the next sleep.
/// UINT64_MAX when the throttle is off (no timer needed), for a NULL
/// throttle or an out-of-range `vcpu`.
///
/// Thread-safety: as vmig_throttle_vcpu_sleep_ns().
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_vcpu_next_ns(t: *mut vmig_throttle, vcpu: u32, now_ns: u64) -> u64 {
    catch_or_err(u64::MAX, || {
        // SAFETY: per this function's contract.
        unsafe { handle::try_ref(t.cast_const()) }
            .and_then(|t| t.vcpu_next_ns(vcpu, now_ns))
            .map_err(|e| e.in_call(|| format!("vmig_throttle_vcpu_next_ns(throttle {t:p}, vcpu {vcpu})")))
    })
}

/// For a VMM without its own timers: called by `vcpu`'s thread at a safe
/// point (outside any lock other threads need). Once the vCPU has run its
/// timeslice, sleeps what it owes (CLOCK_MONOTONIC); otherwise returns at
/// once. vmig_throttle_kick() or a vmig_throttle_set() change ends the
/// sleep early.
///
/// Returns 0, 1 if the sleep was ended by vmig_throttle_kick(), or -EINVAL
/// for a NULL throttle or an out-of-range `vcpu`.
///
/// Thread-safety: call from `vcpu`'s own thread, one call at a time per
/// vCPU; different vCPUs' threads call concurrently.
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_vcpu_run(t: *mut vmig_throttle, vcpu: u32) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let slept = unsafe { handle::try_ref(t.cast_const()) }
            .and_then(|t| t.vcpu_run(vcpu))
            .map_err(|e| e.in_call(|| format!("vmig_throttle_vcpu_run(throttle {t:p}, vcpu {vcpu})")))?;
        Ok(i32::from(slept))
    })
}

/// For a VMM that kicks its vCPUs out of the guest to their safe point
/// (as QEMU kicks a vCPU out of `KVM_RUN` for its throttle timer) and calls
/// vmig_throttle_vcpu_run() there: when `vcpu`'s next sleep falls due, so
/// that the kick can be timed to it instead of a fixed period, and every
/// kick ends in a sleep (docs/kvm.md, "Kicks from the per-vCPU due time").
///
/// Returns 1 with `*due_ns` set to the CLOCK_MONOTONIC time (ns) at which
/// to kick (`0`: kick now, the throttle was turned on or changed since the
/// vCPU's last vmig_throttle_vcpu_run(), which starts its new account);
/// 0 when no kick is needed (the throttle is off, or the vCPU is asleep in
/// vmig_throttle_vcpu_run(): the sleep ends by itself), `*due_ns`
/// untouched; -EINVAL for a NULL throttle or `due_ns`, or an out-of-range
/// `vcpu`.
///
/// Thread-safety: any thread (takes the vCPU's lock briefly), typically
/// the VMM's kick thread while the vCPU runs.
///
/// # Safety
/// `t` is NULL or a live handle; `due_ns` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_vcpu_due_ns(t: *const vmig_throttle, vcpu: u32, due_ns: *mut u64) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let t = unsafe { handle::try_ref(t) }?;
        let out = std::ptr::NonNull::new(due_ns).ok_or(Error::InvalidArgument("due_ns is NULL"))?;
        let due = t
            .vcpu_due_ns(vcpu)
            .map_err(|e| e.in_call(|| format!("vmig_throttle_vcpu_due_ns(vcpu {vcpu})")))?;
        match due {
            Some(ns) => {
                // SAFETY: valid for a write per the contract.
                unsafe { out.as_ptr().write(ns) };
                Ok(1)
            }
            None => Ok(0),
        }
    })
}

/// Ends `vcpu`'s current vmig_throttle_vcpu_run() sleep early (e.g. to stop
/// the VM); if it is not sleeping, its next sleep ends at once (the kick is
/// kept until a sleep consumes it). The sleep not taken stays owed, at most
/// one throttle cycle's worth (timeslice / (1 - pct)) or 100 ms, whichever
/// is larger.
///
/// Returns 0, or -EINVAL for a NULL throttle or an out-of-range `vcpu`.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_throttle_kick(t: *mut vmig_throttle, vcpu: u32) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        unsafe { handle::try_ref(t.cast_const()) }
            .and_then(|t| t.kick(vcpu))
            .map_err(|e| e.in_call(|| format!("vmig_throttle_kick(throttle {t:p}, vcpu {vcpu})")))?;
        Ok(0)
    })
}
