//! `dirty-bench`: bitmap against ring dirty tracking on vmig-sim, guest RAM
//! 1, 16 and 64 GiB with the same populated content and working set, one
//! run each, ratios printed; then a dirty burst larger than the ring
//! mode's queue (the overflow path), which must still verify.
//!
//! ```text
//! cargo run --release -p vmig-sim --bin dirty-bench [-- --sizes 1,16,64 --bandwidth-gbit 1]
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
}

fn args() -> Result<Args, String> {
    let mut a = Args { sizes_gib: vec![1, 16, 64], bandwidth_gbit: 1.0 };
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
            "--bandwidth-gbit" => a.bandwidth_gbit = v.parse().map_err(|_| format!("bad bandwidth {v}"))?,
            _ => return Err(format!("unknown option {k} (options: --sizes 1,16,64 --bandwidth-gbit 1)")),
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
        "| RAM | tracking | find-dirty ms/iteration (2nd on) | find-dirty ms total (1st pass) | total ms | pages sent | downtime ms | overflowed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut goals = Vec::new();
    for &gib in &a.sizes_gib {
        let mut pair = Vec::new();
        for t in [DirtyTracking::Bitmap, DirtyTracking::Ring] {
            eprintln!("dirty-bench: {gib} GiB {} (load {})", t.name(), loadavg());
            match run(&scenario(gib, a.bandwidth_gbit, t), &corpus) {
                Ok(r) => pair.push(r),
                Err(e) => {
                    eprintln!("dirty-bench: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let (b, r) = (&pair[0], &pair[1]);
        for x in [b, r] {
            let s = &x.source;
            println!(
                "| {gib} GiB | {} | {:.3} | {:.1} ({:.1}) | {:.0} | {} | {:.0} | {} |",
                x.dirty_tracking,
                per_iteration_ms(x),
                s.find_dirty_ms,
                s.find_dirty_first_pass_ms,
                s.total_ms,
                pages(x),
                s.downtime_ms,
                s.dirty_scheduler.as_ref().map_or("-".to_string(), |d| d.overflowed.to_string()),
            );
        }
        let find_ratio = per_iteration_ms(b) / per_iteration_ms(r).max(1e-6);
        let total_ratio = r.source.total_ms / b.source.total_ms;
        println!(
            "| {gib} GiB | bitmap/ring | {find_ratio:.1}x | {:.1}x | ring {:+.1}% | {:.2}x | {:.2}x | |",
            b.source.find_dirty_ms / r.source.find_dirty_ms.max(1e-6),
            (total_ratio - 1.0) * 100.0,
            pages(b) as f64 / pages(r) as f64,
            b.source.downtime_ms / r.source.downtime_ms.max(1e-6),
        );
        goals.push((gib, find_ratio, total_ratio));
    }
    // The overflow path: a queue of 512 entries against harvests of up to
    // vcpus x dirty-ring-size = 8192 entries, on the 1 GiB guest.
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
    println!("\ndirty-bench: load average after: {}", loadavg());
    for (gib, find, total) in goals {
        println!(
            "goal {gib} GiB: find-dirty per iteration {find:.1}x below bitmap (goal >= 10x at 64 GiB); total time ring/bitmap {total:.3} (goal <= 1; at 64 GiB < 0.963)"
        );
    }
    ExitCode::SUCCESS
}
