//! The source KVM guest while it migrates: vCPU threads, the reaper thread
//! harvesting the real dirty rings for the vmig (or legacy) reaper
//! controller, and the throttle's kick timer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;
use parking_lot::Mutex;
use vmig::kvm::{DirtyGfn, DirtyRings};

use super::program::{block, get, Layout};
use super::vcpu::{install_kick_handler, kicker_loop, vcpu_loop, ParkEnv, VcpuCtl, VcpuEnv};
use super::vm::{boot_vcpu, VcpuState, Vm};
use crate::bitmap::{AtomicBitmap, PageBitmap};
use crate::dirty::Reaped;
use crate::engines::{GuestThrottle, ReaperCtl};
use crate::memory::GuestRam;
use crate::report::GuestCounters;
use crate::running::RunningGuest;

/// State the reaper thread and the migration thread share.
struct Tracking {
    rings: Arc<DirtyRings>,
    reaper: Arc<dyn ReaperCtl>,
    /// Harvested pages not yet taken by a sync.
    dirty: AtomicBitmap,
    /// Test-only: entries of this page are dropped.
    drop_page: Option<u64>,
    /// Ring mode: the scheduler harvested pages are marked into.
    scheduler: Option<vmig::dirty::DirtyMarker>,
    /// Ring-full exits seen by a sync's harvest, for the reaper's next
    /// update (the controller must see every exit). Relaxed: a counter.
    unreported_full: AtomicU64,
    /// Relaxed: a statistic.
    peak_fill: AtomicU64,
    /// Relaxed: a statistic.
    wakeups: AtomicU64,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Tracking {
    fn harvest(&self) -> Result<vmig::kvm::Harvest, String> {
        // Ring mode: the harvest's pages, marked into the scheduler once the
        // harvest (and its KVM_RESET_DIRTY_RINGS) is done.
        let mut marks = Vec::new();
        let mut sink = |g: DirtyGfn| {
            if Some(g.offset) == self.drop_page || g.offset >= self.dirty.len() {
                return;
            }
            if self.scheduler.is_some() {
                marks.push(g.offset);
                return;
            }
            let (w, bit) = ((g.offset / 64) as usize, 1u64 << (g.offset % 64));
            // R2 (Release): publish the page; pairs with M1 in `sync_into`.
            // The sink runs after KVM_RESET_DIRTY_RINGS (vmig::kvm), so a
            // later guest write to the page is logged again.
            self.dirty.word(w).fetch_or(bit, Ordering::Release);
        };
        let h = self.rings.harvest(&mut sink).map_err(|e| format!("dirty ring harvest: {e}"))?;
        if let Some(m) = &self.scheduler {
            // After the reset: a later guest write to one of these pages is
            // logged (and marked) again. The mark's Q1 (Release) publishes
            // the guest's writes to the migration thread (ring_tracking).
            crate::ring_tracking::deliver(m, &marks);
        }
        // Relaxed: a statistic.
        self.peak_fill.fetch_max(h.max_fill, Ordering::Relaxed);
        Ok(h)
    }

    fn reaper_loop(&self) {
        // Relaxed (both loads): a stop request carries no data (the
        // stopper joins this thread).
        while !self.stop.load(Ordering::Relaxed) {
            self.reaper.wait();
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            match self.harvest() {
                Ok(h) => {
                    // Relaxed: a counter.
                    let full = h.ring_full_exits + self.unreported_full.swap(0, Ordering::Relaxed);
                    self.reaper.update(Reaped { max_fill: h.max_fill, total: h.total, full_events: full });
                }
                Err(e) => {
                    self.error.lock().get_or_insert(e);
                }
            }
            // Relaxed: a statistic.
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How to start a [`KvmGuest`].
#[derive(Clone, Debug)]
pub struct GuestOpts {
    /// Seeds each vCPU's PRNG.
    pub seed: u64,
    /// Test-only: drop every harvested entry of this page.
    pub drop_page: Option<u64>,
    /// Pin vCPU i to host CPU i at nice -20 (benchmarks).
    pub pin: bool,
    /// Guest TSC, kHz (for parking).
    pub tsc_khz: u64,
    /// `--dirty-tracking ring`: harvested pages go to this scheduler
    /// instead of the dirty bitmap (`crate::ring_tracking`).
    pub scheduler: Option<vmig::dirty::DirtyMarker>,
}

/// A running source KVM guest.
pub struct KvmGuest {
    vm: Vm,
    ram: Arc<GuestRam>,
    layout: Layout,
    throttle: Arc<dyn GuestThrottle>,
    track: Arc<Tracking>,
    ctls: Vec<Arc<VcpuCtl>>,
    running: Vec<JoinHandle<VcpuFd>>,
    stopped: Vec<VcpuFd>,
    reaper: Option<JoinHandle<()>>,
    kicker: Option<JoinHandle<()>>,
    stop_kicker: Arc<AtomicBool>,
    started: Instant,
    stopped_at: Option<Instant>,
}

/// The guest's pacing for `rate` records per second, in TSC ticks.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Ticks between records (0: as fast as possible).
    pub period: u64,
    /// Most lag made up: 1 ms. Time a vCPU does not run (throttled,
    /// stalled on a full ring, descheduled) is then not made up, as in the
    /// simulated guest, which moves its schedule by its throttle sleeps
    /// (sim/src/guest.rs): the rate is per second of *running* time, so a
    /// 50% throttle halves the writes. With a 20 ms cap a 10 ms throttle
    /// sleep was fully made up and auto-converge never bit below ~70%
    /// (measured: the default run did not converge, docs/kvm.md).
    pub max_lag: u64,
    /// Burst window: 10 ms, so a paced vCPU parks at most 100 times a
    /// second (each park is one I/O exit of tens of us: well under 1%).
    pub window: u64,
}

/// Converts a write rate (records/s per vCPU; `u64::MAX` = unpaced).
pub fn pacing(tsc_khz: u64, rate: u64) -> Pacing {
    let hz = tsc_khz * 1000;
    let period = if rate == u64::MAX { 0 } else { hz / rate.max(1) };
    Pacing { period, max_lag: hz / 1000, window: hz / 100 }
}

impl KvmGuest {
    /// Boots `layout.vcpus` vCPUs on `vm` (dirty rings enabled, RAM
    /// installed by the caller) and starts them, the reaper and the kicker.
    pub fn start(
        vm: Vm,
        ram: Arc<GuestRam>,
        layout: Layout,
        throttle: Arc<dyn GuestThrottle>,
        reaper: Arc<dyn ReaperCtl>,
        opts: GuestOpts,
    ) -> Result<KvmGuest, String> {
        let GuestOpts { seed, drop_page, pin, tsc_khz, scheduler } = opts;
        install_kick_handler();
        let rings = vm.rings.clone().ok_or("source VM without dirty rings")?;
        let track = Arc::new(Tracking {
            rings: rings.clone(),
            reaper: reaper.clone(),
            dirty: AtomicBitmap::new(ram.pages()),
            drop_page,
            scheduler,
            unreported_full: AtomicU64::new(0),
            peak_fill: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let mut vcpus = Vec::new();
        for i in 0..layout.vcpus {
            let v = vm.create_vcpu(u64::from(i))?;
            let mut prng = crate::prng::SplitMix64::new(seed, 0x5CC0 + u64::from(i));
            boot_vcpu(&v, layout.block_gpa(i), prng.next_u64())?;
            vcpus.push(v);
        }
        let mut g = KvmGuest {
            vm,
            ram,
            layout,
            throttle,
            track,
            ctls: Vec::new(),
            running: Vec::new(),
            stopped: Vec::new(),
            reaper: None,
            kicker: None,
            stop_kicker: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            stopped_at: None,
        };
        let t = g.track.clone();
        g.reaper = Some(std::thread::Builder::new().name("reaper".into()).spawn(move || t.reaper_loop()).map_err(|e| e.to_string())?);
        for (i, v) in vcpus.into_iter().enumerate() {
            let ctl = Arc::new(VcpuCtl::default());
            let env = VcpuEnv {
                id: i as u32,
                ctl: ctl.clone(),
                throttle: g.throttle.clone(),
                rings: Some((rings.clone(), reaper.clone())),
                cpu: pin.then_some(i as u32),
                park: Some(ParkEnv { ram: g.ram.clone(), wake_gpa: g.layout.block_gpa(i as u32) + block::WAKE, tsc_khz }),
            };
            g.ctls.push(ctl);
            g.running.push(
                std::thread::Builder::new()
                    .name(format!("vcpu/{i}"))
                    .spawn(move || vcpu_loop(v, env))
                    .map_err(|e| e.to_string())?,
            );
        }
        let (ctls, th, stop) = (g.ctls.clone(), g.throttle.clone(), g.stop_kicker.clone());
        g.kicker = Some(
            std::thread::Builder::new()
                .name("throttle-kick".into())
                .spawn(move || {
                    kicker_loop(&ctls, &*th, &stop, Duration::from_nanos(vmig::throttle::QEMU_TIMESLICE_NS))
                })
                .map_err(|e| e.to_string())?,
        );
        g.started = Instant::now();
        Ok(g)
    }

    /// Records the guest has written so far, all vCPUs (its progress
    /// counters, read from guest memory).
    pub fn progress(&self) -> u64 {
        (0..self.layout.vcpus).map(|i| get(&self.ram, self.layout.block_gpa(i) + block::PROGRESS)).sum()
    }

    /// The first error a vCPU or the reaper hit, if any.
    pub fn error(&self) -> Option<String> {
        if let Some(e) = self.track.error.lock().clone() {
            return Some(e);
        }
        self.ctls.iter().find_map(|c| c.error.lock().clone())
    }

    /// Dirty-tracking counters for the report.
    pub fn counters(&self) -> GuestCounters {
        GuestCounters {
            ring_full_events: self.track.rings.ring_full_exits(),
            // Relaxed (all): statistics, read after the threads stopped.
            stall_ms: self.ctls.iter().map(|c| c.stall_ns.load(Ordering::Relaxed)).sum::<u64>() as f64 / 1e6,
            peak_fill: self.track.peak_fill.load(Ordering::Relaxed),
            reaper_wakeups: self.track.wakeups.load(Ordering::Relaxed),
        }
    }

    /// Kick exits and all exits per vCPU per second of guest run time.
    pub fn exits(&self) -> (u64, f64) {
        // Relaxed: statistics.
        let kicks: u64 = self.ctls.iter().map(|c| c.kick_exits.load(Ordering::Relaxed)).sum();
        let full: u64 = self.ctls.iter().map(|c| c.full_exits.load(Ordering::Relaxed)).sum::<u64>()
            + self.ctls.iter().map(|c| c.park_exits.load(Ordering::Relaxed)).sum::<u64>();
        let secs = self.stopped_at.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64();
        (kicks, (kicks + full) as f64 / secs.max(1e-9) / f64::from(self.layout.vcpus))
    }

    /// Kicks every vCPU out of `KVM_RUN` once (to measure what an exit
    /// costs the guest: `vmig-kvm-bench kickcost`).
    pub fn kick_vcpus(&self) {
        for c in &self.ctls {
            c.kick();
        }
    }

    /// Nanoseconds all vCPUs spent in throttle sleeps so far.
    pub fn throttle_ns(&self) -> u64 {
        // Relaxed: a statistic.
        self.ctls.iter().map(|c| c.throttle_ns.load(Ordering::Relaxed)).sum()
    }

    /// Seconds the guest ran.
    pub fn run_secs(&self) -> f64 {
        self.stopped_at.unwrap_or_else(Instant::now).duration_since(self.started).as_secs_f64()
    }

    fn stop_vcpus(&mut self) {
        for c in &self.ctls {
            // SeqCst: pairs with the vCPU loop's SeqCst loads (vcpu.rs).
            c.stop.store(true, Ordering::SeqCst);
        }
        for h in std::mem::take(&mut self.running) {
            while !h.is_finished() {
                self.throttle.kick_all();
                self.track.reaper.kick();
                for c in &self.ctls {
                    c.kick();
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            self.stopped.push(h.join().expect("vCPU thread panicked"));
        }
        self.stopped_at.get_or_insert_with(Instant::now);
    }

    fn stop_threads(&mut self) {
        // Relaxed: requests; the joins order the threads' work.
        self.stop_kicker.store(true, Ordering::Relaxed);
        if let Some(h) = self.kicker.take() {
            let _ = h.join();
        }
        self.track.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.reaper.take() {
            while !h.is_finished() {
                self.track.reaper.kick();
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = h.join();
        }
    }
}

impl RunningGuest for KvmGuest {
    fn start_logging(&mut self) -> Result<(), String> {
        self.vm.start_logging()
    }

    fn reap(&mut self) -> Result<(), String> {
        if self.track.scheduler.is_none() {
            return Err("this KVM guest was started without a dirty-page scheduler".into());
        }
        let h = self.track.harvest()?;
        // Relaxed: a counter.
        self.track.unreported_full.fetch_add(h.ring_full_exits, Ordering::Relaxed);
        match self.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_into(&mut self, bmap: &mut PageBitmap) -> Result<u64, String> {
        let h = self.track.harvest()?;
        // Relaxed: a counter.
        self.track.unreported_full.fetch_add(h.ring_full_exits, Ordering::Relaxed);
        if let Some(e) = self.error() {
            return Err(e);
        }
        let mut new = 0;
        for w in 0..self.track.dirty.words() {
            // M1 (Acquire): pairs with R2 in `Tracking::harvest`; the
            // migration thread reads the pages after this.
            let bits = self.track.dirty.word(w).swap(0, Ordering::Acquire);
            if bits != 0 {
                new += bmap.or_word(w, bits);
            }
        }
        Ok(new)
    }

    fn throttle(&self) -> &dyn GuestThrottle {
        &*self.throttle
    }

    fn stop(&mut self) {
        self.stop_vcpus();
        self.stop_threads();
    }

    fn device_state(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for v in &self.stopped {
            VcpuState::save(v)?.put(&mut out);
        }
        Ok(out)
    }
}

impl Drop for KvmGuest {
    fn drop(&mut self) {
        self.track.rings.close();
        self.stop_vcpus();
        self.stop_threads();
    }
}
