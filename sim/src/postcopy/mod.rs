//! `vmig-sim --postcopy MODE`: precopy rounds, the switch, and postcopy with
//! urgent pages over a link model where the bulk stream saturates the link,
//! on `vmig::postcopy` (userfaultfd on the destination). docs/postcopy.md
//! describes the scenario, the three modes and how to read the histograms.

pub mod config;
pub mod dest;
pub mod netlink;
pub mod proto;
pub mod report;
pub mod source;
pub mod vcpu;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{SimConfig, PAGE_SIZE};
use crate::content::Corpus;
use crate::dirty::DirtyLog;
use crate::guest::{Guest, GuestShared, Workload};
use crate::memory::GuestRam;
use crate::report::{Report, Verification};
use crate::source::{Progress, Status};
use crate::stacks;

pub use config::{Access, PostcopyConfig, PostcopyMode};

/// Runs one postcopy migration as `cfg` (with `cfg.postcopy` set) says.
pub fn run(cfg: &SimConfig, corpus: &Corpus, progress: &mut dyn FnMut(&Progress)) -> Result<Report, String> {
    cfg.validate()?;
    let pc = cfg.postcopy.as_ref().ok_or("not a postcopy configuration")?;
    let pages = cfg.nr_pages();
    // Relaxed: read by threads spawned after this store.
    netlink::RT_THREADS.store(pc.rt_threads, Ordering::Relaxed);
    // The bound uses the default-policy round trip (the smaller one here);
    // with --rt-threads the FIFO round trip is reported too.
    let rtt = |rt| netlink::loopback_rtt_us(PAGE_SIZE + 8, 500, rt).map_err(|e| format!("measuring loopback RTT: {e}"));
    let (rtt_us, _) = rtt(false)?;
    let rtt_rt_us = if pc.rt_threads { Some(rtt(true)?.0) } else { None };
    let t_fill = Instant::now();
    let src = Arc::new(GuestRam::new(pages).map_err(|e| format!("mapping source RAM: {e}"))?);
    let dst = GuestRam::new(pages).map_err(|e| format!("mapping destination RAM: {e}"))?;
    let fill = corpus.fill(&src, cfg.mix, cfg.seed);
    let fill_ms = t_fill.elapsed().as_secs_f64() * 1000.0;

    let (log, vcpu_ends) = DirtyLog::new(pages, cfg.vcpus, cfg.dirty_ring_size)?;
    let shared = Arc::new(GuestShared {
        ram: src.clone(),
        log: Arc::new(log),
        throttle: stacks::throttle(cfg)?,
        reaper: stacks::reaper(cfg)?,
        stop_vcpus: AtomicBool::new(false),
        stop_reaper: AtomicBool::new(false),
        writes: AtomicU64::new(0),
        reaper_wakeups: AtomicU64::new(0),
    });
    let ws_pages = cfg.working_set_pages();
    let ws_start = crate::prng::SplitMix64::new(cfg.seed, 0x3753).below(pages - ws_pages + 1);
    let workload = Workload { rate: cfg.dirty_rate, ws_start, ws_pages, seed: cfg.seed };
    let dest_w = vcpu::DestWorkload {
        rate: cfg.dirty_rate,
        ws_start,
        ws_pages,
        seed: cfg.seed,
        access: pc.access,
        vcpus: cfg.vcpus,
        counter_base: 0,
    };
    let wire = netlink::Wire::new(cfg.bandwidth, Duration::from_micros(pc.nic_queue_us));

    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen on loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::scope(|scope| -> Result<Report, String> {
        let main = TcpStream::connect(addr).map_err(|e| format!("connect to destination: {e}"))?;
        let (dmain, _) = listener.accept().map_err(|e| e.to_string())?;
        let (preempt, dpreempt) = if pc.mode.has_preempt_channel() {
            let p = TcpStream::connect(addr).map_err(|e| format!("connect the preempt channel: {e}"))?;
            let (d, _) = listener.accept().map_err(|e| e.to_string())?;
            (Some(p), Some(d))
        } else {
            (None, None)
        };
        let dst_ref = &dst;
        let dest = std::thread::Builder::new()
            .name("destination".into())
            .spawn_scoped(scope, move || {
                dest::serve(dest::DestConns { main: dmain, preempt: dpreempt }, dst_ref, dest_w)
            })
            .map_err(|e| e.to_string())?;
        let guest_start = Instant::now();
        let mut guest = Guest::start(shared.clone(), vcpu_ends, workload).map_err(|e| e.to_string())?;
        let source = source::PcSource { cfg, pc, ram: &src, wire: wire.clone() };
        let (mut status, st, pcs) = source.run(&mut guest, main, preempt, progress);
        let guest_s = guest_start.elapsed().as_secs_f64();
        drop(guest);
        // Relaxed: the vCPU threads have been joined.
        let guest_writes = shared.writes.load(Ordering::Relaxed);
        let out = dest.join().map_err(|_| "destination thread panicked".to_string())?;
        if status == Status::Completed {
            if let Some(e) = &out.error {
                status = Status::Failed(format!("destination: {e}"));
            }
        } else if let (Status::Failed(s), Some(e)) = (&status, &out.error) {
            status = Status::Failed(format!("{s}; destination: {e}"));
        }
        let verification = if status == Status::Completed {
            let v = dest::verify(&src, dst_ref, &out);
            if let Verification::Mismatch { first_page, .. } = v {
                status = Status::Failed(format!(
                    "destination RAM differs from source plus the destination guest's writes, first differing page {first_page}"
                ));
            }
            v
        } else {
            Verification::NotRun
        };
        let page_us = wire.transfer_time(PAGE_SIZE + 8).as_secs_f64() * 1e6;
        let post_s = (out.postcopy_ms / 1000.0).max(1e-9);
        let pr = report::PostcopyReport {
            mode: pc.mode.name().into(),
            access: format!("{:?}", pc.access).to_lowercase(),
            requests: out.counters.requests,
            latency_us: (&out.latency).into(),
            postcopy_ms: out.postcopy_ms,
            switch_ms: pcs.switch_ms,
            precopy_rounds: pc.after,
            postcopy_pages: pcs.postcopy_pages,
            urgent_sent: pcs.urgent_sent,
            background_sent: pcs.background_sent,
            requests_already_sent: pcs.requests_already_sent,
            duplicates_dropped: out.counters.duplicates,
            faults: out.counters.faults,
            bulk_mbps: pcs.bulk_mbps,
            link_mbps: cfg.bandwidth as f64 * 8.0 / 1e6,
            sndbuf_bytes: pc.sndbuf_bytes(),
            nic_queue_us: pc.nic_queue_us,
            loopback_rtt_us: rtt_us,
            loopback_rtt_rt_us: rtt_rt_us,
            rt_threads: pc.rt_threads,
            page_transfer_us: page_us,
            goal_bound_us: 2.0 * (rtt_us + page_us),
            guest_writes_postcopy: out.writes_postcopy,
            guest_progress: out.writes_postcopy as f64 / (cfg.dirty_rate as f64 * f64::from(cfg.vcpus) * post_s),
        };
        let mut r = Report::build(
            cfg,
            status,
            st,
            None,
            None,
            verification,
            &crate::report::GuestCounters::of_sim(&shared),
            guest_writes,
            guest_s,
            &fill,
            fill_ms,
            &corpus.sources,
        );
        r.postcopy = Some(pr);
        Ok(r)
    })
}
