//! Page-request latency: a histogram in log2 microsecond buckets, the shape
//! of the bpftrace `@delay_us` histograms in the preempt-full cover letter
//! (`[0]`, `[1]`, `[2, 4)`, `[4, 8)`, ... `[64K, 128K)`), with mean, p50 and
//! p99.
//!
//! Recording is lock-free (one `fetch_add` per bucket and two for the
//! sums), so any placing thread records directly; a percentile is the low
//! edge of the bucket holding it, as precise as the histogram.

use std::fmt::Write as _;

use crate::sync::{AtomicU64, Ordering};

/// Buckets: `[0]`, `[1]`, then `[2^k, 2^(k+1))` for k = 1..=38 (to ~76 h).
pub const BUCKETS: usize = 40;

/// A concurrent log2 histogram of microsecond values.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    n: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            n: AtomicU64::new(0),
        }
    }
}

/// Bucket index of `us`.
pub fn bucket(us: u64) -> usize {
    if us == 0 {
        0
    } else {
        ((64 - us.leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

/// `[low, high)` of bucket `i` in microseconds (`[0, 1)`, `[1, 2)`, `[2, 4)`...).
pub fn bucket_range(i: usize) -> (u64, u64) {
    if i == 0 {
        (0, 1)
    } else {
        (1u64 << (i - 1), 1u64 << i)
    }
}

/// A consistent copy of a histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Median (low edge of its bucket), microseconds.
    pub p50_us: u64,
    /// 99th percentile (low edge of its bucket), microseconds.
    pub p99_us: u64,
    /// Non-empty buckets as `(low_us, high_us, count)`, ascending.
    pub buckets: Vec<(u64, u64, u64)>,
}

impl LatencyHistogram {
    /// Records one latency.
    ///
    /// Relaxed (all three): independent counters; a reader snapshots them
    /// after the recording threads are done or accepts a sample in flight.
    pub fn record_us(&self, us: u64) {
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.n.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot with mean and percentiles. Relaxed: see `record_us`.
    pub fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let sum = self.sum_us.load(Ordering::Relaxed);
        let pct = |q: f64| -> u64 {
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_range(i).0;
                }
            }
            0
        };
        LatencySummary {
            count,
            mean_us: if count == 0 { 0.0 } else { sum as f64 / count as f64 },
            p50_us: if count == 0 { 0 } else { pct(0.50) },
            p99_us: if count == 0 { 0 } else { pct(0.99) },
            buckets: counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let (lo, hi) = bucket_range(i);
                    (lo, hi, *c)
                })
                .collect(),
        }
    }
}

fn human(v: u64) -> String {
    match v {
        v if v >= 1 << 30 && v % (1 << 30) == 0 => format!("{}G", v >> 30),
        v if v >= 1 << 20 && v % (1 << 20) == 0 => format!("{}M", v >> 20),
        v if v >= 1 << 10 && v % (1 << 10) == 0 => format!("{}K", v >> 10),
        v => v.to_string(),
    }
}

impl LatencySummary {
    /// The bpftrace-style text the seed prints: a title, `Average: N (us)`,
    /// `@delay_us:` and one line per bucket from the first to the last
    /// non-empty one, with a bar of `@` scaled to 52 columns.
    pub fn bpftrace(&self, title: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{title}\n{}", "-".repeat(title.len()));
        let _ = writeln!(o, "Average: {:.0} (us)", self.mean_us);
        let _ = writeln!(o, "@delay_us:");
        let (Some(first), Some(last)) = (self.buckets.first(), self.buckets.last()) else {
            let _ = writeln!(o, "(no samples)");
            return o;
        };
        let max = self.buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        let (i0, i1) = (bucket(first.0), bucket(last.0));
        for i in i0..=i1 {
            let (lo, hi) = bucket_range(i);
            let c = self.buckets.iter().find(|b| b.0 == lo).map_or(0, |b| b.2);
            let label =
                if hi - lo == 1 { format!("[{}]", human(lo)) } else { format!("[{}, {})", human(lo), human(hi)) };
            // bpftrace's scaling: the fullest bucket gets 52 columns, the
            // rest their share rounded down.
            let bar = (c * 52 / max) as usize;
            let _ = writeln!(o, "{label:<14}{c:>8} |{:<52}|", "@".repeat(bar));
        }
        o
    }
}

#[cfg(all(test, not(vmig_loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_seeds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(2), 2);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 3);
        assert_eq!(bucket_range(bucket(229)), (128, 256));
        assert_eq!(bucket_range(bucket(12093)), (8192, 16384));
    }

    #[test]
    fn summary_and_text() {
        let h = LatencyHistogram::default();
        for _ in 0..98 {
            h.record_us(200);
        }
        h.record_us(5000);
        h.record_us(70_000);
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 128);
        assert_eq!(s.p99_us, 4096);
        assert!((s.mean_us - (98.0 * 200.0 + 75_000.0) / 100.0).abs() < 1e-9);
        assert_eq!(s.buckets, vec![(128, 256, 98), (4096, 8192, 1), (65536, 131072, 1)]);
        let t = s.bpftrace("Postcopy Preempt-Full");
        assert!(t.contains("Average: 946 (us)"), "{t}");
        assert!(t.contains("[128, 256)          98 |@@@@"), "{t}");
        assert!(t.contains("[64K, 128K)          1 |"), "{t}");
        assert!(t.contains("[8K, 16K)            0 |"), "{t}");
    }
}
