//! Initial guest contents: a realistic mix of code, text, zero and random
//! pages, so compression ratios and zero-page counts look like a real guest.
//!
//! Code pages are copied from ELF executables on this machine (`/usr/bin`),
//! text pages from plain-text files (`/usr/share/doc`, `/usr/include`), at
//! seeded offsets; random pages come from the seeded PRNG; zero pages are
//! left untouched (the anonymous mapping is already zero, so they cost
//! nothing to "fill"). A machine without those directories falls back to the
//! simulator's own executable (code) and its embedded sources (text).

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::config::{ContentMix, PAGE_SIZE};
use crate::memory::GuestRam;
use crate::prng::SplitMix64;

/// Bytes of each corpus read from disk: enough distinct pages (1024 each)
/// that the guest does not repeat a handful of pages, little enough to read
/// in well under a second.
const CORPUS_BYTES: usize = 4 << 20;
/// Largest single file taken into a corpus, so one huge binary does not
/// make up the whole code corpus.
const FILE_CAP: usize = 512 << 10;

/// Page-sized material to copy into the guest.
pub struct Corpus {
    code: Vec<u8>,
    text: Vec<u8>,
    /// Where the material came from, for the report.
    pub sources: String,
}

/// What the guest was filled with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FillStats {
    /// Pages of each kind.
    pub zero: u64,
    /// Code pages.
    pub code: u64,
    /// Text pages.
    pub text: u64,
    /// Random pages.
    pub random: u64,
}

impl Corpus {
    /// Reads the corpora from this machine.
    pub fn load() -> Corpus {
        let mut code = Vec::with_capacity(CORPUS_BYTES);
        let mut files = 0;
        collect(Path::new("/usr/bin"), &mut code, &mut files, 0, &|head| head.starts_with(b"\x7fELF"));
        let code_files = files;
        let mut text = Vec::with_capacity(CORPUS_BYTES);
        files = 0;
        for dir in ["/usr/share/doc", "/usr/include"] {
            collect(Path::new(dir), &mut text, &mut files, 0, &|head| {
                !head.is_empty() && head.iter().all(|&b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b))
            });
        }
        let text_files = files;
        let mut sources = format!(
            "code: {code_files} ELF files from /usr/bin; text: {text_files} files from /usr/share/doc, /usr/include"
        );
        if code.len() < 16 * PAGE_SIZE {
            code.clear();
            if let Ok(exe) = std::env::current_exe() {
                if let Ok(bytes) = fs::read(exe) {
                    code.extend_from_slice(&bytes[..bytes.len().min(CORPUS_BYTES)]);
                }
            }
            sources = format!("code: this executable (no ELF files in /usr/bin); text: {text_files} files");
        }
        if text.len() < 16 * PAGE_SIZE {
            text.clear();
            while text.len() < 64 * PAGE_SIZE {
                text.extend_from_slice(EMBEDDED_TEXT.as_bytes());
            }
            sources.push_str(" (text fell back to the simulator's own sources)");
        }
        // Both corpora are at least 16 pages now (the executable is).
        while code.len() < 16 * PAGE_SIZE {
            code.extend_from_slice(EMBEDDED_TEXT.as_bytes());
        }
        Corpus { code, text, sources }
    }

    /// Fills `ram` with `mix`, deterministically from `seed`.
    pub fn fill(&self, ram: &GuestRam, mix: ContentMix, seed: u64) -> FillStats {
        self.fill_first(ram, ram.pages(), mix, seed)
    }

    /// [`fill`](Self::fill) for the first `populated` pages only; the rest
    /// stay untouched zero pages (counted as zero, never backed by memory).
    pub fn fill_first(&self, ram: &GuestRam, populated: u64, mix: ContentMix, seed: u64) -> FillStats {
        let mut rng = SplitMix64::new(seed, 0xC0DE);
        let mut stats = FillStats { zero: ram.pages() - populated.min(ram.pages()), ..FillStats::default() };
        let mut buf = [0u8; PAGE_SIZE];
        for page in 0..populated.min(ram.pages()) {
            let r = rng.below(100) as u32;
            if r < mix.zero {
                stats.zero += 1;
                continue;
            }
            let src = if r < mix.zero + mix.code {
                stats.code += 1;
                &self.code
            } else if r < mix.zero + mix.code + mix.text {
                stats.text += 1;
                &self.text
            } else {
                stats.random += 1;
                rng.fill(&mut buf);
                ram.write_page(page, &buf);
                continue;
            };
            // Page-aligned offsets: real page cache holds aligned file pages.
            let nr = (src.len() / PAGE_SIZE) as u64;
            let off = rng.below(nr) as usize * PAGE_SIZE;
            buf.copy_from_slice(&src[off..off + PAGE_SIZE]);
            if crate::memory::is_zero(&buf) {
                // An all-zero chunk of an ELF file (padding): keep it non-zero
                // so the mix stays as stated.
                buf[0] = 1;
            }
            ram.write_page(page, &buf);
        }
        stats
    }
}

/// Appends up to FILE_CAP bytes of each matching file under `dir` to `out`
/// until it holds CORPUS_BYTES, in sorted (reproducible) order.
fn collect(dir: &Path, out: &mut Vec<u8>, files: &mut u32, depth: u32, accept: &dyn Fn(&[u8]) -> bool) {
    if out.len() >= CORPUS_BYTES || depth > 6 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if out.len() >= CORPUS_BYTES {
            return;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            collect(&path, out, files, depth + 1, accept);
        } else if meta.is_file() && meta.len() >= PAGE_SIZE as u64 {
            let Ok(mut f) = fs::File::open(&path) else { continue };
            let mut head = [0u8; 256];
            let Ok(n) = f.read(&mut head) else { continue };
            if !accept(&head[..n]) {
                continue;
            }
            let want = (meta.len() as usize).min(FILE_CAP).min(CORPUS_BYTES - out.len());
            let start = out.len();
            out.extend_from_slice(&head[..n.min(want)]);
            let mut rest = vec![0u8; want.saturating_sub(n)];
            if f.read_exact(&mut rest).is_ok() {
                out.extend_from_slice(&rest);
                *files += 1;
            } else {
                out.truncate(start);
            }
        }
    }
}

const EMBEDDED_TEXT: &str = include_str!("lib.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_follows_the_mix_and_is_reproducible() {
        let corpus = Corpus::load();
        let a = GuestRam::new(2048).unwrap();
        let b = GuestRam::new(2048).unwrap();
        let mix = ContentMix::default();
        let s = corpus.fill(&a, mix, 3);
        corpus.fill(&b, mix, 3);
        assert_eq!(s.zero + s.code + s.text + s.random, 2048);
        for (kind, want) in [(s.zero, mix.zero), (s.code, mix.code), (s.text, mix.text), (s.random, mix.random)] {
            let pct = kind as f64 * 100.0 / 2048.0;
            assert!((pct - want as f64).abs() < 5.0, "{kind} pages vs {want}%");
        }
        let zero = (0..2048).filter(|&p| a.page_is_zero(p)).count() as u64;
        assert_eq!(zero, s.zero);
        // SAFETY: no other thread touches these mappings.
        unsafe {
            for p in 0..2048 {
                assert_eq!(a.page_quiescent(p), b.page_quiescent(p));
            }
        }
    }
}
