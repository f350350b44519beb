//! Measurements on the real KVM guest (docs/kvm.md):
//!
//! ```text
//! vmig-kvm-bench reaper   [--secs S] [--high R] [--burst R] [--burst-low R]
//!                                                ring-full exits, stall, wake-ups per policy and profile
//! vmig-kvm-bench throttle [--vcpus N] [--rounds R] [--window S] [--targets P,P,...] [--timeslice-ms T]
//!                                                guest progress against the unthrottled baseline
//! vmig-kvm-bench repeat   [--runs N] [--mem MiB] [--compress-threads N]
//!                                                consecutive verified migrations: pages lost
//! vmig-kvm-bench kickcost [--vcpus N] [--rounds R] what one kick exit costs the guest's progress
//! vmig-kvm-bench speed    [--vcpus N] [--pages P] the guest's unpaced record rate
//! ```
//! Every number is relative to a baseline measured in the same run; the
//! host's load average is printed with each table. The process runs at
//! nice -20 (as root).

use std::sync::Arc;
use std::time::{Duration, Instant};

use vmig_sim::config::{GuestKind, ReaperPolicyKind, SimConfig, Stack};
use vmig_sim::engines::GuestThrottle;
use vmig_sim::kvm::bench::{Rig, RigConfig};
use vmig_sim::report::Verification;
use vmig_sim::vmig_engines::VmigThrottle;

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

const DEVICE: &str = "/dev/kvm";
const RING: u32 = 4096;
/// Profiles, records per second per vCPU (the simulated reaper bench's
/// shapes, scaled to the issue's "high = what a 4096-entry ring absorbs
/// in one second"); `--high`, `--burst` and `--burst-low` change them.
const IDLE: f64 = 20.0;
const LOW: f64 = 1_000.0;
const HIGH: f64 = 4_000.0;
/// Bursty: 200 ms at BURST (a whole ring's worth per burst), then 800 ms at
/// BURST_LOW. Not IDLE: a rate change reaches a parked vCPU only at its next
/// deadline, and 200/s keeps that under 5 ms.
const BURST: f64 = 20_000.0;
const BURST_LOW: f64 = 200.0;

