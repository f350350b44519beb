//! Integration tests of vmig::pool through its public Rust API.

use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress, Status};
use vmig::pool::{compress_bound, CompConfig, CompPool, DecompPool};
use vmig::Error;
use vmig_legacy::SplitMix64;

fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        n / 100 + 1
    } else {
        n
    }
}

fn inflate(data: &[u8], size: usize) -> Vec<u8> {
    let mut d = Decompress::new(true);
    let mut out = vec![0u8; size];
    assert_eq!(d.decompress(data, &mut out, FlushDecompress::Finish).unwrap(), Status::StreamEnd);
    assert_eq!(d.total_out() as usize, size);
    out
}

/// Many submissions on few keys, from buffers recycled only when their
/// result is back: per key, results come back in submission order and carry
/// the page as it was at submission.
#[test]
fn same_key_results_in_submission_order() {
    const PAGE: usize = 4096;
    const BUFS: usize = 64;
    let mut pool = CompPool::new(&CompConfig { threads: 4, level: 1, page_size: PAGE as u32, ring_depth: 2 }).unwrap();
    assert!(pool.max_pending() <= BUFS);
    let mut bufs = vec![vec![0u8; PAGE]; BUFS];
    let mut free: Vec<usize> = (0..BUFS).collect();
    let mut last: HashMap<u64, u64> = HashMap::new();
    let total = scaled(30_000) as u64;
    let (mut seq, mut got, mut busy) = (1u64, 0u64, 0u64);
    let mut rng = SplitMix64::new(0x1234_5678_9abc_def1, 0);
    while got < total {
        if seq <= total {
            let idx = *free.last().unwrap();
            bufs[idx].fill(seq as u8);
            bufs[idx][..8].copy_from_slice(&seq.to_le_bytes());
            let key = rng.below(3);
            // SAFETY: bufs[idx] is not reused until its result is back.
            match unsafe { pool.submit(bufs[idx].as_ptr(), key, idx, false) } {
                Ok(()) => {
                    free.pop();
                    seq += 1;
                }
                Err(Error::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        while let Some(r) = pool.poll() {
            let page = inflate(r.data(), PAGE);
            let s = u64::from_le_bytes(page[..8].try_into().unwrap());
            let expect = u64::from_le_bytes(bufs[r.opaque()][..8].try_into().unwrap());
            assert_eq!(s, expect);
            let prev = last.insert(r.key(), s);
            assert!(prev.is_none_or(|p| p < s), "key {} went back from {prev:?} to {s}", r.key());
            free.push(r.opaque());
            pool.release(r);
            got += 1;
        }
    }
    let st = pool.stats();
    assert_eq!(st.pages, total);
    assert_eq!(st.busy, busy);
    assert_eq!(st.pages_per_worker.iter().sum::<u64>(), total);
}

#[test]
fn compressed_pages_fit_qemu_receive_buffer_and_round_trip() {
    let mut rng = SplitMix64::new(7, 0);
    let pages: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            (0..4096)
                .map(|j| match i % 4 {
                    0 => 0,
                    1 => (j % 13) as u8,
                    2 => rng.next_u64() as u8,
                    _ => b"the quick brown fox "[j % 20],
                })
                .collect()
        })
        .collect();
    for level in 0..=9 {
        let mut pool = CompPool::new(&CompConfig { threads: 3, level, page_size: 4096, ring_depth: 0 }).unwrap();
        let mut dec = DecompPool::new(2, 4096).unwrap();
        let mut out = vec![vec![0xffu8; 4096]; pages.len()];
        for (i, p) in pages.iter().enumerate() {
            // SAFETY: `pages` outlives the pool.
            unsafe { pool.submit(p.as_ptr(), i as u64, i, true).unwrap() };
        }
        pool.flush().unwrap();
        while let Some(r) = pool.poll() {
            assert!(r.data().len() <= compress_bound(4096));
            if r.is_zero_page() {
                out[r.opaque()].fill(0);
            } else {
                // SAFETY: `out` outlives `dec.wait()` below.
                unsafe { dec.submit(r.data(), out[r.opaque()].as_mut_ptr()).unwrap() };
            }
            pool.release(r);
        }
        dec.wait().unwrap();
        assert_eq!(out, pages, "level {level}");
    }
}

#[test]
fn workers_are_named() {
    let pool = CompPool::new(&CompConfig { threads: 2, ..Default::default() }).unwrap();
    let dec = DecompPool::new(2, 4096).unwrap();
    // std names a thread from inside it, once it starts running: poll.
    let want = ["vmig-comp/0", "vmig-comp/1", "vmig-decomp/0", "vmig-decomp/1"];
    let mut names = Vec::new();
    for _ in 0..200 {
        names.clear();
        for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            if let Ok(n) = std::fs::read_to_string(e.path().join("comm")) {
                names.push(n.trim().to_string());
            }
        }
        if want.iter().all(|n| names.iter().any(|x| x == n)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for n in want {
        assert!(names.iter().any(|x| x == n), "{n} missing in {names:?}");
    }
    drop((pool, dec));
}

#[test]
fn drop_with_pages_in_flight_and_results_held() {
    let page = vec![3u8; 4096];
    for threads in 1..=4 {
        let mut pool = CompPool::new(&CompConfig { threads, level: 9, page_size: 4096, ring_depth: 8 }).unwrap();
        let mut held = Vec::new();
        for i in 0..40 {
            // SAFETY: `page` outlives the pool.
            let _ = unsafe { pool.submit(page.as_ptr(), i, 0, false) };
            if i == 5 {
                held.extend(pool.wait_result());
            }
        }
        drop(pool);
        drop(held); // results outlive the pool: they own their buffers
    }
}

#[test]
fn bad_configs_rejected() {
    for c in [
        CompConfig { threads: 0, ..Default::default() },
        CompConfig { level: 10, ..Default::default() },
        CompConfig { page_size: 3000, ..Default::default() },
        CompConfig { ring_depth: 5, ..Default::default() },
    ] {
        assert!(matches!(CompPool::new(&c), Err(Error::InvalidArgument(_))), "{c:?}");
    }
    assert!(matches!(DecompPool::new(0, 4096), Err(Error::InvalidArgument(_))));
    assert!(matches!(DecompPool::new(1, 100), Err(Error::InvalidArgument(_))));
}

#[test]
fn pools_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<CompPool>();
    assert_send::<DecompPool>();
    assert_send::<vmig::pool::CompResult>();
    let mut pool = CompPool::new(&CompConfig::default()).unwrap();
    let page = vec![9u8; 4096];
    // SAFETY: `page` outlives the pool (joined below).
    unsafe { pool.submit(page.as_ptr(), 1, 0, true).unwrap() };
    let got = std::thread::scope(|s| s.spawn(move || pool.wait_result().map(|r| r.key())).join().unwrap());
    assert_eq!(got, Some(1));
}
