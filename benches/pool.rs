//! Compression pool benchmark: raw single-thread zlib, the vmig pool and a
//! replica of QEMU 7.2's legacy compression threads, on the same pages, in
//! one run, printing ratios.
//!
//!     cargo bench --bench pool
//!
//! Environment: VMIG_BENCH_PAGES (corpus size, default 8192 4-KiB pages),
//! VMIG_BENCH_PASSES (default 3), VMIG_BENCH_LEVEL (default 1),
//! VMIG_BENCH_THREADS (default 1,2,4,8), VMIG_BENCH_DEPTHS (ring depths
//! for an extra 2-worker sweep, e.g. 2,4,8; default none),
//! VMIG_BENCH_SPINS (spin budgets in ns for an extra 1- and 2-worker
//! sweep, e.g. 0,2000,5000,20000,50000; default none),
//! VMIG_BENCH_ROUNDS (interleaved rounds, median reported; default 5).
//!
//! `cpu/raw` is the CPU time of every thread per page over the raw
//! compressor's own CPU per page in the same round (median of the
//! per-round ratios): what a page costs the host beyond its compression.
//!
//! Corpus (stated in the output): 4-KiB pages cut from real files on this
//! machine, shuffled with a fixed seed: 40% code (ELF files from /usr/bin and
//! /usr/lib), 35% text (/usr/include, /usr/share/doc), 15% zero pages, 10%
//! random bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use vmig::pool::{compress_bound, Backend, CompConfig, CompPool, PageCompressor, PageDecompressor, PoolOptions};
use vmig_legacy::{CompressEngine, LegacyComp, SplitMix64};

const PAGE: usize = 4096;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &[u32]) -> Vec<u32> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        _ => default.to_vec(),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: u32, pred: &dyn Fn(&Path) -> bool) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        if md.is_dir() && depth > 0 {
            walk(&p, out, depth - 1, pred);
        } else if md.is_file() && md.len() >= PAGE as u64 && pred(&p) {
            out.push(p);
        }
    }
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok() && magic == *b"\x7fELF"
}

fn is_text(p: &Path) -> bool {
    let name = p.to_string_lossy();
    !(name.ends_with(".gz") || name.ends_with(".xz") || name.ends_with(".bz2") || name.ends_with(".zst"))
}

/// Cuts `want` pages from `files`, spreading over as many files as possible.
fn pages_from(files: &[PathBuf], want: usize, out: &mut Vec<Vec<u8>>) -> usize {
    let mut got = 0;
    let per_file = 8;
    for f in files {
        if got >= want {
            break;
        }
        let Ok(data) = std::fs::read(f) else { continue };
        for chunk in data.chunks_exact(PAGE).take(per_file) {
            if got >= want {
                break;
            }
            if chunk.iter().all(|&b| b == 0) {
                continue; // zero pages are counted separately
            }
            out.push(chunk.to_vec());
            got += 1;
        }
    }
    got
}

fn corpus(n: usize) -> (Vec<Vec<u8>>, String) {
    let mut code_files = Vec::new();
    for d in ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"] {
        walk(Path::new(d), &mut code_files, 1, &is_elf);
    }
    let mut text_files = Vec::new();
    walk(Path::new("/usr/include"), &mut text_files, 3, &is_text);
    walk(Path::new("/usr/share/doc"), &mut text_files, 2, &is_text);
    let (n_code, n_text, n_zero) = (n * 40 / 100, n * 35 / 100, n * 15 / 100);
    let mut pages = Vec::with_capacity(n);
    let code = pages_from(&code_files, n_code, &mut pages);
    let text = pages_from(&text_files, n_text, &mut pages);
    let zero = n_zero;
    pages.extend((0..zero).map(|_| vec![0u8; PAGE]));
    let mut rng = SplitMix64::new(0x2545_f491_4f6c_dd1d, 0);
    let random = n - pages.len();
    pages.extend((0..random).map(|_| {
        let mut p = vec![0u8; PAGE];
        rng.fill(&mut p);
        p
    }));
    for i in (1..pages.len()).rev() {
        pages.swap(i, rng.below_usize(i + 1));
    }
    let desc = format!(
        "{} pages: {code} code (ELF from {} files), {text} text (from {} files), {zero} zero, {random} random",
        pages.len(),
        code_files.len(),
        text_files.len()
    );
    (pages, desc)
}

