//! Postcopy additions to the stream (docs/sim.md has the base format):
//!
//! ```text
//! switch   := be64 (FLAG_SWITCH)  be32 vcpus  be64 guest_writes
//!             be64 words  words x be64     (discard bitmap: pages the
//!                                          destination must drop and fetch)
//! request  := be64 page                    (return path, destination → source)
//! complete := be64 u64::MAX                (return path: every page placed)
//! ```
//!
//! The switch record stands for QEMU's `MIG_CMD_POSTCOPY_RAM_DISCARD`,
//! `POSTCOPY_LISTEN` and `POSTCOPY_RUN` plus the device state (a simulated
//! vCPU's only state is its position in the workload: the write counter).
//! After it, the bulk and the preempt connection carry ordinary ZERO and
//! PAGE records; the bulk stream ends with END.

use std::io::{self, Read};

use crate::wire::{bad, read_be64, read_record_body, Record, FLAG_MASK};

/// vmig-sim's postcopy switch record (a flag QEMU's RAM section leaves free).
pub const FLAG_SWITCH: u64 = 0x400;
/// Return-path message: the destination has every page.
pub const COMPLETE: u64 = u64::MAX;

/// Appends the switch record.
pub fn put_switch(out: &mut Vec<u8>, vcpus: u32, guest_writes: u64, discard: &[u64]) {
    out.extend_from_slice(&FLAG_SWITCH.to_be_bytes());
    out.extend_from_slice(&vcpus.to_be_bytes());
    out.extend_from_slice(&guest_writes.to_be_bytes());
    out.extend_from_slice(&(discard.len() as u64).to_be_bytes());
    for w in discard {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// One record of a postcopy-capable stream.
#[derive(Debug, PartialEq, Eq)]
pub enum PcRecord {
    /// A zero page.
    #[allow(missing_docs)]
    Zero { page: u64, fill: u8 },
    /// A raw page, in the reader's buffer.
    #[allow(missing_docs)]
    Page { page: u64 },
    /// End of a round.
    Eos,
    /// End of the stream.
    End,
    /// The switch to postcopy.
    #[allow(missing_docs)]
    Switch { vcpus: u32, guest_writes: u64, discard: Vec<u64> },
}

/// Reads one record (raw payloads into `buf`); the base records are
/// decoded by [`crate::wire`], which the switch record's flag (the
/// precopy stream's DEVICE) is checked before.
pub fn read(r: &mut impl Read, pages: u64, buf: &mut Vec<u8>) -> io::Result<PcRecord> {
    let word = read_be64(r)?;
    if word & FLAG_MASK == FLAG_SWITCH {
        let mut v = [0u8; 4];
        r.read_exact(&mut v)?;
        let vcpus = u32::from_be_bytes(v);
        let guest_writes = read_be64(r)?;
        let words = read_be64(r)?;
        if words != pages.div_ceil(64) {
            return Err(bad(format!("discard bitmap of {words} words for {pages} pages")));
        }
        let discard = (0..words).map(|_| read_be64(r)).collect::<io::Result<Vec<_>>>()?;
        return Ok(PcRecord::Switch { vcpus, guest_writes, discard });
    }
    match read_record_body(r, word, pages, buf)? {
        Record::Zero { page, fill } => Ok(PcRecord::Zero { page, fill }),
        Record::Page { page } => Ok(PcRecord::Page { page }),
        Record::Eos => Ok(PcRecord::Eos),
        Record::End => Ok(PcRecord::End),
        Record::Compressed { .. } | Record::Device { .. } => {
            Err(bad(format!("record flags {:#x} in a postcopy stream", word & FLAG_MASK)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PAGE_SIZE;

    #[test]
    fn round_trip() {
        let mut s = Vec::new();
        crate::wire::put_zero(&mut s, 3, 0);
        put_switch(&mut s, 2, 77, &[0b101, 0]);
        crate::wire::put_page(&mut s, 100, &[9u8; PAGE_SIZE]);
        crate::wire::put_end(&mut s);
        let mut r = &s[..];
        let mut buf = Vec::new();
        assert_eq!(read(&mut r, 128, &mut buf).unwrap(), PcRecord::Zero { page: 3, fill: 0 });
        assert_eq!(
            read(&mut r, 128, &mut buf).unwrap(),
            PcRecord::Switch { vcpus: 2, guest_writes: 77, discard: vec![0b101, 0] }
        );
        assert_eq!(read(&mut r, 128, &mut buf).unwrap(), PcRecord::Page { page: 100 });
        assert_eq!(read(&mut r, 128, &mut buf).unwrap(), PcRecord::End);
        let mut s = Vec::new();
        put_switch(&mut s, 2, 77, &[0]);
        assert!(read(&mut &s[..], 128, &mut buf).is_err(), "bitmap of the wrong size");
        let mut s = Vec::new();
        crate::wire::put_compressed(&mut s, 1, &[1, 2, 3]);
        assert!(read(&mut &s[..], 128, &mut buf).is_err(), "no compressed pages in postcopy");
        let mut s = Vec::new();
        crate::wire::put_page(&mut s, 128, &[9u8; PAGE_SIZE]);
        assert!(read(&mut &s[..], 128, &mut buf).is_err(), "page beyond guest RAM");
    }
}
