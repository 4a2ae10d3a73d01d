//! The data plane's bookkeeping: block daemon heartbeats and the daemon list, pack locations
//! (RecordPacks / LocateChunks) and shares' replication factors. The tables are cluster-wide,
//! so every case names daemons and chunks of its own (derived from its request-id client) and
//! never assumes it is alone.

use proto::pb;
use proto::pb::{BlockDaemon, HeartbeatRequest, LocateChunksRequest, PackLocation, RecordPacksRequest};

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        heartbeat_registers_a_live_daemon,
        heartbeat_replaces_the_row,
        heartbeat_reply_carries_the_timings,
        bad_heartbeats_are_invalid,
        default_replication_factor_follows_live_daemons,
        record_then_locate_round_trips,
        locate_leaves_out_unknown_chunks,
        a_bad_pack_batch_records_nothing,
        locate_refuses_bad_hashes_and_too_many,
        shares_report_the_default_replication_factor,
        shares_report_the_default_export_options,
    ]
}

/// A daemon id no other case uses.
fn daemon_id(ctx: &Ctx, n: u64) -> u64 {
    ctx.client_id().wrapping_mul(16).wrapping_add(n).max(1)
}

fn beat(id: u64, port: u16, free: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        id,
        addr: format!("127.0.0.1:{port}"),
        capacity_bytes: 1 << 30,
        free_bytes: free,
        chunks: 3,
        stored_bytes: 4,
    }
}

/// A chunk hash no other case uses.
fn chunk(ctx: &Ctx, n: u8) -> Vec<u8> {
    let mut seed = ctx.client_id().to_le_bytes().to_vec();
    seed.push(n);
    blake3::hash(&seed).as_bytes().to_vec()
}

fn loc(hash: Vec<u8>, pack: &str, offset: u64, length: u32) -> PackLocation {
    PackLocation { hash, pack: pack.to_string(), offset, length }
}

async fn daemon(ctx: &Ctx, id: u64) -> Result<Option<BlockDaemon>, String> {
    let view = ctx.list_block_daemons().await.ctx("list block daemons")?;
    Ok(view.daemons.into_iter().find(|d| d.id == id))
}

async fn heartbeat_registers_a_live_daemon(ctx: &Ctx) -> Result<(), String> {
    let id = daemon_id(ctx, 1);
    ensure!(daemon(ctx, id).await?.is_none(), "daemon {id} known before its first heartbeat");
    ctx.heartbeat_raw(beat(id, 9100, 77)).await.ctx("heartbeat")?;
    let d = daemon(ctx, id).await?.ctx("the registered daemon")?;
    ensure_eq!(
        (d.addr.as_str(), d.capacity_bytes, d.free_bytes, d.chunks, d.stored_bytes),
        ("127.0.0.1:9100", 1 << 30, 77, 3, 4)
    );
    ensure!(d.live, "a daemon that just sent a heartbeat is live");
    ensure!(d.last_heartbeat_ms > 0, "the heartbeat is stamped");
    Ok(())
}

async fn heartbeat_replaces_the_row(ctx: &Ctx) -> Result<(), String> {
    let id = daemon_id(ctx, 2);
    ctx.heartbeat_raw(beat(id, 9200, 10)).await.ctx("first heartbeat")?;
    let first = daemon(ctx, id).await?.ctx("after the first heartbeat")?;
    ctx.heartbeat_raw(beat(id, 9201, 5)).await.ctx("second heartbeat")?;
    let second = daemon(ctx, id).await?.ctx("after the second heartbeat")?;
    ensure_eq!((second.addr.as_str(), second.free_bytes), ("127.0.0.1:9201", 5));
    ensure!(second.last_heartbeat_ms >= first.last_heartbeat_ms, "the stamp does not go back");
    let view = ctx.list_block_daemons().await.ctx("list")?;
    ensure_eq!(view.daemons.iter().filter(|d| d.id == id).count(), 1, "one row per daemon");
    Ok(())
}

async fn heartbeat_reply_carries_the_timings(ctx: &Ctx) -> Result<(), String> {
    let reply = ctx.heartbeat_raw(beat(daemon_id(ctx, 3), 9300, 1)).await.ctx("heartbeat")?;
    ensure_eq!((reply.dead_after_ms, reply.interval_ms), (10_000, 2_000), "the default liveness timings");
    Ok(())
}

async fn bad_heartbeats_are_invalid(ctx: &Ctx) -> Result<(), String> {
    let id = daemon_id(ctx, 4);
    expect_err(ctx.heartbeat_raw(beat(0, 9400, 1)).await, invalid())?;
    for addr in ["", "not an address", "example.com:80", "127.0.0.1", "127.0.0.1:99999"] {
        let req = HeartbeatRequest { addr: addr.to_string(), ..beat(id, 1, 1) };
        expect_err(ctx.heartbeat_raw(req).await, invalid()).map_err(|e| format!("addr {addr:?}: {e}"))?;
    }
    let long = HeartbeatRequest { addr: format!("[::1]:{}", "9".repeat(256)), ..beat(id, 1, 1) };
    expect_err(ctx.heartbeat_raw(long).await, invalid())?;
    ensure!(daemon(ctx, id).await?.is_none(), "a refused heartbeat registers nothing");
    Ok(())
}