fn reaper(args: &[String]) -> Result<(), String> {
    let secs = arg(args, "--secs", 10.0);
    let (high, burst, burst_low) = (arg(args, "--high", HIGH), arg(args, "--burst", BURST), arg(args, "--burst-low", BURST_LOW));
    println!(
        "reaper on the KVM guest: 2 vCPUs, {RING}-entry rings, {secs} s per run; rates per vCPU: idle {IDLE}, low {LOW}, high {high}, bursty 200 ms at {burst} then 800 ms at {burst_low}; load {}",
        load()
    );
    println!("{:<8} {:<11} {:>9} {:>11} {:>9} {:>10} {:>10}", "profile", "policy", "ring-full", "stall ms", "wake-ups", "writes/s", "peak fill");
    let policies = [
        ("FIXED", ReaperPolicyKind::Fixed),
        ("LEVELS", ReaperPolicyKind::Levels),
        ("AIMD", ReaperPolicyKind::Aimd),
        ("PREDICTIVE", ReaperPolicyKind::Predictive),
        ("default", ReaperPolicyKind::Default),
    ];
    for (profile, rate) in [("idle", IDLE), ("low", LOW), ("high", high), ("bursty", f64::NAN)] {
        for (name, p) in policies {
            let cfg = SimConfig { vcpus: 2, dirty_ring_size: RING, reaper: Some(p), ..Default::default() };
            let rig = Rig::start(RigConfig {
                device: DEVICE.into(),
                vcpus: 2,
                mem_bytes: 512 << 20,
                ws_bytes: 384 << 20,
                ring: RING,
                logging: true,
                pin: false,
                throttle: vmig_sim::stacks::throttle(&cfg)?,
                reaper: vmig_sim::stacks::reaper(&cfg)?,
            })?;
            let t0 = Instant::now();
            let mut on = None;
            while t0.elapsed().as_secs_f64() < secs {
                let r = if rate.is_nan() {
                    if t0.elapsed().as_secs_f64() % 1.0 < 0.2 {
                        burst
                    } else {
                        burst_low
                    }
                } else {
                    rate
                };
                if on != Some(r.to_bits()) {
                    rig.set_rate(r);
                    on = Some(r.to_bits());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let o = rig.stop()?;
            println!(
                "{:<8} {:<11} {:>9} {:>11.1} {:>9} {:>10.0} {:>10}",
                profile,
                name,
                o.counters.ring_full_events,
                o.counters.stall_ms,
                o.counters.reaper_wakeups,
                o.writes as f64 / o.secs,
                o.counters.peak_fill
            );
        }
    }
    println!("load after: {}", load());
    Ok(())
}

fn measure(rig: &Rig, secs: f64) -> f64 {
    measure2(rig, secs, 1).0
}

/// Records/s and the share of vCPU time spent in throttle sleeps.
fn measure2(rig: &Rig, secs: f64, vcpus: u32) -> (f64, f64) {
    let (p0, s0, t0) = (rig.progress(), rig.throttle_ns(), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let dt = t0.elapsed().as_secs_f64();
    ((rig.progress() - p0) as f64 / dt, (rig.throttle_ns() - s0) as f64 / 1e9 / dt / f64::from(vcpus))
}

/// The throttle against the guest's own progress. The guest's unthrottled
/// speed under this nested KVM moves by tens of percent within seconds
/// (docs/kvm.md), so one long baseline per target cannot carry a 0.5 pp
/// goal: each target is measured in `--rounds` rounds, and each round is an
/// unthrottled window, a throttled one and another unthrottled one, short
/// (`--window` s, at least three throttle cycles); the round's lost share
/// is 1 - throttled / mean of the two windows around it, and the table
/// gives the median over rounds. The two stacks (each its own VM, the one
/// not measured paced at [`RESTING`]) take turns round by round.
fn throttle(args: &[String]) -> Result<(), String> {
    let vcpus = arg(args, "--vcpus", 2.0) as u32;
    let rounds = (arg(args, "--rounds", 7.0) as usize).max(1);
    let window = arg(args, "--window", 0.5);
    // vmig's timeslice (run time between sleeps); the replica keeps QEMU's.
    let slice_ms = arg(args, "--timeslice-ms", vmig::throttle::QEMU_TIMESLICE_NS as f64 / 1e6);
    if !(0.1..=1000.0).contains(&slice_ms) {
        return Err(format!("--timeslice-ms must be in 0.1..=1000, not {slice_ms}"));
    }
    if !(0.05..=60.0).contains(&window) {
        return Err(format!("--window must be in 0.05..=60 s, not {window}"));
    }
    let targets: Vec<u32> = match args.iter().position(|a| a == "--targets").and_then(|i| args.get(i + 1)) {
        Some(list) => list.split(',').map(|t| t.parse().map_err(|_| format!("--targets: bad percentage {t:?}"))).collect::<Result<_, _>>()?,
        None => vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99],
    };
    if let Some(t) = targets.iter().find(|&&t| t > vmig::throttle::MAX_PCT) {
        return Err(format!("--targets: {t}% is above the throttle's maximum {}%", vmig::throttle::MAX_PCT));
    }
    println!(
        "throttle on the KVM guest: {vcpus} vCPUs pinned, {rounds} rounds per target of unthrottled / throttled / unthrottled windows of max({window} s, 3 cycles), vmig timeslice {slice_ms} ms (replica: QEMU's 10 ms), load {}",
        load()
    );
    let stacks = [(Stack::Vmig, slice_ms), (Stack::Legacy, vmig::throttle::QEMU_TIMESLICE_NS as f64 / 1e6)];
    let mut rigs = Vec::new();
    for (stack, ms) in stacks {
        let cfg = SimConfig { vcpus, stack, ..Default::default() };
        let throttle: Arc<dyn GuestThrottle> = match stack {
            Stack::Vmig => Arc::new(VmigThrottle::with_timeslice(vcpus, (ms * 1e6) as u64)?),
            Stack::Legacy => vmig_sim::stacks::throttle(&cfg)?,
        };
        let rig = hot_set_rig(&cfg, throttle)?;
        rig.set_rate(RESTING);
        rigs.push(rig);
    }
    // rows[target][stack] = (median lost %, median slept %, spread of lost %)
    let mut rows = Vec::new();
    let mut speeds = vec![Vec::new(); stacks.len()];
    for &t in &targets {
        let mut lost = vec![Vec::new(); stacks.len()];
        let mut slept = vec![Vec::new(); stacks.len()];
        for _ in 0..rounds {
            for (k, rig) in rigs.iter().enumerate() {
                let cycle_s = stacks[k].1 / 1e3 / (1.0 - f64::from(t) / 100.0);
                let w = window.max(3.0 * cycle_s);
                rig.set_rate(f64::INFINITY);
                rig.throttle().set(0);
                std::thread::sleep(Duration::from_millis(100));
                let before = measure(rig, w);
                rig.throttle().set(t);
                let (during, share) = measure2(rig, w, vcpus);
                rig.throttle().set(0);
                let after = measure(rig, w);
                rig.set_rate(RESTING);
                lost[k].push(100.0 * (1.0 - during / ((before + after) / 2.0)));
                slept[k].push(100.0 * share);
                speeds[k].push(before);
                speeds[k].push(after);
            }
        }
        rows.push((0..stacks.len()).map(|k| (median(&mut lost[k]), median(&mut slept[k]), spread(&lost[k]))).collect::<Vec<_>>());
    }
    println!(
        "{:>7} | {:>12} {:>8} {:>8} {:>8} | {:>12} {:>8} {:>8} {:>8}",
        "target", "vmig lost", "|err| pp", "IQR pp", "slept %", "QEMU-style", "|err| pp", "IQR pp", "slept %"
    );
    for (t, row) in targets.iter().zip(&rows) {
        let (v, l) = (row[0], row[1]);
        println!(
            "{:>6}% | {:>11.2}% {:>8.2} {:>8.2} {:>8.2} | {:>11.2}% {:>8.2} {:>8.2} {:>8.2}",
            t,
            v.0,
            (v.0 - f64::from(*t)).abs(),
            v.2,
            v.1,
            l.0,
            (l.0 - f64::from(*t)).abs(),
            l.2,
            l.1
        );
    }
    for ((stack, _), (rig, sp)) in stacks.iter().zip(rigs.into_iter().zip(speeds.iter_mut())) {
        let (lo, hi) = (sp.iter().copied().fold(f64::INFINITY, f64::min), sp.iter().copied().fold(0.0, f64::max));
        let mid = median(sp);
        let o = rig.stop()?;
        println!(
            "{}: unthrottled windows {:.0} median, {:.0}..{:.0} records/s; {:.1} exits/s per vCPU ({} kick exits)",
            stack.name(),
            mid,
            lo,
            hi,
            o.exit_rate,
            o.kick_exits
        );
    }
    println!("(lost = median over rounds of 1 - throttled / mean of the unthrottled windows around it; IQR = its interquartile range) load after: {}", load());
    Ok(())
}

/// The guest the throttle and kick-cost measurements run: `cfg.vcpus`
/// vCPUs pinned, each over its own 16 hot pages, dirty logging off (what
/// is measured is the guest's progress, not its dirtying).
fn hot_set_rig(cfg: &SimConfig, throttle: Arc<dyn GuestThrottle>) -> Result<Rig, String> {
    Rig::start(RigConfig {
        device: DEVICE.into(),
        vcpus: cfg.vcpus,
        mem_bytes: 64 << 20,
        ws_bytes: u64::from(cfg.vcpus) * 16 * 4096,
        ring: RING,
        logging: false,
        pin: true,
        throttle,
        reaper: vmig_sim::stacks::reaper(cfg)?,
    })
}

/// Records/s per vCPU of the VM not being measured: low enough to leave
/// the host CPUs to the measured one (it parks most of each 10 ms window),
/// high enough that its next record is due within 1 ms when it is made
/// unpaced again (a guest paced at 1/s kept parking for up to a second
/// after the switch, and its first unthrottled window measured nothing).
const RESTING: f64 = 1_000.0;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Interquartile range.
fn spread(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() < 4 {
        return v.last().copied().unwrap_or(f64::NAN) - v.first().copied().unwrap_or(f64::NAN);
    }
    v[v.len() * 3 / 4] - v[v.len() / 4]
}

/// What one exit costs the guest: the unpaced guest, throttle off, kicked
/// out of `KVM_RUN` at a set rate (no sleep at the safe point), against
/// the same guest not kicked, in alternating 1 s windows.
fn kickcost(args: &[String]) -> Result<(), String> {
    let vcpus = arg(args, "--vcpus", 2.0) as u32;
    let rounds = arg(args, "--rounds", 5.0) as u32;
    let cfg = SimConfig { vcpus, ..Default::default() };
    let rig = hot_set_rig(&cfg, vmig_sim::stacks::throttle(&cfg)?)?;
    rig.set_rate(f64::INFINITY);
    std::thread::sleep(Duration::from_millis(500));
    println!("cost of a kick exit on the KVM guest: {vcpus} vCPUs pinned, unpaced, {rounds} rounds of 1 s windows, load {}", load());
    println!("{:>8} | {:>10} | {:>12} | {:>14}", "kicks/s", "exits/s", "lost %", "us per exit");
    for rate in [50.0f64, 100.0, 200.0, 400.0] {
        let mut costs = Vec::new();
        let mut lost = Vec::new();
        let mut exits = 0.0;
        for _ in 0..rounds {
            let quiet = measure(&rig, 1.0);
            let (p0, e0, t0) = (rig.progress(), rig.kick_exits(), Instant::now());
            let period = Duration::from_secs_f64(1.0 / rate);
            while t0.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(period);
                rig.kick_vcpus();
            }
            let dt = t0.elapsed().as_secs_f64();
            let kicked = (rig.progress() - p0) as f64 / dt;
            let per_vcpu_exits = (rig.kick_exits() - e0) as f64 / dt / f64::from(vcpus);
            let quiet2 = measure(&rig, 1.0);
            let share = 1.0 - kicked / ((quiet + quiet2) / 2.0);
            lost.push(100.0 * share);
            costs.push(share / per_vcpu_exits.max(1.0) * 1e6);
            exits += per_vcpu_exits / f64::from(rounds);
        }
        println!("{:>8.0} | {:>10.1} | {:>12.2} | {:>14.1}", rate, exits, median(&mut lost), median(&mut costs));
    }
    rig.stop()?;
    println!("(medians over the rounds; lost % = 1 - kicked / mean of the unkicked windows around it) load after: {}", load());
    Ok(())
}

fn speed(args: &[String]) -> Result<(), String> {
    let vcpus = arg(args, "--vcpus", 1.0) as u32;
    let pages = arg(args, "--pages", 16.0) as u64;
    for logging in [false, true] {
        let cfg = SimConfig { vcpus, ..Default::default() };
        let rig = Rig::start(RigConfig {
            device: DEVICE.into(),
            vcpus,
            mem_bytes: 512 << 20,
            ws_bytes: u64::from(vcpus) * pages * 4096,
            ring: 65536,
            logging,
            pin: true,
            throttle: vmig_sim::stacks::throttle(&cfg)?,
            reaper: vmig_sim::stacks::reaper(&cfg)?,
        })?;
        rig.set_rate(f64::INFINITY);
        std::thread::sleep(Duration::from_millis(300));
        let r = measure(&rig, 2.0);
        let o = rig.stop()?;
        println!(
            "unpaced, {vcpus} vCPUs, {pages} pages each, logging {logging}: {r:.0} records/s, ring-full {}, load {}",
            o.counters.ring_full_events,
            load()
        );
    }
    Ok(())
}

fn repeat(args: &[String]) -> Result<(), String> {
    let runs = arg(args, "--runs", 20.0) as u64;
    let mem = arg(args, "--mem", 1024.0) as u64;
    let comp = arg(args, "--compress-threads", 2.0) as u32;
    println!(
        "{runs} consecutive migrations of the KVM guest ({mem} MiB, {comp} compression threads, defaults otherwise), load {}",
        load()
    );
    let corpus = vmig_sim::content::Corpus::load();
    let (mut lost_runs, mut lost_pages, mut fails) = (0, 0, 0);
    for i in 1..=runs {
        let cfg = SimConfig {
            guest: GuestKind::Kvm,
            mem_bytes: mem << 20,
            working_set_bytes: (192u64 << 20).min((mem << 20) / 2),
            seed: i,
            compress_threads: comp,
            ..Default::default()
        };
        let r = vmig_sim::run(&cfg, &corpus, &mut |_| {})?;
        let lost = match r.verification {
            Verification::Mismatch { pages, .. } => pages,
            _ => 0,
        };
        if lost > 0 {
            lost_runs += 1;
            lost_pages += lost;
        }
        if !r.ok() {
            fails += 1;
        }
        println!(
            "run {i:>2}: {} in {:.1} s, verification {}, pages lost {lost}, destination self-check {} ({} records in {:.0} ms), ring-full {}",
            r.status,
            r.source.total_ms / 1000.0,
            if lost > 0 { "MISMATCH" } else if r.status == "completed" { "match" } else { "not run" },
            r.guest.self_check,
            r.guest.dest_progress,
            r.guest.dest_run_ms,
            r.ring_full_events
        );
    }
    println!("{runs} runs: {lost_runs} lost pages ({lost_pages} pages in all), {fails} not ok; load {}", load());
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Nice -20 before any thread exists, so every thread (vCPUs, reaper,
    // kick timer, the legacy throttle's timer) inherits it: on a host
    // shared with other work the numbers must come from the engines under
    // test, not from the host scheduler (root only; ignored otherwise).
    // SAFETY: setpriority has no memory preconditions.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = vmig_sim::kvm::probe(DEVICE) {
        eprintln!("SKIP: KVM device not usable: {e}");
        return std::process::ExitCode::from(2);
    }
    let r = match args.first().map(String::as_str) {
        Some("reaper") => reaper(&args),
        Some("throttle") => throttle(&args),
        Some("repeat") => repeat(&args),
        Some("speed") => speed(&args),
        Some("kickcost") => kickcost(&args),
        _ => Err("usage: vmig-kvm-bench reaper|throttle|kickcost|repeat|speed [options] (see the source's doc)".into()),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmig-kvm-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
