//! A tiny FastChat client for trying a running system without grpcurl:
//!
//! ```sh
//! cargo run -q -p fastchat-e2e --example chat -- send --author ann "hello"
//! cargo run -q -p fastchat-e2e --example chat -- tail --room general
//! ```

#![allow(clippy::print_stdout)] // a command-line client: stdout is its output

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fastchat_proto::v1::{
    self, all_messages_service_client::AllMessagesServiceClient,
    send_message_service_client::SendMessageServiceClient, subscribe_response::Event,
};

#[derive(Debug, Parser)]
struct Args {
    /// send-service address.
    #[arg(
        long,
        env = "FASTCHAT_SEND_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    send_addr: String,
    /// all-messages-service address.
    #[arg(
        long,
        env = "FASTCHAT_ALL_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    all_addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one message and print where it was stored.
    Send {
        #[arg(long, default_value = "")]
        room: String,
        #[arg(long)]
        author: String,
        text: String,
    },
    /// Print a room's (or every room's) messages, then live ones.
    Tail {
        #[arg(long, default_value = "")]
        room: String,
        /// Resume after this sequence.
        #[arg(long)]
        after: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Send { room, author, text } => {
            let mut client = SendMessageServiceClient::connect(args.send_addr.clone())
                .await
                .with_context(|| format!("cannot reach send-service at {}", args.send_addr))?;
            let response = client
                .send_message(v1::SendMessageRequest {
                    room,
                    author,
                    text,
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            let m = response.message.context("no message in the response")?;
            println!("stored #{} in {} as {}", m.sequence, m.room, m.id);
        }
        Command::Tail { room, after } => {
            let mut client = AllMessagesServiceClient::connect(args.all_addr.clone())
                .await
                .with_context(|| {
                    format!("cannot reach all-messages-service at {}", args.all_addr)
                })?;
            let mut stream = client
                .subscribe(v1::SubscribeRequest {
                    room,
                    start: after.map(v1::subscribe_request::Start::AfterSequence),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            while let Some(response) = stream
                .message()
                .await
                .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
            {
                match response.event {
                    Some(Event::Message(m)) => {
                        println!("#{} [{}] {}: {}", m.sequence, m.room, m.author, m.text);
                    }
                    Some(Event::Gap(g)) => {
                        println!(
                            "(messages #{}..#{} expired)",
                            g.from_sequence, g.to_sequence
                        );
                    }
                    None => {}
                }
            }
        }
    }
    Ok(())
}
