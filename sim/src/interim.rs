//! INTERIM: minimal engines used only until vmig::pool, vmig::reaper and
//! vmig::throttle land on main. Deleted at integration.

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::PAGE_SIZE;
use crate::dirty::Reaped;
use crate::engines::{Decompressor, GuestThrottle, ReaperCtl};

pub struct SimpleThrottle { pct: AtomicU32, last: Vec<Mutex<Instant>> }
impl SimpleThrottle { pub fn new(n: u32) -> Self { SimpleThrottle { pct: AtomicU32::new(0), last: (0..n).map(|_| Mutex::new(Instant::now())).collect() } } }
impl GuestThrottle for SimpleThrottle {
    fn set(&self, pct: u32) { self.pct.store(pct, Ordering::Relaxed) }
    fn get(&self) -> u32 { self.pct.load(Ordering::Relaxed) }
    fn vcpu_run(&self, vcpu: u32) {
        let pct = self.get();
        let mut l = self.last[vcpu as usize].lock();
        let ran = l.elapsed();
        if pct > 0 && ran >= Duration::from_millis(10) {
            std::thread::sleep(ran * pct / (100 - pct));
            *l = Instant::now();
        } else if pct == 0 { *l = Instant::now(); }
    }
    fn kick_all(&self) {}
}
