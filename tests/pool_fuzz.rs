//! Bounded fuzz test of the decompression pool: random and mutated zlib
//! streams must fail cleanly (-EBADMSG) or inflate to exactly one page, never
//! write outside their destination, and agree with flate2 as an oracle.
//! `VMIG_FUZZ_ITERS` raises the iteration count for longer runs.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use vmig::pool::{compress_bound, DecompPool};
use vmig::Error;
use vmig_legacy::SplitMix64;

const PAGE: usize = 4096;
const GUARD: usize = 64;

/// What a strict decoder must do with `input`: Some(page) or None.
fn oracle(input: &[u8]) -> Option<Vec<u8>> {
    let mut d = Decompress::new(true);
    let mut out = vec![0u8; PAGE];
    match d.decompress(input, &mut out, FlushDecompress::Finish) {
        Ok(Status::StreamEnd) if d.total_out() as usize == PAGE && d.total_in() as usize == input.len() => Some(out),
        _ => None,
    }
}

fn valid_stream(rng: &mut SplitMix64) -> Vec<u8> {
    let kind = rng.below_usize(3);
    let page: Vec<u8> = (0..PAGE)
        .map(|i| match kind {
            0 => (i % 7) as u8,
            1 => rng.next_u64() as u8,
            _ => b"migration "[i % 10],
        })
        .collect();
    let mut z = Compress::new(Compression::new(rng.below_usize(10) as u32), true);
    let mut out = Vec::with_capacity(compress_bound(PAGE as u32) + 64);
    z.compress_vec(&page, &mut out, FlushCompress::Finish).unwrap();
    out
}

fn mutate(rng: &mut SplitMix64, mut s: Vec<u8>) -> Vec<u8> {
    match rng.below_usize(6) {
        0 => {
            let i = rng.below_usize(s.len());
            s[i] ^= 1 << rng.below_usize(8);
        }
        1 => s.truncate(rng.below_usize(s.len())),
        2 => s.extend((0..1 + rng.below_usize(8)).map(|_| rng.next_u64() as u8)),
        3 => {
            for _ in 0..1 + rng.below_usize(16) {
                let i = rng.below_usize(s.len());
                s[i] = rng.next_u64() as u8;
            }
        }
        4 => s = (0..rng.below_usize(200)).map(|_| rng.next_u64() as u8).collect(),
        _ => {} // unchanged: must succeed
    }
    s
}

#[test]
fn decompressor_survives_arbitrary_input() {
    let iters: usize = std::env::var("VMIG_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(miri) { 20 } else { 4000 });
    let mut rng = SplitMix64::new(0x853c_49e6_748f_ea9b, 0);
    let mut pool = DecompPool::new(2, PAGE as u32).unwrap();
    let batch = 8;
    let mut area = vec![0u8; batch * (PAGE + 2 * GUARD)];
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..iters / batch {
        area.fill(0xa5);
        let inputs: Vec<Vec<u8>> = (0..batch)
            .map(|_| {
                let s = valid_stream(&mut rng);
                mutate(&mut rng, s)
            })
            .collect();
        for (i, input) in inputs.iter().enumerate() {
            let dest = i * (PAGE + 2 * GUARD) + GUARD;
            // SAFETY: `area` outlives `wait` below; destinations are disjoint.
            let r = unsafe { pool.submit(input, area.as_mut_ptr().add(dest)) };
            if input.len() > pool.max_input() {
                assert!(matches!(r, Err(Error::BadMessage(_))));
            } else {
                r.unwrap();
            }
        }
        let any_bad = inputs.iter().any(|x| oracle(x).is_none());
        assert_eq!(pool.wait().is_err(), any_bad);
        for (i, input) in inputs.iter().enumerate() {
            let base = i * (PAGE + 2 * GUARD);
            assert!(area[base..base + GUARD].iter().all(|&b| b == 0xa5), "wrote before dest");
            assert!(area[base + GUARD + PAGE..base + 2 * GUARD + PAGE].iter().all(|&b| b == 0xa5), "wrote after dest");
            let got = &area[base + GUARD..base + GUARD + PAGE];
            match oracle(input) {
                Some(page) => {
                    assert_eq!(got, &page[..]);
                    ok += 1;
                }
                None => {
                    assert!(got.iter().all(|&b| b == 0xa5), "dest touched by a failed page");
                    bad += 1;
                }
            }
        }
    }
    assert!(ok > 0 && bad > 0, "fuzz mix degenerate: {ok} ok, {bad} bad");
}
