//! `all-messages-service` binary: configuration, logging and signals, then
//! [`all_messages_service::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    fastchat_runtime::cli::main("all-messages-service", all_messages_service::run)
}
