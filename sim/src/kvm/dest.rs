//! The destination KVM guest after the switch-over: fresh vCPUs get the
//! migrated state, run for a while on the received memory, and the guest
//! program's self-check says whether its memory is consistent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::program::{block, get, put, Layout, CONFIG_GPA};
use super::vcpu::{install_kick_handler, vcpu_loop, ParkEnv, VcpuCtl, VcpuEnv};
use super::vm::{VcpuState, Vm};
use crate::memory::GuestRam;
use crate::vmig_engines::VmigThrottle;

/// How the destination guest fared.
#[derive(Debug)]
pub struct DestOutcome {
    /// Time it ran, ms.
    pub run_ms: f64,
    /// Records written on the destination, all vCPUs.
    pub progress: u64,
    /// The self-check: Ok, or what failed.
    pub self_check: Result<(), String>,
}

/// Resumes the guest on `vm` (whose slot is `ram`) from `states`, asks for a
/// self-check, runs it for `run`, then stops it and reads the results.
pub fn resume(
    vm: &Vm,
    ram: &Arc<GuestRam>,
    layout: &Layout,
    states: &[VcpuState],
    run: Duration,
    tsc_khz: u64,
) -> Result<DestOutcome, String> {
    if states.len() != layout.vcpus as usize {
        return Err(format!("stream carried {} vCPU states, the guest has {}", states.len(), layout.vcpus));
    }
    install_kick_handler();
    let progress0: u64 = (0..layout.vcpus).map(|i| get(ram, layout.block_gpa(i) + block::PROGRESS)).sum();
    let epoch = get(ram, CONFIG_GPA) + 1;
    put(ram, CONFIG_GPA, epoch);
    let throttle: Arc<dyn crate::engines::GuestThrottle> = Arc::new(VmigThrottle::new(layout.vcpus)?);
    let mut vcpus = Vec::new();
    for (i, s) in states.iter().enumerate() {
        let v = vm.create_vcpu(i as u64)?;
        s.restore(&v)?;
        vcpus.push(v);
    }
    let ctls: Vec<Arc<VcpuCtl>> = (0..layout.vcpus).map(|_| Arc::new(VcpuCtl::default())).collect();
    let t0 = Instant::now();
    let handles: Vec<_> = vcpus
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let env = VcpuEnv { id: i as u32, ctl: ctls[i].clone(), throttle: throttle.clone(),
                rings: None,
                cpu: None,
                park: Some(ParkEnv { ram: ram.clone(), wake_gpa: layout.block_gpa(i as u32) + block::WAKE, tsc_khz }),
            };
            std::thread::Builder::new().name(format!("dest-vcpu/{i}")).spawn(move || vcpu_loop(v, env))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    // Run at least `run`; then on until every vCPU finished the
    // self-check (its first pass touches every page of its partition, each
    // a first EPT fault on this fresh VM: ~100 us nested), up to a cap.
    std::thread::sleep(run);
    let cap = run.max(Duration::from_secs(1)) * 30;
    while !(0..layout.vcpus).all(|i| get(ram, layout.block_gpa(i) + block::CHECK_DONE) == epoch) && t0.elapsed() < cap {
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in &ctls {
        // SeqCst: pairs with the vCPU loop's SeqCst loads (vcpu.rs).
        c.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for h in handles {
        while !h.is_finished() {
            ctls.iter().for_each(|c| c.kick());
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(h.join().map_err(|_| "destination vCPU thread panicked".to_string())?);
    }
    let run_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if let Some(e) = ctls.iter().find_map(|c| c.error.lock().clone()) {
        return Err(format!("destination: {e}"));
    }
    let progress = (0..layout.vcpus).map(|i| get(ram, layout.block_gpa(i) + block::PROGRESS)).sum::<u64>() - progress0;
    let mut self_check = Ok(());
    for i in 0..layout.vcpus {
        let b = layout.block_gpa(i);
        let (done, bad) = (get(ram, b + block::CHECK_DONE), get(ram, b + block::CHECK_BAD));
        if done != epoch {
            self_check = Err(format!("vCPU {i} did not finish its self-check in {run_ms:.0} ms"));
            break;
        }
        if bad != 0 {
            self_check = Err(format!("vCPU {i}: {bad} pages hold a record older than its version table says"));
            break;
        }
    }
    Ok(DestOutcome { run_ms, progress, self_check })
}
