//! The engine seams implemented by replicas of QEMU 7.2's legacy designs,
//! shared with vmig's benchmarks (the vmig-legacy crate, `legacy/`, never
//! part of libvmig.so).

use std::sync::Arc;
use std::thread::JoinHandle;

use vmig_legacy::throttle;
use vmig_legacy::LegacyComp;

use crate::config::PAGE_SIZE;
use crate::engines::{EngineCompressor, GuestThrottle};

/// QEMU 7.2's compression threads (`vmig_legacy::compress`) behind the one
/// compressor adapter.
pub type LegacyCompressor = EngineCompressor<LegacyComp>;

impl EngineCompressor<LegacyComp> {
    /// `threads` legacy compression threads at zlib `level`.
    pub fn new(threads: u32, level: u32) -> Result<Self, String> {
        LegacyComp::new(threads, level as i32, PAGE_SIZE as u32)
            .map(|c| EngineCompressor::wrap(c, "legacy compression threads"))
            .map_err(|e| format!("legacy compression threads: {e}"))
    }
}


/// `throttle::LegacyThrottle` with its timer thread.
pub struct LegacyVmThrottle {
    t: Arc<throttle::LegacyThrottle>,
    timer: Option<JoinHandle<()>>,
    vcpus: usize,
}

impl LegacyVmThrottle {
    /// The VM-wide timer for `vcpus` vCPUs with QEMU's 10 ms timeslice.
    pub fn new(vcpus: u32) -> Self {
        let (t, timer) = throttle::LegacyThrottle::start(vcpus as usize, throttle::CPU_THROTTLE_TIMESLICE_NS);
        LegacyVmThrottle { t, timer: Some(timer), vcpus: vcpus as usize }
    }
}

impl GuestThrottle for LegacyVmThrottle {
    fn set(&self, pct: u32) {
        // cpu_throttle_set clamps to 1..=99; 0 is cpu_throttle_stop.
        if pct == 0 {
            self.t.stop();
        } else {
            self.t.set(pct);
        }
    }
    fn get(&self) -> u32 {
        self.t.get()
    }
    fn vcpu_run(&self, vcpu: u32) {
        self.t.safe_point(vcpu as usize);
    }
    fn kick_all(&self) {
        for v in 0..self.vcpus {
            // cpu->stop: vm_stop ends a throttle sleep at once.
            self.t.stop_vcpu(v, true);
        }
    }
}

impl Drop for LegacyVmThrottle {
    fn drop(&mut self) {
        self.t.shutdown();
        if let Some(h) = self.timer.take() {
            let _ = h.join();
        }
    }
}
