//! QUIC chunk frames: the data-plane protocol between gateways and block daemons.
//!
//! One request and one response per bidirectional QUIC stream. Both start with a fixed
//! 12-byte header whose length field is checked against a per-operation limit *before*
//! the receiver allocates or reads the body (invariant 6).
//!
//! ```text
//! request:  "TSCQ" | version:u8 = 1 | op:u8 | flags:u16 = 0 | body_len:u32 (BE) | body
//! response: "TSCR" | version:u8 = 1 | status:u8 | flags:u16 = 0 | body_len:u32 (BE) | body
//!
//! PUT  body: hash[32] | chunk bytes           -> OK, empty body (chunk fsynced)
//! GET  body: hash[32]                         -> OK, chunk bytes (verified by the sender
//!                                                and to be verified again by the reader)
//! HAS  body: hash[32] * n (1 <= n <= MAX_HAS) -> OK, n bytes: 1 = present, 0 = absent
//! any error status                            -> a UTF-8 message of <= MAX_MESSAGE_LEN
//! ```
//!
//! The decoders are pure functions over bytes so they can be fuzzed.

use crate::chunk::{ChunkHash, HASH_LEN};

pub const HEADER_LEN: usize = 12;
pub const FRAME_VERSION: u8 = 1;
const REQUEST_MAGIC: &[u8; 4] = b"TSCQ";
const RESPONSE_MAGIC: &[u8; 4] = b"TSCR";
/// Largest chunk a block daemon accepts (FastCDC's largest maximum size).
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;
/// Most hashes in one HAS request.
pub const MAX_HAS: usize = 4096;
/// Longest error message in a response.
pub const MAX_MESSAGE_LEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put = 1,
    Get = 2,
    Has = 3,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::Put),
            2 => Some(Op::Get),
            3 => Some(Op::Has),
            _ => None,
        }
    }

    /// Largest request body this operation may carry.
    pub fn max_request_body(self) -> usize {
        match self {
            Op::Put => HASH_LEN + MAX_CHUNK_LEN,
            Op::Get => HASH_LEN,
            Op::Has => HASH_LEN * MAX_HAS,
        }
    }

    /// Largest OK response body this operation may carry.
    pub fn max_response_body(self) -> usize {
        match self {
            Op::Put => 0,
            Op::Get => MAX_CHUNK_LEN,
            Op::Has => MAX_HAS,
        }
    }
}

/// Outcome of a request, as carried in the response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    /// The stored copy failed its hash check; the daemon did not send it.
    Corrupt = 2,
    /// The daemon's disk is (nearly) full; the put was refused.
    NoSpace = 3,
    BadRequest = 4,
    Internal = 5,
    /// The daemon cannot serve it now but may soon (its S3 tier or metad is unreachable):
    /// ask again, or another daemon.
    Unavailable = 6,
}

impl Status {
    fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Corrupt,
            3 => Status::NoSpace,
            4 => Status::BadRequest,
            5 => Status::Internal,
            6 => Status::Unavailable,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic")]
    Magic,
    #[error("frame version {0} is not understood")]
    Version(u8),
    #[error("unknown operation {0}")]
    UnknownOp(u8),
    #[error("unknown status {0}")]
    UnknownStatus(u8),
    #[error("non-zero flags {0:#x}")]
    Flags(u16),
    #[error("body of {len} bytes exceeds the limit of {limit} for this frame")]
    TooLong { len: usize, limit: usize },
    #[error("body of {len} bytes is malformed for {op:?}")]
    Malformed { op: Op, len: usize },
    #[error("chunk bytes do not match their hash")]
    HashMismatch,
}

/// A validated request header: `body_len` is within the operation's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub op: Op,
    pub body_len: usize,
}

/// A validated response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    pub status: Status,
    pub body_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Put { hash: ChunkHash, data: &'a [u8] },
    Get { hash: ChunkHash },
    Has { hashes: Vec<ChunkHash> },
}

impl Request<'_> {
    pub fn op(&self) -> Op {
        match self {
            Request::Put { .. } => Op::Put,
            Request::Get { .. } => Op::Get,
            Request::Has { .. } => Op::Has,
        }
    }
}

