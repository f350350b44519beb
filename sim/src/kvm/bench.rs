//! A KVM guest without a migration, for measurements
//! (`vmig-kvm-bench`, docs/kvm.md): the reaper on the real rings at a
//! controlled dirty rate, the throttle against the guest's own progress.

use std::sync::Arc;

use super::guest::{pacing, GuestOpts, KvmGuest};
use super::program::{block, put, Layout};
use super::vm::{tsc_khz, Vm};
use crate::engines::{GuestThrottle, ReaperCtl};
use crate::memory::GuestRam;
use crate::report::GuestCounters;
use crate::running::RunningGuest;

/// One rig.
pub struct RigConfig {
    /// KVM device.
    pub device: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM, bytes.
    pub mem_bytes: u64,
    /// Working set, bytes (split between the vCPUs).
    pub ws_bytes: u64,
    /// Dirty ring entries per vCPU.
    pub ring: u32,
    /// Dirty logging on (the reaper profiles) or off (the throttle).
    pub logging: bool,
    /// Pin vCPU i to host CPU i.
    pub pin: bool,
    /// The throttle.
    pub throttle: Arc<dyn GuestThrottle>,
    /// The reaper controller.
    pub reaper: Arc<dyn ReaperCtl>,
}

/// A running guest under measurement.
pub struct Rig {
    guest: KvmGuest,
    ram: Arc<GuestRam>,
    layout: Layout,
    tsc_khz: u64,
}

/// What a rig measured.
#[derive(Debug)]
pub struct RigOutcome {
    /// Dirty-ring and reaper counters.
    pub counters: GuestCounters,
    /// Kick exits.
    pub kick_exits: u64,
    /// All exits per vCPU per second.
    pub exit_rate: f64,
    /// Seconds run.
    pub secs: f64,
    /// Records written.
    pub writes: u64,
}

impl Rig {
    /// Boots the guest (unpaced until [`set_rate`](Self::set_rate)).
    pub fn start(c: RigConfig) -> Result<Rig, String> {
        let pages = c.mem_bytes / crate::config::PAGE_SIZE as u64;
        let layout = Layout::new(c.vcpus, pages, c.ws_bytes / crate::config::PAGE_SIZE as u64, 1)?;
        let ram = Arc::new(GuestRam::new(pages).map_err(|e| e.to_string())?);
        let vm = Vm::new(&c.device, &ram, Some(c.ring))?;
        let khz = tsc_khz(&c.device)?;
        let p = pacing(khz, 1);
        layout.install(&ram, 0, p.max_lag, p.window);
        let opts = GuestOpts { seed: 1, drop_page: None, pin: c.pin, tsc_khz: khz, scheduler: None };
        let mut guest = KvmGuest::start(vm, ram.clone(), layout.clone(), c.throttle, c.reaper, opts)?;
        if c.logging {
            guest.start_logging()?;
        }
        Ok(Rig { guest, ram, layout, tsc_khz: khz })
    }

    /// Sets every vCPU's write rate, records per second (infinite: as fast
    /// as it can). The guest reloads it at its next loop head.
    pub fn set_rate(&self, per_s: f64) {
        let period = if per_s.is_finite() { pacing(self.tsc_khz, per_s.max(1.0) as u64).period } else { 0 };
        for i in 0..self.layout.vcpus {
            put(&self.ram, self.layout.block_gpa(i) + block::PERIOD, period);
        }
    }

    /// Records written so far, all vCPUs.
    pub fn progress(&self) -> u64 {
        self.guest.progress()
    }

    /// Kicks every vCPU out of `KVM_RUN` once.
    pub fn kick_vcpus(&self) {
        self.guest.kick_vcpus();
    }

    /// Kick exits so far, all vCPUs.
    pub fn kick_exits(&self) -> u64 {
        self.guest.exits().0
    }

    /// Nanoseconds all vCPUs spent in throttle sleeps so far.
    pub fn throttle_ns(&self) -> u64 {
        self.guest.throttle_ns()
    }

    /// The throttle.
    pub fn throttle(&self) -> &dyn GuestThrottle {
        self.guest.throttle()
    }

    /// The first error a vCPU or the reaper hit.
    pub fn error(&self) -> Option<String> {
        self.guest.error()
    }

    /// Stops the guest and returns what it measured.
    pub fn stop(mut self) -> Result<RigOutcome, String> {
        self.guest.stop();
        if let Some(e) = self.guest.error() {
            return Err(e);
        }
        let (kick_exits, exit_rate) = self.guest.exits();
        Ok(RigOutcome {
            counters: self.guest.counters(),
            kick_exits,
            exit_rate,
            secs: self.guest.run_secs(),
            writes: self.guest.progress(),
        })
    }
}
