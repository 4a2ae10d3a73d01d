//! The syntax of a share's allowed-client entries (`Share.allowed_clients`), and matching an
//! address against one.
//!
//! Owns: parsing one entry (`*`, an IP address, or a CIDR block `address/prefix`, IPv4 or
//! IPv6) into a [`ClientMatch`], so metad (which refuses a bad entry with `Invalid`) and the
//! gateways (which match callers against the entries) read it alike.
//! Must never: resolve host names (an entry is never a DNS name), or panic on any input.
//!
//! Matching compares IPv4-mapped IPv6 callers (`::ffff:10.0.0.1`, what a dual-stack socket
//! reports) as the IPv4 address they carry. Host bits below the prefix are ignored
//! (`10.1.2.3/8` is `10.0.0.0/8`), as knfsd does.

use std::net::IpAddr;

/// Longest entry accepted (an IPv6 CIDR is at most 43 bytes).
pub const MAX_CLIENT_ENTRY_LEN: usize = 64;
/// Most entries one share may list.
pub const MAX_CLIENT_ENTRIES: usize = 256;

/// One allowed-client entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMatch {
    /// `*`: every client.
    Any,
    /// `address/prefix` (a single address is the full-length prefix).
    Net { addr: IpAddr, prefix: u8 },
}

impl ClientMatch {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<ClientMatch, String> {
        if entry.len() > MAX_CLIENT_ENTRY_LEN {
            return Err(format!("client entry of {} bytes, at most {MAX_CLIENT_ENTRY_LEN}", entry.len()));
        }
        if entry == "*" {
            return Ok(ClientMatch::Any);
        }
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        let addr: IpAddr =
            addr.parse().map_err(|_| format!("client entry {entry:?}: not '*', an IP address or a CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("client entry {entry:?}: prefix length above {max}"))?,
            Some(_) => return Err(format!("client entry {entry:?}: the prefix length is not a number")),
        };
        Ok(ClientMatch::Net { addr, prefix })
    }

    /// Whether `client` is covered by this entry.
    pub fn matches(&self, client: IpAddr) -> bool {
        let ClientMatch::Net { addr, prefix } = *self else { return true };
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (addr, client) {
            (IpAddr::V4(a), IpAddr::V4(c)) => {
                same_prefix(u128::from(a.to_bits()) << 96, u128::from(c.to_bits()) << 96, prefix)
            }
            (IpAddr::V6(a), IpAddr::V6(c)) => same_prefix(a.to_bits(), c.to_bits(), prefix),
            _ => false,
        }
    }
}

/// The top `prefix` bits of `a` and `b` are equal.
fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
    a & mask == b & mask
}

/// Checks a whole list as a share carries it (empty = every client).
pub fn check_client_list(entries: &[String]) -> Result<(), String> {
    if entries.len() > MAX_CLIENT_ENTRIES {
        return Err(format!("{} allowed-client entries, at most {MAX_CLIENT_ENTRIES}", entries.len()));
    }
    entries.iter().try_for_each(|e| ClientMatch::parse(e).map(|_| ()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(entry: &str, client: &str, expected: bool) {
        let m = ClientMatch::parse(entry).unwrap();
        assert_eq!(m.matches(client.parse().unwrap()), expected, "{entry} vs {client}");
    }

    #[test]
    fn matching() {
        check("*", "10.1.2.3", true);
        check("*", "::1", true);
        check("10.1.2.3", "10.1.2.3", true);
        check("10.1.2.3", "10.1.2.4", false);
        check("10.0.0.0/8", "10.200.0.1", true);
        check("10.0.0.0/8", "11.0.0.1", false);
        check("10.9.9.9/8", "10.0.0.1", true);
        check("127.0.0.0/8", "::ffff:127.0.0.1", true);
        check("0.0.0.0/0", "192.168.1.1", true);
        check("0.0.0.0/0", "::1", false);
        check("::1", "::1", true);
        check("fd00::/8", "fd12::5", true);
        check("fd00::/8", "fe80::1", false);
        check("::/0", "fe80::1", true);
        check("192.168.0.0/16", "::1", false);
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "",
            "host.example",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/8/8",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            " 10.0.0.1",
            "**",
            "10.0.0.0/0008",
        ] {
            assert!(ClientMatch::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ClientMatch::parse(&"1".repeat(65)).is_err());
        assert!(check_client_list(&vec!["*".to_string(); 257]).is_err());
        assert!(check_client_list(&vec!["*".to_string(); 256]).is_ok());
        assert!(check_client_list(&["10.0.0.1".into(), "nope".into()]).is_err());
        assert!(check_client_list(&[]).is_ok());
    }

    proptest! {
        #[test]
        fn random_entries_never_panic(entry in ".{0,80}", client in any::<[u8; 16]>()) {
            if let Ok(m) = ClientMatch::parse(&entry) {
                let _ = m.matches(IpAddr::from(client));
            }
        }
    }
}
