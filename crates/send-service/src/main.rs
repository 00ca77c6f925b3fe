//! `send-service` binary: configuration, logging and signals, then
//! [`send_service::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    fastchat_runtime::cli::main("send-service", send_service::run)
}
