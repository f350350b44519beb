//! `page-deflate-rate`: the raw single-core rate of a deflate backend on
//! the pages of a guest RAM image, for qemu-patches/bench-comp.py.
//!
//! ```text
//! cargo run --release -p vmig-sim --bin page-deflate-rate -- RAM_FILE [LEVEL]
//! ```
//!
//! Reads RAM_FILE (the guest's memory-backend-file, the guest paused) in
//! 4 KiB pages, skips the all-zero ones (QEMU sends those as a flag, not
//! compressed) and compresses every other page once per backend with
//! [`PageCompressor`], the very code a pool worker runs, on this thread:
//! zlib-rs (libvmig's default, what patched QEMU's pool runs) and the
//! system zlib (what stock QEMU's threads run). Prints one JSON object:
//! page counts and, per backend, pages per second of wall time and of
//! this thread's CPU time (the rate of a core the thread has to itself,
//! which is what "the raw single-core rate" means on a loaded machine)
//! and compressed bytes.

use std::process::ExitCode;
use std::time::Instant;

use vmig::pool::{compress_bound, Backend, PageCompressor};

const PAGE: usize = 4096;

/// This thread's CPU time in seconds (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer for clock_gettime.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is always available on Linux");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn rate(backend: Backend, level: i32, pages: &[&[u8]]) -> Result<serde_json::Value, String> {
    let mut c = PageCompressor::new(backend, level).map_err(|e| format!("{}: {e}", backend.name()))?;
    let mut out = Vec::with_capacity(compress_bound(PAGE as u32));
    let mut bytes = 0u64;
    let (t0, c0) = (Instant::now(), thread_cpu_secs());
    for p in pages {
        c.compress(p, &mut out).map_err(|e| format!("{}: {e}", backend.name()))?;
        bytes += out.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - c0;
    Ok(serde_json::json!({
        "pages_per_s": pages.len() as f64 / secs,
        "pages_per_cpu_s": pages.len() as f64 / cpu,
        "us_per_page": secs * 1e6 / pages.len() as f64,
        "cpu_us_per_page": cpu * 1e6 / pages.len() as f64,
        "bytes": bytes,
        "ratio": (pages.len() * PAGE) as f64 / bytes as f64,
    }))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, level) = match args.as_slice() {
        [p] => (p.clone(), 1),
        [p, l] => (p.clone(), l.parse::<i32>().map_err(|_| format!("LEVEL: not a number: {l}"))?),
        _ => return Err("usage: page-deflate-rate RAM_FILE [LEVEL]".into()),
    };
    let ram = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let all: Vec<&[u8]> = ram.chunks_exact(PAGE).collect();
    let pages: Vec<&[u8]> = all.iter().copied().filter(|p| p.iter().any(|&b| b != 0)).collect();
    if pages.is_empty() {
        return Err(format!("{path}: no non-zero page"));
    }
    let zlib_rs = rate(Backend::ZlibRs, level, &pages)?;
    let zlib = rate(Backend::Zlib, level, &pages)?;
    let out = serde_json::json!({
        "pages": all.len(),
        "zero_pages": all.len() - pages.len(),
        "level": level,
        "zlib-rs": zlib_rs,
        "zlib": zlib,
    });
    println!("{out}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("page-deflate-rate: {e}");
            ExitCode::from(2)
        }
    }
}
