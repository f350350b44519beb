//! Short whole migrations: they converge, the destination verifies, and a
//! page corrupted on the wire is caught.

use vmig_sim::config::{DirtyTracking, SimConfig, Stack};
use vmig_sim::content::Corpus;
use vmig_sim::report::Verification;

/// 64 MiB guest, 8 MiB hot set: a few seconds on the 2-core CI machine.
fn short(stack: Stack) -> SimConfig {
    SimConfig {
        stack,
        mem_bytes: 64 << 20,
        working_set_bytes: 8 << 20,
        dirty_rate: 5_000,
        max_time_s: 60.0,
        ..SimConfig::default()
    }
}

fn run(cfg: &SimConfig) -> vmig_sim::Report {
    vmig_sim::run(cfg, &Corpus::load(), &mut |_| {}).expect("set-up")
}

#[test]
fn vmig_stack_converges_and_verifies() {
    let r = run(&short(Stack::Vmig));
    assert_eq!(r.status, "completed", "{}", r.info_migrate());
    assert_eq!(r.verification, Verification::Match { pages: 16384 }, "{}", r.info_migrate());
    let c = r.compression.as_ref().expect("compression on by default");
    assert!(r.source.compressed_pages > 0 && c.ratio > 1.0, "{}", r.info_migrate());
    assert!(r.source.zero_pages > 0, "the content mix has zero pages");
    assert!(r.guest_writes > 0, "the guest ran");
}

#[test]
fn legacy_stack_converges_and_verifies() {
    let r = run(&short(Stack::Legacy));
    assert!(r.ok(), "{}", r.info_migrate());
    assert_eq!(r.reaper_policy, "fixed");
    assert!(r.source.compressed_pages > 0, "{}", r.info_migrate());
}

#[test]
fn throttled_guest_converges_on_both_stacks() {
    // A hot set rewritten faster than a 100 Mbit/s link drains it: only
    // auto-converge gets this one to switch over. Big throttle steps keep
    // the test short (QEMU's 20% + 10% steps need ~20 s here).
    for stack in [Stack::Vmig, Stack::Legacy] {
        let cfg = SimConfig {
            working_set_bytes: 32 << 20,
            dirty_rate: 20_000,
            bandwidth: 100_000_000 / 8,
            throttle_initial: 60,
            throttle_increment: 20,
            ..short(stack)
        };
        let r = run(&cfg);
        assert!(r.ok(), "{}", r.info_migrate());
        assert!(r.source.throttle_max_pct >= 20, "{}", r.info_migrate());
    }
}

#[test]
fn uncompressed_busy_raw_path_verifies() {
    // compress-wait-thread off with one thread: some pages go raw because
    // the thread is busy; the stream must still reassemble exactly.
    let cfg = SimConfig { compress_threads: 1, compress_wait: false, ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert!(r.ok(), "{}", r.info_migrate());
    let off = SimConfig { compress_threads: 0, ..short(Stack::Vmig) };
    let r = run(&off);
    assert!(r.ok(), "{}", r.info_migrate());
    assert!(r.compression.is_none() && r.source.compressed_pages == 0);
}

#[test]
fn corrupted_raw_page_fails_verification() {
    let page = 1234;
    let cfg = SimConfig { compress_threads: 0, fault_corrupt_page: Some(page), ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert_eq!(r.status, "failed", "{}", r.info_migrate());
    assert_eq!(r.verification, Verification::Mismatch { first_page: page, pages: 1 });
    assert!(r.status_detail.as_deref().unwrap_or("").contains("first differing page 1234"));
}

#[test]
fn corrupted_compressed_page_fails_the_migration() {
    // A flipped zlib trailer: the destination's decompressor must refuse it
    // (or, if it slipped through, verification must catch it).
    let cfg = SimConfig { fault_corrupt_page: Some(4321), ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert!(!r.ok(), "{}", r.info_migrate());
    assert_eq!(r.status, "failed");
}

#[test]
fn a_run_that_cannot_finish_in_time_is_cancelled() {
    // 64 MiB over 50 Mbit/s needs about 10 s: cut at 1.5 s.
    let cfg = SimConfig { bandwidth: 50_000_000 / 8, max_time_s: 1.5, ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert_eq!(r.status, "cancelled", "{}", r.info_migrate());
    assert!(r.status_detail.as_deref().unwrap_or("").contains("did not converge"));
    assert_eq!(r.verification, Verification::NotRun);
    assert!(r.source.remaining > 0 && r.source.total_ms < 5_000.0, "{}", r.info_migrate());
}

#[test]
fn ring_tracking_converges_and_verifies() {
    let cfg = SimConfig { dirty_tracking: DirtyTracking::Ring, ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert!(r.ok(), "{}", r.info_migrate());
    assert_eq!(r.dirty_tracking, "ring");
    let d = r.source.dirty_scheduler.as_ref().expect("ring mode reports the scheduler");
    assert_eq!(d.from_background, 16384, "the first pass sends every page once");
    assert!(d.marks > 0 && d.handed_out > d.from_background, "{}", r.info_migrate());
    assert!(r.source.find_dirty_ms > 0.0);
}

#[test]
fn ring_tracking_overflow_path_verifies() {
    // A queue of 2 against harvests of up to 2 x 4096 entries: nearly every
    // mark goes to the overflow set, and the destination must still match.
    let cfg = SimConfig { dirty_tracking: DirtyTracking::Ring, dirty_queue: Some(2), ..short(Stack::Vmig) };
    let r = run(&cfg);
    assert!(r.ok(), "{}", r.info_migrate());
    let d = r.source.dirty_scheduler.as_ref().unwrap();
    assert!(d.overflowed > 0 && d.from_overflow > 0, "{}", r.info_migrate());
}

#[test]
fn populated_part_of_a_larger_guest_verifies_in_both_modes() {
    // 512 MiB guest, 32 MiB of content: the rest is never touched.
    for t in [DirtyTracking::Bitmap, DirtyTracking::Ring] {
        let cfg = SimConfig {
            mem_bytes: 512 << 20,
            populated_bytes: Some(32 << 20),
            compress_threads: 0,
            dirty_tracking: t,
            ..short(Stack::Vmig)
        };
        let r = run(&cfg);
        assert!(r.ok(), "{}", r.info_migrate());
        assert!(r.content.zero >= (480 << 20) / 4096, "untouched pages count as zero");
        assert!(r.source.zero_pages >= (480 << 20) / 4096);
    }
}
