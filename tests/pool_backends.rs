//! Wire compatibility of every deflate backend with the system zlib, both
//! directions, through the pools' public API:
//!
//! * our compression pool (each backend, every level) -> zlib's
//!   `uncompress()`, the call QEMU's receiver amounts to;
//! * zlib's `compress2()` (every level) -> our decompression pool with
//!   each backend's inflater;
//! * each backend's streams -> every other backend's inflater;
//! * a backend this build lacks is `Unsupported` (C: -EOPNOTSUPP).
//!
//! Backends behind cargo features (`libdeflate`, `system-zlib`) are tested
//! when built: `cargo test --release --features libdeflate,system-zlib
//! --test pool_backends` (scripts/check.sh does). Without a feature its
//! backend's cases print a SKIP line.

use vmig::pool::{compress_bound, Backend, CompConfig, CompPool, DecompPool, PoolOptions};
use vmig::Error;
use vmig_legacy::SplitMix64;

const PAGE: usize = 4096;

/// Code-like, text-like, zero, random and repetitive pages.
fn pages() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(0x0bac_0e4d_5eed, 0);
    (0..40)
        .map(|i| {
            let mut p = vec![0u8; PAGE];
            match i % 5 {
                0 => {}
                1 => rng.fill(&mut p),
                2 => {
                    let words = b"the quick brown fox jumps over the lazy dog migration page ";
                    for (j, b) in p.iter_mut().enumerate() {
                        *b = words[(j * 7 + i) % words.len()];
                    }
                }
                3 => {
                    for (j, b) in p.iter_mut().enumerate() {
                        *b = if j % 16 < 4 { (rng.next_u64() & 0xff) as u8 } else { (j / 16) as u8 };
                    }
                }
                _ => p.fill(i as u8),
            }
            p
        })
        .collect()
}

fn built() -> Vec<Backend> {
    let mut v = Vec::new();
    for b in Backend::ALL {
        if b.compiled_in() {
            v.push(b);
        } else {
            eprintln!("SKIP: backend {} not built (its cargo feature is off)", b.name());
        }
    }
    v
}

fn zlib_uncompress(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; PAGE + 64];
    let mut n = out.len() as libz_sys::uLongf;
    // SAFETY: `out` is writable for `n` bytes, `data` readable for its length.
    let rc = unsafe { libz_sys::uncompress(out.as_mut_ptr(), &mut n, data.as_ptr(), data.len() as libz_sys::uLong) };
    assert_eq!(rc, libz_sys::Z_OK, "system zlib rejected the stream");
    out.truncate(n as usize);
    out
}

fn zlib_compress(page: &[u8], level: i32) -> Vec<u8> {
    let mut out = vec![0u8; compress_bound(PAGE as u32)];
    let mut n = out.len() as libz_sys::uLongf;
    // SAFETY: as above.
    let rc = unsafe { libz_sys::compress2(out.as_mut_ptr(), &mut n, page.as_ptr(), page.len() as libz_sys::uLong, level) };
    assert_eq!(rc, libz_sys::Z_OK);
    out.truncate(n as usize);
    out
}

/// Every page through a compression pool with `backend` at `level`:
/// (page index, stream); zero pages have no stream.
fn compress_all(backend: Backend, level: i32, pages: &[Vec<u8>]) -> Vec<(usize, Vec<u8>)> {
    let cfg = CompConfig { threads: 2, level, page_size: PAGE as u32, ring_depth: 0 };
    let mut pool = CompPool::with_options(&cfg, &PoolOptions { backend: Some(backend), ..Default::default() }).unwrap();
    for (i, p) in pages.iter().enumerate() {
        // SAFETY: `pages` outlives the pool's results (flushed below).
        unsafe { pool.submit(p.as_ptr(), (i * PAGE) as u64, i, true) }.unwrap();
    }
    pool.flush().unwrap();
    let mut out = Vec::new();
    while let Some(r) = pool.poll() {
        assert_eq!(r.status(), 0);
        assert_eq!(r.is_zero_page(), pages[r.opaque()].iter().all(|&b| b == 0));
        assert!(r.data().len() <= compress_bound(PAGE as u32), "longer than QEMU's receiver accepts");
        if !r.is_zero_page() {
            out.push((r.opaque(), r.data().to_vec()));
        }
        pool.release(r);
    }
    assert_eq!(out.len(), pages.iter().filter(|p| p.iter().any(|&b| b != 0)).count());
    out
}

