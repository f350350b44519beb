//! The result of a run: an `info migrate`-style summary, JSON, and the
//! side-by-side table of `--compare`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::config::{SimConfig, PAGE_SIZE};
use crate::content::FillStats;
use crate::dest::DestStats;
use crate::engines::CompStats;
use crate::guest::GuestShared;

/// Dirty-tracking and reaper counters, whichever guest ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestCounters {
    /// Ring-full exits, all vCPUs.
    pub ring_full_events: u64,
    /// vCPU time stalled on full rings, ms.
    pub stall_ms: f64,
    /// Largest fill any harvest found.
    pub peak_fill: u64,
    /// Reaper thread wake-ups.
    pub reaper_wakeups: u64,
}

impl GuestCounters {
    /// The simulated guest's counters. Call after its threads are joined.
    pub fn of_sim(guest: &GuestShared) -> Self {
        GuestCounters {
            ring_full_events: guest.log.ring_full_events(),
            stall_ms: guest.log.stall().as_secs_f64() * 1000.0,
            peak_fill: guest.log.peak_fill(),
            // Relaxed: the threads have been joined.
            reaper_wakeups: guest.reaper_wakeups.load(Ordering::Relaxed),
        }
    }
}

/// Which guest ran and how it fared after the switch-over (the issue's
/// `guest` object).
#[derive(Clone, Debug, Serialize)]
pub struct GuestReport {
    /// "kvm" (a real KVM VM) or "sim" (threads writing memory).
    pub kind: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// How long the destination guest ran after the switch-over, ms.
    pub dest_run_ms: f64,
    /// Guest work units (records written) on the destination.
    pub dest_progress: u64,
    /// The guest program's own consistency check on the destination:
    /// "pass", "fail", or "not run" (simulated guest, or no switch-over).
    pub self_check: String,
    /// Why the self-check failed, if it did.
    pub self_check_detail: Option<String>,
    /// Userspace exits on the source caused by kicks (throttle, stop).
    pub kick_exits: u64,
    /// All userspace exits of the source's vCPUs per second of guest time.
    pub exit_rate: f64,
}

impl GuestReport {
    /// The simulated guest: no destination run.
    pub fn sim(vcpus: u32) -> Self {
        GuestReport {
            kind: "sim",
            vcpus,
            dest_run_ms: 0.0,
            dest_progress: 0,
            self_check: "not run".into(),
            self_check_detail: None,
            kick_exits: 0,
            exit_rate: 0.0,
        }
    }
}
use crate::source::{SourceStats, Status};

/// Outcome of the byte-for-byte comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Verification {
    /// Every page equal.
    Match {
        /// Pages compared.
        pages: u64,
    },
    /// Some pages differ.
    Mismatch {
        /// Lowest differing page.
        first_page: u64,
        /// Pages that differ.
        pages: u64,
    },
    /// The migration did not complete, so there was nothing to compare.
    NotRun,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The configuration run.
    pub config: SimConfig,
    /// The guest that ran.
    pub guest: GuestReport,
    /// Reaper policy used (resolved from the stack when not given).
    pub reaper_policy: String,
    /// Dirty tracking that ran: "bitmap" or "ring" (--dirty-tracking).
    pub dirty_tracking: String,
    /// "completed", "cancelled" or "failed".
    pub status: String,
    /// Why it failed or was cancelled.
    pub status_detail: Option<String>,
    /// Migration thread's counters.
    pub source: SourceStats,
    /// Compression counters, if compression was on.
    pub compression: Option<CompSummary>,
    /// Destination's counters, if it finished.
    pub dest: Option<DestStats>,
    /// Byte-for-byte comparison.
    pub verification: Verification,
    /// Throughput over the whole run, Mbit/s (QEMU "throughput").
    pub throughput_mbps: f64,
    /// Ring-full exits, all vCPUs.
    pub ring_full_events: u64,
    /// vCPU time stalled on full rings, ms.
    pub vcpu_stall_ms: f64,
    /// Largest fill any reap found.
    pub peak_ring_fill: u64,
    /// Reaper thread wake-ups.
    pub reaper_wakeups: u64,
    /// Guest writes during the migration.
    pub guest_writes: u64,
    /// Guest writes per second during the migration.
    pub guest_write_rate: f64,
    /// guest_write_rate / (dirty_rate x vcpus): what the guest got of its
    /// unthrottled speed.
    pub guest_speed: f64,
    /// Pages of each kind at start.
    pub content: FillStats,
    /// Where code and text pages came from.
    pub content_sources: String,
    /// Time to fill guest RAM, ms (before the migration starts).
    pub fill_ms: f64,
    /// Postcopy measurements (`--postcopy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postcopy: Option<crate::postcopy::report::PostcopyReport>,
}

