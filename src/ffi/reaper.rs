//! C ABI of the adaptive dirty-ring reaper interval (`vmig_reaper_*`).
//! Engine: `crate::reaper`.

use std::mem::MaybeUninit;
use std::ptr::{addr_of, NonNull};

use super::handle::{self, box_handle};
use super::{catch_int, catch_or_err, catch_ptr};
use crate::error::{Error, Result};
use crate::reaper::{self, Policy, Reaper, ReaperConfig};

/// Entries in vmig_reaper_config.levels_interval_us (NORMAL, FAST1..FAST4,
/// MAX_SPEED).
pub const VMIG_REAPER_NR_LEVELS: usize = 6;
const _: () = assert!(VMIG_REAPER_NR_LEVELS == reaper::config::LEVELS);

/// How the reaper chooses its next interval.
#[repr(C)]
#[allow(non_camel_case_types, clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum vmig_reaper_policy {
    /// A constant interval (fixed_interval_us): QEMU's `sleep(1)` today.
    VMIG_REAPER_FIXED = 0,
    /// The six-level table of the 2022 "Dynamically adjust the rate of dirty
    /// ring reaper thread" patch (levels_*), reproduced faithfully.
    VMIG_REAPER_LEVELS = 1,
    /// The review's proposal: halve above aimd_high_permille (or on a
    /// ring-full exit), add aimd_step_us at or below aimd_low_permille.
    VMIG_REAPER_AIMD = 2,
    /// Estimates the fullest ring's fill rate (fast attack, slow decay over
    /// predictive_decay_us) and sleeps until it would reach
    /// predictive_target_permille of the ring. The default.
    VMIG_REAPER_PREDICTIVE = 3,
}

/// Reaper configuration. Fill it with vmig_reaper_config_default() and
/// change what you need; every field is checked by vmig_reaper_new(),
/// whatever the policy. Fill ratios are in permille of ring_size.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug)]
pub struct vmig_reaper_config {
    /// The policy. Default VMIG_REAPER_PREDICTIVE (measured best).
    pub policy: vmig_reaper_policy,
    /// Entries per vCPU dirty ring (KVM dirty-ring-size), > 0. Default 4096.
    pub ring_size: u32,
    /// Shortest interval returned, >= 1. Default 1000 us.
    pub min_interval_us: u64,
    /// Longest interval returned, >= min_interval_us. Default 2 s.
    pub max_interval_us: u64,
    /// FIXED: the interval, > 0. Default 1 s.
    pub fixed_interval_us: u64,
    /// LEVELS: sleep per level, each > 0. Default 1 s, 500, 250, 125, 100,
    /// 80 ms.
    pub levels_interval_us: [u64; VMIG_REAPER_NR_LEVELS],
    /// LEVELS: width of a ratio band (total reaped / ring_size), > 0.
    /// Default 100 (0.1).
    pub levels_ratio_step_permille: u32,
    /// LEVELS: a level drops after more than this many "want slower" reaps
    /// in a row. Default 5.
    pub levels_stable_count: u32,
    /// AIMD: halve above this fill of the fullest ring, 1..=1000. Default 800.
    pub aimd_high_permille: u32,
    /// AIMD: add a step at or below this fill, < aimd_high_permille.
    /// Default 200.
    pub aimd_low_permille: u32,
    /// AIMD: the additive step. Default 20000 us.
    pub aimd_step_us: u64,
    /// PREDICTIVE: time constant of the rate estimate's decay. Default 2 s.
    pub predictive_decay_us: u64,
    /// PREDICTIVE: the first interval, before any rate is known, > 0.
    /// Default 10 ms.
    pub predictive_probe_us: u64,
    /// PREDICTIVE: fill of the fullest ring to aim for at the next reap,
    /// 1..=1000. Default 500.
    pub predictive_target_permille: u32,
}

/// A reaper interval controller with its kickable sleep (opaque).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct vmig_reaper {
    _opaque: [u8; 0],
}

fn to_c(cfg: &ReaperConfig) -> vmig_reaper_config {
    use vmig_reaper_policy::*;
    vmig_reaper_config {
        policy: match cfg.policy {
            Policy::Fixed => VMIG_REAPER_FIXED,
            Policy::Levels => VMIG_REAPER_LEVELS,
            Policy::Aimd => VMIG_REAPER_AIMD,
            Policy::Predictive => VMIG_REAPER_PREDICTIVE,
        },
        ring_size: cfg.ring_size,
        min_interval_us: cfg.min_interval_us,
        max_interval_us: cfg.max_interval_us,
        fixed_interval_us: cfg.fixed.interval_us,
        levels_interval_us: cfg.levels.interval_us,
        levels_ratio_step_permille: cfg.levels.ratio_step_permille,
        levels_stable_count: cfg.levels.stable_count,
        aimd_high_permille: cfg.aimd.high_permille,
        aimd_low_permille: cfg.aimd.low_permille,
        aimd_step_us: cfg.aimd.step_us,
        predictive_decay_us: cfg.predictive.decay_us,
        predictive_probe_us: cfg.predictive.probe_us,
        predictive_target_permille: cfg.predictive.target_permille,
    }
}

