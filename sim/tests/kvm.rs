//! The KVM guest end to end: a short migration of a real KVM VM verifies
//! byte for byte and the destination passes the guest's self-check; a page
//! whose dirty-ring entries are never handed to the migration must fail
//! verification; bad input exits 2 without hanging. Without a usable
//! /dev/kvm the KVM runs SKIP loudly (the simulated guest is tested by
//! scenario.rs either way).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::process::Command;

use vmig_sim::config::{DirtyTracking, GuestKind, SimConfig};
use vmig_sim::report::Verification;

fn kvm_usable() -> bool {
    match vmig_sim::kvm::probe("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("\n****\nSKIP: KVM guest not tested: {e}\n****");
            false
        }
    }
}

/// A few seconds: 96 MiB, a 24 MiB working set the link drains quickly.
fn short() -> SimConfig {
    SimConfig {
        guest: GuestKind::Kvm,
        mem_bytes: 96 << 20,
        working_set_bytes: 24 << 20,
        dirty_rate: 5_000,
        bandwidth: 2_000_000_000 / 8,
        dest_run_ms: 300,
        max_time_s: 60.0,
        ..Default::default()
    }
}

fn run(cfg: &SimConfig) -> vmig_sim::Report {
    let corpus = vmig_sim::content::Corpus::load();
    vmig_sim::run(cfg, &corpus, &mut |_| {}).expect("set-up")
}

#[test]
fn kvm_guest_migrates_verifies_and_passes_its_self_check_on_the_destination() {
    if !kvm_usable() {
        return;
    }
    let r = run(&short());
    assert_eq!(r.guest.kind, "kvm");
    assert_eq!(r.status, "completed", "{:?}", r.status_detail);
    assert!(matches!(r.verification, Verification::Match { .. }), "{:?}", r.verification);
    assert_eq!(r.guest.self_check, "pass", "{:?}", r.guest.self_check_detail);
    assert!(r.guest.dest_progress > 0);
    assert!(r.guest_writes > 0);
    assert!(r.ok());
}

#[test]
fn a_dirtied_page_never_harvested_fails_verification() {
    if !kvm_usable() {
        return;
    }
    // Page 256 (gpa 1 MiB) is vCPU 0's version table: rewritten by almost
    // every record, so it is certainly dirtied after its first copy.
    let r = run(&SimConfig { fault_unharvested_page: Some(256), ..short() });
    match r.verification {
        Verification::Mismatch { first_page, .. } => assert_eq!(first_page, 256),
        v => panic!("verification must fail: {v:?} ({})", r.status),
    }
    assert!(!r.ok());
}

#[test]
fn kvm_guest_migrates_in_ring_mode_from_the_real_rings() {
    if !kvm_usable() {
        return;
    }
    // The reaper marks each harvested page into vmig::dirty; no bitmap.
    let r = run(&SimConfig { dirty_tracking: DirtyTracking::Ring, ..short() });
    assert_eq!(r.guest.kind, "kvm");
    assert_eq!(r.status, "completed", "{:?}", r.status_detail);
    assert!(matches!(r.verification, Verification::Match { .. }), "{:?}", r.verification);
    assert_eq!(r.guest.self_check, "pass", "{:?}", r.guest.self_check_detail);
    let s = r.source.dirty_scheduler.as_ref().expect("ring mode reports its scheduler");
    assert!(s.marks > 0, "the real rings fed the scheduler: {s:?}");
    assert_eq!(s.from_background, short().nr_pages(), "the first pass covers RAM once");
}

#[test]
fn ring_mode_drops_no_page_of_a_kvm_guest_either() {
    if !kvm_usable() {
        return;
    }
    // The same fault as above, in ring mode: the page never reaches the
    // scheduler after its first pass, so verification must fail there too.
    let r = run(&SimConfig { dirty_tracking: DirtyTracking::Ring, fault_unharvested_page: Some(256), ..short() });
    match r.verification {
        Verification::Mismatch { first_page, .. } => assert_eq!(first_page, 256),
        v => panic!("verification must fail: {v:?} ({})", r.status),
    }
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmig-sim")).args(args).output().expect("run vmig-sim")
}

#[test]
fn guest_kvm_without_a_usable_device_exits_2_with_a_message() {
    let out = sim(&["--guest", "kvm", "--kvm-device", "/nonexistent/kvm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--guest kvm") && err.contains("/nonexistent/kvm"), "{err}");
}

#[test]
fn bad_ring_sizes_exit_2_with_a_message() {
    for size in ["3000", "131072"] {
        let out = sim(&["--guest", "kvm", "--dirty-ring-size", size]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{size}: {err}");
        assert!(err.contains("--dirty-ring-size"), "{size}: {err}");
    }
}

#[test]
fn guest_auto_falls_back_to_the_simulated_guest_and_says_so() {
    let out = sim(&[
        "--guest",
        "auto",
        "--kvm-device",
        "/nonexistent/kvm",
        "--mem",
        "64M",
        "--working-set",
        "8M",
        "--dirty-rate",
        "2000",
        "--bandwidth",
        "2G",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("simulated guest"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["guest"]["kind"], "sim");
}

#[test]
fn guest_kvm_with_postcopy_exits_2_and_auto_falls_back() {
    let out = sim(&["--guest", "kvm", "--postcopy", "preempt-full"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--guest kvm does not support --postcopy"), "{err}");
}
