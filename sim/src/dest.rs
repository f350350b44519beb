//! The destination: parses the migration stream and fills its own guest RAM,
//! inflating compressed pages on the decompression threads.
//!
//! A raw or zero page may follow a compressed copy of the same page that a
//! decompression thread has not written yet; applying it at once would let
//! the older copy land last. The stream thread keeps a flag per page queued
//! since the last `wait` and waits for the decompressor before touching such
//! a page (QEMU's destination has the same hazard and relies on the source
//! flushing every round).

use std::io::{self, BufReader};
use std::net::TcpListener;
use std::sync::mpsc::Sender;

use serde::Serialize;

use crate::bitmap::Flags;
use crate::engines::Decompressor;
use crate::memory::GuestRam;
use crate::wire::{self, Record};

/// What the destination counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DestStats {
    /// Zero-page records applied.
    pub zero: u64,
    /// Raw pages applied.
    pub normal: u64,
    /// Compressed pages applied.
    pub compressed: u64,
    /// Rounds (EOS records).
    pub rounds: u64,
    /// Waits forced by a raw page arriving after a queued compressed copy.
    pub ordering_waits: u64,
    /// The vCPU state record's payload, if the stream had one.
    #[serde(skip)]
    pub device_state: Vec<u8>,
}

/// The destination's verdict, sent once the stream ends or fails.
pub type DestDone = Result<DestStats, String>;

/// Starts [`serve`] on a thread named `destination` in `scope` and connects
/// the source's link to it at `bandwidth` bytes/s: the set-up every run path
/// (simulated guest, KVM guest) shares.
pub fn spawn_and_connect<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    listener: TcpListener,
    ram: &'env GuestRam,
    decomp: Box<dyn Decompressor + 'env>,
    done: Sender<DestDone>,
    bandwidth: u64,
) -> Result<(std::thread::ScopedJoinHandle<'scope, ()>, crate::link::Link), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dest = std::thread::Builder::new()
        .name("destination".into())
        .spawn_scoped(scope, move || serve(listener, ram, decomp, done))
        .map_err(|e| e.to_string())?;
    let sock = std::net::TcpStream::connect(addr).map_err(|e| format!("connect to destination: {e}"))?;
    Ok((dest, crate::link::Link::new(sock, bandwidth)))
}

/// Serves one incoming migration on `listener` into `ram`; reports on `done`.
pub fn serve(listener: TcpListener, ram: &GuestRam, mut decomp: Box<dyn Decompressor + '_>, done: Sender<DestDone>) {
    let r = receive(listener, ram, decomp.as_mut());
    let msg = match r {
        Ok(stats) => Ok(stats),
        Err(e) => Err(e.to_string()),
    };
    let _ = done.send(msg);
}

fn receive(listener: TcpListener, ram: &GuestRam, decomp: &mut dyn Decompressor) -> io::Result<DestStats> {
    let (sock, _) = listener.accept()?;
    // 256 KiB: a few hundred records per read syscall.
    let mut r = BufReader::with_capacity(256 << 10, sock);
    let pages = wire::read_header(&mut r)?;
    if pages != ram.pages() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream has {pages} pages, guest {}", ram.pages()),
        ));
    }
    let mut pending = Flags::new(pages);
    let mut any_pending = false;
    let mut buf = Vec::with_capacity(crate::config::PAGE_SIZE);
    let mut st = DestStats::default();
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    loop {
        let rec = wire::read_record(&mut r, pages, &mut buf)?;
        // Raw and zero pages must not overtake a queued compressed copy.
        if let Record::Zero { page, .. } | Record::Page { page } = rec {
            if any_pending && pending.test(page) {
                decomp.wait().map_err(bad)?;
                pending.clear_all();
                any_pending = false;
                st.ordering_waits += 1;
            }
        }
        match rec {
            Record::Zero { page, fill } => {
                // QEMU ram_handle_compressed: skip the write if already so.
                if fill != 0 || !ram.page_is_zero(page) {
                    ram.fill_page(page, fill);
                }
                st.zero += 1;
            }
            Record::Page { page } => {
                ram.write_page(page, buf[..].try_into().expect("a page"));
                st.normal += 1;
            }
            Record::Compressed { page, .. } => {
                // SAFETY: the page is inside `ram`, which outlives the
                // decompressor; this thread writes it only after a `wait`
                // (the pending flag above).
                unsafe { decomp.submit(&buf, ram.page_ptr(page)) }.map_err(bad)?;
                pending.set(page);
                any_pending = true;
                st.compressed += 1;
            }
            Record::Device { .. } => st.device_state = buf.clone(),
            Record::Eos => st.rounds += 1,
            Record::End => {
                decomp.wait().map_err(bad)?;
                return Ok(st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PAGE_SIZE;
    use crate::vmig_engines::VmigDecomp;
    use std::io::Write;
    use std::net::TcpStream;

    fn zlib(page: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(1));
        e.write_all(page).unwrap();
        e.finish().unwrap()
    }

    /// Many compressed copies of a page, each followed at once by a newer
    /// raw or zero copy: the newer one must win every time.
    #[test]
    fn raw_and_zero_pages_never_lose_to_an_older_compressed_copy() {
        let pages = 64u64;
        let ram = GuestRam::new(pages).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = Vec::new();
        wire::put_header(&mut stream, pages);
        let mut want = vec![[0u8; PAGE_SIZE]; pages as usize];
        for round in 0..20u8 {
            for p in 0..pages {
                let old = [round.wrapping_mul(7).wrapping_add(p as u8) | 1; PAGE_SIZE];
                wire::put_compressed(&mut stream, p, &zlib(&old));
                match (p + u64::from(round)) % 3 {
                    0 => {
                        wire::put_zero(&mut stream, p, 0);
                        want[p as usize] = [0; PAGE_SIZE];
                    }
                    1 => {
                        let new = [round ^ 0xa5 ^ p as u8; PAGE_SIZE];
                        wire::put_page(&mut stream, p, &new);
                        want[p as usize] = new;
                    }
                    _ => want[p as usize] = old,
                }
            }
            wire::put_eos(&mut stream);
        }
        wire::put_end(&mut stream);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let ram = &ram;
            s.spawn(move || serve(listener, ram, Box::new(VmigDecomp::new(2).unwrap()), tx));
            TcpStream::connect(addr).unwrap().write_all(&stream).unwrap();
        });
        let st = rx.recv().unwrap().unwrap();
        assert_eq!(st.compressed, 20 * pages);
        assert!(st.ordering_waits > 0);
        for p in 0..pages {
            // SAFETY: the destination thread has finished.
            assert_eq!(unsafe { ram.page_quiescent(p) }, &want[p as usize][..], "page {p}");
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let ram = GuestRam::new(4).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = Vec::new();
        wire::put_header(&mut stream, 4);
        wire::put_page(&mut stream, 1, &[3u8; PAGE_SIZE]);
        stream.truncate(stream.len() - 10);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let ram = &ram;
            s.spawn(move || serve(listener, ram, Box::new(VmigDecomp::new(1).unwrap()), tx));
            TcpStream::connect(addr).unwrap().write_all(&stream).unwrap();
        });
        assert!(rx.recv().unwrap().is_err());
    }
}