/// Reads a C config without ever materialising an out-of-range enum value
/// (which would be undefined behaviour in Rust): the bytes are copied into a
/// `MaybeUninit`, the policy is read as a plain `u32`.
///
/// # Safety
/// `cfg` is non-NULL and valid for reads of one `vmig_reaper_config`.
unsafe fn from_c(cfg: NonNull<vmig_reaper_config>) -> Result<ReaperConfig> {
    let mut raw = MaybeUninit::<vmig_reaper_config>::uninit();
    // SAFETY: `cfg` is readable for one struct (contract); a byte copy into
    // a MaybeUninit asserts nothing about the values.
    unsafe { std::ptr::copy_nonoverlapping(cfg.as_ptr(), raw.as_mut_ptr(), 1) };
    let p = raw.as_ptr();
    // SAFETY: the field is a C enum, 4 bytes on every ABI vmig supports
    // (checked below); reading it as u32 accepts any bit pattern.
    let policy = unsafe { addr_of!((*p).policy).cast::<u32>().read() };
    const _: () = assert!(std::mem::size_of::<vmig_reaper_policy>() == 4);
    let policy = match policy {
        0 => Policy::Fixed,
        1 => Policy::Levels,
        2 => Policy::Aimd,
        3 => Policy::Predictive,
        bits => {
            let e = Error::InvalidArgument("unknown reaper policy");
            return Err(e.in_call(|| format!("policy {bits}")));
        }
    };
    // SAFETY: the remaining fields are integers the caller initialised;
    // each is read through its own field pointer inside the copy.
    let cfg = unsafe {
        ReaperConfig {
            policy,
            ring_size: addr_of!((*p).ring_size).read(),
            min_interval_us: addr_of!((*p).min_interval_us).read(),
            max_interval_us: addr_of!((*p).max_interval_us).read(),
            fixed: reaper::FixedConfig { interval_us: addr_of!((*p).fixed_interval_us).read() },
            levels: reaper::LevelsConfig {
                interval_us: addr_of!((*p).levels_interval_us).read(),
                ratio_step_permille: addr_of!((*p).levels_ratio_step_permille).read(),
                stable_count: addr_of!((*p).levels_stable_count).read(),
            },
            aimd: reaper::AimdConfig {
                high_permille: addr_of!((*p).aimd_high_permille).read(),
                low_permille: addr_of!((*p).aimd_low_permille).read(),
                step_us: addr_of!((*p).aimd_step_us).read(),
            },
            predictive: reaper::PredictiveConfig {
                target_permille: addr_of!((*p).predictive_target_permille).read(),
                decay_us: addr_of!((*p).predictive_decay_us).read(),
                probe_us: addr_of!((*p).predictive_probe_us).read(),
            },
        }
    };
    cfg.validate()?;
    Ok(cfg)
}

// Tag "vmrp"; see `ffi::handle`. Every call takes `&Reaper` (vCPU threads
// kick it while the reaper thread waits), so `*mut` handles are only read.
box_handle!(vmig_reaper, Reaper, 0x766d_7270);

/// Fills `cfg` with the defaults: the policy and tunables measured best
/// (see the README, "Reaper"). ring_size defaults to 4096; set your own.
///
/// Returns 0, or -EINVAL if `cfg` is NULL.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `cfg` is NULL or valid for writes of one vmig_reaper_config.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_config_default(cfg: *mut vmig_reaper_config) -> i32 {
    catch_int(|| {
        let cfg = NonNull::new(cfg).ok_or_else(|| Error::InvalidArgument("cfg is NULL").in_call(|| "vmig_reaper_config_default(NULL)".into()))?;
        // SAFETY: writable per the contract; `write` does not read the old value.
        unsafe { cfg.as_ptr().write(to_c(&ReaperConfig::default())) };
        Ok(0)
    })
}

/// Creates a reaper from `cfg` (copied; the caller keeps it).
///
/// Returns the reaper, or NULL with errno EINVAL (NULL `cfg`, unknown
/// policy, ring_size 0, min_interval_us 0 or above max_interval_us, or a
/// tunable out of its documented range) or ENOMEM. Free it with
/// vmig_reaper_free().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `cfg` is NULL or valid for reads of one vmig_reaper_config.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_new(cfg: *const vmig_reaper_config) -> *mut vmig_reaper {
    catch_ptr(|| {
        let call = || format!("vmig_reaper_new(cfg {cfg:p})");
        let c = NonNull::new(cfg.cast_mut()).ok_or_else(|| Error::InvalidArgument("cfg is NULL").in_call(call))?;
        // SAFETY: readable per the contract.
        let c = unsafe { from_c(c) }.map_err(|e| e.in_call(call))?;
        Ok(vmig_reaper::new_box(Reaper::new(&c).map_err(|e| e.in_call(call))?))
    })
}

