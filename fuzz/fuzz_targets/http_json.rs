//! The HTTP/JSON API's requests: JSON bodies → proto3 canonical JSON
//! parsing (`fastchat_runtime::json`, from the protos' descriptors) → the
//! service's validation; the path's room, the query parameters and the
//! `Last-Event-ID` header of the event streams and history pages as the
//! routes read them; the `traceparent` header send-service stores. Input: a
//! selector byte, then fields separated by 0xFF:
//!
//! - 0: `POST /v1/rooms/{room}/messages`: room, body;
//! - 1: `POST /client` (seed): body;
//! - 2: `GET /v1/rooms/{room}/events`: room, query, Last-Event-ID;
//! - 3: `GET /v1/events`: query, Last-Event-ID;
//! - 4: `GET /v1/rooms/{room}/messages`: room, query;
//! - 5: a `traceparent` header value.
//!
//! Holds beyond "no panic": the path's room is the request's; a parsed
//! body survives the JSON round trip (to_json → from_json); what is
//! accepted meets the proto contract (as for gRPC); every refusal is
//! INVALID_ARGUMENT; a stored traceparent is the header's first 55
//! characters, itself valid.

#![no_main]

use fastchat_fuzz::{
    assert_accepted, assert_invalid_argument, assert_stable, check_list, check_subscribe, fields,
    text,
};
use fastchat_runtime::json;
use libfuzzer_sys::fuzz_target;
use send_service::config::SendConfig;

/// A message survives proto3 JSON: written and read back, it is the same.
fn json_round_trip<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
    message: &M,
    type_name: &str,
) {
    let value = json::to_json(message, type_name);
    let back: M = json::from_json(value.to_string().as_bytes(), type_name)
        .unwrap_or_else(|e| panic!("{value} does not read back: {}", e.message()));
    assert_eq!(&back, message);
}

fuzz_target!(|data: &[u8]| {
    let (selector, parts) = fields(data, 3);
    let limits = SendConfig::default();
    match selector % 6 {
        0 => {
            let room = String::from_utf8_lossy(parts[0]).into_owned();
            match send_service::fuzzing::http_send_request(room.clone(), parts[1]) {
                Ok(request) => {
                    assert_eq!(request.room, room);
                    json_round_trip(&request, "fastchat.v1.SendMessageRequest");
                    match send_service::fuzzing::validate_v1(request, &limits) {
                        Ok(new) => {
                            assert_accepted(&new);
                            assert_stable(&new);
                        }
                        Err(e) => assert_invalid_argument(&send_service::fuzzing::status(e)),
                    }
                }
                Err(status) => assert_invalid_argument(&status),
            }
        }
        1 => match send_service::fuzzing::http_seed_message(parts[0]) {
            Ok(message) => {
                json_round_trip(&message, "ChatMessage.ChatMessage");
                match send_service::fuzzing::validate_seed(message, &limits) {
                    Ok(new) => {
                        assert_accepted(&new);
                        assert_stable(&new);
                    }
                    Err(e) => assert_invalid_argument(&send_service::fuzzing::status(e)),
                }
            }
            Err(status) => assert_invalid_argument(&status),
        },
        2 | 3 => {
            let (room, query, last_event_id) = if selector % 6 == 2 {
                (
                    Some(String::from_utf8_lossy(parts[0]).into_owned()),
                    parts[1],
                    parts[2],
                )
            } else {
                (None, parts[0], parts[1])
            };
            let Some(query) = text(query) else {
                return;
            };
            let last_event_id = (!last_event_id.is_empty()).then_some(last_event_id);
            match all_messages_service::fuzzing::http_subscribe(room.clone(), query, last_event_id)
            {
                Ok(request) => {
                    if let Some(room) = room {
                        assert_eq!(request.rooms, vec![room]);
                    }
                    assert!(request.room.is_empty());
                    check_subscribe(request);
                }
                Err(status) => assert_invalid_argument(&status),
            }
        }
        4 => {
            let room = String::from_utf8_lossy(parts[0]).into_owned();
            let Some(query) = text(parts[1]) else {
                return;
            };
            match all_messages_service::fuzzing::http_list(room.clone(), query) {
                Ok(request) => {
                    assert_eq!(request.room, room);
                    check_list(&request);
                }
                Err(status) => assert_invalid_argument(&status),
            }
        }
        _ => {
            let Some(value) = text(parts[0]) else {
                return;
            };
            if let Some(stored) = send_service::fuzzing::traceparent(value) {
                assert_eq!(stored.len(), 55);
                assert!(value.starts_with(stored));
                assert!(
                    stored
                        .bytes()
                        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
                assert_eq!(send_service::fuzzing::traceparent(stored), Some(stored));
            }
        }
    }
});
