//! Who may call what on metad's internal port: the role named by the caller's certificate
//! (`tessera:role:<role>`, issued by the cluster CA) against the gRPC method it calls.
//!
//! Owns: [`may_call`], the policy the node's internal listener enforces through
//! `cluster::grpc_tls::RoleGateLayer` (a refused call is answered `PermissionDenied`, a call
//! without a role certificate `Unauthenticated`, before any service code runs):
//!
//! | methods                                                     | metad | gateway | blockd | tool |
//! |-------------------------------------------------------------|:-----:|:-------:|:------:|:----:|
//! | `Raft/*` (AppendEntries, Vote, snapshots, ClientWrite, ReadIndex) | ✓ |       |        |      |
//! | `Control/*` (forwarded control calls)                       |   ✓   |         |        |      |
//! | `Control/Status`, `Control/Members`                         |   ✓   |         |        |  ✓   |
//! | `Meta` reads: GetShare, ListShares, GetAttr, Lookup, ReadDir, GetExtents, FsStat, ReadLink, Access | ✓ | ✓ |  | ✓ |
//! | `Meta` mutations: Create, Remove, SetAttr, CommitExtents, AcquireWriteLease, Symlink, Mknod, Link, Rename | ✓ | ✓ |   |      |
//! | `Meta/ListBlockDaemons`                                     |   ✓   |    ✓    |   ✓    |  ✓   |
//! | `Meta/Heartbeat`, `Meta/RecordPacks`                        |   ✓   |         |   ✓    |      |
//! | `Meta/LocateChunks`                                         |   ✓   |         |   ✓    |  ✓   |
//!
//! A `metad` certificate may call every method of the three services: a member can change
//! any state through Raft anyway. A `tool` certificate only reads. A role this build does not
//! know, and any method not listed (a new RPC, another service), is refused until it is
//! added here.
//!
//! Must never: allow a non-`metad` certificate any `Raft` method (it would let its holder
//! vote, append to the log or install a snapshot), or a `tool` certificate any mutation;
//! look at anything but the verified role and the method path.

use cluster::tls::Role;
use proto::pb::control_server::SERVICE_NAME as CONTROL;
use proto::pb::meta_server::SERVICE_NAME as META;
use proto::pb::raft_server::SERVICE_NAME as RAFT;

/// `Meta` methods that only read.
const META_READS: &[&str] =
    &["GetShare", "ListShares", "GetAttr", "Lookup", "ReadDir", "GetExtents", "FsStat", "ReadLink", "Access"];
/// `Meta` methods that change the namespace or file contents.
const META_WRITES: &[&str] =
    &["Create", "Remove", "SetAttr", "CommitExtents", "AcquireWriteLease", "Symlink", "Mknod", "Link", "Rename"];
/// `Control` methods that only read.
const CONTROL_READS: &[&str] = &["Status", "Members"];