/// Inflates `streams` with `backend` and checks each against its page.
fn inflate_all(backend: Backend, streams: &[(usize, Vec<u8>)], pages: &[Vec<u8>]) {
    let mut pool = DecompPool::with_options(3, PAGE as u32, &PoolOptions { backend: Some(backend), ..Default::default() }).unwrap();
    let mut dest = vec![vec![0x5au8; PAGE]; streams.len()];
    for ((_, z), d) in streams.iter().zip(dest.iter_mut()) {
        // SAFETY: `d` stays valid and untouched until `wait` returns.
        unsafe { pool.submit(z, d.as_mut_ptr()) }.unwrap();
    }
    pool.wait().unwrap();
    for ((i, _), d) in streams.iter().zip(&dest) {
        assert!(d == &pages[*i], "{}: page {i} differs", backend.name());
    }
}

#[test]
fn every_backend_to_system_zlib_at_every_level() {
    let pages = pages();
    for b in built() {
        for level in 0..=9 {
            for (i, z) in compress_all(b, level, &pages) {
                assert!(zlib_uncompress(&z) == pages[i], "{} level {level}: page {i} differs", b.name());
            }
        }
    }
}

#[test]
fn system_zlib_to_every_inflater_at_every_level() {
    let pages = pages();
    for level in 0..=9 {
        let streams: Vec<(usize, Vec<u8>)> =
            pages.iter().enumerate().filter(|(_, p)| p.iter().any(|&b| b != 0)).map(|(i, p)| (i, zlib_compress(p, level))).collect();
        for b in built() {
            inflate_all(b, &streams, &pages);
        }
    }
}

#[test]
fn every_backend_to_every_inflater() {
    let pages = pages();
    let built = built();
    for &from in &built {
        let streams = compress_all(from, 1, &pages);
        for &to in &built {
            inflate_all(to, &streams, &pages);
        }
    }
}

#[test]
fn inflaters_reject_trailing_bytes_and_short_pages() {
    let pages = pages();
    let good = zlib_compress(&pages[2], 6);
    let mut trailing = good.clone();
    trailing.push(0);
    let mut half = vec![0u8; compress_bound(PAGE as u32)];
    let mut n = half.len() as libz_sys::uLongf;
    // SAFETY: as in `zlib_compress`.
    let rc = unsafe { libz_sys::compress2(half.as_mut_ptr(), &mut n, pages[2].as_ptr(), (PAGE / 2) as libz_sys::uLong, 6) };
    assert_eq!(rc, libz_sys::Z_OK);
    half.truncate(n as usize);
    let truncated = good[..good.len() - 1].to_vec();
    for b in built() {
        for bad in [&trailing, &half, &truncated] {
            let mut pool = DecompPool::with_options(1, PAGE as u32, &PoolOptions { backend: Some(b), ..Default::default() }).unwrap();
            let mut dest = vec![0x5au8; PAGE];
            // SAFETY: `dest` outlives the wait below.
            unsafe { pool.submit(bad, dest.as_mut_ptr()) }.unwrap();
            assert!(matches!(pool.wait(), Err(Error::BadMessage(_))), "{} accepted a bad stream", b.name());
            assert!(dest.iter().all(|&x| x == 0x5a), "{} wrote a failed page", b.name());
        }
    }
}

#[test]
fn missing_backend_is_unsupported() {
    let cfg = CompConfig { threads: 1, level: 1, page_size: PAGE as u32, ring_depth: 0 };
    for b in Backend::ALL {
        let o = PoolOptions { backend: Some(b), ..Default::default() };
        let (c, d) = (CompPool::with_options(&cfg, &o).map(drop), DecompPool::with_options(1, PAGE as u32, &o).map(drop));
        if b.compiled_in() {
            assert_eq!((c, d), (Ok(()), Ok(())), "{}", b.name());
        } else {
            assert!(matches!(c, Err(Error::Unsupported(_))) && matches!(d, Err(Error::Unsupported(_))), "{}", b.name());
            assert_eq!(Error::Unsupported("").errno(), libc::EOPNOTSUPP);
        }
    }
}
