//! XDR (RFC 4506) primitives: a bounds-checked reader over `&[u8]` and an appending writer.
//!
//! Owns: the big-endian 4-byte-aligned encoding of integers, booleans, fixed and variable
//! opaque data and strings. Every protocol codec in the gateway (ONC RPC, MOUNT, NFSv3)
//! is written with these two types.
//!
//! Must never: panic, or allocate a length read from the input. The reader hands out
//! borrowed slices of its input (no copies), and checks every length against both the
//! caller's protocol limit and the bytes actually remaining before touching them.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::rpc::ProtocolError;

/// Bytes of padding after `len` bytes of opaque data, to the next multiple of four.
pub fn pad_len(len: usize) -> usize {
    (4 - (len % 4)) % 4
}

/// Encoded size of a variable-length opaque/string of `len` bytes (length word + data + pad).
pub fn opaque_size(len: usize) -> usize {
    4 + len + pad_len(len)
}

/// A cursor over XDR-encoded input.
#[derive(Debug, Clone)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> XdrReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        XdrReader { buf, pos: 0 }
    }

    /// Offset of the next unread byte from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(ProtocolError::Truncated { needed: n, remaining: self.remaining() })?;
        let out = self.buf.get(self.pos..end).ok_or(ProtocolError::Truncated { needed: n, remaining: 0 })?;
        self.pos = end;
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        let mut w = [0u8; 4];
        w.copy_from_slice(b);
        Ok(u32::from_be_bytes(w))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_be_bytes(w))
    }

    /// An XDR bool: exactly 0 or 1.
    pub fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::BadDiscriminant { what: "bool", value: v }),
        }
    }

    /// Fixed-length opaque data of `N` bytes (plus padding).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        self.take(pad_len(N))?;
        Ok(out)
    }

    /// Variable-length opaque data of at most `max` bytes, as the range it occupies in the
    /// input (so a caller holding the input as `Bytes` can slice it without copying).
    pub fn opaque_range(&mut self, max: usize) -> Result<Range<usize>, ProtocolError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(ProtocolError::TooLong { len, max });
        }
        let start = self.pos;
        self.take(len)?;
        let end = self.pos;
        self.take(pad_len(len))?;
        Ok(start..end)
    }

    /// Variable-length opaque data (or an XDR string) of at most `max` bytes, borrowed.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], ProtocolError> {
        let range = self.opaque_range(max)?;
        self.buf.get(range).ok_or(ProtocolError::Truncated { needed: 0, remaining: 0 })
    }
}

/// Encoded XDR as a head written in place plus an optional shared tail (a READ's data),
/// so bulk data is sent from the buffer it was read into, without a copy.
#[derive(Debug, Default)]
pub struct Encoded {
    pub head: BytesMut,
    /// Opaque data following `head`; its XDR padding is implied.
    pub tail: Bytes,
}

static ZEROS: [u8; 3] = [0; 3];

impl Encoded {
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len() + pad_len(self.tail.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in order, as one buffer chain (no copies).
    pub fn into_buf(self) -> impl Buf {
        let pad = ZEROS.get(..pad_len(self.tail.len())).unwrap_or(&[]);
        self.head.freeze().chain(self.tail).chain(pad)
    }

    /// The bytes as one buffer: the head itself when there is no tail, else a copy.
    pub fn into_bytes(self) -> Bytes {
        if self.tail.is_empty() {
            return self.head.freeze();
        }
        Bytes::from(self.to_vec())
    }

    /// The bytes flattened into one vector (tests, small replies).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.tail);
        out.resize(self.len(), 0);
        out
    }
}

/// Already encoded bytes (a cached reply), kept by reference when their length is a
/// multiple of four (as every XDR encoding's is), copied otherwise.
impl From<Bytes> for Encoded {
    fn from(bytes: Bytes) -> Self {
        if pad_len(bytes.len()) == 0 {
            Encoded { head: BytesMut::new(), tail: bytes }
        } else {
            Encoded { head: BytesMut::from(&bytes[..]), tail: Bytes::new() }
        }
    }
}

/// Appends XDR to a growable buffer.
#[derive(Debug, Default)]
pub struct XdrWriter {
    buf: BytesMut,
    tail: Bytes,
}

impl XdrWriter {
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    pub fn with_capacity(cap: usize) -> Self {
        XdrWriter { buf: BytesMut::with_capacity(cap), tail: Bytes::new() }
    }

