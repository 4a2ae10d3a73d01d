//! Mutual TLS on the chunk link: who may connect, who may PUT, and bad input from an
//! authenticated client. Every refusal leaves nothing stored and the daemon serving.

mod common;

use cluster::tls::{Ca, Identity, Role};
use common::*;
use proto::chunk_frame::{self, Op, Request, Status};

#[tokio::test]
async fn clients_are_authorized_by_certificate_role() {
    let ca = Ca::generate().expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let (blockd, shutdown) = start(options(&ca, dir.path())).await;
    let addr = blockd.local_addr();
    let anchor = ca.anchor();
    let data = b"written by a gateway".as_slice();

    // A gateway and a peer block daemon may write; both may read.
    let gateway = connect(&client(&anchor, Some(&issue(&ca, Role::Gateway))), addr).await;
    assert_eq!(put(&gateway, data).await, Status::Ok);
    let peer = connect(&client(&anchor, Some(&issue(&ca, Role::Blockd))), addr).await;
    assert_eq!(put(&peer, b"written by a peer").await, Status::Ok);
    assert_eq!(call(&peer, &Request::Get { hash: hash_of(data) }).await, (Status::Ok, data.to_vec()));

    // A tool certificate from the same CA reads and checks, but may not write.
    let tool = connect(&client(&anchor, Some(&issue(&ca, Role::Tool))), addr).await;
    assert_eq!(has(&tool, &[hash_of(data)]).await, vec![true]);
    assert_eq!(call(&tool, &Request::Get { hash: hash_of(data) }).await, (Status::Ok, data.to_vec()));
    let forbidden = b"a tool's bytes".as_slice();
    let (status, msg) = call(&tool, &Request::Put { hash: hash_of(forbidden), data: forbidden }).await;
    assert_eq!(status, Status::BadRequest);
    assert_eq!(String::from_utf8_lossy(&msg), blockd::FORBIDDEN_PUT);
    assert_eq!(has(&gateway, &[hash_of(forbidden)]).await, vec![false]);

    // No client certificate: the handshake fails (rustls reports it after the client's
    // flight, so the first request on the connection fails at the latest).
    let anonymous = client(&anchor, None);
    if let Ok(conn) = try_connect(&anonymous, addr).await {
        assert!(
            try_call_raw(&conn, Op::Has, &chunk_frame::encode_request(&Request::Has { hashes: vec![hash_of(data)] }))
                .await
                .is_none()
        );
    }

    // A certificate from another CA, even with the gateway role: refused the same way.
    let rogue_ca = Ca::generate().expect("rogue ca");
    let rogue = client(&anchor, Some(&issue(&rogue_ca, Role::Gateway)));
    if let Ok(conn) = try_connect(&rogue, addr).await {
        let req = chunk_frame::encode_request(&Request::Put { hash: hash_of(b"rogue"), data: b"rogue" });
        assert!(try_call_raw(&conn, Op::Put, &req).await.is_none());
    }

    // A self-signed certificate with no role at all: refused too.
    let selfsigned = Identity::generate_self_signed().expect("self-signed");
    if let Ok(conn) = try_connect(&client(&anchor, Some(&selfsigned)), addr).await {
        let req = chunk_frame::encode_request(&Request::Get { hash: hash_of(data) });
        assert!(try_call_raw(&conn, Op::Get, &req).await.is_none());
    }

    // The daemon keeps serving, and stored only what authorized writers sent.
    assert_eq!(has(&gateway, &[hash_of(data), hash_of(b"rogue")]).await, vec![true, false]);
    assert_eq!(blockd.store().stats().chunks, 2);
    stop(blockd, shutdown).await;
}

#[tokio::test]
async fn bad_frames_from_an_authorized_client_are_refused() {
    let ca = Ca::generate().expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let (blockd, shutdown) = start(options(&ca, dir.path())).await;
    let conn = connect(&client(&ca.anchor(), Some(&issue(&ca, Role::Gateway))), blockd.local_addr()).await;

    // Wrong lengths: a body over the PUT limit, a GET whose body is not one hash, a HAS
    // whose body is not a whole number of hashes.
    let (status, _) = call_raw(&conn, Op::Put, &chunk_frame::request_header(Op::Put, u32::MAX as usize)).await;
    assert_eq!(status, Status::BadRequest);
    let mut get = chunk_frame::request_header(Op::Get, 33).to_vec();
    get.extend_from_slice(&[0u8; 33]);
    assert_eq!(call_raw(&conn, Op::Get, &get).await.0, Status::BadRequest);
    let mut has_req = chunk_frame::request_header(Op::Has, 40).to_vec();
    has_req.extend_from_slice(&[0u8; 40]);
    assert_eq!(call_raw(&conn, Op::Has, &has_req).await.0, Status::BadRequest);
    // A PUT body shorter than a hash.
    let mut tiny = chunk_frame::request_header(Op::Put, 8).to_vec();
    tiny.extend_from_slice(&[0u8; 8]);
    assert_eq!(call_raw(&conn, Op::Put, &tiny).await.0, Status::BadRequest);

    // An unknown operation.
    let mut unknown = chunk_frame::request_header(Op::Get, 32);
    unknown[5] = 0x7f;
    let mut unknown = unknown.to_vec();
    unknown.extend_from_slice(&[0u8; 32]);
    let (status, msg) = call_raw(&conn, Op::Get, &unknown).await;
    assert_eq!(status, Status::BadRequest);
    assert!(String::from_utf8_lossy(&msg).contains("unknown operation"), "{}", String::from_utf8_lossy(&msg));

    // A put whose bytes do not match its hash.
    let lie = chunk_frame::encode_request(&Request::Put { hash: hash_of(b"claimed"), data: b"actual" });
    assert_eq!(call_raw(&conn, Op::Put, &lie).await.0, Status::BadRequest);

    // Nothing was stored, and the connection still serves.
    assert_eq!(blockd.store().stats().chunks, 0);
    assert_eq!(has(&conn, &[hash_of(b"claimed"), hash_of(b"actual")]).await, vec![false, false]);
    assert_eq!(put(&conn, b"actual").await, Status::Ok);
    assert_eq!(has(&conn, &[hash_of(b"actual")]).await, vec![true]);
    stop(blockd, shutdown).await;
}