/// QEMU's compression section.
#[derive(Clone, Debug, Serialize)]
pub struct CompSummary {
    /// Pages the compression threads compressed (the engine's count).
    pub pages: u64,
    /// Pages the compression threads found all zero.
    pub zero_pages: u64,
    /// Pages sent raw because every thread was busy.
    pub busy: u64,
    /// busy / (pages + busy).
    pub busy_rate: f64,
    /// Bytes of zlib streams sent.
    pub compressed_bytes: u64,
    /// Uncompressed / compressed bytes of the compressed pages sent (QEMU
    /// 7.2's "compression rate").
    pub ratio: f64,
}

impl Report {
    /// Assembles a report.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        cfg: &SimConfig,
        status: Status,
        source: SourceStats,
        comp: Option<CompStats>,
        dest: Option<DestStats>,
        verification: Verification,
        guest: &GuestCounters,
        guest_writes: u64,
        guest_s: f64,
        content: &FillStats,
        fill_ms: f64,
        content_sources: &str,
    ) -> Report {
        let (status, status_detail) = match status {
            Status::Completed => ("completed".to_string(), None),
            Status::Cancelled => {
                ("cancelled".to_string(), Some(format!("did not converge within --max-time {} s", cfg.max_time_s)))
            }
            Status::Failed(e) => ("failed".to_string(), Some(e)),
        };
        let compression = comp.map(|c| CompSummary {
            pages: c.pages,
            zero_pages: c.zero_pages,
            busy: source.busy_raw_pages,
            busy_rate: ratio(source.busy_raw_pages, c.pages + source.busy_raw_pages),
            compressed_bytes: source.compressed_bytes,
            ratio: ratio(source.compressed_pages * PAGE_SIZE as u64, source.compressed_bytes),
        });
        let guest_write_rate = guest_writes as f64 / guest_s.max(1e-9);
        Report {
            reaper_policy: match cfg.reaper_policy() {
                crate::config::ReaperPolicyKind::Default => {
                    format!("default ({:?})", vmig::reaper::ReaperConfig::default().policy).to_lowercase()
                }
                p => format!("{p:?}").to_lowercase(),
            },
            dirty_tracking: cfg.dirty_tracking.name().to_string(),
            config: cfg.clone(),
            status,
            status_detail,
            throughput_mbps: source.transferred as f64 * 8.0 / (source.total_ms / 1000.0).max(1e-9) / 1e6,
            compression,
            dest,
            verification,
            ring_full_events: guest.ring_full_events,
            vcpu_stall_ms: guest.stall_ms,
            peak_ring_fill: guest.peak_fill,
            reaper_wakeups: guest.reaper_wakeups,
            guest: GuestReport::sim(cfg.vcpus),
            guest_writes,
            guest_write_rate,
            guest_speed: guest_write_rate / (cfg.dirty_rate * u64::from(cfg.vcpus)) as f64,
            content: content.clone(),
            content_sources: content_sources.to_string(),
            fill_ms,
            source,
            postcopy: None,
        }
    }

    /// Whether the run completed and verified.
    pub fn ok(&self) -> bool {
        self.status == "completed"
            && matches!(self.verification, Verification::Match { .. })
            && self.guest.self_check != "fail"
    }

    /// The `info migrate`-style text.
    pub fn info_migrate(&self) -> String {
        let s = &self.source;
        let c = &self.config;
        let kb = |b: u64| b / 1024;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "stack: {}  (reaper {}, compression {}, throttle {})",
            c.stack.name(),
            self.reaper_policy,
            if c.compress_threads == 0 {
                "off".to_string()
            } else {
                format!("{} threads level {}", c.compress_threads, c.compress_level)
            },
            match c.stack {
                crate::config::Stack::Vmig => "per-vCPU",
                crate::config::Stack::Legacy => "VM-wide timer",
            }
        );
        let g = &self.guest;
        let _ = writeln!(o, "guest: {} ({} vCPUs)", if g.kind == "kvm" { "KVM virtual machine" } else { "simulated" }, g.vcpus);
        let _ = writeln!(o, "Migration status: {}", self.status);
        if let Some(d) = &self.status_detail {
            let _ = writeln!(o, "status detail: {d}");
        }
        let _ = writeln!(o, "total time: {:.0} milliseconds", s.total_ms);
        if self.status == "completed" {
            let _ = writeln!(
                o,
                "downtime: {:.0} milliseconds ({} pages; stop {:.0} ms, send {:.0} ms, destination {:.0} ms)",
                s.downtime_ms, s.downtime_pages, s.downtime_stop_ms, s.downtime_send_ms, s.downtime_dest_ms
            );
        } else {
            let _ = writeln!(o, "expected downtime: {:.0} milliseconds", s.expected_downtime_ms);
        }
        let _ = writeln!(o, "setup: {:.0} milliseconds", s.setup_ms);
        let _ = writeln!(o, "transferred ram: {} kbytes", kb(s.transferred));
        let _ = writeln!(o, "throughput: {:.2} mbps", self.throughput_mbps);
        let _ = writeln!(o, "remaining ram: {} kbytes", kb(s.remaining));
        let _ = writeln!(o, "total ram: {} kbytes", kb(c.mem_bytes));
        let _ = writeln!(o, "duplicate: {} pages", s.zero_pages);
        let _ = writeln!(o, "normal: {} pages", s.normal_pages);
        let _ = writeln!(o, "normal bytes: {} kbytes", kb(s.normal_pages * PAGE_SIZE as u64));
        let _ = writeln!(o, "dirty sync count: {}", s.dirty_sync_count);
        let _ = writeln!(o, "dirty tracking: {}  (finding dirty pages: {:.0} milliseconds)", self.dirty_tracking, s.find_dirty_ms);
        if let Some(d) = &s.dirty_scheduler {
            let _ = writeln!(
                o,
                "dirty scheduler: queue {} K {}, {} marks ({} duplicate, {} overflowed), {} sent ({} background, {} overflow)",
                d.queue_capacity, d.background_interval, d.marks, d.duplicates, d.overflowed, d.handed_out, d.from_background, d.from_overflow
            );
        }
        let _ = writeln!(o, "page size: {} kbytes", PAGE_SIZE / 1024);
        let _ = writeln!(o, "dirty pages rate: {} pages", s.dirty_pages_rate);
        if let Some(cs) = &self.compression {
            let _ = writeln!(o, "compression pages: {} pages", s.compressed_pages);
            let _ = writeln!(o, "compression busy: {}", cs.busy);
            let _ = writeln!(o, "compression busy rate: {:.2}", cs.busy_rate);
            let _ = writeln!(o, "compressed size: {} kbytes", kb(cs.compressed_bytes));
            let _ = writeln!(o, "compression rate: {:.2}", cs.ratio);
        }
        let _ = writeln!(o, "cpu throttle percentage (max reached): {}", s.throttle_max_pct);
        let _ = writeln!(o, "dirty ring full events: {}", self.ring_full_events);
        let _ = writeln!(o, "vcpu stall on full ring: {:.0} milliseconds", self.vcpu_stall_ms);
        let _ = writeln!(o, "dirty ring peak fill: {} of {} entries", self.peak_ring_fill, c.dirty_ring_size);
        let _ = writeln!(o, "reaper wake-ups: {}", self.reaper_wakeups);
        let _ = writeln!(o, "rate-limit sleep: {:.0} milliseconds", s.rate_limited_ms);
        let _ = writeln!(
            o,
            "guest writes: {} ({:.0}/s, {:.0}% of unthrottled)",
            self.guest_writes,
            self.guest_write_rate,
            self.guest_speed * 100.0
        );
        let _ = match &self.verification {
            Verification::Match { pages } => writeln!(o, "verification: destination RAM equals source ({pages} pages)"),
            Verification::Mismatch { first_page, pages } => {
                writeln!(o, "verification: MISMATCH, {pages} pages differ, first differing page {first_page}")
            }
            Verification::NotRun => writeln!(o, "verification: not run (migration did not complete)"),
        };
        if let Some(p) = &self.postcopy {
            o.push_str(&p.text());
        }
        if g.kind == "kvm" {
            let _ = writeln!(o, "vcpu exits: {:.1}/s ({} kicks)", g.exit_rate, g.kick_exits);
            let _ = writeln!(
                o,
                "destination guest: ran {:.0} ms, {} records written, self-check {}{}",
                g.dest_run_ms,
                g.dest_progress,
                g.self_check,
                g.self_check_detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
        o
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One line of the compare table: name, legacy value, vmig value, format.
type Row = (&'static str, f64, f64, fn(f64) -> String);

/// The `--compare` table: legacy and vmig side by side with vmig/legacy.
pub fn compare_table(legacy: &Report, vmig: &Report) -> String {
    let done = |r: &Report| r.status == "completed";
    let rows: Vec<Row> = vec![
        ("total time (ms)", legacy.source.total_ms, vmig.source.total_ms, |v| format!("{v:.0}")),
        (
            "downtime (ms)",
            if done(legacy) { legacy.source.downtime_ms } else { f64::NAN },
            if done(vmig) { vmig.source.downtime_ms } else { f64::NAN },
            |v| format!("{v:.0}"),
        ),
        ("transferred (MiB)", mib(legacy.source.transferred), mib(vmig.source.transferred), |v| format!("{v:.0}")),
        ("throughput (Mbit/s)", legacy.throughput_mbps, vmig.throughput_mbps, |v| format!("{v:.0}")),
        ("remaining (MiB)", mib(legacy.source.remaining), mib(vmig.source.remaining), |v| format!("{v:.1}")),
        ("dirty sync count", legacy.source.dirty_sync_count as f64, vmig.source.dirty_sync_count as f64, |v| {
            format!("{v:.0}")
        }),
        ("normal pages", legacy.source.normal_pages as f64, vmig.source.normal_pages as f64, |v| format!("{v:.0}")),
        ("compressed pages", legacy.source.compressed_pages as f64, vmig.source.compressed_pages as f64, |v| {
            format!("{v:.0}")
        }),
        ("zero pages", legacy.source.zero_pages as f64, vmig.source.zero_pages as f64, |v| format!("{v:.0}")),
        ("compression busy rate", busy(legacy), busy(vmig), |v| format!("{v:.2}")),
        ("compression rate", crate_ratio(legacy), crate_ratio(vmig), |v| format!("{v:.2}")),
        ("throttle reached (%)", legacy.source.throttle_max_pct as f64, vmig.source.throttle_max_pct as f64, |v| {
            format!("{v:.0}")
        }),
        ("ring-full events", legacy.ring_full_events as f64, vmig.ring_full_events as f64, |v| format!("{v:.0}")),
        ("vCPU stall (ms)", legacy.vcpu_stall_ms, vmig.vcpu_stall_ms, |v| format!("{v:.0}")),
        ("reaper wake-ups", legacy.reaper_wakeups as f64, vmig.reaper_wakeups as f64, |v| format!("{v:.0}")),
        ("guest writes/s", legacy.guest_write_rate, vmig.guest_write_rate, |v| format!("{v:.0}")),
    ];
    let mut o = String::new();
    let _ = writeln!(o, "{:<24} {:>14} {:>14} {:>12}", "", "legacy", "vmig", "vmig/legacy");
    let _ = writeln!(o, "{:<24} {:>14} {:>14} {:>12}", "status", legacy.status, vmig.status, "");
    for (name, a, b, fmt) in rows {
        let show = |v: f64| if v.is_nan() { "-".to_string() } else { fmt(v) };
        let r = if a.is_nan() || b.is_nan() || a == 0.0 { "-".to_string() } else { format!("{:.2}x", b / a) };
        let _ = writeln!(o, "{:<24} {:>14} {:>14} {:>12}", name, show(a), show(b), r);
    }
    let v = |r: &Report| match r.verification {
        Verification::Match { .. } => "match",
        Verification::Mismatch { .. } => "MISMATCH",
        Verification::NotRun => "not run",
    };
    let _ = writeln!(o, "{:<24} {:>14} {:>14}", "verification", v(legacy), v(vmig));
    o
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn busy(r: &Report) -> f64 {
    r.compression.as_ref().map_or(f64::NAN, |c| c.busy_rate)
}

fn crate_ratio(r: &Report) -> f64 {
    r.compression.as_ref().map_or(f64::NAN, |c| c.ratio)
}

impl Report {
    /// Whether verification ran and found a difference.
    pub fn verification_failed(&self) -> bool {
        matches!(self.verification, Verification::Mismatch { .. })
    }
}

/// `--compare --rounds N`: one line per round and the medians of the
/// vmig/legacy ratios. Each entry is (legacy ran first, legacy, vmig).
pub fn rounds_table(rounds: &[(bool, &Report, &Report)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:>5} {:>7} {:>10} {:>10} {:>8} {:>10} {:>9} {:>9} {:>10} {:>12}",
        "round", "first", "legacy s", "vmig s", "time", "throughput", "throttle", "ring-full", "guest w/s", "downtime ms"
    );
    let (mut t, mut b, mut g) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (legacy_first, l, v)) in rounds.iter().enumerate() {
        let rt = v.source.total_ms / l.source.total_ms;
        let rb = v.throughput_mbps / l.throughput_mbps;
        let rg = v.guest_write_rate / l.guest_write_rate;
        t.push(rt);
        b.push(rb);
        g.push(rg);
        let _ = writeln!(
            o,
            "{:>5} {:>7} {:>10.1} {:>10.1} {:>7.2}x {:>9.2}x {:>4}/{:<4} {:>4}/{:<4} {:>9.2}x {:>5.0}/{:<6.0}",
            i + 1,
            if *legacy_first { "legacy" } else { "vmig" },
            l.source.total_ms / 1000.0,
            v.source.total_ms / 1000.0,
            rt,
            rb,
            l.source.throttle_max_pct,
            v.source.throttle_max_pct,
            l.ring_full_events,
            v.ring_full_events,
            rg,
            l.source.downtime_ms,
            v.source.downtime_ms,
        );
    }
    let _ = writeln!(
        o,
        "median vmig/legacy: total time {:.2}x, throughput {:.2}x, guest writes/s {:.2}x ({} rounds; statuses legacy {}, vmig {})",
        median(&mut t),
        median(&mut b),
        median(&mut g),
        rounds.len(),
        statuses(rounds.iter().map(|r| r.1)),
        statuses(rounds.iter().map(|r| r.2)),
    );
    o
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn statuses<'a>(rs: impl Iterator<Item = &'a Report>) -> String {
    let mut v: Vec<String> = rs.map(|r| if r.ok() { "ok".to_string() } else { r.status.clone() }).collect();
    v.dedup();
    v.join("/")
}
