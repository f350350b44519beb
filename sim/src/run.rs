//! One whole simulated migration: build the source guest, start the
//! destination, migrate, verify, report.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::config::SimConfig;
use crate::content::Corpus;
use crate::dirty::DirtyLog;
use crate::engines::{Compressor, Decompressor, GuestThrottle, ReaperCtl};
use crate::guest::{Guest, GuestShared, Workload};
use crate::memory::GuestRam;
use crate::report::{Report, Verification};
use crate::source::{Progress, Source, Status};
use crate::stacks;

/// Runs one migration as `cfg` says. `progress` is called about every
/// 100 ms from the migration thread. Errors are set-up failures (mapping,
/// socket, threads); a migration that fails is a report with that status.
pub fn run(cfg: &SimConfig, corpus: &Corpus, progress: &mut dyn FnMut(&Progress)) -> Result<Report, String> {
    cfg.validate()?;
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    if cfg.guest == crate::config::GuestKind::Kvm {
        if cfg.postcopy.is_some() || cfg.populated_bytes.is_some() {
            return Err("the KVM guest supports neither postcopy nor --populated yet".into());
        }
        return crate::kvm::run::run(cfg, corpus, progress);
    }
    if cfg.postcopy.is_some() {
        return crate::postcopy::run(cfg, corpus, progress);
    }
    run_with_compressor(cfg, corpus, stacks::compressor(cfg)?, progress)
}

/// [`run`] with `comp` as the source's compressor (None: compression off)
/// instead of the one `cfg.stack` builds (tests put a failing engine in).
pub fn run_with_compressor(
    cfg: &SimConfig,
    corpus: &Corpus,
    comp: Option<Box<dyn Compressor>>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, String> {
    cfg.validate()?;
    let pages = cfg.nr_pages();
    let t_fill = Instant::now();
    let src = Arc::new(GuestRam::new(pages).map_err(|e| format!("mapping source RAM: {e}"))?);
    let dst = GuestRam::new(pages).map_err(|e| format!("mapping destination RAM: {e}"))?;
    let fill = corpus.fill_first(&src, cfg.populated_pages(), cfg.mix, cfg.seed);
    let fill_ms = t_fill.elapsed().as_secs_f64() * 1000.0;

    let (mut log, vcpu_ends) = DirtyLog::new(pages, cfg.vcpus, cfg.dirty_ring_size)?;
    // --dirty-tracking ring: the reaper marks into the scheduler, the
    // migration thread takes from it.
    let taker = crate::ring_tracking::attach(cfg, &mut log)?;
    let throttle: Arc<dyn GuestThrottle> = stacks::throttle(cfg)?;
    let reaper: Arc<dyn ReaperCtl> = stacks::reaper(cfg)?;
    let decomp: Box<dyn Decompressor> = stacks::decompressor(cfg)?;

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen on loopback: {e}"))?;
    let (done_tx, done_rx) = mpsc::channel();

    let shared = Arc::new(GuestShared {
        ram: src.clone(),
        log: Arc::new(log),
        throttle,
        reaper,
        stop_vcpus: AtomicBool::new(false),
        stop_reaper: AtomicBool::new(false),
        writes: AtomicU64::new(0),
        reaper_wakeups: AtomicU64::new(0),
    });
    // The working set starts at a seeded page so it is not always the
    // first pages of RAM.
    let ws_pages = cfg.working_set_pages();
    // Inside the populated part of RAM (--populated).
    let ws_start = crate::prng::SplitMix64::new(cfg.seed, 0x3753).below(cfg.populated_pages() - ws_pages + 1);
    let workload = Workload { rate: cfg.dirty_rate, ws_start, ws_pages, seed: cfg.seed };

    let result = std::thread::scope(|scope| -> Result<Report, String> {
        let dst_ref = &dst;
        let (dest, link) = crate::dest::spawn_and_connect(scope, listener, dst_ref, decomp, done_tx, cfg.bandwidth)?;
        let guest_start = Instant::now();
        let mut guest = Guest::start(shared.clone(), vcpu_ends, workload).map_err(|e| e.to_string())?;
        let source = Source::new(cfg, &src, comp, link).with_scheduler(taker);
        let (mut status, st, comp_stats) = source.run(&mut guest, &done_rx, progress);
        let guest_s = guest_start.elapsed().as_secs_f64();
        // Cancelled or failed: the guest would keep running on the source;
        // here it stops so the run can end.
        drop(guest);
        // Relaxed: the vCPU threads have been joined (drop above).
        let guest_writes = shared.writes.load(Ordering::Relaxed);
        dest.join().map_err(|_| "destination thread panicked".to_string())?;
        // The migration thread took the destination's report to end the
        // downtime; a failed run may have left it in the channel.
        let dest_stats = st.dest.clone().or_else(|| done_rx.try_recv().ok().and_then(Result::ok));
        let verification = if status == Status::Completed {
            let v = verify(&src, dst_ref);
            if let Verification::Mismatch { first_page, .. } = v {
                status =
                    Status::Failed(format!("destination RAM differs from source, first differing page {first_page}"));
            }
            v
        } else {
            Verification::NotRun
        };
        Ok(Report::build(
            cfg,
            status,
            st,
            comp_stats,
            dest_stats,
            verification,
            &crate::report::GuestCounters::of_sim(&shared),
            guest_writes,
            guest_s,
            &fill,
            fill_ms,
            &corpus.sources,
        ))
    });
    result
}

/// Compares destination RAM with source RAM page by page.
///
/// Call only after every vCPU and the destination have stopped.
pub fn verify(src: &GuestRam, dst: &GuestRam) -> Verification {
    let mut first = None;
    let mut count = 0u64;
    for p in 0..src.pages() {
        // SAFETY: the caller guarantees no thread writes either RAM now.
        let same = unsafe { src.page_quiescent(p) == dst.page_quiescent(p) };
        if !same {
            count += 1;
            first.get_or_insert(p);
        }
    }
    match first {
        None => Verification::Match { pages: src.pages() },
        Some(first_page) => Verification::Mismatch { first_page, pages: count },
    }
}
