//! `all-messages-service` binary: configuration, logging and signals, then
//! [`all_messages_service::run`].

use std::process::ExitCode;

// The system allocator on purpose: with mimalloc this service's memory per
// idle subscriber grew from 34 to 50 KiB (make bench, 10,000 subscribers),
// while its throughput did not need the help; send-service does use it.

fn main() -> ExitCode {
    fastchat_runtime::cli::main(fastchat_runtime::binary!(), all_messages_service::run)
}
