//! The Prometheus recorder and the name of every `tessera_` metric (served on the metrics
//! port by `health`).
//!
//! Every crate records through the `metrics` facade using the constants below, so a
//! dashboard's names are defined in one place. Labels are noted beside each name.

use std::net::SocketAddr;

/// Counter, label `proc` (e.g. `WRITE`): NFS requests received, by procedure.
pub const NFS_REQUESTS: &str = "tessera_nfs_requests_total";
/// Counter, label `proc`: NFS requests answered with an error status.
pub const NFS_ERRORS: &str = "tessera_nfs_errors_total";
/// Histogram, label `proc`: NFS request latency in seconds.
pub const NFS_LATENCY: &str = "tessera_nfs_request_duration_seconds";
/// Gauge: bytes of UNSTABLE write data buffered in this gateway, not yet durable.
pub const GATEWAY_DIRTY_BYTES: &str = "tessera_gateway_dirty_bytes";
/// Counter: gateway flushes (chunk + put + commit extents of one file's dirty data).
pub const GATEWAY_FLUSHES: &str = "tessera_gateway_flushes_total";
/// Counter: flushes refused because another gateway had taken the file's write lease (the
/// file's buffered data dropped; its clients resend).
pub const GATEWAY_FENCED: &str = "tessera_gateway_fenced_flushes_total";
/// Counter: chunk requests a gateway made to block daemons, by `op` (has, put, get) and
/// `path` (`quic`, or `in_process` for the daemon of the gateway's own process).
pub const GATEWAY_CHUNK_REQUESTS: &str = "tessera_gateway_chunk_requests_total";
/// Gauge: distinct chunks held by this block daemon.
pub const CHUNKS_STORED: &str = "tessera_chunks_stored";
/// Gauge: bytes of chunk content held by this block daemon (excluding record headers).
pub const CHUNK_BYTES_STORED: &str = "tessera_chunk_bytes_stored";
/// Counter: chunk puts that found the chunk already stored (deduplicated).
pub const CHUNK_PUTS_DEDUPLICATED: &str = "tessera_chunk_puts_deduplicated_total";
/// Counter: chunks whose stored bytes failed their hash check on read.
pub const CHUNKS_CORRUPT: &str = "tessera_chunks_corrupt_total";
/// Counter: segment fsyncs (each covers a batch of puts).
pub const SEGMENT_FSYNCS: &str = "tessera_segment_fsyncs_total";
/// Counter: Raft log entries applied to metad's state machine.
pub const RAFT_COMMITS: &str = "tessera_raft_commits_total";
/// Gauge: this metad's current Raft term.
pub const RAFT_TERM: &str = "tessera_raft_term";

#[derive(Debug, thiserror::Error)]
#[error("starting the metrics exporter on {addr}: {message}")]
pub struct MetricsError {
    addr: SocketAddr,
    message: String,
}

/// Installs the process's Prometheus recorder and returns its handle (rendered on the
/// metrics port by `health::serve`). Call once per process, inside a tokio runtime: a task
/// runs the recorder's upkeep (histogram buckets) every few seconds.
pub fn install_recorder(addr: SocketAddr) -> Result<metrics_exporter_prometheus::PrometheusHandle, MetricsError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| MetricsError { addr, message: e.to_string() })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

// The S3 tier of a block daemon (`blockd::s3`).
/// Counter: packs uploaded to S3 (a segment's primary pack or a leftover pack).
pub const S3_UPLOADED_PACKS: &str = "tessera_s3_uploaded_packs_total";
/// Counter: bytes of packs uploaded to S3.
pub const S3_UPLOADED_BYTES: &str = "tessera_s3_uploaded_bytes_total";
/// Counter: failed pack upload attempts (PUT or RecordPacks), each retried.
pub const S3_UPLOAD_FAILURES: &str = "tessera_s3_upload_failures_total";
/// Counter: leftover packs uploaded (chunks whose primary did not upload them).
pub const S3_LEFTOVER_PACKS: &str = "tessera_s3_leftover_packs_total";
/// Gauge: sealed segments whose records are not all located in S3 yet.
pub const S3_BACKLOG_SEGMENTS: &str = "tessera_s3_upload_backlog_segments";
/// Gauge: bytes of those segments (not evictable; counted against the local bound).
pub const S3_BACKLOG_BYTES: &str = "tessera_s3_upload_backlog_bytes";
/// Gauge: bytes of local segment files.
pub const S3_LOCAL_BYTES: &str = "tessera_s3_local_segment_bytes";
/// Counter: segments evicted from local disk (their chunks stay in S3).
pub const S3_EVICTED_SEGMENTS: &str = "tessera_s3_evicted_segments_total";
/// Counter: chunk reads served from S3 (ranged GET, verified).
pub const S3_REMOTE_READS: &str = "tessera_s3_remote_reads_total";

// Scrub of a block daemon (`blockd::scrub`).
/// Counter: chunk copies a block daemon's scrub checked (read and re-hashed, or found lost).
pub const SCRUB_CHECKED: &str = "tessera_scrub_checked_chunks_total";
/// Counter: chunk copies scrub found corrupt (record header or BLAKE3 hash wrong, unreadable).
pub const SCRUB_CORRUPT: &str = "tessera_scrub_corrupt_total";
/// Counter: chunk copies scrub found missing (their segment file deleted or cut short).
pub const SCRUB_MISSING: &str = "tessera_scrub_missing_total";
/// Counter: corrupt or missing copies scrub rewrote from a peer's or the S3 tier's good copy.
pub const SCRUB_REPAIRED: &str = "tessera_scrub_repaired_total";
/// Counter: corrupt or missing copies scrub found no good copy of (no peer, no pack).
pub const SCRUB_UNREPAIRABLE: &str = "tessera_scrub_unrepairable_total";

/// Counter: scrub passes a block daemon completed.
pub const SCRUB_PASSES: &str = "tessera_scrub_passes_total";
/// Gauge: corrupt or missing copies the latest complete scrub pass found (repaired or not);
/// 0 once a whole pass found every local copy good.
pub const SCRUB_LAST_PASS_DAMAGED: &str = "tessera_scrub_last_pass_damaged_chunks";

// Anti-entropy re-replication of a block daemon (`blockd::repair`).
/// Counter: chunk copies repair sent to replica-set members that lacked them.
pub const REPAIR_COPIES: &str = "tessera_repair_copies_total";
/// Counter: local chunks whose replica set a repair pass checked.
pub const REPAIR_CHECKED: &str = "tessera_repair_chunks_checked_total";
/// Gauge: chunks whose full replica set the last repair pass could not confirm or complete
/// (a member unreachable, a copy failed, the local copy unreadable); 0 once every chunk this
/// daemon leads is on all its replicas.
pub const REPAIR_UNCONFIRMED: &str = "tessera_repair_unconfirmed_chunks";

/// Gauge: open NFS (and MOUNT) TCP connections to a gateway.
pub const NFS_CONNECTIONS: &str = "tessera_nfs_connections";
/// Counter: NFS (and MOUNT) TCP connections a gateway accepted.
pub const NFS_CONNECTIONS_ACCEPTED: &str = "tessera_nfs_connections_accepted_total";

// Duplicate request cache of the NFS gateway (`gateway::rpc::drc`).
/// Counter: retransmitted non-idempotent NFS calls answered with the original call's reply.
pub const NFS_DRC_HITS: &str = "tessera_nfs_drc_hits_total";
