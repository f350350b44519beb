//! `dirty-bench`: bitmap against ring dirty tracking on vmig-sim, guest RAM
//! 1, 16 and 64 GiB with the same populated content and working set, in
//! one run: each contender `--rounds` times in alternating order, medians
//! and ratios printed; then a dirty burst larger than the ring mode's
//! queue (the overflow path), which must still verify.
//!
//! ```text
//! cargo run --release -p vmig-sim --bin dirty-bench [-- --sizes 1,16,64 --bandwidth-gbit 1 --rounds 2]
//! ```
//!
//! Numbers move with the machine's load (printed before and after); the
//! ratios are what to read. docs/dirty.md has a measured table.

use std::process::ExitCode;

use vmig_sim::config::{DirtyTracking, SimConfig};
use vmig_sim::content::Corpus;
use vmig_sim::Report;

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

struct Args {
    sizes_gib: Vec<u64>,
    bandwidth_gbit: f64,
    rounds: u32,
}

fn args() -> Result<Args, String> {
    let mut a = Args { sizes_gib: vec![1, 16, 64], bandwidth_gbit: 1.0, rounds: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--sizes" => {
                a.sizes_gib = v.split(',').map(|x| x.trim().parse::<u64>().map_err(|_| format!("bad size {x}"))).collect::<Result<_, _>>()?;
                if a.sizes_gib.iter().any(|&g| g == 0 || g > 64) {
                    return Err("--sizes are GiB in 1..=64".into());
                }
            }
            "--bandwidth-gbit" => {
                a.bandwidth_gbit = v.parse().map_err(|_| format!("bad bandwidth {v}"))?;
                if !(a.bandwidth_gbit >= 0.01 && a.bandwidth_gbit <= 100.0) {
                    return Err("--bandwidth-gbit must be in 0.01..=100".into());
                }
            }
            "--rounds" => {
                a.rounds = v.parse().map_err(|_| format!("bad rounds {v}"))?;
                if !(1..=10).contains(&a.rounds) {
                    return Err("--rounds must be in 1..=10".into());
                }
            }
            _ => return Err(format!("unknown option {k} (options: --sizes 1,16,64 --bandwidth-gbit 1 --rounds 2)")),
        }
    }
    Ok(a)
}

/// One size's scenario: 1 GiB of content (the rest untouched zero pages),
/// a 64 MiB hot set at 5000 writes/s per vCPU, compression off (the
/// migration thread's own costs are what is compared), the given link.
fn scenario(gib: u64, bandwidth_gbit: f64, tracking: DirtyTracking) -> SimConfig {
    SimConfig {
        mem_bytes: gib << 30,
        populated_bytes: Some(1 << 30),
        working_set_bytes: 64 << 20,
        dirty_rate: 5_000,
        compress_threads: 0,
        bandwidth: (bandwidth_gbit * 1e9 / 8.0) as u64,
        max_time_s: 600.0,
        dirty_tracking: tracking,
        ..SimConfig::default()
    }
}

fn run(cfg: &SimConfig, corpus: &Corpus) -> Result<Report, String> {
    let r = vmig_sim::run(cfg, corpus, &mut |_| {})?;
    if !r.ok() {
        return Err(format!("{} GiB {}: {}\n{}", cfg.mem_bytes >> 30, r.dirty_tracking, r.status, r.info_migrate()));
    }
    Ok(r)
}

/// Pages put on the wire.
fn pages(r: &Report) -> u64 {
    r.source.zero_pages + r.source.normal_pages + r.source.compressed_pages
}

/// Finding cost per iteration, the first iteration (the first pass over
/// RAM, in both modes) left out: what grows with RAM (bitmap: a sync and a
/// walk over every word) or with the dirty pages (ring).
fn per_iteration_ms(r: &Report) -> f64 {
    let its = &r.source.find_dirty_per_iteration_ms;
    let later = its.get(1..).unwrap_or(&[]);
    if later.is_empty() {
        return 0.0;
    }
    later.iter().sum::<f64>() / later.len() as f64
}

/// Median of a non-empty slice.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One contender: a tracking mode and K.
#[derive(Clone, Copy)]
struct Mode {
    label: &'static str,
    tracking: DirtyTracking,
    k: u32,
}

