//! Compression statistics: enough for QEMU's `info migrate` compression
//! section (pages, busy, busy-rate, compressed size, compression rate).

/// Counters of a [`CompPool`](super::CompPool). Kept by the submitting thread
/// as plain integers (the single-thread rule), so reading them is free.
/// A page is counted when its result is collected (`poll`/`wait_result`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompStats {
    /// Pages compressed successfully (zero pages excluded).
    pub pages: u64,
    /// All-zero pages (sent without data).
    pub zero_pages: u64,
    /// Pages whose worker failed (status `-EIO`).
    pub failed: u64,
    /// Submissions refused with `Busy` (QEMU's "compression busy").
    pub busy: u64,
    /// Bytes of the compressed pages before compression (`pages * page_size`).
    pub bytes_in: u64,
    /// Bytes of zlib output for those pages.
    pub bytes_out: u64,
    /// Times a submission woke a sleeping worker.
    pub wakeups: u64,
    /// Results collected from each worker (zero and failed pages included).
    pub pages_per_worker: Vec<u64>,
}

impl CompStats {
    /// `bytes_out / bytes_in` (QEMU shows its inverse as "compression rate").
    ///
    /// ```
    /// let s = vmig::pool::CompStats { bytes_in: 4096, bytes_out: 1024, ..Default::default() };
    /// assert_eq!(s.ratio(), 0.25); // QEMU's "compression rate" would say 4
    /// ```
    pub fn ratio(&self) -> f64 {
        if self.bytes_in == 0 {
            0.0
        } else {
            self.bytes_out as f64 / self.bytes_in as f64
        }
    }

    /// Largest relative deviation of one worker's page count from the mean
    /// (0.0 = perfectly even).
    ///
    /// ```
    /// let s = vmig::pool::CompStats { pages_per_worker: vec![90, 110], ..Default::default() };
    /// assert!((s.worker_spread() - 0.10).abs() < 1e-9, "each worker 10% off the mean");
    /// ```
    pub fn worker_spread(&self) -> f64 {
        let n = self.pages_per_worker.len();
        let total: u64 = self.pages_per_worker.iter().sum();
        if n == 0 || total == 0 {
            return 0.0;
        }
        let mean = total as f64 / n as f64;
        self.pages_per_worker.iter().map(|&p| (p as f64 - mean).abs() / mean).fold(0.0, f64::max)
    }
}
