//! The `fastchat` binary: parse the command line, run it, exit with its status.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    fastchat_cli::run_to_exit(fastchat_cli::Cli::parse_process_args())
}
