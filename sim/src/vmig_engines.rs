//! The engine seams implemented by vmig's own engines: `vmig::pool`
//! (compression and decompression), `vmig::reaper` and `vmig::throttle`.

use vmig::pool::{Backend, CompConfig, CompPool, DecompPool, PoolOptions};
use vmig::reaper::{Policy, Reaper, ReaperConfig};
use vmig::throttle::{Throttle, QEMU_TIMESLICE_NS};

use crate::config::{ReaperPolicyKind, PAGE_SIZE};
use crate::dirty::Reaped;
use crate::engines::{Decompressor, EngineCompressor, GuestThrottle, ReaperCtl};

/// `vmig::pool::CompPool` behind the one compressor adapter.
pub type VmigComp = EngineCompressor<CompPool>;

impl EngineCompressor<CompPool> {
    /// A pool of `threads` workers at zlib `level`.
    pub fn new(threads: u32, level: u32) -> Result<Self, String> {
        let cfg = CompConfig { threads, level: level as i32, page_size: PAGE_SIZE as u32, ring_depth: 0 };
        CompPool::new(&cfg).map(|p| EngineCompressor::wrap(p, "vmig compression pool")).map_err(|e| format!("vmig compression pool: {e}"))
    }

    /// [`new`](Self::new) with the deflate backend named `backend`
    /// (`Backend::name`, or "default").
    pub fn with_backend(threads: u32, level: u32, backend: &str) -> Result<Self, String> {
        let backend = match backend {
            "default" => None,
            name => Some(Backend::from_name(name).ok_or_else(|| format!("unknown deflate backend {name:?}"))?),
        };
        let cfg = CompConfig { threads, level: level as i32, page_size: PAGE_SIZE as u32, ring_depth: 0 };
        CompPool::with_options(&cfg, &PoolOptions { backend, ..Default::default() })
            .map(|p| EngineCompressor::wrap(p, "vmig compression pool"))
            .map_err(|e| format!("vmig compression pool: {e}"))
    }
}

/// `vmig::pool::DecompPool`.
pub struct VmigDecomp(DecompPool);

impl VmigDecomp {
    /// A pool of `threads` workers.
    pub fn new(threads: u32) -> Result<Self, String> {
        DecompPool::new(threads, PAGE_SIZE as u32).map(VmigDecomp).map_err(|e| format!("vmig decompression pool: {e}"))
    }
}

impl Decompressor for VmigDecomp {
    unsafe fn submit(&mut self, zdata: &[u8], dest: *mut u8) -> Result<(), String> {
        // SAFETY: forwarded: `dest` is a page nobody else touches until the
        // next `wait`.
        unsafe { self.0.submit(zdata, dest) }.map_err(|e| e.to_string())
    }

    fn wait(&mut self) -> Result<(), String> {
        self.0.wait().map_err(|e| e.to_string())
    }
}

/// `vmig::reaper::Reaper`.
pub struct VmigReaper(Reaper);

impl VmigReaper {
    /// A reaper for rings of `ring_size` entries running `policy`.
    pub fn new(policy: ReaperPolicyKind, ring_size: u32) -> Result<Self, String> {
        let mut cfg = match policy {
            ReaperPolicyKind::Default => ReaperConfig::default(),
            ReaperPolicyKind::Fixed => ReaperConfig::with_policy(Policy::Fixed),
            ReaperPolicyKind::Levels => ReaperConfig::with_policy(Policy::Levels),
            ReaperPolicyKind::Aimd => ReaperConfig::with_policy(Policy::Aimd),
            ReaperPolicyKind::Predictive => ReaperConfig::with_policy(Policy::Predictive),
        };
        cfg.ring_size = ring_size;
        Reaper::new(&cfg).map(VmigReaper).map_err(|e| format!("vmig reaper: {e}"))
    }
}

impl ReaperCtl for VmigReaper {
    fn update(&self, r: Reaped) -> u64 {
        self.0.update(r.max_fill, r.total, r.full_events)
    }
    fn wait(&self) -> bool {
        self.0.wait()
    }
    fn kick(&self) {
        self.0.kick()
    }
}

/// `vmig::throttle::Throttle`: a closed-loop account per vCPU.
pub struct VmigThrottle {
    t: Throttle,
    vcpus: u32,
}

impl VmigThrottle {
    /// A throttle for `vcpus` vCPUs with QEMU's 10 ms timeslice.
    pub fn new(vcpus: u32) -> Result<Self, String> {
        Self::with_timeslice(vcpus, QEMU_TIMESLICE_NS)
    }

    /// A throttle for `vcpus` vCPUs running `timeslice_ns` between sleeps
    /// (`vmig-kvm-bench throttle --timeslice-ms`).
    pub fn with_timeslice(vcpus: u32, timeslice_ns: u64) -> Result<Self, String> {
        Throttle::new(vcpus, timeslice_ns)
            .map(|t| VmigThrottle { t, vcpus })
            .map_err(|e| format!("vmig throttle: {e}"))
    }
}

impl GuestThrottle for VmigThrottle {
    fn set(&self, pct: u32) {
        // The migration thread only sets 0 or values clamped to 1..=99.
        self.t.set(pct).expect("throttle percentage in 0..=99");
    }
    fn get(&self) -> u32 {
        self.t.get()
    }
    fn vcpu_run(&self, vcpu: u32) {
        // Only fails for an out-of-range vCPU index, which run() never uses.
        let _ = self.t.vcpu_run(vcpu);
    }
    fn kick_all(&self) {
        for v in 0..self.vcpus {
            let _ = self.t.kick(v);
        }
    }
    fn per_vcpu_due(&self) -> bool {
        true
    }
    fn vcpu_due_ns(&self, vcpu: u32) -> Option<u64> {
        // Only fails for an out-of-range vCPU index, which run() never uses.
        self.t.vcpu_due_ns(vcpu).ok().flatten()
    }
}
