//! The `postcopy` object of a report and its text.

use std::fmt::Write as _;

use serde::Serialize;
use vmig::postcopy::LatencySummary;

/// Page-request latency, request issued → page placed, µs.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyUs {
    /// Mean.
    pub mean: f64,
    /// Median (low edge of its log2 bucket).
    pub p50: u64,
    /// 99th percentile (low edge of its log2 bucket).
    pub p99: u64,
    /// Requests answered (placed after being requested).
    pub count: u64,
    /// `[low_us, high_us, count]` per non-empty bucket (`[0,1)` is bpftrace's `[0]`).
    pub histogram: Vec<[u64; 3]>,
}

impl From<&LatencySummary> for LatencyUs {
    fn from(s: &LatencySummary) -> Self {
        LatencyUs {
            mean: s.mean_us,
            p50: s.p50_us,
            p99: s.p99_us,
            count: s.count,
            histogram: s.buckets.iter().map(|&(l, h, c)| [l, h, c]).collect(),
        }
    }
}

/// What a postcopy migration measured.
#[derive(Clone, Debug, Serialize)]
pub struct PostcopyReport {
    /// vanilla, preempt or preempt-full.
    pub mode: String,
    /// The destination guest's access pattern.
    pub access: String,
    /// Page requests the destination issued (one per page, however many
    /// vCPUs waited on it).
    pub requests: u64,
    /// Request latency.
    pub latency_us: LatencyUs,
    /// Switch to last page placed, ms.
    pub postcopy_ms: f64,
    /// Guest stopped at the switch (stop vCPUs, last sync, switch record), ms.
    pub switch_ms: f64,
    /// Precopy rounds before the switch.
    pub precopy_rounds: u32,
    /// Pages moved after the switch (discarded at the destination).
    pub postcopy_pages: u64,
    /// Requested pages sent ahead of the background stream.
    pub urgent_sent: u64,
    /// Pages the background stream sent after the switch.
    pub background_sent: u64,
    /// Requests that found the page already sent.
    pub requests_already_sent: u64,
    /// Copies the destination dropped as already received.
    pub duplicates_dropped: u64,
    /// Faults the destination's fault service read.
    pub faults: u64,
    /// Bulk-stream rate after the switch, Mbit/s.
    pub bulk_mbps: f64,
    /// Link rate, Mbit/s.
    pub link_mbps: f64,
    /// Bulk send queue (socket buffer), bytes.
    pub sndbuf_bytes: u64,
    /// NIC queue ahead of an urgent packet, µs.
    pub nic_queue_us: u64,
    /// Loopback TCP round trip (8-byte request, one-page answer), median,
    /// measured in this run, µs.
    pub loopback_rtt_us: f64,
    /// The same with both ends SCHED_FIFO (`--rt-threads` runs only), µs.
    pub loopback_rtt_rt_us: Option<f64>,
    /// Whether the request path ran SCHED_FIFO (`--rt-threads`).
    pub rt_threads: bool,
    /// One page's transfer time at the link rate, µs.
    pub page_transfer_us: f64,
    /// The bound for preempt-full's mean: 2 × (RTT + page transfer), µs.
    pub goal_bound_us: f64,
    /// Guest writes on the destination while memory was still arriving.
    pub guest_writes_postcopy: u64,
    /// Those writes against the unthrottled rate over postcopy_ms.
    pub guest_progress: f64,
}

fn title(mode: &str) -> String {
    match mode {
        "vanilla" => "Postcopy Vanilla".into(),
        "preempt" => "Postcopy Preempt".into(),
        _ => "Postcopy Preempt-Full".into(),
    }
}

impl PostcopyReport {
    /// The seed's histogram for this run.
    pub fn histogram_text(&self) -> String {
        let l = &self.latency_us;
        let s = LatencySummary {
            count: l.count,
            mean_us: l.mean,
            p50_us: l.p50,
            p99_us: l.p99,
            buckets: l.histogram.iter().map(|b| (b[0], b[1], b[2])).collect(),
        };
        s.bpftrace(&title(&self.mode))
    }

    /// Lines appended to `info migrate`.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "postcopy mode: {} ({} access, {} precopy rounds)",
            self.mode, self.access, self.precopy_rounds
        );
        let _ = writeln!(o, "postcopy time: {:.0} milliseconds (switch {:.1} ms)", self.postcopy_ms, self.switch_ms);
        let _ = writeln!(
            o,
            "postcopy pages: {} (urgent {}, background {}); requests {} (already sent {}), duplicates dropped {}",
            self.postcopy_pages,
            self.urgent_sent,
            self.background_sent,
            self.requests,
            self.requests_already_sent,
            self.duplicates_dropped
        );
        let _ = writeln!(
            o,
            "page request latency: mean {:.0} us, p50 {} us, p99 {} us ({} answered)",
            self.latency_us.mean, self.latency_us.p50, self.latency_us.p99, self.latency_us.count
        );
        let _ = writeln!(
            o,
            "link: {:.0} Mbit/s, bulk {:.0} Mbit/s after the switch, send queue {} KiB, NIC queue {} us",
            self.link_mbps,
            self.bulk_mbps,
            self.sndbuf_bytes / 1024,
            self.nic_queue_us
        );
        let _ = writeln!(
            o,
            "loopback RTT {:.0} us + page transfer {:.0} us: bound 2x = {:.0} us{}",
            self.loopback_rtt_us,
            self.page_transfer_us,
            self.goal_bound_us,
            match self.loopback_rtt_rt_us {
                Some(r) => format!(" (request path SCHED_FIFO; FIFO RTT {r:.0} us)"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            o,
            "guest during postcopy: {} writes ({:.0}% of unthrottled)",
            self.guest_writes_postcopy,
            self.guest_progress * 100.0
        );
        o.push_str(&self.histogram_text());
        o
    }
}