fn rusage(who: i32) -> libc::rusage {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    unsafe { libc::getrusage(who, &mut ru) };
    ru
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

struct Probe {
    t0: Instant,
    thread: libc::rusage,
    proc_: libc::rusage,
}

impl Probe {
    fn start() -> Probe {
        Probe { t0: Instant::now(), thread: rusage(libc::RUSAGE_THREAD), proc_: rusage(libc::RUSAGE_SELF) }
    }
    fn stop(&self, pages: u64) -> Sample {
        let wall = self.t0.elapsed();
        let th = rusage(libc::RUSAGE_THREAD);
        let pr = rusage(libc::RUSAGE_SELF);
        let cpu = (tv(th.ru_utime) + tv(th.ru_stime)) - (tv(self.thread.ru_utime) + tv(self.thread.ru_stime));
        let all = (tv(pr.ru_utime) + tv(pr.ru_stime)) - (tv(self.proc_.ru_utime) + tv(self.proc_.ru_stime));
        let vol = pr.ru_nvcsw - self.proc_.ru_nvcsw;
        let csw = vol + pr.ru_nivcsw - self.proc_.ru_nivcsw;
        Sample {
            pps: pages as f64 / wall.as_secs_f64(),
            main_cpu_us: cpu.as_secs_f64() * 1e6 / pages as f64,
            all_cpu_us: all.as_secs_f64() * 1e6 / pages as f64,
            csw: csw as f64 / pages as f64,
            vol: vol as f64 / pages as f64,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    pps: f64,
    main_cpu_us: f64,
    /// CPU time of all threads per page: unlike pages/s, barely moved by
    /// other load on the machine.
    all_cpu_us: f64,
    /// Voluntary + involuntary, all threads.
    csw: f64,
    /// Voluntary only (sleeps); the rest is preemption.
    vol: f64,
}

struct Row {
    name: String,
    s: Sample,
    /// Total CPU per page over raw's in the same round.
    cpu_vs_raw: f64,
    spread: f64,
    wakeups: f64,
    ratio: f64,
}

fn run_raw(pages: &[Vec<u8>], passes: usize, level: u32) -> Row {
    let mut z = Compress::new(Compression::new(level), true);
    let mut stored = Compress::new(Compression::new(0), true);
    let mut out = Vec::with_capacity(vmig::pool::compress_bound(PAGE as u32));
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let probe = Probe::start();
    for _ in 0..passes {
        for p in pages {
            if p.iter().all(|&b| b == 0) {
                continue;
            }
            out.clear();
            z.reset();
            if !matches!(z.compress_vec(p, &mut out, FlushCompress::Finish), Ok(flate2::Status::StreamEnd)) {
                out.clear();
                stored.reset();
                stored.compress_vec(p, &mut out, FlushCompress::Finish).unwrap();
            }
            bytes_in += PAGE as u64;
            bytes_out += out.len() as u64;
        }
    }
    let s = probe.stop((pages.len() * passes) as u64);
    Row { name: "raw 1-thread zlib".into(), s, cpu_vs_raw: 1.0, spread: 0.0, wakeups: 0.0, ratio: bytes_out as f64 / bytes_in as f64 }
}

/// The key of page `i`, as QEMU passes it: `block->offset + offset`, page
/// aligned (one RAM block at offset 0), so the pool's key hash sees the low
/// 12 bits zero as it does in QEMU.
fn qemu_key(i: usize) -> u64 {
    (i * PAGE) as u64
}

/// Drives one engine the way QEMU's migration thread drives its
/// compression threads (`compress-wait-thread=on`): submit each page,
/// waiting when every worker is busy, collect what is ready after each
/// submission, flush at the end. vmig's pool refuses a submission only
/// while `max_pending` results are uncollected: collecting one frees it.
fn run_engine<E: CompressEngine>(name: String, mut pool: E, pages: &[Vec<u8>], passes: usize) -> Row {
    let total = (pages.len() * passes) as u64;
    let mut got = 0u64;
    let probe = Probe::start();
    for _ in 0..passes {
        for (i, p) in pages.iter().enumerate() {
            // SAFETY: `pages` outlives the engine.
            while let Err(e) = unsafe { pool.submit(p.as_ptr(), qemu_key(i), i, true) } {
                assert_eq!(e, vmig::Error::Busy, "{name}: submit failed");
                let r = pool.wait_result().expect("refused with nothing in flight");
                got += 1;
                pool.release(r);
            }
            while let Some(r) = pool.poll() {
                got += 1;
                pool.release(r);
            }
        }
    }
    pool.flush().unwrap();
    while let Some(r) = pool.poll() {
        got += 1;
        pool.release(r);
    }
    let s = probe.stop(total);
    assert_eq!(got, total);
    let st = pool.stats();
    Row { name, s, cpu_vs_raw: 0.0, spread: st.worker_spread(), wakeups: st.wakeups as f64 / total as f64, ratio: st.ratio() }
}

/// One vmig pool run; `depth` 0 and `spin` None are the defaults.
fn run_vmig(pages: &[Vec<u8>], passes: usize, level: i32, threads: u32, depth: u32, spin: Option<u32>) -> Row {
    let cfg = CompConfig { threads, level, page_size: PAGE as u32, ring_depth: depth };
    let mut opts = PoolOptions::default();
    let mut name = format!("vmig pool {threads}w");
    if depth != 0 {
        name += &format!(" depth {depth}");
    }
    if let Some(ns) = spin {
        opts.spin_ns = ns;
        name += &format!(" spin {}us", f64::from(ns) / 1000.0);
    }
    let pool = CompPool::with_options(&cfg, &opts).unwrap();
    run_engine(name, pool, pages, passes)
}

fn run_legacy(pages: &[Vec<u8>], passes: usize, level: i32, threads: u32) -> Row {
    let pool = LegacyComp::new(threads, level, PAGE as u32).unwrap();
    run_engine(format!("legacy QEMU 7.2 {threads}w"), pool, pages, passes)
}

fn print_row(r: &Row, raw: f64, legacy: Option<&Row>) {
    let (vs_legacy, csw_gain) = match legacy {
        Some(l) => (format!("{:6.2}x", r.s.pps / l.s.pps), format!("{:7.1}x", l.s.csw / r.s.csw.max(1e-9))),
        None => ("      -".into(), "       -".into()),
    };
    println!(
        "{:<30} {:>10.0} {:>7.2}x {} {:>9.2} {:>8.2} {:>6.2}x {:>9.3} {:>7.3} {} {:>7.1}% {:>8.3} {:>6.3}",
        r.name,
        r.s.pps,
        r.s.pps / raw,
        vs_legacy,
        r.s.main_cpu_us,
        r.s.all_cpu_us,
        r.cpu_vs_raw,
        r.s.csw,
        r.s.vol,
        csw_gain,
        r.spread * 100.0,
        r.wakeups,
        r.ratio
    );
}

/// Single-thread rates of every backend built (`--features
/// libdeflate,system-zlib` for all), on the same pages, rounds
/// interleaved, medians: compression, inflation with the same backend, and
/// zlib-rs's per-page reset alone (its 128 KiB hash-head memset).
fn backends_table(pages: &[Vec<u8>], level: i32, rounds: usize) {
    let nonzero: Vec<&Vec<u8>> = pages.iter().filter(|p| p.iter().any(|&b| b != 0)).collect();
    let built: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.compiled_in()).collect();
    let mut comp: Vec<Vec<f64>> = vec![Vec::new(); built.len()];
    let mut infl: Vec<Vec<f64>> = vec![Vec::new(); built.len()];
    let mut ratio = vec![0.0; built.len()];
    let mut reset = Vec::new();
    for _ in 0..rounds {
        for (i, &b) in built.iter().enumerate() {
            let mut c = PageCompressor::new(b, level).unwrap();
            let mut streams: Vec<Vec<u8>> = nonzero.iter().map(|_| Vec::with_capacity(compress_bound(PAGE as u32))).collect();
            let t = Instant::now();
            for (p, out) in nonzero.iter().zip(streams.iter_mut()) {
                c.compress(p, out).unwrap();
            }
            comp[i].push(nonzero.len() as f64 / t.elapsed().as_secs_f64());
            ratio[i] = streams.iter().map(|s| s.len()).sum::<usize>() as f64 / (nonzero.len() * PAGE) as f64;
            let mut d = PageDecompressor::new(b).unwrap();
            let mut page = vec![0u8; PAGE];
            let t = Instant::now();
            for z in &streams {
                assert!(d.inflate(z, &mut page));
            }
            infl[i].push(streams.len() as f64 / t.elapsed().as_secs_f64());
        }
        let mut z = Compress::new(Compression::new(level as u32), true);
        let t = Instant::now();
        for _ in 0..nonzero.len() {
            z.reset();
        }
        reset.push(t.elapsed().as_secs_f64() * 1e6 / nonzero.len() as f64);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base_c = med(comp[0].clone());
    let base_i = med(infl[0].clone());
    println!("backend (single thread, {} non-zero pages, level {level})  deflate p/s  vs zlib-rs  inflate p/s  vs zlib-rs  ratio", nonzero.len());
    for (i, b) in built.iter().enumerate() {
        let (c, d) = (med(comp[i].clone()), med(infl[i].clone()));
        println!("{:<50} {:>11.0} {:>9.2}x {:>12.0} {:>9.2}x  {:.3}", b.name(), c, c / base_c, d, d / base_i, ratio[i]);
    }
    let r = med(reset);
    println!("zlib-rs deflateReset alone: {r:.2} us/page = {:.0}% of its {:.2} us/page", r * base_c / 1e4, 1e6 / base_c);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list.
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not and
    // gets a smoke run that only checks every model completes.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = env_num("VMIG_BENCH_PAGES", if smoke { 256 } else { 8192 });
    let passes = env_num("VMIG_BENCH_PASSES", if smoke { 1 } else { 3 });
    let level = env_num("VMIG_BENCH_LEVEL", 1) as i32;
    let threads = env_list("VMIG_BENCH_THREADS", &[1, 2, 4, 8]);
    let depths = env_list("VMIG_BENCH_DEPTHS", &[]);
    let (pages, desc) = corpus(n);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("corpus: {desc}; level {level}; {passes} passes; {} CPUs; loadavg {}", num_cpus(), load.trim());
    println!(
        "{:<30} {:>10} {:>8} {:>7} {:>9} {:>8} {:>7} {:>9} {:>7} {:>8} {:>8} {:>8} {:>6}",
        "model", "pages/s", "vs raw", "vs leg", "main us/p", "cpu us/p", "cpu/raw", "csw/page", "vol/p", "csw gain", "spread", "wake/p", "ratio"
    );
    // Rounds interleave every model, so a burst of load on the shared
    // machine hits all of them; each model reports its median round.
    let rounds = env_num("VMIG_BENCH_ROUNDS", if smoke { 1 } else { 5 });
    let spins = env_list("VMIG_BENCH_SPINS", &[]);
    let mut raw_s = Vec::new();
    let mut leg_s: Vec<Vec<Row>> = threads.iter().map(|_| Vec::new()).collect();
    let mut vm_s: Vec<Vec<Row>> = threads.iter().map(|_| Vec::new()).collect();
    let mut dep_s: Vec<Vec<Row>> = depths.iter().map(|_| Vec::new()).collect();
    let spin_threads: Vec<u32> = [1, 2].into_iter().filter(|t| threads.contains(t)).collect();
    let mut spin_s: Vec<Vec<Row>> = (0..spins.len() * spin_threads.len()).map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        let raw = run_raw(&pages, passes, level as u32);
        let per_round = |mut r: Row| {
            r.cpu_vs_raw = r.s.all_cpu_us / raw.s.all_cpu_us;
            r
        };
        for (i, &t) in threads.iter().enumerate() {
            leg_s[i].push(per_round(run_legacy(&pages, passes, level, t)));
            vm_s[i].push(per_round(run_vmig(&pages, passes, level, t, 0, None)));
        }
        for (i, &d) in depths.iter().enumerate() {
            dep_s[i].push(per_round(run_vmig(&pages, passes, level, 2, d, None)));
        }
        for (i, &ns) in spins.iter().enumerate() {
            for (j, &t) in spin_threads.iter().enumerate() {
                spin_s[i * spin_threads.len() + j].push(per_round(run_vmig(&pages, passes, level, t, 0, Some(ns))));
            }
        }
        raw_s.push(raw);
    }
    let raw = median(raw_s);
    let legacy_rows: Vec<Row> = leg_s.into_iter().map(median).collect();
    let vmig_rows: Vec<Row> = vm_s.into_iter().map(median).collect();
    print_row(&raw, raw.s.pps, None);
    for (l, v) in legacy_rows.iter().zip(&vmig_rows) {
        print_row(v, raw.s.pps, Some(l));
    }
    for l in &legacy_rows {
        print_row(l, raw.s.pps, None);
    }
    let legacy_of = |t: u32| legacy_rows.iter().zip(&threads).find(|(_, &x)| x == t).map(|(l, _)| l);
    for rows in dep_s {
        print_row(&median(rows), raw.s.pps, legacy_of(2));
    }
    for (k, rows) in spin_s.into_iter().enumerate() {
        print_row(&median(rows), raw.s.pps, legacy_of(spin_threads[k % spin_threads.len()]));
    }
    println!(
        "(median of {rounds} interleaved rounds; cpu/raw: median of per-round ratios; loadavg after: {})",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    backends_table(&pages, level, rounds);
    if smoke {
        println!("(smoke run under cargo test: goals not evaluated; run `cargo bench --bench pool`)");
        return;
    }
    // Goals (2-core machine): see docs/pool.md.
    fn find<'a>(rows: &'a [Row], threads: &[u32], t: u32) -> Option<&'a Row> {
        threads.iter().position(|&x| x == t).map(|i| &rows[i])
    }
    if let Some(v1) = find(&vmig_rows, &threads, 1) {
        let r = v1.s.pps / raw.s.pps;
        println!("goal 1 worker >= 0.95x raw: {r:.2}x {}", if r >= 0.95 { "MET" } else { "NOT MET" });
        // Load-robust proxy: with a core per thread, 1 worker's rate is raw's
        // times raw CPU/page over the worker's share of the pool's CPU/page.
        let c = raw.s.all_cpu_us / (v1.s.all_cpu_us - v1.s.main_cpu_us).max(1e-9);
        println!("  (CPU proxy: raw CPU/page over the worker's CPU/page = {c:.2}x)");
    }
    if let (Some(v2), Some(l2)) = (find(&vmig_rows, &threads, 2), find(&legacy_rows, &threads, 2)) {
        let r = v2.s.pps / l2.s.pps;
        let c = l2.s.csw / v2.s.csw.max(1e-9);
        println!("goal 2 workers >= 1.5x legacy pages/s: {r:.2}x {}", if r >= 1.5 { "MET" } else { "NOT MET" });
        println!("goal 2 workers >= 10x fewer csw/page than legacy: {c:.1}x {}", if c >= 10.0 { "MET" } else { "NOT MET" });
    }
    let worst_cpu = vmig_rows.iter().map(|r| r.cpu_vs_raw).fold(0.0, f64::max);
    println!(
        "goal CPU per page <= 1.15x raw's at every worker count: worst {worst_cpu:.2}x {}",
        if worst_cpu <= 1.15 { "MET" } else { "NOT MET" }
    );
    let worst = vmig_rows.iter().map(|r| r.spread).fold(0.0, f64::max);
    println!("goal pages per worker within 10%: worst {:.1}% {}", worst * 100.0, if worst <= 0.10 { "MET" } else { "NOT MET" });
}

/// The round with the median pages/s (its other columns come with it),
/// except `cpu/raw`: the median of the per-round ratios.
fn median(mut rows: Vec<Row>) -> Row {
    let mut cpu: Vec<f64> = rows.iter().map(|r| r.cpu_vs_raw).collect();
    cpu.sort_by(f64::total_cmp);
    rows.sort_by(|a, b| a.s.pps.total_cmp(&b.s.pps));
    let mid = rows.len() / 2;
    let mut r = rows.swap_remove(mid);
    r.cpu_vs_raw = cpu[cpu.len() / 2];
    r
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
