//! Short postcopy migrations, one per mode: the destination's guest runs on
//! memory that is still arriving, faults, and the destination verifies
//! against the source (frozen at the switch) plus the guest's own writes. A
//! connection broken mid-postcopy fails cleanly. Skipped loudly where
//! userfaultfd is unusable.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use vmig_sim::config::SimConfig;
use vmig_sim::content::Corpus;
use vmig_sim::postcopy::{Access, PostcopyConfig, PostcopyMode};
use vmig_sim::report::Verification;

fn uffd_usable() -> bool {
    match vmig::postcopy::uffd::Uffd::open() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("****************************************************************");
            eprintln!("SKIP: userfaultfd unusable here ({e}): postcopy scenarios not run");
            eprintln!("****************************************************************");
            false
        }
    }
}

/// 32 MiB guest, 8 MiB hot set, 200 Mbit/s: the hot set is rewritten during
/// the precopy pass, so postcopy moves it while the guest faults on it.
fn short(mode: PostcopyMode) -> SimConfig {
    SimConfig {
        mem_bytes: 32 << 20,
        working_set_bytes: 8 << 20,
        dirty_rate: 5_000,
        bandwidth: 200_000_000 / 8,
        compress_threads: 0,
        max_time_s: 60.0,
        postcopy: Some(PostcopyConfig::new(mode)),
        ..SimConfig::default()
    }
}

/// Runs `cfg` on a thread and fails the test instead of hanging.
fn run(cfg: SimConfig) -> vmig_sim::Report {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(vmig_sim::run(&cfg, &Corpus::load(), &mut |_| {}));
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the run hung").expect("set-up")
}

#[test]
fn every_mode_completes_and_verifies() {
    if !uffd_usable() {
        return;
    }
    for mode in [PostcopyMode::Vanilla, PostcopyMode::Preempt, PostcopyMode::PreemptFull] {
        let r = run(short(mode));
        assert!(r.ok(), "{mode:?}: {}", r.info_migrate());
        assert_eq!(r.verification, Verification::Match { pages: 8192 });
        let p = r.postcopy.as_ref().expect("postcopy object");
        assert_eq!(p.mode, mode.name());
        assert!(p.postcopy_pages > 0 && p.requests > 0, "{mode:?}: nothing faulted\n{}", r.info_migrate());
        assert_eq!(p.latency_us.histogram.iter().map(|b| b[2]).sum::<u64>(), p.latency_us.count);
        assert!(p.latency_us.count <= p.requests);
        assert!(p.guest_writes_postcopy > 0, "the destination guest ran");
        // Requests that come after the background stream has queued
        // everything need no answer: the page is on its way.
        assert!(p.urgent_sent <= p.requests);
    }
}

#[test]
fn sequential_access_and_no_precopy_round_verify() {
    if !uffd_usable() {
        return;
    }
    let mut cfg = short(PostcopyMode::PreemptFull);
    let pc = cfg.postcopy.as_mut().unwrap();
    pc.access = Access::Sequential;
    pc.after = 0;
    let r = run(cfg);
    assert!(r.ok(), "{}", r.info_migrate());
    let p = r.postcopy.as_ref().unwrap();
    assert_eq!(p.postcopy_pages, 8192, "everything moves after the switch");
}

#[test]
fn broken_connection_mid_postcopy_fails_cleanly() {
    if !uffd_usable() {
        return;
    }
    for mode in [PostcopyMode::Vanilla, PostcopyMode::PreemptFull] {
        let mut cfg = short(mode);
        cfg.postcopy.as_mut().unwrap().fault_break_after = Some(300);
        let r = run(cfg);
        assert_eq!(r.status, "failed", "{}", r.info_migrate());
        let d = r.status_detail.as_deref().unwrap_or("");
        assert!(d.contains("postcopy"), "{d}");
        assert_eq!(r.verification, Verification::NotRun);
    }
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmig-sim")).args(args).output().expect("run vmig-sim")
}

#[test]
fn cli_rejects_unsupported_combinations_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--postcopy", "preempt", "--compress-threads", "2"], "compression"),
        (&["--postcopy", "vanilla", "--compare"], "--compare"),
        (&["--postcopy-after", "2"], "--postcopy"),
        (&["--postcopy", "sideways"], "--postcopy"),
        (&["--postcopy", "vanilla", "--vcpus", "65"], "vCPUs"),
    ];
    for (args, needle) in cases {
        let out = sim(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn cli_json_has_the_postcopy_object_and_a_break_exits_1() {
    if !uffd_usable() {
        return;
    }
    let base = ["--mem", "32M", "--working-set", "8M", "--dirty-rate", "5000", "--bandwidth", "200M", "-q"];
    let mut args = vec!["--postcopy", "preempt-full", "--json"];
    args.extend(base);
    let out = sim(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["postcopy"];
    assert_eq!(p["mode"], "preempt-full");
    assert!(p["requests"].as_u64().unwrap() > 0);
    for k in ["mean", "p50", "p99"] {
        assert!(p["latency_us"][k].is_number(), "{k}: {p}");
    }
    let h = p["latency_us"]["histogram"].as_array().unwrap();
    assert!(h.iter().all(|b| b.as_array().unwrap().len() == 3));
    assert!(p["postcopy_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["verification"]["result"], "match");
    let mut args = vec!["--postcopy", "vanilla", "--fault-break-postcopy", "300"];
    args.extend(base);
    let out = sim(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed") && err.contains("postcopy"), "{err}");
}