    /// Bytes written so far, including a shared tail and its padding.
    pub fn len(&self) -> usize {
        self.buf.len() + self.tail.len() + pad_len(self.tail.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything written after the first `len` bytes (and any shared tail).
    pub fn truncate(&mut self, len: usize) {
        self.tail = Bytes::new();
        self.buf.truncate(len);
    }

    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// The encoding, flattened (copies a shared tail if there is one).
    pub fn into_inner(self) -> BytesMut {
        let mut buf = self.buf;
        buf.extend_from_slice(&self.tail);
        buf.put_bytes(0, pad_len(self.tail.len()));
        buf
    }

    /// The encoding as head + shared tail.
    pub fn finish(self) -> Encoded {
        Encoded { head: self.buf, tail: self.tail }
    }

    /// The bytes written in place (without a shared tail).
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Variable-length opaque data kept by reference as the final item of the encoding
    /// (no copy). Nothing may be written after it; a second tail replaces the first.
    pub fn opaque_tail(&mut self, data: Bytes) {
        self.buf.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.tail = data;
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.put_u32(u32::from(v));
    }

    /// Fixed-length opaque data (no length word), padded.
    pub fn fixed(&mut self, data: &[u8]) {
        self.buf.put_slice(data);
        self.pad(data.len());
    }

    /// Variable-length opaque data or string: length word, data, padding. The caller
    /// guarantees `data.len()` fits the protocol's limit (and therefore a u32).
    pub fn opaque(&mut self, data: &[u8]) {
        self.buf.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.buf.put_slice(data);
        self.pad(data.len());
    }

    fn pad(&mut self, len: usize) {
        self.buf.put_bytes(0, pad_len(len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: std::fmt::Debug + PartialEq>(
        input: &[u8],
        read: impl Fn(&mut XdrReader<'_>) -> Result<T, ProtocolError>,
        expected: Result<T, ProtocolError>,
    ) {
        let mut r = XdrReader::new(input);
        assert_eq!(read(&mut r), expected, "input {input:02x?}");
    }

    #[test]
    fn integers_and_bools() {
        check(&[0, 0, 1, 2], |r| r.u32(), Ok(258));
        check(&[0xff, 0xff, 0xff, 0xfe], |r| r.i32(), Ok(-2));
        check(&[0, 0, 0, 0, 0, 0, 1, 0], |r| r.u64(), Ok(256));
        check(&[0, 0, 0, 1], |r| r.bool(), Ok(true));
        check(&[0, 0, 0, 2], |r| r.bool(), Err(ProtocolError::BadDiscriminant { what: "bool", value: 2 }));
        check(&[0, 0, 1], |r| r.u32(), Err(ProtocolError::Truncated { needed: 4, remaining: 3 }));
    }

    #[test]
    fn opaque_checks_limit_before_remaining() {
        check(&[0, 0, 0, 3, b'a', b'b', b'c', 0], |r| r.opaque(8).map(<[u8]>::to_vec), Ok(b"abc".to_vec()));
        // Claims 4 GiB: rejected by the limit, nothing allocated.
        check(&[0xff, 0xff, 0xff, 0xff], |r| r.opaque(16).map(<[u8]>::to_vec), Err(ProtocolError::TooLong {
            len: 0xffff_ffff,
            max: 16,
        }));
        // Within the limit but longer than the input.
        check(&[0, 0, 0, 8, 1, 2], |r| r.opaque(16).map(<[u8]>::to_vec), Err(ProtocolError::Truncated {
            needed: 8,
            remaining: 2,
        }));
        // Missing padding is truncation too.
        check(&[0, 0, 0, 3, b'a', b'b', b'c'], |r| r.opaque(8).map(<[u8]>::to_vec), Err(ProtocolError::Truncated {
            needed: 1,
            remaining: 0,
        }));
        check(&[0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 9], |r| r.opaque_range(8), Ok(4..9));
    }

    #[test]
    fn writer_pads_and_round_trips() {
        let mut w = XdrWriter::new();
        w.u32(7);
        w.opaque(b"hello");
        w.fixed(&[1, 2, 3, 4, 5, 6, 7, 8]);
        w.u64(u64::MAX);
        w.bool(true);
        assert_eq!(w.len(), 4 + opaque_size(5) + 8 + 8 + 4);
        let bytes = w.into_inner();
        let mut r = XdrReader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.opaque(5), Ok(&b"hello"[..]));
        assert_eq!(r.fixed::<8>(), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn shared_tail_is_padded_and_ordered() {
        let mut w = XdrWriter::new();
        w.u32(1);
        w.opaque_tail(Bytes::from_static(b"hello"));
        assert_eq!(w.len(), 4 + opaque_size(5));
        let e = w.finish();
        let mut flat = XdrWriter::new();
        flat.u32(1);
        flat.opaque(b"hello");
        assert_eq!(e.to_vec(), flat.as_slice());
        let mut buf = e.into_buf();
        assert_eq!(buf.copy_to_bytes(buf.remaining()), flat.as_slice());
    }
}
