//! The PROXY protocol header (HAProxy's v1 text or v2 binary form) that a load balancer
//! sends at the start of a connection, naming the client it accepted the connection from.
//!
//! Owns reading that header from bytes (the `ppp` crate parses; this module bounds and
//! interprets): which client address it names, and how many bytes it took. The server
//! asks for it only on connections from the addresses `nfs.proxy_protocol_from` lists
//! (`server`), so export rules (allowed clients) and the duplicate request cache see the
//! client behind the load balancer instead of the load balancer itself.
//!
//! Must never: trust a header from an address not listed (the server's business), guess
//! where a malformed header ends (the protocol forbids it: the connection is closed), or
//! wait for more than `MAX_HEADER_BYTES` (a v2 header declares its own length; it is never
//! allocated for). A pure function over bytes, fuzzed with the RPC decoders.

use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, PartialResult, v1, v2};

/// Most bytes a header may take (a v1 header is at most 107; a v2 header with addresses
/// and the TLVs HAProxy sends by default is well under this).
pub const MAX_HEADER_BYTES: usize = 1024;

/// What the bytes received so far hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The start of a header: read more.
    Incomplete,
    /// A header of `len` bytes; `client` is the address it names, or `None` for a
    /// connection the load balancer made itself (v2 LOCAL, a health check) or one it
    /// could not describe (v1 UNKNOWN, v2 UNSPEC/UNIX): keep the connection's own peer.
    Header { len: usize, client: Option<SocketAddr> },
}

/// Why the bytes are not a PROXY header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
}

/// Parses the header at the start of `buf` (bytes after it belong to the client).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(MAX_HEADER_BYTES)];
    let result = HeaderResult::parse(window);
    if result.is_incomplete() {
        return if window.len() >= MAX_HEADER_BYTES { Err(ProxyHeaderError::TooLong) } else { Ok(Parsed::Incomplete) };
    }
    let (len, client) = match result {
        HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(&h.addresses)),
        HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h)),
        HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Malformed(e.to_string())),
    };
    if len == 0 || len > window.len() {
        return Err(ProxyHeaderError::Malformed(format!("a header of {len} bytes in {} received", window.len())));
    }
    Ok(Parsed::Header { len, client })
}

fn v1_client(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(h: &v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == v2::Command::Local {
        return None;
    }
    match h.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        v2::Addresses::IPv6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
pub(crate) mod tests {
    use super::*;

    /// A v2 PROXY header for a TCP/IPv4 connection from `src`, with `tlv` appended.
    pub(crate) fn v2_ipv4(src: ([u8; 4], u16), tlv: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x21); // version 2, PROXY
        h.push(0x11); // TCP over IPv4
        h.extend_from_slice(&(12 + tlv.len() as u16).to_be_bytes());
        h.extend_from_slice(&src.0);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h.extend_from_slice(&src.1.to_be_bytes());
        h.extend_from_slice(&2049u16.to_be_bytes());
        h.extend_from_slice(tlv);
        h
    }

    #[test]
    fn headers_name_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 2049\r\n\x80\x00";
        assert_eq!(
            parse(v1),
            Ok(Parsed::Header { len: v1.len() - 2, client: Some("192.0.2.7:51000".parse().unwrap()) })
        );
        let v1_6 = b"PROXY TCP6 2001:db8::9 2001:db8::1 4000 2049\r\n";
        assert_eq!(parse(v1_6), Ok(Parsed::Header { len: v1_6.len(), client: Some("[2001:db8::9]:4000".parse().unwrap()) }));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Header { len: 15, client: None }));

        let mut v2 = v2_ipv4(([198, 51, 100, 4], 700), &[0x04, 0x00, 0x01, 0x00]); // one NOOP TLV
        let len = v2.len();
        v2.extend_from_slice(b"\x80\x00\x00\x28");
        assert_eq!(parse(&v2), Ok(Parsed::Header { len, client: Some("198.51.100.4:700".parse().unwrap()) }));
        // LOCAL (HAProxy's own health check): no client to name.
        let mut local = v2_ipv4(([1, 2, 3, 4], 1), &[]);
        local[12] = 0x20;
        assert_eq!(parse(&local), Ok(Parsed::Header { len: local.len(), client: None }));
    }

    #[test]
    fn partial_headers_wait_and_malformed_or_endless_ones_are_refused() {
        let v2 = v2_ipv4(([198, 51, 100, 4], 700), &[]);
        for cut in [1, 5, 12, 15, v2.len() - 1] {
            assert_eq!(parse(&v2[..cut]), Ok(Parsed::Incomplete), "{cut} bytes");
        }
        assert_eq!(parse(b"PROXY TCP4 1.2"), Ok(Parsed::Incomplete));
        // An RPC record where a header was due, a bad address, a bad version.
        assert!(matches!(parse(b"\x80\x00\x00\x28\x00\x00\x00\x01"), Err(ProxyHeaderError::Malformed(_))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.999 10.0.0.1 1 2\r\n"), Err(ProxyHeaderError::Malformed(_))));
        let mut bad = v2.clone();
        bad[12] = 0x31;
        assert!(matches!(parse(&bad), Err(ProxyHeaderError::Malformed(_))));
        // A v2 header declaring 60,000 bytes is not waited for past the bound.
        let mut long = v2_ipv4(([1, 2, 3, 4], 1), &[]);
        long[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        long.resize(MAX_HEADER_BYTES + 10, 0);
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
        let endless = [b'P', b'R', b'O', b'X', b'Y', b' '].iter().copied().chain(std::iter::repeat_n(b'1', 2000)).collect::<Vec<_>>();
        assert!(parse(&endless).is_err());
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let base = v2_ipv4(([198, 51, 100, 4], 700), &[0x04, 0x00, 0x01, 0x00]);
        // The decoder fuzz's count (`TESSERA_FUZZ_CALLS`, README "Tests"), a fifth of it here.
        let n = std::env::var("TESSERA_FUZZ_CALLS").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(100_000) / 5;
        for i in 0..n {
            let mut b = if i % 2 == 0 { base.clone() } else { b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 2049\r\n".to_vec() };
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            b.truncate(rng.random_range(0..=b.len()));
            if let Ok(Parsed::Header { len, .. }) = parse(&b) {
                assert!(len <= b.len());
            }
        }
    }
}
