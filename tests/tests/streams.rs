//! What a Subscribe stream says besides messages, and streams of several
//! rooms: CaughtUp after the history, Heartbeat while idle, `rooms` with
//! per-room `last`, each room checked against the grants.

use std::time::Duration;

use fastchat_auth::{MintClaims, mint_hs256, parse_grants};
use fastchat_e2e::*;
use fastchat_proto::v1;
use tonic::Code;
use tonic_types::StatusExt as _;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(20);

fn rooms_request(rooms: &[&str], start: Option<Start>) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        ..subscribe("", start)
    }
}

/// Sends `texts` as (room, text) pairs; returns their sequences.
async fn send_all(send: &Service, messages: &[(&str, &str)]) -> Vec<u64> {
    let mut sender = v1_send(send).await;
    let mut sequences = Vec::new();
    for (room, text) in messages {
        let stored = sender
            .send_message(message(room, "ann", text))
            .await
            .expect("send")
            .into_inner()
            .message
            .expect("stored");
        sequences.push(stored.sequence);
    }
    sequences
}

/// Events up to and including the CaughtUp event.
async fn until_caught_up(stream: &mut tonic::Streaming<v1::SubscribeResponse>) -> (Vec<u64>, u64) {
    let mut messages = Vec::new();
    loop {
        match take_events(stream, 1, WAIT).await.pop() {
            Some(Event::Message(m)) => messages.push(m.sequence),
            Some(Event::CaughtUp(c)) => return (messages, c.sequence),
            other => panic!("unexpected event before CaughtUp: {other:?}"),
        }
    }
}

#[tokio::test]
async fn several_rooms_in_one_stream_with_the_last_of_each() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    // a: 1, 4, 7, 9, 10; b: 2, 5, 8; c: 3, 6
    let stored = send_all(
        &send,
        &[
            ("a", "a1"),
            ("b", "b2"),
            ("c", "c3"),
            ("a", "a4"),
            ("b", "b5"),
            ("c", "c6"),
            ("a", "a7"),
            ("b", "b8"),
            ("a", "a9"),
            ("a", "a10"),
        ],
    )
    .await;
    assert_eq!(stored, (1..=10).collect::<Vec<_>>());
    let mut reader = v1_all(&all).await;

    // The last 2 of each room: a busy room does not crowd out a quiet one.
    let mut stream = reader
        .subscribe(rooms_request(&["a", "b"], Some(Start::Last(2))))
        .await
        .expect("subscribe")
        .into_inner();
    let (history, caught_up) = until_caught_up(&mut stream).await;
    assert_eq!(history, [5, 8, 9, 10]);
    assert_eq!(caught_up, 10);

    // Live: only the stream's rooms.
    send_all(&send, &[("c", "c11"), ("b", "b12"), ("a", "a13")]).await;
    let live = take(&mut stream, 2, WAIT).await;
    assert_eq!(sequences(&live), [12, 13]);

    // `room` and `rooms` together, duplicates ignored; every retained
    // message of both rooms.
    let mut both = reader
        .subscribe(v1::SubscribeRequest {
            rooms: vec!["c".into(), "b".into(), "c".into()],
            ..subscribe("b", None)
        })
        .await
        .expect("subscribe")
        .into_inner();
    let (history, caught_up) = until_caught_up(&mut both).await;
    assert_eq!(history, [2, 3, 5, 6, 8, 11, 12]);
    assert_eq!(caught_up, 13, "the position counts other rooms' messages");

    // Resuming from a multi-room position.
    let mut resumed = reader
        .subscribe(rooms_request(&["a", "c"], Some(Start::AfterSequence(7))))
        .await
        .expect("subscribe")
        .into_inner();
    let (history, _) = until_caught_up(&mut resumed).await;
    assert_eq!(history, [9, 10, 11, 13]);

    // Invalid rooms name the field.
    for (rooms, what) in [
        (vec!["ok".to_owned(), "not a room".to_owned()], "a bad name"),
        ((0..65).map(|i| format!("r{i}")).collect(), "65 rooms"),
    ] {
        let status = reader
            .subscribe(v1::SubscribeRequest {
                rooms,
                ..subscribe("", None)
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status}");
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "rooms", "{what}");
    }
}

