//! Generated gRPC/protobuf types for FastChat's two APIs.
//!
//! - [`seed`]: the `ChatMessage` package of the original article, kept
//!   byte-compatible so existing clients work unchanged.
//! - [`v1`]: the `fastchat.v1` API with ids, rooms, cursors and paging.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection.
//!
//! Layers: the generated [`seed`] and [`v1`] modules at the bottom, the
//! [`codec`] they are generated to use, and [`station`] (room names and
//! subjects) beside them; nothing here depends on the broker.

/// The seed API (`package ChatMessage`), exactly as the original clients use it.
pub mod seed {
    // Generated code: whichever of these it trips is not ours to fix.
    #![allow(
        missing_docs,
        non_camel_case_types,
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations
    )]
    tonic::include_proto!("chat_message");
}

/// The FastChat API, version 1 (`package fastchat.v1`).
pub mod v1 {
    // Generated code: whichever of these it trips is not ours to fix.
    #![allow(
        missing_docs,
        non_camel_case_types,
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations
    )]
    tonic::include_proto!("fastchat.v1");
}

/// The protobuf codec every generated service and client uses.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::{
        Status,
        codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    };
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    /// Initial encode/decode buffer of a call or stream. tonic's default is
    /// 8 KiB per stream, allocated up front: with 10,000 idle subscribers
    /// that alone is 80 MB. Chat messages are small, and the buffer grows
    /// when a larger one (or a batch) needs it.
    pub const BUFFER_SIZE: usize = 1024;
    /// tonic's default: yield to the runtime after this many encoded bytes.
    pub const YIELD_THRESHOLD: usize = 32 * 1024;

    /// [`ProstCodec`] with a small initial buffer (see [`BUFFER_SIZE`]) and
    /// undecodable messages reported as INVALID_ARGUMENT (see [`LeanDecoder`]).
    #[derive(Debug, Clone, Copy)]
    pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for LeanCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for LeanCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + prost::Name + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = LeanDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
        }

        fn decoder(&mut self) -> Self::Decoder {
            LeanDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::new(
                BUFFER_SIZE,
                YIELD_THRESHOLD,
            )))
        }
    }

    /// Decodes like [`ProstDecoder`], but a message that does not parse is
    /// INVALID_ARGUMENT naming the expected type: on a server that is bad
    /// input a person can act on (gRPC's own table lists the library's
    /// INTERNAL, which reads as a server fault). A client decoding a
    /// response gets the same code.
    #[derive(Debug)]
    pub struct LeanDecoder<U>(ProstDecoder<U>);

    impl<U: prost::Message + prost::Name + Default> Decoder for LeanDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            self.0.decode(buf).map_err(|status| {
                Status::invalid_argument(format!(
                    "the message is not a valid {}: {}",
                    U::full_name(),
                    status.message()
                ))
            })
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}

/// Encoded `FileDescriptorSet` of every FastChat proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fastchat_descriptor.bin"));

/// Re-exported so users of the generated types need no direct dependency.
pub use prost_types;

/// Rooms and their subjects in the `chat` station, shared by the services
/// and clients (the payload and headers are `fastchat-wire`'s business).
pub mod station {
    /// Room used when a request leaves the room empty (and by the seed API).
    pub const DEFAULT_ROOM: &str = "general";
    /// Every room's subject starts with this.
    pub const SUBJECT_PREFIX: &str = "chat.messages.";
    /// Filter matching every room.
    pub const ALL_ROOMS: &str = "chat.messages.>";
    /// Longest room name.
    pub const MAX_ROOM_LEN: usize = 64;
    /// Subject of a room.
    #[must_use]
    pub fn subject(room: &str) -> String {
        format!("{SUBJECT_PREFIX}{room}")
    }

    /// Room of a subject, if it is a room subject.
    #[must_use]
    pub fn room_of(subject: &str) -> Option<&str> {
        subject.strip_prefix(SUBJECT_PREFIX)
    }

    /// Whether `room` is 1–64 of `[A-Za-z0-9_-]`.
    #[must_use]
    pub fn is_valid_room(room: &str) -> bool {
        !room.is_empty()
            && room.len() <= MAX_ROOM_LEN
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn room_names() {
            for ok in ["general", "a", "Room_1-b", &"x".repeat(64)] {
                assert!(is_valid_room(ok), "{ok}");
            }
            for bad in [
                "",
                "has space",
                "dot.ted",
                "star*",
                "gt>",
                "é",
                &"x".repeat(65),
            ] {
                assert!(!is_valid_room(bad), "{bad}");
            }
            assert_eq!(room_of(&subject("general")), Some("general"));
            assert_eq!(room_of("other.subject"), None);
        }
    }
}

/// The gRPC name of a status code, e.g. `INVALID_ARGUMENT`.
#[must_use]
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
