//! zlib-rs through flate2: one `z_stream` per worker, `deflateReset()` +
//! `deflate(Z_FINISH)` per page, as QEMU's `qemu_compress_data()`.
//!
//! The reset clears zlib-rs's 64 Ki-entry hash head (128 KiB) on every
//! page; zlib-rs has no smaller table, and a full flush clears it too, so
//! the cost stays (measured in docs/pool.md, "Per-page reset").

use std::panic::catch_unwind;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Error, Result};

pub(crate) struct Deflater(Compress);

impl Deflater {
    pub(crate) fn new(level: i32) -> Result<Self> {
        // zlib header on: RFC 1950, as QEMU's deflateInit(). flate2 panics
        // when zlib-rs reports Z_MEM_ERROR; make that ENOMEM.
        catch_unwind(|| Deflater(Compress::new(Compression::new(level as u32), true))).map_err(|_| Error::OutOfMemory)
    }
}

impl super::PageDeflater for Deflater {
    fn deflate(&mut self, page: &[u8], out: &mut Vec<u8>) -> bool {
        self.0.reset();
        matches!(self.0.compress_vec(page, out, FlushCompress::Finish), Ok(Status::StreamEnd))
    }
}

pub(crate) struct Inflater(Decompress);

impl Inflater {
    pub(crate) fn new() -> Result<Self> {
        // flate2 panics when zlib-rs reports Z_MEM_ERROR; make that ENOMEM.
        catch_unwind(|| Inflater(Decompress::new(true))).map_err(|_| Error::OutOfMemory)
    }
}

impl super::PageInflater for Inflater {
    fn inflate(&mut self, input: &[u8], page: &mut [u8]) -> bool {
        self.0.reset(true);
        matches!(self.0.decompress(input, page, FlushDecompress::Finish), Ok(Status::StreamEnd))
            && self.0.total_out() == page.len() as u64
            && self.0.total_in() == input.len() as u64
    }
}