const BITMAP: Mode = Mode { label: "bitmap", tracking: DirtyTracking::Bitmap, k: 1 };
const RING: Mode = Mode { label: "ring (K=1)", tracking: DirtyTracking::Ring, k: 1 };
const RING_K2: Mode = Mode { label: "ring (K=2)", tracking: DirtyTracking::Ring, k: 2 };

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dirty-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let corpus = Corpus::load();
    println!("dirty-bench: load average before: {}", loadavg());
    println!(
        "| RAM | tracking | find-dirty ms/iteration (2nd on) | find-dirty ms total (1st pass) | total ms (each round) | pages sent | MB sent | downtime ms | overflowed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for &gib in &a.sizes_gib {
        // K = 2 only where it finishes in reasonable time (it stretches the
        // first pass; see docs/dirty.md).
        let modes: Vec<Mode> = if gib <= 16 { vec![BITMAP, RING, RING_K2] } else { vec![BITMAP, RING] };
        let mut runs: Vec<Vec<Report>> = vec![Vec::new(); modes.len()];
        for round in 0..a.rounds {
            // Alternate the order: the machine's load drifts.
            let order: Vec<usize> =
                if round % 2 == 0 { (0..modes.len()).collect() } else { (0..modes.len()).rev().collect() };
            for i in order {
                let m = modes[i];
                eprintln!("dirty-bench: {gib} GiB {} round {} (load {})", m.label, round + 1, loadavg());
                let cfg = SimConfig { first_pass_stretch: m.k, ..scenario(gib, a.bandwidth_gbit, m.tracking) };
                match run(&cfg, &corpus) {
                    Ok(r) => runs[i].push(r),
                    Err(e) => {
                        eprintln!("dirty-bench: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
        }
        let med = |i: usize, f: &dyn Fn(&Report) -> f64| median(runs[i].iter().map(f).collect());
        let total = |r: &Report| r.source.total_ms;
        let find = |r: &Report| r.source.find_dirty_ms;
        let first = |r: &Report| r.source.find_dirty_first_pass_ms;
        let sent = |r: &Report| pages(r) as f64;
        let mb = |r: &Report| r.source.transferred as f64 / 1e6;
        let down = |r: &Report| r.source.downtime_ms;
        let over = |r: &Report| r.source.dirty_scheduler.as_ref().map_or(0.0, |d| d.overflowed as f64);
        for (i, m) in modes.iter().enumerate() {
            let each: Vec<String> = runs[i].iter().map(|r| format!("{:.0}", total(r))).collect();
            println!(
                "| {gib} GiB | {} | {:.3} | {:.1} ({:.1}) | {:.0} ({}) | {:.0} | {:.0} | {:.0} | {} |",
                m.label,
                med(i, &per_iteration_ms),
                med(i, &find),
                med(i, &first),
                med(i, &total),
                each.join(" / "),
                med(i, &sent),
                med(i, &mb),
                med(i, &down),
                if m.tracking == DirtyTracking::Ring { format!("{:.0}", med(i, &over)) } else { "-".into() },
            );
        }
        for (i, m) in modes.iter().enumerate().skip(1) {
            println!(
                "| {gib} GiB | bitmap / {} | {:.1}x | {:.2}x | {:+.1}% | {:.3}x | {:.3}x | {:.2}x | |",
                m.label,
                med(0, &per_iteration_ms) / med(i, &per_iteration_ms).max(1e-6),
                med(0, &find) / med(i, &find).max(1e-6),
                (med(i, &total) / med(0, &total) - 1.0) * 100.0,
                med(0, &sent) / med(i, &sent),
                med(0, &mb) / med(i, &mb),
                med(0, &down) / med(i, &down).max(1e-6),
            );
        }
        goals.push((
            gib,
            med(0, &per_iteration_ms) / med(1, &per_iteration_ms).max(1e-6),
            med(1, &total) / med(0, &total),
        ));
    }
    // The overflow path: a queue of 512 entries against harvests of up to
    // vcpus x dirty-ring-size = 8192 entries, on the first size.
    let gib = a.sizes_gib[0];
    let cfg = SimConfig { dirty_queue: Some(512), ..scenario(gib, a.bandwidth_gbit, DirtyTracking::Ring) };
    eprintln!("dirty-bench: overflow run (load {})", loadavg());
    let over = match run(&cfg, &corpus) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dirty-bench: overflow run: {e}");
            return ExitCode::from(1);
        }
    };
    let d = over.source.dirty_scheduler.clone().unwrap_or_default();
    println!(
        "\noverflow: {gib} GiB ring, queue {}: {} marks overflowed, {} pages sent from the overflow set, total {:.0} ms, downtime {:.0} ms, destination verified: {}",
        d.queue_capacity, d.overflowed, d.from_overflow, over.source.total_ms, over.source.downtime_ms, over.ok()
    );
    println!("\ndirty-bench: load average after: {} ({} round(s), medians)", loadavg(), a.rounds);
    for (gib, find, total) in goals {
        println!(
            "goal {gib} GiB: find-dirty per iteration {find:.1}x below bitmap (goal >= 10x at 64 GiB); total time ring/bitmap {total:.3} (goal <= 1; at 64 GiB < 0.963)"
        );
    }
    ExitCode::SUCCESS
}
