//! The migration stream: a framed byte format modelled on QEMU's RAM section
//! (`migration/ram.c`), carried over TCP.
//!
//! ```text
//! stream  := header record* END
//! header  := "VMIGSIM\0"  be32 version (1)  be32 page_size  be64 nr_pages
//! record  := be64 (page_index * page_size | flags)  payload
//!   flags ZERO          0x002  payload: u8 fill byte (always 0; QEMU sends the byte too)
//!   flags PAGE          0x008  payload: page_size raw bytes
//!   flags EOS           0x010  payload: none (end of a round over the bitmap)
//!   flags COMPRESS_PAGE 0x100  payload: be32 len, len bytes of one zlib stream
//!                              (RFC 1950; what qemu_compress_data() emits)
//!   flags END           0x200  payload: none (vmig-sim's; QEMU ends with QEMU_VM_EOF)
//!   flags DEVICE        0x400  payload: be32 len, len bytes of vCPU state (vmig-sim's;
//!                              QEMU sends device sections after RAM's last pass)
//! ```
//!
//! The flag values are QEMU's `RAM_SAVE_FLAG_*`. QEMU also names the RAM
//! block in the first record of a block; a simulated guest has one block, so
//! records carry only the page offset. Exactly one flag is set per record;
//! the low 12 bits hold flags, so the page size must be at least 4 KiB.

use std::io::{self, Read};

use crate::config::PAGE_SIZE;

/// Stream magic.
pub const MAGIC: &[u8; 8] = b"VMIGSIM\0";
/// Format version.
pub const VERSION: u32 = 1;
/// RAM_SAVE_FLAG_ZERO.
pub const FLAG_ZERO: u64 = 0x002;
/// RAM_SAVE_FLAG_PAGE.
pub const FLAG_PAGE: u64 = 0x008;
/// RAM_SAVE_FLAG_EOS.
pub const FLAG_EOS: u64 = 0x010;
/// RAM_SAVE_FLAG_COMPRESS_PAGE.
pub const FLAG_COMPRESS_PAGE: u64 = 0x100;
/// End of the stream.
pub const FLAG_END: u64 = 0x200;
/// vCPU state of the KVM guest (vmig-sim's).
pub const FLAG_DEVICE: u64 = 0x400;
/// Largest device record: 64 vCPUs of well under 1 KiB of state each.
pub const MAX_DEVICE_LEN: u32 = 1 << 20;
/// The flag bits of a record's first word (the rest is the page offset).
pub(crate) const FLAG_MASK: u64 = 0xfff;
/// Largest zlib stream accepted for one page: zlib's compressBound(page)
/// (len + len/4096*... ≈ len + 0.1% + 13), rounded up generously.
pub const MAX_ZLEN: u32 = (PAGE_SIZE + PAGE_SIZE / 8 + 64) as u32;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;

/// Appends the stream header.
pub fn put_header(out: &mut Vec<u8>, nr_pages: u64) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&(PAGE_SIZE as u32).to_be_bytes());
    out.extend_from_slice(&nr_pages.to_be_bytes());
}

fn put_word(out: &mut Vec<u8>, page: u64, flags: u64) {
    out.extend_from_slice(&((page * PAGE_SIZE as u64) | flags).to_be_bytes());
}

/// Appends a zero-page record.
pub fn put_zero(out: &mut Vec<u8>, page: u64, fill: u8) {
    put_word(out, page, FLAG_ZERO);
    out.push(fill);
}

/// Appends a raw-page record.
pub fn put_page(out: &mut Vec<u8>, page: u64, data: &[u8]) {
    debug_assert_eq!(data.len(), PAGE_SIZE);
    put_word(out, page, FLAG_PAGE);
    out.extend_from_slice(data);
}

/// Appends a compressed-page record.
pub fn put_compressed(out: &mut Vec<u8>, page: u64, zdata: &[u8]) {
    put_word(out, page, FLAG_COMPRESS_PAGE);
    out.extend_from_slice(&(zdata.len() as u32).to_be_bytes());
    out.extend_from_slice(zdata);
}

/// Appends an end-of-round record.
pub fn put_eos(out: &mut Vec<u8>) {
    put_word(out, 0, FLAG_EOS);
}

/// Appends a device-state record.
pub fn put_device(out: &mut Vec<u8>, data: &[u8]) {
    put_word(out, 0, FLAG_DEVICE);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends the end-of-stream record.
pub fn put_end(out: &mut Vec<u8>) {
    put_word(out, 0, FLAG_END);
}

/// One decoded record; page payloads land in the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Page `page` filled with byte `fill`.
    #[allow(missing_docs)]
    Zero { page: u64, fill: u8 },
    /// Raw page `page`, in the buffer passed to `read_record`.
    #[allow(missing_docs)]
    Page { page: u64 },
    /// Compressed page `page` of `len` bytes, in the buffer.
    #[allow(missing_docs)]
    Compressed { page: u64, len: u32 },
    /// vCPU state of `len` bytes, in the buffer.
    #[allow(missing_docs)]
    Device { len: u32 },
    /// End of a round.
    Eos,
    /// End of stream.
    End,
}

