//! The engine seams implemented by replicas of QEMU 7.2's legacy designs,
//! shared with vmig's benchmarks (`benches/legacy/`, pulled in with
//! `#[path]`, never part of libvmig.so).

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::PAGE_SIZE;
use crate::engines::{Busy, CompOut, CompStats, Compressor, GuestThrottle};

/// QEMU 7.2's compression threads (benches/legacy/compress.rs).
#[path = "../../benches/legacy/compress.rs"]
#[allow(missing_docs)]
mod compress;

/// `compress::LegacyComp`.
pub struct LegacyCompressor(compress::LegacyComp);

impl LegacyCompressor {
    /// `threads` legacy compression threads at zlib `level`.
    pub fn new(threads: u32, level: u32) -> Result<Self, String> {
        compress::LegacyComp::new(threads, level as i32, PAGE_SIZE as u32)
            .map(LegacyCompressor)
            .map_err(|e| format!("legacy compression threads: {e}"))
    }

    fn hand(&mut self, r: compress::LegacyResult, f: &mut dyn FnMut(u64, CompOut<'_>)) {
        let out = if r.status() != 0 {
            CompOut::Failed(r.status())
        } else if r.is_zero_page() {
            CompOut::Zero
        } else {
            CompOut::Data(r.data())
        };
        f(r.key(), out);
        self.0.release(r);
    }
}

impl Compressor for LegacyCompressor {
    unsafe fn submit(&mut self, key: u64, page: *const u8, wait: bool) -> Result<(), Busy> {
        // SAFETY: forwarded: the caller keeps the page mapped until its
        // result is handed out.
        unsafe { self.0.submit(page, key, 0, wait) }.map_err(|_| Busy)
    }

    fn poll(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool {
        match self.0.poll() {
            Some(r) => {
                self.hand(r, f);
                true
            }
            None => false,
        }
    }

    fn wait_result(&mut self, f: &mut dyn FnMut(u64, CompOut<'_>)) -> bool {
        match self.0.wait_result() {
            Some(r) => {
                self.hand(r, f);
                true
            }
            None => false,
        }
    }

    /// QEMU 7.2 has no per-page ordering between threads, so it flushes
    /// every thread at the end of each round (flush_compressed_data).
    fn needs_round_flush(&self) -> bool {
        true
    }

    fn stats(&self) -> CompStats {
        let s = self.0.stats();
        CompStats { pages: s.pages, zero_pages: s.zero_pages, busy: s.busy, bytes_out: s.bytes_out }
    }
}

/// QEMU 7.2's VM-wide throttle timer (benches/legacy/throttle.rs).
#[path = "../../benches/legacy/throttle.rs"]
#[allow(missing_docs)]
mod throttle;

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
