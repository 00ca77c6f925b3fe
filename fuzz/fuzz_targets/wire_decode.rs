//! What all-messages-service reads from the station: a stored message
//! (subject, sequence, payload) → `fastchat_wire::decode` (the room from
//! the subject, the payload as a `fastchat.v1.ChatMessage`) → what the
//! service sends on: the v1 message as JSON (HTTP, Server-Sent Events) and
//! the seed API's `ChatMessage`. Input: the sequence (8 bytes, little
//! endian), the subject's length (1 byte), the subject, then the payload.
//!
//! Holds beyond "no panic": a decoded message has a valid room, the one its
//! subject names, and the station's sequence; encoding it for the station
//! and decoding that again gives the same message (the wire round trip).

#![no_main]

use broker_client::{Delivered, HeaderMap, OffsetDateTime};
use bytes::Bytes;
use fastchat_proto::{station, v1};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, rest) = data.split_at(9);
    let sequence = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let subject_len = usize::from(head[8]).min(rest.len());
    let (subject, payload) = rest.split_at(subject_len);
    let Ok(subject) = std::str::from_utf8(subject) else {
        return;
    };
    let delivered = Delivered {
        sequence,
        subject: subject.to_owned(),
        headers: HeaderMap::new(),
        payload: Bytes::copy_from_slice(payload),
        published: OffsetDateTime::UNIX_EPOCH,
        pending: 0,
    };
    let Ok(message) = fastchat_wire::decode(&delivered) else {
        return;
    };
    assert!(station::is_valid_room(&message.room));
    assert_eq!(station::subject(&message.room), subject);
    assert_eq!(message.sequence, sequence);

    // The wire round trip: what send-service would publish for it.
    let out = fastchat_wire::encode(&message, None);
    assert_eq!(out.subject, subject);
    let stored = v1::ChatMessage::decode(out.payload.as_ref()).expect("encoded payload decodes");
    assert_eq!(stored.sequence, 0, "the sequence is never stored");
    let again = fastchat_wire::decode(&Delivered {
        payload: out.payload,
        headers: out.headers,
        ..delivered
    })
    .expect("an encoded message decodes");
    assert_eq!(again, message);

    // What subscribers get.
    let json = fastchat_runtime::json::to_json(&message, "fastchat.v1.ChatMessage");
    assert_eq!(json["sequence"], message.sequence.to_string());
    let seed = all_messages_service::fuzzing::seed_message(message.clone())
        .expect("a message is sent on the seed stream");
    assert_eq!(seed.author, message.author);
    assert_eq!(seed.text, message.text);
});
