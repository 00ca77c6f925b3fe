//! Generated gRPC/protobuf types for FastChat's two APIs.
//!
//! - [`seed`]: the `ChatMessage` package of the original article, kept
//!   byte-compatible so existing clients work unchanged.
//! - [`v1`]: the `fastchat.v1` API with ids, rooms, cursors and paging.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection.

/// The seed API (`package ChatMessage`), exactly as the original clients use it.
pub mod seed {
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
    #![allow(
        missing_docs,
        non_camel_case_types,
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations
    )]
    tonic::include_proto!("fastchat.v1");
}

/// Encoded `FileDescriptorSet` of every FastChat proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fastchat_descriptor.bin"));

/// Re-exported so users of the generated types need no direct dependency.
pub use prost_types;
