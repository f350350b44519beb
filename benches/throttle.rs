//! Throttle accuracy: target versus actual, per-vCPU (vmig) against QEMU's
//! VM-wide timer (replica in `legacy/src/throttle.rs`, crate vmig-legacy).
//!
//! `cargo bench --bench throttle` (about 13 minutes with N = 2 and 4). N vCPU threads each
//! run a memory-write loop over their own buffer and reach a safe point
//! after every chunk: `Throttle::vcpu_run` for vmig, `LegacyThrottle::safe_point`
//! for the replica (QEMU's vCPU thread processing queued work). Each target
//! runs on a fresh throttle, started the way QEMU starts throttling, for a
//! whole number of throttle cycles (timeslice / (1 - pct)) of at least
//! VMIG_THROTTLE_SECS seconds. Unthrottled baseline segments run between
//! the throttled ones (B L B V B L B V ...); each throttled segment is
//! compared with the mean of the baselines either side of it, so slow drifts
//! in machine load cancel, and each column is the median over
//! VMIG_THROTTLE_ROUNDS rounds.
//!
//! Printed per target: throughput (GB/s) and actual throttle = 1 -
//! throughput / baseline (the seed's method), and the sleep share measured
//! by the vCPU threads themselves (time inside throttle sleeps / wall time),
//! which does not depend on how much CPU the host gave the threads.
//!
//! Environment: VMIG_THROTTLE_VCPUS ("2,4"), VMIG_THROTTLE_SECS (1),
//! VMIG_THROTTLE_ROUNDS (5), VMIG_THROTTLE_PIN (1: pin vCPU v to CPU v mod
//! CPUs; 0: let the scheduler place them),
//! VMIG_THROTTLE_TARGETS ("0,10,20,30,40,50,60,70,80,90,95,99").

#[path = "support/affinity.rs"]
mod affinity;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use vmig::throttle::Throttle;
use vmig_legacy::throttle::{LegacyThrottle, CPU_THROTTLE_TIMESLICE_NS};

/// Per-vCPU buffer: 1 MiB stays in a core's L2 (2 MiB per core here), so
/// two vCPUs do not compete for memory bandwidth and one's sleep does not
/// speed the other up (that would move "actual" for reasons that are not
/// the throttle's).
const BUF_BYTES: usize = 1 << 20;
/// Bytes written between safe points: ~60 us of work here (~17 GB/s per
/// thread), small against the 10 ms timeslice (a run overshoots by at most
/// one chunk) and large against what a safe point costs when nothing is due
/// (~100 ns with the timing around it). With 128 KiB chunks (7.5 us) that
/// cost alone showed as 1-2% of "slept" and of lost throughput.
const CHUNK_BYTES: usize = 1 << 20;
/// A safe point that took longer than this slept (a sleep is at least tens
/// of microseconds; a safe point with nothing due is ~100 ns); shorter ones
/// are not counted as sleep.
const SLEPT_MIN: Duration = Duration::from_micros(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    Baseline,
    VmWide,
    PerVcpu,
}

#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    secs: f64,
    bytes: u64,
    /// Sum over vCPUs of time spent inside safe points that slept, seconds.
    slept: f64,
}

impl Segment {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e9
    }
}

/// One vCPU: write, reach a safe point, repeat until `stop`.
fn vcpu_loop(stop: &AtomicBool, bytes: &AtomicU64, slept_ns: &AtomicU64, mut safe_point: impl FnMut()) {
    let mut buf = vec![0u64; BUF_BYTES / 8];
    let words = CHUNK_BYTES / 8;
    let (mut off, mut val, mut done, mut asleep) = (0usize, 1u64, 0u64, 0u64);
    // Acquire: pairs with the Release store of `stop` in `segment`.
    while !stop.load(Ordering::Acquire) {
        for w in &mut buf[off..off + words] {
            *w = val;
        }
        black_box(&mut buf);
        val = val.wrapping_add(1);
        off = (off + words) % buf.len();
        done += CHUNK_BYTES as u64;
        let t0 = Instant::now();
        safe_point();
        let e = t0.elapsed();
        if e >= SLEPT_MIN {
            asleep += e.as_nanos() as u64;
        }
    }
    // Relaxed: read after the threads are joined (join orders it).
    bytes.fetch_add(done, Ordering::Relaxed);
    slept_ns.fetch_add(asleep, Ordering::Relaxed);
}