async fn default_replication_factor_follows_live_daemons(ctx: &Ctx) -> Result<(), String> {
    ctx.heartbeat_raw(beat(daemon_id(ctx, 5), 9500, 1)).await.ctx("heartbeat")?;
    let view = ctx.list_block_daemons().await.ctx("list")?;
    let live = view.daemons.iter().filter(|d| d.live).count() as u32;
    ensure!(live >= 1, "the daemon that just sent a heartbeat is live");
    ensure_eq!(view.default_replication_factor, live.clamp(1, 3), "min(3, live daemons)");
    Ok(())
}

async fn record_then_locate_round_trips(ctx: &Ctx) -> Result<(), String> {
    let (a, b) = (chunk(ctx, 1), chunk(ctx, 2));
    let locations = vec![loc(a.clone(), "packs/x", 0, 4096), loc(b.clone(), "packs/x", 4096, 100)];
    ctx.record_packs_raw(RecordPacksRequest { locations: locations.clone() }).await.ctx("record")?;
    let found =
        ctx.locate_chunks_raw(LocateChunksRequest { hashes: vec![b.clone(), a.clone()] }).await.ctx("locate")?;
    ensure_eq!(found.locations, vec![locations[1].clone(), locations[0].clone()], "in the order asked");
    // A later record of the same chunk replaces its location.
    let moved = loc(a.clone(), "packs/y", 8, 4096);
    ctx.record_packs_raw(RecordPacksRequest { locations: vec![moved.clone()] }).await.ctx("record again")?;
    let found = ctx.locate_chunks_raw(LocateChunksRequest { hashes: vec![a] }).await.ctx("locate again")?;
    ensure_eq!(found.locations, vec![moved]);
    Ok(())
}

async fn locate_leaves_out_unknown_chunks(ctx: &Ctx) -> Result<(), String> {
    let known = loc(chunk(ctx, 3), "packs/z", 0, 1);
    ctx.record_packs_raw(RecordPacksRequest { locations: vec![known.clone()] }).await.ctx("record")?;
    let hashes = vec![chunk(ctx, 4), known.hash.clone(), chunk(ctx, 5)];
    let found = ctx.locate_chunks_raw(LocateChunksRequest { hashes }).await.ctx("locate")?;
    ensure_eq!(found.locations, vec![known]);
    let none = ctx.locate_chunks_raw(LocateChunksRequest { hashes: vec![] }).await.ctx("locate nothing")?;
    ensure!(none.locations.is_empty(), "no hashes, no locations");
    Ok(())
}

async fn a_bad_pack_batch_records_nothing(ctx: &Ctx) -> Result<(), String> {
    let good = loc(chunk(ctx, 6), "packs/good", 0, 10);
    let bad = [
        loc(vec![7; 31], "packs/p", 0, 1),
        loc(vec![7; 33], "packs/p", 0, 1),
        loc(chunk(ctx, 7), "", 0, 1),
        loc(chunk(ctx, 7), &"k".repeat(1025), 0, 1),
        loc(chunk(ctx, 7), "packs/p", 0, 0),
        loc(chunk(ctx, 7), "packs/p", u64::MAX, 2),
    ];
    for b in bad {
        let req = RecordPacksRequest { locations: vec![good.clone(), b.clone()] };
        expect_err(ctx.record_packs_raw(req).await, invalid())
            .map_err(|e| format!("key of {} bytes, hash of {}: {e}", b.pack.len(), b.hash.len()))?;
    }
    let found = ctx.locate_chunks_raw(LocateChunksRequest { hashes: vec![good.hash.clone()] }).await.ctx("locate")?;
    ensure!(found.locations.is_empty(), "the good location beside a bad one was recorded: {:?}", found.locations);
    Ok(())
}

async fn locate_refuses_bad_hashes_and_too_many(ctx: &Ctx) -> Result<(), String> {
    let short = LocateChunksRequest { hashes: vec![chunk(ctx, 8), vec![1; 16]] };
    expect_err(ctx.locate_chunks_raw(short).await, invalid())?;
    let many = LocateChunksRequest { hashes: vec![chunk(ctx, 8); 4097] };
    expect_err(ctx.locate_chunks_raw(many).await, invalid())?;
    let limit = LocateChunksRequest { hashes: vec![chunk(ctx, 8); 4096] };
    ensure!(ctx.locate_chunks_raw(limit).await.ctx("4096 hashes")?.locations.is_empty(), "unknown chunk located");
    Ok(())
}

async fn shares_report_the_default_replication_factor(ctx: &Ctx) -> Result<(), String> {
    ensure_eq!(ctx.get_share(SHARE).await.ctx("get share")?.replication_factor, 0, "0 = the cluster default");
    let shares = ctx.list_shares().await.ctx("list shares")?.shares;
    ensure!(shares.len() >= 2, "both shares listed");
    ensure!(shares.iter().all(|s| s.replication_factor == 0), "no share chose a factor: {shares:?}");
    Ok(())
}

async fn shares_report_the_default_export_options(ctx: &Ctx) -> Result<(), String> {
    let s = ctx.get_share(SHARE).await.ctx("get share")?;
    ensure!(!s.read_only, "a share is read-write unless set");
    ensure!(s.allowed_clients.is_empty(), "every client unless set: {:?}", s.allowed_clients);
    ensure_eq!(s.squash, pb::Squash::None as i32, "no squashing unless set");
    ensure_eq!((s.anon_uid, s.anon_gid), (Some(65534), Some(65534)), "anonymous ids default to nobody");
    Ok(())
}
