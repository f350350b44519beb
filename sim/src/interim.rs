//! INTERIM: minimal engines used only until vmig::pool, vmig::reaper and
//! vmig::throttle land on main. Deleted at integration.

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::PAGE_SIZE;
use crate::dirty::Reaped;
use crate::engines::{Decompressor, GuestThrottle, ReaperCtl};

pub struct InlineZlib;
impl Decompressor for InlineZlib {
    unsafe fn submit(&mut self, zdata: &[u8], dest: *mut u8) -> Result<(), String> {
        let mut out = vec![0u8; PAGE_SIZE + 1];
        let mut d = flate2::read::ZlibDecoder::new(zdata);
        let mut n = 0;
        loop {
            let k = d.read(&mut out[n..]).map_err(|e| e.to_string())?;
            if k == 0 { break; }
            n += k;
            if n > PAGE_SIZE { return Err("too long".into()); }
        }
        if n != PAGE_SIZE { return Err("short".into()); }
        // SAFETY: interim
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), dest, PAGE_SIZE) };
        Ok(())
    }
    fn wait(&mut self) -> Result<(), String> { Ok(()) }
}

pub struct FixedReaper { iv: u64, m: Mutex<bool>, cv: Condvar }
impl FixedReaper { pub fn new(iv: u64) -> Self { FixedReaper { iv, m: Mutex::new(false), cv: Condvar::new() } } }
impl ReaperCtl for FixedReaper {
    fn update(&self, _r: Reaped) -> u64 { self.iv }
    fn wait(&self) -> bool {
        let mut g = self.m.lock();
        if !*g { self.cv.wait_for(&mut g, Duration::from_micros(self.iv)); }
        let k = *g; *g = false; k
    }
    fn kick(&self) { *self.m.lock() = true; self.cv.notify_all(); }
}

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
