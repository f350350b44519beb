//! Every reaper policy driven through a deterministic, virtual-time model
//! of one KVM dirty ring (no threads, no clocks): the ring fills at the
//! profile's rate, a reap empties it, reaching the soft limit is a ring-full
//! exit that kicks the reaper at once. Checks the policies' behaviour, not
//! the machine: the timed comparison is `cargo bench --bench reaper`.

use vmig::reaper::{Controller, Policy, ReaperConfig};

const RING: u64 = 4096;
const SOFT: u64 = RING - 64;

/// Pages per second at `t` seconds.
type Profile = fn(f64) -> f64;

#[derive(Debug, Default)]
struct Run {
    full_exits: u64,
    reaps: u64,
    peak_fill: u64,
}

/// Simulates `secs` seconds of `policy` with the default tunables.
fn simulate(policy: Policy, rate: Profile, secs: f64) -> Run {
    simulate_cfg(&ReaperConfig { policy, ring_size: RING as u32, ..ReaperConfig::default() }, rate, secs)
}

fn idle(_: f64) -> f64 {
    20.0
}
fn steady_low(_: f64) -> f64 {
    5_000.0
}
fn steady_high(_: f64) -> f64 {
    200_000.0
}
fn bursty(t: f64) -> f64 {
    if t % 1.0 < 0.2 {
        200_000.0
    } else {
        20.0
    }
}
fn ramp(t: f64) -> f64 {
    40_000.0 * t
}

const PROFILES: [(&str, Profile); 5] =
    [("idle", idle), ("steady-low", steady_low), ("steady-high", steady_high), ("bursty", bursty), ("ramp", ramp)];

#[test]
fn default_policy_meets_the_goals_in_virtual_time() {
    assert_eq!(ReaperConfig::default().policy, Policy::Predictive);
    for (name, rate) in PROFILES {
        let fixed = simulate(Policy::Fixed, rate, 10.0);
        let levels = simulate(Policy::Levels, rate, 10.0);
        let ours = simulate(Policy::Predictive, rate, 10.0);
        eprintln!("{name}: FIXED {fixed:?} LEVELS {levels:?} PREDICTIVE {ours:?}");
        assert!(ours.full_exits * 10 <= fixed.full_exits, "{name}: not 90% fewer than FIXED");
        assert!(ours.full_exits < levels.full_exits || ours.full_exits == 0, "{name}: not fewer than LEVELS");
        if name == "idle" {
            assert!(ours.reaps <= levels.reaps, "idle: {} reaps vs LEVELS {}", ours.reaps, levels.reaps);
        }
    }
}

#[test]
fn steady_high_settles_near_the_target_fill() {
    let r = simulate(Policy::Predictive, steady_high, 5.0);
    // Only the start-up probe may see the ring hot; then ~half full.
    assert_eq!(r.full_exits, 0);
    assert!(r.peak_fill <= RING * 6 / 10, "{r:?}");
    // ~10 ms intervals: about 100 reaps a second, not the 1000 of the floor.
    assert!((400..=600).contains(&r.reaps), "{r:?}");
}

#[test]
fn fixed_and_levels_cannot_keep_up_with_a_busy_vcpu() {
    // At 200 k pages/s the ring fills in 20 ms: FIXED's 1 s and LEVELS'
    // fastest 80 ms both take a ring-full exit on (nearly) every reap.
    let f = simulate(Policy::Fixed, steady_high, 5.0);
    let l = simulate(Policy::Levels, steady_high, 5.0);
    assert!(f.full_exits >= 240, "{f:?}");
    assert!(l.full_exits >= 240, "{l:?}");
}

#[test]
fn aimd_converges_but_pays_for_its_additive_step() {
    let a = simulate(Policy::Aimd, steady_high, 5.0);
    let f = simulate(Policy::Fixed, steady_high, 5.0);
    assert!(a.full_exits < f.full_exits / 10, "{a:?}");
    assert!(a.full_exits > 0, "AIMD starts at the maximum and must halve down: {a:?}");
}

/// Not a check: prints how PREDICTIVE's two tunables trade ring-full exits
/// against reaps in this model (the basis of their defaults, see
/// docs/controllers.md). Run with
/// `cargo test --release --test reaper_policies -- --ignored --nocapture`.
#[test]
#[ignore]
fn sweep_predictive_tunables() {
    println!("{:>7} {:>8} | {}", "target", "decay", PROFILES.map(|(n, _)| format!("{n:>18}")).join(" "));
    println!("{:>7} {:>8} | {}", "permil", "ms", PROFILES.map(|_| format!("{:>18}", "exits / reaps/s")).join(" "));
    for target in [250u32, 500, 750] {
        for decay_ms in [250u64, 500, 1_000, 2_000, 4_000, 8_000] {
            let mut cols = Vec::new();
            for (_, rate) in PROFILES {
                let mut cfg = ReaperConfig { policy: Policy::Predictive, ring_size: RING as u32, ..ReaperConfig::default() };
                cfg.predictive.target_permille = target;
                cfg.predictive.decay_us = decay_ms * 1000;
                let r = simulate_cfg(&cfg, rate, 10.0);
                cols.push(format!("{:>9} / {:>6.1}", r.full_exits, r.reaps as f64 / 10.0));
            }
            println!("{target:>7} {decay_ms:>8} | {}", cols.join(" "));
        }
    }
}

/// Simulates `secs` seconds, integrating the rate in 10 us steps.
fn simulate_cfg(cfg: &ReaperConfig, rate: Profile, secs: f64) -> Run {
    let mut c = Controller::new(cfg, 0).unwrap();
    let step_us = 10u64;
    let (mut now, mut next, mut fill) = (0u64, c.interval_us(), 0.0f64);
    let mut run = Run::default();
    let end = (secs * 1e6) as u64;
    while now < end {
        now += step_us;
        fill += rate(now as f64 / 1e6) * step_us as f64 / 1e6;
        let full = fill as u64 >= SOFT;
        if full || now >= next {
            let f = (fill as u64).min(SOFT);
            run.full_exits += u64::from(full);
            run.reaps += 1;
            run.peak_fill = run.peak_fill.max(f);
            next = now + c.update(now, f, f, u64::from(full));
            fill = 0.0;
        }
    }
    run
}
