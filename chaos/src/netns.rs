//! A private network for the cluster's nodes: one network namespace per node, each with one
//! veth link to a bridge that also carries the harness's own addresses (HAProxy's
//! frontend, the S3 server) in the harness's namespace. Addresses are in 198.18.0.0/15,
//! the range reserved for network testing (RFC 2544), so they cannot be anyone's.
//!
//! Owns cutting and mending the links between two nodes, and isolating a node from
//! everyone. A cut is a static neighbour entry, on both sides, that maps the other node's
//! address to a hardware address no one has: packets to it leave and vanish without an
//! error, as in a real partition (no connection is refused or reset; the peers find out by
//! their own timeouts). Isolation takes the node's link down at the bridge.
//! Must never: touch an interface or namespace it did not create; leave any behind when
//! dropped.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// A hardware address no interface has (locally administered, unicast).
const NOWHERE_MAC: &str = "02:00:00:c4:a0:5e";
/// The harness's own address on the bridge, next to HAProxy's (.10) and S3's (.9).
pub const HARNESS_HOST: u8 = 254;

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (Debian's iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The bridge and the nodes' namespaces, removed when dropped.
pub struct Netns {
    /// Short random tag in every name, so runs side by side cannot collide.
    tag: String,
    /// The first three octets of every address, with the trailing dot ("198.18.B.").
    pub prefix: String,
    /// Node ids with a namespace.
    ids: Vec<u64>,
}

impl Netns {
    /// Creates the bridge with the harness's `hosts` addresses (last octets) and one
    /// namespace per node id, the node's address being `prefix` + id. Needs root.
    pub fn create(ids: &[u64], hosts: &[u8]) -> Result<Netns> {
        let r: u32 = rand::random();
        let tag = format!("{:04x}", r & 0xffff);
        let prefix = format!("198.{}.{}.", 18 + (r >> 16) % 2, (r >> 17) as u8);
        let mut n = Netns { tag, prefix, ids: Vec::new() };
        let bridge = n.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])
            .context("partition faults need network namespaces (as root, or leave them out with --kinds)")?;
        for h in hosts.iter().chain([&HARNESS_HOST]) {
            ip(&["addr", "add", &format!("{}{h}/24", n.prefix), "dev", &bridge])?;
        }
        ip(&["link", "set", &bridge, "up"])?;
        for &id in ids {
            let (ns, veth) = (n.namespace(id), n.veth(id));
            ip(&["netns", "add", &ns])?;
            n.ids.push(id);
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}{id}/24", n.prefix), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
        }
        Ok(n)
    }

    fn bridge(&self) -> String {
        format!("tch{}br", self.tag)
    }

    /// The namespace node `id` runs in (for `ip netns exec`).
    pub fn namespace(&self, id: u64) -> String {
        format!("tessera-chaos-{}-{id}", self.tag)
    }

    /// Node `id`'s link at the bridge (the harness's side of its veth pair).
    fn veth(&self, id: u64) -> String {
        format!("tch{}n{id}", self.tag)
    }

    /// Packets between nodes `a` and `b` vanish, both ways.
    pub fn cut(&self, a: u64, b: u64) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}{to}", self.prefix);
            ip(&["-n", &self.namespace(from), "neigh", "replace", &to, "lladdr", NOWHERE_MAC, "nud", "permanent", "dev", "eth0"])?;
        }
        Ok(())
    }

    /// Undoes `cut` (the neighbours are found again by ARP).
    pub fn mend(&self, a: u64, b: u64) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}{to}", self.prefix);
            // Absent when it was never cut: nothing to undo.
            let _ = ip(&["-n", &self.namespace(from), "neigh", "del", &to, "dev", "eth0"]);
        }
        Ok(())
    }

    /// Node `id` reaches no one and no one reaches it (its link down at the bridge), or
    /// back again.
    pub fn set_isolated(&self, id: u64, isolated: bool) -> Result<()> {
        ip(&["link", "set", &self.veth(id), if isolated { "down" } else { "up" }])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A namespace's veth goes with it; the bridge last.
        for &id in &self.ids {
            let _ = ip(&["netns", "del", &self.namespace(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
