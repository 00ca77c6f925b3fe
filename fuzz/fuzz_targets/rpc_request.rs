//! Every RPC's request as it arrives: protobuf bytes → prost decode → the
//! service's own validation. Input: a selector byte (which request), then
//! the encoded message.
//!
//! Holds beyond "no panic": a decoded request re-encodes to one that
//! decodes the same; an accepted send meets the proto contract and is
//! accepted unchanged when sent again; a refusal is INVALID_ARGUMENT; a
//! checked subscription or page is within its documented bounds.

#![no_main]

use fastchat_fuzz::{
    assert_accepted, assert_invalid_argument, assert_stable, check_list, check_subscribe,
};
use fastchat_proto::{seed, v1};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use send_service::config::SendConfig;

/// Decodes `bytes` as `M`; a decoded message survives encode + decode.
fn decoded<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(again, message);
    Some(message)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let limits = SendConfig::default();
    match selector % 5 {
        // ChatMessage.SendMessageService/send
        0 => {
            let Some(message) = decoded::<seed::ChatMessage>(bytes) else {
                return;
            };
            let time = message.time;
            match send_service::fuzzing::validate_seed(message, &limits) {
                Ok(new) => {
                    assert_eq!(new.room, "general");
                    assert_eq!(new.client_time_ms, time);
                    assert_accepted(&new);
                    assert_stable(&new);
                }
                Err(e) => {
                    let status = send_service::fuzzing::status(e);
                    assert_invalid_argument(&status);
                    assert!(
                        !status.message().starts_with("client_time_ms"),
                        "the seed API has no client_time_ms: {}",
                        status.message()
                    );
                }
            }
        }
        // ChatMessage.AllMessagesService/all: its request is Empty.
        1 => {
            decoded::<seed::Empty>(bytes);
        }
        // fastchat.v1.SendMessageService/SendMessage
        2 => {
            let Some(request) = decoded::<v1::SendMessageRequest>(bytes) else {
                return;
            };
            let room = request.room.clone();
            match send_service::fuzzing::validate_v1(request, &limits) {
                Ok(new) => {
                    if !room.is_empty() {
                        assert_eq!(new.room, room);
                    }
                    assert_accepted(&new);
                    assert_stable(&new);
                }
                Err(e) => assert_invalid_argument(&send_service::fuzzing::status(e)),
            }
        }
        // fastchat.v1.AllMessagesService/Subscribe
        3 => {
            let Some(request) = decoded::<v1::SubscribeRequest>(bytes) else {
                return;
            };
            check_subscribe(request);
        }
        // fastchat.v1.AllMessagesService/ListMessages
        _ => {
            let Some(request) = decoded::<v1::ListMessagesRequest>(bytes) else {
                return;
            };
            check_list(&request);
        }
    }
});