fn header(magic: &[u8; 4], code: u8, body_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(magic);
    h[4] = FRAME_VERSION;
    h[5] = code;
    // Callers only encode bodies within the limits, all far below u32::MAX.
    h[8..12].copy_from_slice(&(body_len.min(u32::MAX as usize) as u32).to_be_bytes());
    h
}

fn parse_header(bytes: &[u8; HEADER_LEN], magic: &[u8; 4]) -> Result<(u8, usize), FrameError> {
    if &bytes[..4] != magic {
        return Err(FrameError::Magic);
    }
    if bytes[4] != FRAME_VERSION {
        return Err(FrameError::Version(bytes[4]));
    }
    let flags = u16::from_be_bytes([bytes[6], bytes[7]]);
    if flags != 0 {
        return Err(FrameError::Flags(flags));
    }
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    Ok((bytes[5], len))
}

/// The header for a request whose body is `body_len` bytes (written before the body, so a
/// PUT can be sent as header, hash, data without copying the chunk).
pub fn request_header(op: Op, body_len: usize) -> [u8; HEADER_LEN] {
    header(REQUEST_MAGIC, op as u8, body_len)
}

/// Encodes a whole request frame.
pub fn encode_request(req: &Request<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    match req {
        Request::Put { hash, data } => {
            body.reserve(HASH_LEN + data.len());
            body.extend_from_slice(hash.as_bytes());
            body.extend_from_slice(data);
        }
        Request::Get { hash } => body.extend_from_slice(hash.as_bytes()),
        Request::Has { hashes } => hashes.iter().for_each(|h| body.extend_from_slice(h.as_bytes())),
    }
    let mut out = request_header(req.op(), body.len()).to_vec();
    out.extend_from_slice(&body);
    out
}

pub fn decode_request_header(bytes: &[u8; HEADER_LEN]) -> Result<RequestHeader, FrameError> {
    let (code, body_len) = parse_header(bytes, REQUEST_MAGIC)?;
    let op = Op::from_u8(code).ok_or(FrameError::UnknownOp(code))?;
    let limit = op.max_request_body();
    if body_len > limit {
        return Err(FrameError::TooLong { len: body_len, limit });
    }
    Ok(RequestHeader { op, body_len })
}

/// Decodes a request body read after `header`. A PUT's data is checked against its hash.
pub fn decode_request_body<'a>(header: &RequestHeader, body: &'a [u8]) -> Result<Request<'a>, FrameError> {
    let malformed = FrameError::Malformed { op: header.op, len: body.len() };
    if body.len() != header.body_len {
        return Err(malformed);
    }
    match header.op {
        Op::Put => {
            if body.len() <= HASH_LEN {
                return Err(malformed);
            }
            let (h, data) = body.split_at(HASH_LEN);
            let hash = ChunkHash::from_slice(h).ok_or(malformed)?;
            if blake3::hash(data).as_bytes() != hash.as_bytes() {
                return Err(FrameError::HashMismatch);
            }
            Ok(Request::Put { hash, data })
        }
        Op::Get => Ok(Request::Get { hash: ChunkHash::from_slice(body).ok_or(malformed)? }),
        Op::Has => {
            if body.is_empty() || !body.len().is_multiple_of(HASH_LEN) {
                return Err(malformed);
            }
            let hashes = body.chunks_exact(HASH_LEN).filter_map(ChunkHash::from_slice).collect();
            Ok(Request::Has { hashes })
        }
    }
}

/// Decodes a whole request frame (header + body in one buffer).
pub fn decode_request(bytes: &[u8]) -> Result<Request<'_>, FrameError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Magic)?;
    let header = decode_request_header(head)?;
    decode_request_body(&header, &bytes[HEADER_LEN..])
}

pub fn response_header(status: Status, body_len: usize) -> [u8; HEADER_LEN] {
    header(RESPONSE_MAGIC, status as u8, body_len)
}