/// Frees a reaper. NULL is a no-op.
///
/// Thread-safety: no other thread may use the reaper during or after the
/// call (in particular no vCPU thread may still call vmig_reaper_kick()).
///
/// # Safety
/// `r` is NULL or a live handle from vmig_reaper_new().
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_free(r: *mut vmig_reaper) {
    // SAFETY: per this function's contract.
    catch_or_err((), || unsafe { handle::free(r) }.map_err(|e| e.in_call(|| format!("vmig_reaper_free({r:p})"))))
}

/// Reports one reap and returns the next interval in microseconds (also the
/// one vmig_reaper_wait() sleeps next), within [min_interval_us,
/// max_interval_us]. `max_ring_fill`: entries found in the fullest vCPU
/// ring at this reap. `total_reaped`: entries reaped from all rings.
/// `ring_full_events`: ring-full exits since the previous call (a delta;
/// exchange your counter with 0). The time since the previous call is taken
/// from CLOCK_MONOTONIC.
///
/// Returns the interval, or 0 if `r` is NULL (a valid interval is >= 1).
///
/// Thread-safety: any thread; calls are serialised internally. Normally
/// only the reaper thread calls it, after each reap.
///
/// # Safety
/// `r` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_update(
    r: *mut vmig_reaper,
    max_ring_fill: u64,
    total_reaped: u64,
    ring_full_events: u64,
) -> u64 {
    catch_or_err(0, || {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(r.cast_const()) }.map_err(|e| e.in_call(|| format!("vmig_reaper_update({r:p})")))?;
        Ok(h.update(max_ring_fill, total_reaped, ring_full_events))
    })
}

/// Sleeps the current interval, returning early when vmig_reaper_kick() is
/// called. A kick that came while the reaper was not waiting (e.g. during
/// the reap) makes this call return at once; several kicks before one wait
/// count as one.
///
/// Returns 1 if kicked, 0 on timeout, -EINVAL if `r` is NULL.
///
/// Thread-safety: one waiting thread at a time (the reaper thread); safe
/// concurrently with vmig_reaper_kick() and vmig_reaper_update().
///
/// # Safety
/// `r` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_wait(r: *mut vmig_reaper) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(r.cast_const()) }.map_err(|e| e.in_call(|| format!("vmig_reaper_wait({r:p})")))?;
        Ok(i32::from(h.wait()))
    })
}

/// Wakes the reaper thread now (e.g. from a vCPU thread that just took a
/// KVM_EXIT_DIRTY_RING_FULL exit), or makes its next vmig_reaper_wait()
/// return at once.
///
/// Returns 0, or -EINVAL if `r` is NULL.
///
/// Thread-safety: any thread, concurrently with every other reaper call
/// except vmig_reaper_free().
///
/// # Safety
/// `r` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_kick(r: *mut vmig_reaper) -> i32 {
    catch_int(|| {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(r.cast_const()) }.map_err(|e| e.in_call(|| format!("vmig_reaper_kick({r:p})")))?;
        h.kick();
        Ok(0)
    })
}

/// The interval vmig_reaper_wait() sleeps now, microseconds; 0 if `r` is
/// NULL.
///
/// Thread-safety: any thread.
///
/// # Safety
/// `r` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmig_reaper_interval_us(r: *const vmig_reaper) -> u64 {
    catch_or_err(0, || {
        // SAFETY: per this function's contract.
        let h = unsafe { handle::try_ref(r) }.map_err(|e| e.in_call(|| format!("vmig_reaper_interval_us({r:p})")))?;
        Ok(h.interval_us())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips() {
        let mut c = MaybeUninit::<vmig_reaper_config>::uninit();
        // SAFETY: valid for writes.
        assert_eq!(unsafe { vmig_reaper_config_default(c.as_mut_ptr()) }, 0);
        // SAFETY: initialised by the call above.
        let back = unsafe { from_c(NonNull::new(c.as_mut_ptr()).unwrap()) }.unwrap();
        assert_eq!(back, ReaperConfig::default());
    }

    #[test]
    fn bad_policy_bits_rejected_without_ub() {
        let mut c = to_c(&ReaperConfig::default());
        // SAFETY: writes a u32 into the 4-byte enum field, as C could.
        unsafe { addr_of_mut!(c.policy).cast::<u32>().write(7) };
        // SAFETY: a readable config.
        assert!(unsafe { vmig_reaper_new(&c) }.is_null());
    }

    use std::ptr::addr_of_mut;
}