/// Runs `n` vCPUs under `scheme` at `pct` for `secs`.
fn segment(scheme: Scheme, n: usize, pct: u32, secs: f64) -> Segment {
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let slept = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let vmig = Arc::new(Throttle::new(n as u32, CPU_THROTTLE_TIMESLICE_NS).unwrap());
    let (legacy, timer) = LegacyThrottle::start(n, CPU_THROTTLE_TIMESLICE_NS);
    let threads: Vec<_> = (0..n)
        .map(|v| {
            let (stop, bytes, slept, start, vmig, legacy) =
                (stop.clone(), bytes.clone(), slept.clone(), start.clone(), vmig.clone(), legacy.clone());
            thread::spawn(move || {
                if pinned() {
                    pin_vcpu(v);
                }
                start.wait();
                match scheme {
                    Scheme::Baseline | Scheme::PerVcpu => {
                        vcpu_loop(&stop, &bytes, &slept, || {
                            vmig.vcpu_run(v as u32).unwrap();
                        })
                    }
                    Scheme::VmWide => vcpu_loop(&stop, &bytes, &slept, || {
                        legacy.safe_point(v);
                    }),
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    match scheme {
        Scheme::Baseline => {}
        Scheme::PerVcpu if pct > 0 => vmig.set(pct).unwrap(),
        Scheme::VmWide if pct > 0 => legacy.set(pct),
        _ => {}
    }
    thread::sleep(Duration::from_secs_f64(secs));
    // Release: pairs with the Acquire load in `vcpu_loop`.
    stop.store(true, Ordering::Release);
    // End sleeps in progress so the threads stop promptly; their time up to
    // now is already counted, the wall clock stops here.
    let wall = t0.elapsed().as_secs_f64();
    vmig.set(0).unwrap();
    legacy.stop();
    for v in 0..n {
        legacy.stop_vcpu(v, true);
    }
    for t in threads {
        t.join().unwrap();
    }
    legacy.shutdown();
    timer.join().unwrap();
    // Relaxed: every writer was joined above; join orders their writes.
    Segment { secs: wall, bytes: bytes.load(Ordering::Relaxed), slept: slept.load(Ordering::Relaxed) as f64 / 1e9 }
}

/// Whether vCPU threads are pinned (`VMIG_THROTTLE_PIN`, default 1): vCPU
/// `v` on CPU `v mod CPUs`, as a VMM pins vCPUs. Unpinned, the scheduler
/// moves the threads between CPUs, and a vCPU that wakes on the other CPU
/// finds its buffer in the other core's cache: throughput then moves by
/// about 2% between identical unthrottled segments, four times the goal.
fn pinned() -> bool {
    std::env::var("VMIG_THROTTLE_PIN").map_or(true, |v| v != "0")
}

/// Pins the calling vCPU thread: vCPU `v` on the `v mod n`-th of the `n`
/// CPUs this process may use.
fn pin_vcpu(v: usize) {
    let cpus = affinity::allowed_cpus();
    if cpus.is_empty() {
        return;
    }
    let cpu = cpus[v % cpus.len()];
    affinity::set_affinity(&[cpu]).unwrap_or_else(|e| panic!("sched_setaffinity(CPU {cpu}): {e}"));
}

/// Seconds for `pct`: a whole number of throttle cycles, at least `min`.
fn length(pct: u32, min: f64) -> f64 {
    if pct == 0 {
        return min;
    }
    let cycle = CPU_THROTTLE_TIMESLICE_NS as f64 / 1e9 / (1.0 - f64::from(pct) / 100.0);
    (min / cycle).ceil() * cycle
}

/// Per-column medians of (GB/s, actual %, slept %) rows.
fn median_row(rows: Vec<(f64, f64, f64)>) -> (f64, f64, f64) {
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    (med(rows.iter().map(|r| r.0).collect()), med(rows.iter().map(|r| r.1).collect()), med(rows.iter().map(|r| r.2).collect()))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn list(name: &str, default: &str) -> Vec<u32> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run
    // that keeps this code executing in `make check`, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        println!("throttle bench: smoke run (cargo test), numbers are meaningless; use cargo bench");
    }
    let min_secs: f64 =
        if smoke { 0.05 } else { std::env::var("VMIG_THROTTLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0) };
    let targets = if smoke { vec![0, 50] } else { list("VMIG_THROTTLE_TARGETS", "0,10,20,30,40,50,60,70,80,90,95,99") };
    let vcpus = if smoke { vec![2] } else { list("VMIG_THROTTLE_VCPUS", "2,4") };
    let rounds = if smoke { 1 } else { list("VMIG_THROTTLE_ROUNDS", "5").first().copied().unwrap_or(5).max(1) };
    for n in vcpus {
        let n = n as usize;
        println!(
            "\nthrottle accuracy: {n} vCPUs ({}), 10 ms timeslice, >= {min_secs} s per segment, median of {rounds} rounds, load {}",
            if pinned() { "pinned, vCPU v on CPU v mod CPUs" } else { "unpinned" },
            loadavg()
        );
        println!("+--------+--------------------------------+--------------------------------+");
        println!("| Target |  VM-wide timer (QEMU replica)  |   per-vCPU closed loop (vmig)  |");
        println!("|  (%)   | GB/s   Actual(%)  Slept(%)     | GB/s   Actual(%)  Slept(%)     |");
        println!("+--------+--------------------------------+--------------------------------+");
        let base_len = min_secs.min(1.0);
        let mut before = segment(Scheme::Baseline, n, 0, base_len);
        let (mut worst_legacy, mut worst_vmig) = (0.0f64, 0.0f64);
        for &pct in &targets {
            let len = length(pct, min_secs);
            // Per round: (GB/s, actual, slept) for the replica and for vmig,
            // each against the mean of the baselines either side of it.
            let (mut leg, mut ours) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let l = segment(Scheme::VmWide, n, pct, len);
                let mid = segment(Scheme::Baseline, n, 0, base_len);
                let v = segment(Scheme::PerVcpu, n, pct, len);
                let after = segment(Scheme::Baseline, n, 0, base_len);
                let row = |s: &Segment, base: f64| {
                    (s.gbps(), 100.0 * (1.0 - s.gbps() / base), 100.0 * s.slept / (s.secs * n as f64))
                };
                leg.push(row(&l, (before.gbps() + mid.gbps()) / 2.0));
                ours.push(row(&v, (mid.gbps() + after.gbps()) / 2.0));
                before = after;
            }
            let (leg, ours) = (median_row(leg), median_row(ours));
            if (10..=99).contains(&pct) {
                worst_legacy = worst_legacy.max((leg.1 - f64::from(pct)).abs());
                worst_vmig = worst_vmig.max((ours.1 - f64::from(pct)).abs());
            }
            println!(
                "| {:>6} | {:>5.2}  {:>8.2}  {:>8.2}     | {:>5.2}  {:>8.2}  {:>8.2}     |",
                pct, leg.0, leg.1, leg.2, ours.0, ours.1, ours.2
            );
        }
        println!("+--------+--------------------------------+--------------------------------+");
        let goal = match (n, worst_vmig <= 0.5) {
            (2, true) => "goal <= 0.5 pp for N = 2: met",
            (2, false) => "goal <= 0.5 pp for N = 2: NOT met",
            _ => "no goal for this N",
        };
        println!(
            "worst |actual - target| over 10..99: VM-wide {worst_legacy:.2} pp, per-vCPU {worst_vmig:.2} pp ({goal}); load at end {}",
            loadavg()
        );
    }
}