/// Encodes a whole response frame.
pub fn encode_response(status: Status, body: &[u8]) -> Vec<u8> {
    let mut out = response_header(status, body.len()).to_vec();
    out.extend_from_slice(body);
    out
}

/// Encodes an error response; the message is cut to `MAX_MESSAGE_LEN` bytes.
pub fn encode_error(status: Status, message: &str) -> Vec<u8> {
    let mut end = message.len().min(MAX_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    encode_response(status, &message.as_bytes()[..end])
}

/// Validates a response header for a request of `op`.
pub fn decode_response_header(bytes: &[u8; HEADER_LEN], op: Op) -> Result<ResponseHeader, FrameError> {
    let (code, body_len) = parse_header(bytes, RESPONSE_MAGIC)?;
    let status = Status::from_u8(code).ok_or(FrameError::UnknownStatus(code))?;
    let limit = if status == Status::Ok { op.max_response_body() } else { MAX_MESSAGE_LEN };
    if body_len > limit {
        return Err(FrameError::TooLong { len: body_len, limit });
    }
    Ok(ResponseHeader { status, body_len })
}

/// Decodes the body of an OK response to HAS of `asked` hashes.
pub fn decode_has_body(body: &[u8], asked: usize) -> Result<Vec<bool>, FrameError> {
    if body.len() != asked || body.iter().any(|b| *b > 1) {
        return Err(FrameError::Malformed { op: Op::Has, len: body.len() });
    }
    Ok(body.iter().map(|b| *b == 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash_of(data: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    #[test]
    fn requests_round_trip() {
        let data = b"hello chunk";
        for req in [
            Request::Put { hash: hash_of(data), data },
            Request::Get { hash: hash_of(b"x") },
            Request::Has { hashes: vec![hash_of(b"a"), hash_of(b"b")] },
        ] {
            let bytes = encode_request(&req);
            assert_eq!(decode_request(&bytes), Ok(req));
        }
    }

    #[test]
    fn put_with_wrong_hash_is_refused() {
        let bytes = encode_request(&Request::Put { hash: hash_of(b"other"), data: b"data" });
        assert_eq!(decode_request(&bytes), Err(FrameError::HashMismatch));
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_header_alone() {
        let h = request_header(Op::Put, u32::MAX as usize);
        assert!(matches!(decode_request_header(&h), Err(FrameError::TooLong { .. })));
        let h = request_header(Op::Get, 33);
        assert!(matches!(decode_request_header(&h), Err(FrameError::TooLong { .. })));
        let h = response_header(Status::Ok, MAX_CHUNK_LEN + 1);
        assert!(matches!(decode_response_header(&h, Op::Get), Err(FrameError::TooLong { .. })));
        let h = response_header(Status::Ok, 1);
        assert!(matches!(decode_response_header(&h, Op::Put), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut h = request_header(Op::Get, 32);
        h[0] = b'X';
        assert_eq!(decode_request_header(&h), Err(FrameError::Magic));
        let mut h = request_header(Op::Get, 32);
        h[4] = 9;
        assert_eq!(decode_request_header(&h), Err(FrameError::Version(9)));
        let mut h = request_header(Op::Get, 32);
        h[5] = 77;
        assert_eq!(decode_request_header(&h), Err(FrameError::UnknownOp(77)));
        let mut h = request_header(Op::Get, 32);
        h[7] = 1;
        assert_eq!(decode_request_header(&h), Err(FrameError::Flags(1)));
        let has = request_header(Op::Has, 31);
        let header = decode_request_header(&has).expect("within limit");
        assert!(matches!(decode_request_body(&header, &[0; 31]), Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn has_body_is_checked() {
        assert_eq!(decode_has_body(&[1, 0], 2), Ok(vec![true, false]));
        assert!(decode_has_body(&[1], 2).is_err());
        assert!(decode_has_body(&[2, 0], 2).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&bytes);
            if let Some(h) = bytes.get(..HEADER_LEN).and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok()) {
                let _ = decode_response_header(h, Op::Get);
                let _ = decode_response_header(h, Op::Has);
            }
        }
    }
}
