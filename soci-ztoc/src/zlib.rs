//! The one place soci-ztoc talks to a zlib-API inflater.
//!
//! Checkpoint generation and span extraction need `Z_BLOCK`, `data_type`, `inflatePrime`,
//! `inflateSetDictionary` and `inflateReset2`, which flate2's safe API does not expose. We use
//! `libz-rs-sys` (zlib-rs, pure Rust, the same engine flate2 uses with its `zlib-rs` feature)
//! through its C ABI. All `unsafe` of the crate lives in this module and is wrapped in
//! [`Inflater`], whose `Drop` frees the stream.
#![allow(unsafe_code)]

use libz_rs_sys as z;

/// Result of one `inflate` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Progress was made (or input/output exhausted); call again.
    Ok,
    /// The end of the current deflate/gzip stream was reached.
    StreamEnd,
    /// No progress was possible (needs more input or output space).
    BufError,
}

/// A zlib error code that is not a normal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZError(pub(crate) i32);

impl ZError {
    pub(crate) fn describe(self) -> &'static str {
        match self.0 {
            z::Z_NEED_DICT => "stream needs a preset dictionary",
            z::Z_DATA_ERROR => "invalid compressed data",
            z::Z_MEM_ERROR => "out of memory",
            z::Z_STREAM_ERROR => "inconsistent stream state",
            z::Z_VERSION_ERROR => "zlib version mismatch",
            _ => "unexpected zlib status",
        }
    }
}

/// Window bits for "raw deflate" (no header, no trailer).
pub(crate) const RAW: i32 = -15;
/// Window bits for "gzip or zlib wrapper, auto-detected".
pub(crate) const AUTO: i32 = 15 + 32;

/// Flush mode for [`Inflater::inflate`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flush {
    /// Stop at every deflate block boundary (`Z_BLOCK`).
    Block,
    /// Inflate as much as possible (`Z_NO_FLUSH`).
    None,
}

/// An initialised zlib inflate stream.
///
/// The `z_stream` is boxed because zlib keeps a pointer back to it in its internal state; it must
/// not move between calls.
pub(crate) struct Inflater {
    strm: Box<z::z_stream>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("total_in", &self.strm.total_in)
            .field("total_out", &self.strm.total_out)
            .finish()
    }
}

// SAFETY: the stream owns its state exclusively; zlib-rs keeps no thread-local or shared state, so
// moving the whole stream to another thread is sound. (It is not `Sync`: all calls take `&mut`.)
unsafe impl Send for Inflater {}

impl Inflater {
    /// `inflateInit2(window_bits)`.
    pub(crate) fn new(window_bits: i32) -> Result<Self, ZError> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: `strm` is a valid, default-initialised z_stream (zalloc/zfree/opaque set by
        // `Default` to the Rust allocator), and the version/size pair describes this exact struct.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if rc != z::Z_OK {
            return Err(ZError(rc));
        }
        Ok(Self { strm })
    }

    /// `inflateReset2(window_bits)`: start a new stream, keeping allocations.
    pub(crate) fn reset(&mut self, window_bits: i32) -> Result<(), ZError> {
        // SAFETY: the stream was initialised by `inflateInit2_` in `new` and not ended.
        let rc = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        if rc != z::Z_OK {
            return Err(ZError(rc));
        }
        Ok(())
    }

    /// `inflatePrime(bits, value)`: insert `bits` bits of `value` into the input bit buffer.
    pub(crate) fn prime(&mut self, bits: i32, value: i32) -> Result<(), ZError> {
        // SAFETY: the stream is initialised; inflatePrime validates `bits` itself.
        let rc = unsafe { z::inflatePrime(&mut *self.strm, bits, value) };
        if rc != z::Z_OK {
            return Err(ZError(rc));
        }
        Ok(())
    }

    /// `inflateSetDictionary(dict)`: preset the sliding window (raw mode).
    pub(crate) fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), ZError> {
        let len = u32::try_from(dict.len()).map_err(|_| ZError(z::Z_STREAM_ERROR))?;
        // SAFETY: the stream is initialised; `dict` is a live slice of `len` bytes that zlib only
        // reads during this call (it copies it into its own window).
        let rc = unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), len) };
        if rc != z::Z_OK {
            return Err(ZError(rc));
        }
        Ok(())
    }

    /// One `inflate` call. Returns (status, input bytes consumed, output bytes produced).
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<(Status, usize, usize), ZError> {
        // zlib counts in `uInt`; larger slices are simply offered in part.
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        let flush = match flush {
            Flush::Block => z::Z_BLOCK,
            Flush::None => z::Z_NO_FLUSH,
        };
        // SAFETY: next_in/avail_in describe the live `input` slice (read only) and
        // next_out/avail_out the live, exclusively borrowed `output` slice; both outlive the call
        // and the pointers are cleared again below so no dangling pointer is kept.
        let rc = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        match rc {
            z::Z_OK => Ok((Status::Ok, consumed, produced)),
            z::Z_STREAM_END => Ok((Status::StreamEnd, consumed, produced)),
            z::Z_BUF_ERROR => Ok((Status::BufError, consumed, produced)),
            other => Err(ZError(other)),
        }
    }

    /// zlib's `data_type` after the last call (unused bits, last-block and boundary flags).
    pub(crate) fn data_type(&self) -> i32 {
        self.strm.data_type
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised in `new` and is ended exactly once, here.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn inflates_gzip_with_auto_header() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"hello hello hello").unwrap();
        let gz = enc.finish().unwrap();
        let mut inf = Inflater::new(AUTO).unwrap();
        let mut out = [0u8; 64];
        let (st, used, n) = inf.inflate(&gz, &mut out, Flush::None).unwrap();
        assert_eq!(st, Status::StreamEnd);
        assert_eq!(used, gz.len());
        assert_eq!(&out[..n], b"hello hello hello");
    }

    #[test]
    fn garbage_is_a_data_error() {
        let mut inf = Inflater::new(AUTO).unwrap();
        let mut out = [0u8; 64];
        let err = inf
            .inflate(b"this is not gzip at all", &mut out, Flush::None)
            .unwrap_err();
        assert_eq!(err.0, z::Z_DATA_ERROR);
    }
}