#[tokio::test]
async fn caught_up_ends_every_kind_of_history_and_is_a_resume_cursor() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let all = start_all(all_config(&nats.url())).await;
    send_all(&send, &[("x", "1"), ("y", "2"), ("x", "3"), ("y", "4")]).await;
    let mut reader = v1_all(&all).await;
    for (start, history) in [
        (None, vec![1, 3]),
        (Some(Start::AfterSequence(1)), vec![3]),
        (Some(Start::Last(1)), vec![3]),
        (Some(Start::NewOnly(true)), vec![]),
    ] {
        let mut stream = reader
            .subscribe(subscribe("x", start))
            .await
            .expect("subscribe")
            .into_inner();
        let (got, caught_up) = until_caught_up(&mut stream).await;
        assert_eq!(got, history, "history from {start:?}");
        assert_eq!(caught_up, 4, "position after the history from {start:?}");
    }

    // Resuming from a CaughtUp position misses nothing and repeats nothing.
    let mut stream = reader
        .subscribe(subscribe("y", Some(Start::NewOnly(true))))
        .await
        .expect("subscribe")
        .into_inner();
    let (_, position) = until_caught_up(&mut stream).await;
    drop(stream);
    send_all(&send, &[("y", "5"), ("x", "6"), ("y", "7")]).await;
    let mut resumed = reader
        .subscribe(subscribe("y", Some(Start::AfterSequence(position))))
        .await
        .expect("subscribe")
        .into_inner();
    let (got, caught_up) = until_caught_up(&mut resumed).await;
    assert_eq!(got, [5, 7]);
    assert_eq!(caught_up, 7);
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_carrying_its_position() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut config = all_config(&nats.url());
    config.subscriptions.heartbeat_interval = Duration::from_millis(400);
    let all = start_all(config).await;
    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(subscribe("quiet", Some(Start::NewOnly(true))))
        .await
        .expect("subscribe")
        .into_inner();
    let (_, position) = until_caught_up(&mut stream).await;
    assert_eq!(position, 0);

    let started = std::time::Instant::now();
    let Some(Event::Heartbeat(first)) = take_events(&mut stream, 1, WAIT).await.pop() else {
        panic!("an idle stream's next event is a heartbeat");
    };
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the interval: {:?}",
        started.elapsed()
    );
    assert_eq!(first.sequence, 0);
    assert!(first.time.is_some(), "a heartbeat carries the server time");

    // Messages of other rooms move the position without being sent.
    send_all(&send, &[("busy", "a"), ("busy", "b")]).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match take_events(&mut stream, 1, WAIT).await.pop() {
            Some(Event::Heartbeat(h)) if h.sequence == 2 => break,
            Some(Event::Heartbeat(h)) => assert!(h.sequence <= 2, "{h:?}"),
            other => panic!("only heartbeats on a quiet room: {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "position never moved");
    }

    // A message of the stream's own room comes as itself, then heartbeats
    // go on from its position.
    send_all(&send, &[("quiet", "at last")]).await;
    loop {
        match take_events(&mut stream, 1, WAIT).await.pop() {
            Some(Event::Message(m)) => {
                assert_eq!(m.sequence, 3);
                break;
            }
            Some(Event::Heartbeat(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let Some(Event::Heartbeat(next)) = take_events(&mut stream, 1, WAIT).await.pop() else {
        panic!("heartbeats go on");
    };
    assert_eq!(next.sequence, 3);
}

#[tokio::test]
async fn each_room_of_a_stream_is_checked_against_the_grants() {
    const SECRET: &[u8] = b"a development secret of at least thirty-two bytes!!";
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, SECRET).expect("write secret");
    let nats = NatsServer::start();
    let mut config = all_config(&nats.url());
    config.auth = fastchat_auth::AuthConfig::default();
    config.auth.jwt.hmac_secret_file = Some(secret);
    let all = start_all(config).await;
    let mut claims = MintClaims::new("ann", Duration::from_secs(600));
    claims.rooms = parse_grants("team-*=read;secret=").expect("grants");
    let token = mint_hs256(SECRET, &claims).expect("mint");
    let with_token = |request: v1::SubscribeRequest| {
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        request
    };
    let mut reader = v1_all(&all).await;

    let mut granted = reader
        .subscribe(with_token(rooms_request(&["team-a", "team-b"], None)))
        .await
        .expect("both rooms are granted")
        .into_inner();
    let (history, _) = until_caught_up(&mut granted).await;
    assert!(history.is_empty());

    for rooms in [&["team-a", "secret"][..], &["team-a", "other"]] {
        let status = reader
            .subscribe(with_token(rooms_request(rooms, None)))
            .await
            .expect_err("one room is not granted");
        assert_eq!(status.code(), Code::PermissionDenied, "{status}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "ROOM_FORBIDDEN");
        assert_eq!(
            info.metadata.get("room").map(String::as_str),
            Some(rooms[1]),
            "names the refused room"
        );
    }
}
