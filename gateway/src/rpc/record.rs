//! ONC RPC record marking over TCP (RFC 5531 §11), sans-IO.
//!
//! Owns: splitting a byte stream into complete RPC records. Each fragment starts with a
//! 4-byte marker (high bit: last fragment; low 31 bits: length); fragments are joined into
//! one record. A single-fragment record (what every client we know sends) is handed out
//! as a zero-copy `Bytes` slice of the receive buffer, so a WRITE payload reaches the
//! engine without being copied.
//!
//! Must never: allocate or wait for what a marker claims before checking it against
//! `max_record_bytes`. A fragment or a record over the limit is an error: the server then
//! closes the connection (nothing else can resynchronise the stream).

use bytes::{Bytes, BytesMut};

use crate::rpc::ProtocolError;

const LAST_FRAGMENT: u32 = 0x8000_0000;
const MARKER_LEN: usize = 4;
/// Smallest read buffer offered to the socket.
const MIN_READ: usize = 64 * 1024;

/// Encodes the marker of a single-fragment record of `len` bytes.
pub fn marker(len: usize) -> [u8; 4] {
    let len = u32::try_from(len).unwrap_or(u32::MAX) & !LAST_FRAGMENT;
    (len | LAST_FRAGMENT).to_be_bytes()
}

/// Accumulates stream bytes and yields complete records.
#[derive(Debug)]
pub struct RecordDecoder {
    max: usize,
    /// Received bytes not yet consumed.
    buf: BytesMut,
    /// Earlier fragments of the record being assembled (multi-fragment records only).
    partial: BytesMut,
}

impl RecordDecoder {
    pub fn new(max_record_bytes: u32) -> Self {
        RecordDecoder { max: max_record_bytes as usize, buf: BytesMut::new(), partial: BytesMut::new() }
    }

    /// Appends received bytes (copying); a socket reader should prefer `read_buffer`.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer a socket should read into, with room reserved for the fragment in
    /// progress (only once its marker passed the size check) or a default read size.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        let wanted = match self.peek_marker() {
            Some((len, _)) if self.fits(len) => (MARKER_LEN + len).saturating_sub(self.buf.len()),
            _ => 0,
        };
        self.buf.reserve(wanted.max(MIN_READ));
        &mut self.buf
    }

    /// Bytes buffered but not yet returned as a record.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.partial.len()
    }

    fn peek_marker(&self) -> Option<(usize, bool)> {
        let head: [u8; 4] = self.buf.get(..MARKER_LEN)?.try_into().ok()?;
        let word = u32::from_be_bytes(head);
        Some(((word & !LAST_FRAGMENT) as usize, word & LAST_FRAGMENT != 0))
    }

    fn fits(&self, fragment_len: usize) -> bool {
        fragment_len <= self.max && self.partial.len().saturating_add(fragment_len) <= self.max
    }

    /// The next complete record, `Ok(None)` if more input is needed, or an error if the
    /// stream announced a fragment or record larger than the limit.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        loop {
            let Some((len, last)) = self.peek_marker() else { return Ok(None) };
            if !self.fits(len) {
                return Err(ProtocolError::RecordTooLarge {
                    len: self.partial.len().saturating_add(len),
                    max: self.max,
                });
            }
            if self.buf.len() < MARKER_LEN + len {
                return Ok(None);
            }
            let _ = self.buf.split_to(MARKER_LEN);
            let fragment = self.buf.split_to(len);
            if !last {
                self.partial.extend_from_slice(&fragment);
                continue;
            }
            if self.partial.is_empty() {
                return Ok(Some(fragment.freeze()));
            }
            self.partial.extend_from_slice(&fragment);
            return Ok(Some(self.partial.split().freeze()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frag(last: bool, data: &[u8]) -> Vec<u8> {
        let mut word = data.len() as u32;
        if last {
            word |= LAST_FRAGMENT;
        }
        let mut out = word.to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    /// Feeds `input` one byte at a time and in one piece; both must give `expected`.
    fn check(max: u32, input: &[u8], expected: Result<Vec<Vec<u8>>, ProtocolError>) {
        for chunk in [1, input.len().max(1)] {
            let mut d = RecordDecoder::new(max);
            let mut got = Vec::new();
            let mut outcome = Ok(());
            'feed: for piece in input.chunks(chunk) {
                d.push(piece);
                loop {
                    match d.next_record() {
                        Ok(Some(r)) => got.push(r.to_vec()),
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(e);
                            break 'feed;
                        }
                    }
                }
            }
            let result = outcome.map(|()| got);
            assert_eq!(result, expected, "fed in pieces of {chunk}");
        }
    }

    #[test]
    fn single_and_multi_fragment_records() {
        let mut input = frag(true, b"abcd");
        input.extend(frag(false, b"12"));
        input.extend(frag(false, b""));
        input.extend(frag(true, b"345"));
        check(16, &input, Ok(vec![b"abcd".to_vec(), b"12345".to_vec()]));
    }

    #[test]
    fn incomplete_record_waits() {
        let mut input = frag(true, b"abcd");
        input.truncate(6);
        check(16, &input, Ok(vec![]));
    }

    #[test]
    fn oversized_fragment_is_rejected_from_its_marker_alone() {
        // The marker claims 2 GiB; only the 4 marker bytes were sent.
        check(1024, &0xffff_ffffu32.to_be_bytes(), Err(ProtocolError::RecordTooLarge {
            len: 0x7fff_ffff,
            max: 1024,
        }));
    }

    #[test]
    fn oversized_record_of_small_fragments_is_rejected() {
        let mut input = frag(false, &[0; 8]);
        input.extend(frag(false, &[0; 8]));
        input.extend(frag(true, &[0; 8]));
        check(20, &input, Err(ProtocolError::RecordTooLarge { len: 24, max: 20 }));
    }

    #[test]
    fn read_buffer_reserves_only_checked_lengths() {
        let mut d = RecordDecoder::new(1024);
        d.push(&0xffff_ffffu32.to_be_bytes());
        assert!(d.read_buffer().capacity() < 1 << 20);
        let mut d = RecordDecoder::new(4 << 20);
        d.push(&(LAST_FRAGMENT | (2 << 20)).to_be_bytes());
        assert!(d.read_buffer().capacity() >= 2 << 20);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0u32..300) {
            let mut d = RecordDecoder::new(max);
            d.push(&bytes);
            while let Ok(Some(r)) = d.next_record() {
                prop_assert!(r.len() <= max as usize);
            }
        }
    }
}