/// Whether a caller whose certificate names `role` may call the method at `path`
/// (`/tessera.meta.v1.Meta/GetAttr`).
pub fn may_call(role: &Role, path: &str) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    if method.is_empty() || method.contains('/') {
        return false;
    }
    match role {
        Role::Metad => [RAFT, META, CONTROL].contains(&service),
        Role::Gateway => {
            service == META
                && (META_READS.contains(&method) || META_WRITES.contains(&method) || method == "ListBlockDaemons")
        }
        Role::Blockd => {
            service == META && ["Heartbeat", "RecordPacks", "LocateChunks", "ListBlockDaemons"].contains(&method)
        }
        Role::Tool => {
            (service == META
                && (META_READS.contains(&method) || ["ListBlockDaemons", "LocateChunks"].contains(&method)))
                || (service == CONTROL && CONTROL_READS.contains(&method))
        }
        Role::Other(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(service: &str, method: &str) -> String {
        format!("/{service}/{method}")
    }

    const RAFT_METHODS: &[&str] =
        &["AppendEntries", "Vote", "FullSnapshot", "StreamSnapshot", "ClientWrite", "ReadIndex"];
    const CONTROL_METHODS: &[&str] =
        &["Status", "Members", "AddNode", "RemoveNode", "CreateShare", "SetShareReplication", "UpdateShare"];

    #[test]
    fn only_metad_speaks_raft() {
        for m in RAFT_METHODS {
            assert!(may_call(&Role::Metad, &p(RAFT, m)), "{m}");
            for r in [Role::Gateway, Role::Blockd, Role::Tool, Role::Other("admin".into())] {
                assert!(!may_call(&r, &p(RAFT, m)), "{r} must not call Raft/{m}");
            }
        }
    }

    #[test]
    fn the_table_of_the_module_doc() {
        let data_plane = ["Heartbeat", "ListBlockDaemons", "RecordPacks", "LocateChunks"];
        for m in META_READS.iter().chain(META_WRITES).chain(&data_plane) {
            assert!(may_call(&Role::Metad, &p(META, m)), "metad {m}");
        }
        for m in META_READS.iter().chain(META_WRITES) {
            assert!(may_call(&Role::Gateway, &p(META, m)), "gateway {m}");
            assert!(!may_call(&Role::Blockd, &p(META, m)), "blockd {m}");
        }
        for m in META_READS {
            assert!(may_call(&Role::Tool, &p(META, m)), "tool {m}");
        }
        for m in META_WRITES {
            assert!(!may_call(&Role::Tool, &p(META, m)), "tool must not {m}");
        }
        for (m, gateway, blockd, tool) in [
            ("Heartbeat", false, true, false),
            ("RecordPacks", false, true, false),
            ("LocateChunks", false, true, true),
            ("ListBlockDaemons", true, true, true),
        ] {
            assert_eq!(may_call(&Role::Gateway, &p(META, m)), gateway, "gateway {m}");
            assert_eq!(may_call(&Role::Blockd, &p(META, m)), blockd, "blockd {m}");
            assert_eq!(may_call(&Role::Tool, &p(META, m)), tool, "tool {m}");
        }
        for m in CONTROL_METHODS {
            assert!(may_call(&Role::Metad, &p(CONTROL, m)), "metad control {m}");
            assert!(!may_call(&Role::Gateway, &p(CONTROL, m)) && !may_call(&Role::Blockd, &p(CONTROL, m)));
            assert_eq!(may_call(&Role::Tool, &p(CONTROL, m)), CONTROL_READS.contains(m), "tool control {m}");
        }
    }

    /// Every method of every service in `meta.proto` is in this module's table, so a new
    /// RPC cannot ship reachable only by metad members by accident (or by anyone by
    /// mistake): classify it here and in the module doc.
    #[test]
    fn every_rpc_in_the_proto_file_is_classified() {
        let proto = include_str!("../../../proto/proto/meta.proto");
        let mut service = "";
        let mut seen = 0;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or_default();
            }
            let Some(rest) = line.strip_prefix("rpc ") else { continue };
            let method = rest.split('(').next().unwrap_or_default().trim();
            seen += 1;
            let known = match service {
                "Meta" => {
                    META_READS.contains(&method)
                        || META_WRITES.contains(&method)
                        || ["Heartbeat", "RecordPacks", "LocateChunks", "ListBlockDaemons"].contains(&method)
                }
                "Control" => CONTROL_METHODS.contains(&method),
                "Raft" => RAFT_METHODS.contains(&method),
                other => panic!("service {other} is not gated by this table"),
            };
            assert!(known, "{service}/{method} is not in authz's table");
        }
        assert!(seen >= 30, "parsed {seen} rpcs from meta.proto");
    }

    #[test]
    fn unknown_roles_methods_and_malformed_paths_are_refused() {
        for r in [Role::Metad, Role::Gateway, Role::Blockd, Role::Tool, Role::Other("x".into())] {
            for path in [
                "",
                "/",
                "//",
                "GetAttr",
                "/tessera.meta.v1.Meta",
                "/tessera.meta.v1.Meta/",
                "/tessera.meta.v1.Meta/GetAttr/x",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.health.v1.Health/Check",
                "/tessera.meta.v1.Meta/Unknown",
            ] {
                let allowed = may_call(&r, path);
                // metad may call an unknown method of its own services (it answers Unimplemented).
                let expect = r == Role::Metad && path == "/tessera.meta.v1.Meta/Unknown";
                assert_eq!(allowed, expect, "{r} {path:?}");
            }
        }
        assert!(!may_call(&Role::Other("admin".into()), &p(META, "GetAttr")));
    }
}