pub(crate) fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads and checks the header; returns the page count.
pub fn read_header(r: &mut impl Read) -> io::Result<u64> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    if &h[..8] != MAGIC {
        return Err(bad("bad stream magic".into()));
    }
    let version = u32::from_be_bytes(h[8..12].try_into().unwrap());
    let page_size = u32::from_be_bytes(h[12..16].try_into().unwrap());
    if version != VERSION || page_size as usize != PAGE_SIZE {
        return Err(bad(format!("unsupported stream: version {version}, page size {page_size}")));
    }
    Ok(u64::from_be_bytes(h[16..24].try_into().unwrap()))
}

/// Reads a big-endian u64.
pub(crate) fn read_be64(r: &mut impl Read) -> io::Result<u64> {
    let mut w = [0u8; 8];
    r.read_exact(&mut w)?;
    Ok(u64::from_be_bytes(w))
}

/// Reads one record; payload bytes go to `buf` (resized as needed).
pub fn read_record(r: &mut impl Read, nr_pages: u64, buf: &mut Vec<u8>) -> io::Result<Record> {
    let word = read_be64(r)?;
    read_record_body(r, word, nr_pages, buf)
}

/// The rest of the record whose first word, already read, is `word`: for
/// streams that add records of their own (sim/src/postcopy/proto.rs).
pub(crate) fn read_record_body(r: &mut impl Read, word: u64, nr_pages: u64, buf: &mut Vec<u8>) -> io::Result<Record> {
    let flags = word & FLAG_MASK;
    let page = (word & !FLAG_MASK) / PAGE_SIZE as u64;
    let in_range =
        |page: u64| if page < nr_pages { Ok(page) } else { Err(bad(format!("page {page} beyond guest RAM"))) };
    match flags {
        FLAG_ZERO => {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            Ok(Record::Zero { page: in_range(page)?, fill: b[0] })
        }
        FLAG_PAGE => {
            buf.resize(PAGE_SIZE, 0);
            r.read_exact(buf)?;
            Ok(Record::Page { page: in_range(page)? })
        }
        FLAG_COMPRESS_PAGE => {
            let mut l = [0u8; 4];
            r.read_exact(&mut l)?;
            let len = u32::from_be_bytes(l);
            if len == 0 || len > MAX_ZLEN {
                return Err(bad(format!("compressed page of {len} bytes")));
            }
            buf.resize(len as usize, 0);
            r.read_exact(buf)?;
            Ok(Record::Compressed { page: in_range(page)?, len })
        }
        FLAG_DEVICE => {
            let mut l = [0u8; 4];
            r.read_exact(&mut l)?;
            let len = u32::from_be_bytes(l);
            if len > MAX_DEVICE_LEN {
                return Err(bad(format!("device record of {len} bytes")));
            }
            buf.resize(len as usize, 0);
            r.read_exact(buf)?;
            Ok(Record::Device { len })
        }
        FLAG_EOS => Ok(Record::Eos),
        FLAG_END => Ok(Record::End),
        _ => Err(bad(format!("unknown record flags {flags:#x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = Vec::new();
        put_header(&mut s, 10);
        put_zero(&mut s, 3, 0);
        put_page(&mut s, 9, &[7u8; PAGE_SIZE]);
        put_compressed(&mut s, 1, &[1, 2, 3]);
        put_eos(&mut s);
        put_end(&mut s);
        let mut r = &s[..];
        let mut buf = Vec::new();
        assert_eq!(read_header(&mut r).unwrap(), 10);
        assert_eq!(read_record(&mut r, 10, &mut buf).unwrap(), Record::Zero { page: 3, fill: 0 });
        assert_eq!(read_record(&mut r, 10, &mut buf).unwrap(), Record::Page { page: 9 });
        assert_eq!(buf, vec![7u8; PAGE_SIZE]);
        assert_eq!(read_record(&mut r, 10, &mut buf).unwrap(), Record::Compressed { page: 1, len: 3 });
        assert_eq!(buf, vec![1, 2, 3]);
        assert_eq!(read_record(&mut r, 10, &mut buf).unwrap(), Record::Eos);
        assert_eq!(read_record(&mut r, 10, &mut buf).unwrap(), Record::End);
        assert!(r.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = Vec::new();
        let mut s = Vec::new();
        put_page(&mut s, 10, &[0u8; PAGE_SIZE]);
        assert!(read_record(&mut &s[..], 10, &mut buf).is_err(), "page out of range");
        let word = (FLAG_ZERO | FLAG_PAGE).to_be_bytes();
        assert!(read_record(&mut &word[..], 10, &mut buf).is_err(), "two flags");
        let mut s = Vec::new();
        put_compressed(&mut s, 0, &vec![0u8; MAX_ZLEN as usize + 1]);
        assert!(read_record(&mut &s[..], 10, &mut buf).is_err(), "oversized");
        let mut s = Vec::new();
        put_header(&mut s, 1);
        s[0] = b'X';
        assert!(read_header(&mut &s[..]).is_err());
    }
}
