//! The engine seams implemented by replicas of QEMU 7.2's legacy designs,
//! shared with vmig's benchmarks (`benches/legacy/`, pulled in with
//! `#[path]`, never part of libvmig.so).

use crate::config::PAGE_SIZE;
use crate::engines::{Busy, CompOut, CompStats, Compressor};

/// QEMU 7.2's compression threads (benches/legacy/compress.rs).
#[path = "../../benches/legacy/compress.rs"]
#[allow(missing_docs, dead_code)]
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
