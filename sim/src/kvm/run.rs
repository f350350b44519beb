//! One whole migration of a KVM guest: build both VMs, boot the source,
//! migrate with the same migration thread as the simulated guest, verify
//! byte for byte, then resume the destination and run its self-check.

use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::dest::resume;
use super::guest::{pacing, GuestOpts, KvmGuest};
use super::program::Layout;
use super::vm::{VcpuState, Vm};
use crate::config::SimConfig;
use crate::content::Corpus;
use crate::engines::{GuestThrottle, ReaperCtl};
use crate::memory::GuestRam;
use crate::report::{GuestReport, Report, Verification};
use crate::running::RunningGuest;
use crate::source::{Progress, Source, Status};
use crate::stacks;

/// Runs one migration of a KVM guest as `cfg` says (see [`crate::run`]).
pub fn run(cfg: &SimConfig, corpus: &Corpus, progress: &mut dyn FnMut(&Progress)) -> Result<Report, String> {
    cfg.validate()?;
    let pages = cfg.nr_pages();
    let layout = Layout::new(cfg.vcpus, pages, cfg.working_set_pages(), cfg.seed)?;
    let t_fill = Instant::now();
    let src = Arc::new(GuestRam::new(pages).map_err(|e| format!("mapping source RAM: {e}"))?);
    let dst = Arc::new(GuestRam::new(pages).map_err(|e| format!("mapping destination RAM: {e}"))?);
    let fill = corpus.fill(&src, cfg.mix, cfg.seed);
    let fill_ms = t_fill.elapsed().as_secs_f64() * 1000.0;

    let src_vm = Vm::new(&cfg.kvm_device, &src, Some(cfg.dirty_ring_size))?;
    let dst_vm = Vm::new(&cfg.kvm_device, &dst, None)?;
    let tsc_khz = super::vm::tsc_khz(&cfg.kvm_device)?;
    let p = pacing(tsc_khz, cfg.dirty_rate);
    layout.install(&src, p.period, p.max_lag, p.window);

    let throttle: Arc<dyn GuestThrottle> = stacks::throttle(cfg)?;
    let reaper: Arc<dyn ReaperCtl> = stacks::reaper(cfg)?;
    let comp = stacks::compressor(cfg)?;
    let decomp = stacks::decompressor(cfg)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen on loopback: {e}"))?;
    let (done_tx, done_rx) = mpsc::channel();

    std::thread::scope(|scope| -> Result<Report, String> {
        let dst_ref: &GuestRam = &dst;
        let (dest, link) = crate::dest::spawn_and_connect(scope, listener, dst_ref, decomp, done_tx, cfg.bandwidth)?;
        let (scheduler, taker) = crate::ring_tracking::scheduler_for(cfg)?.unzip();
        let opts = GuestOpts { seed: cfg.seed, drop_page: cfg.fault_unharvested_page, pin: false, tsc_khz, scheduler };
        let mut guest = KvmGuest::start(src_vm, src.clone(), layout.clone(), throttle, reaper, opts)?;
        let source = Source::new(cfg, &src, comp, link).with_scheduler(taker);
        let (mut status, st, comp_stats) = source.run(&mut guest, &done_rx, progress);
        guest.stop();
        if let (Status::Completed, Some(e)) = (&status, guest.error()) {
            status = Status::Failed(e);
        }
        let guest_s = guest.run_secs();
        let guest_writes = guest.progress();
        let counters = guest.counters();
        let (kick_exits, exit_rate) = guest.exits();
        drop(guest);
        dest.join().map_err(|_| "destination thread panicked".to_string())?;
        // The migration thread took the destination's report to end the
        // downtime; a failed run may have left it in the channel.
        let dest_stats = st.dest.clone().or_else(|| done_rx.try_recv().ok().and_then(Result::ok));
        let verification = if status == Status::Completed {
            let v = crate::run::verify(&src, dst_ref);
            if let Verification::Mismatch { first_page, .. } = v {
                status =
                    Status::Failed(format!("destination RAM differs from source, first differing page {first_page}"));
            }
            v
        } else {
            Verification::NotRun
        };
        let mut g = GuestReport { kind: "kvm", kick_exits, exit_rate, ..GuestReport::sim(cfg.vcpus) };
        if status == Status::Completed {
            let states = dest_stats
                .as_ref()
                .map(|d| VcpuState::parse_all(&d.device_state))
                .unwrap_or_else(|| Err("no destination stats".into()))?;
            let out = resume(&dst_vm, &dst, &layout, &states, Duration::from_millis(cfg.dest_run_ms), tsc_khz)?;
            g.dest_run_ms = out.run_ms;
            g.dest_progress = out.progress;
            match out.self_check {
                Ok(()) => g.self_check = "pass".into(),
                Err(e) => {
                    g.self_check = "fail".into();
                    g.self_check_detail = Some(e);
                }
            }
            if out.progress == 0 {
                status = Status::Failed("the destination guest made no progress".into());
            }
        }
        let mut r = Report::build(
            cfg,
            status,
            st,
            comp_stats,
            dest_stats,
            verification,
            &counters,
            guest_writes,
            guest_s,
            &fill,
            fill_ms,
            &corpus.sources,
        );
        r.guest = g;
        Ok(r)
    })
}
