//! `send-service` binary: configuration, logging and signals, then
//! [`send_service::run`].

use std::process::ExitCode;

// mimalloc: the services allocate many small, short-lived buffers per
// message (frames, headers, protobuf); it does that faster than glibc's
// malloc and returns memory to the OS more readily.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    fastchat_runtime::cli::main(fastchat_runtime::binary!(), send_service::run)
}
