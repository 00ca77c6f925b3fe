//! `fastchat send`: store one message and print where it was stored.

use std::io::Write;

use fastchat_proto::v1::{self, send_message_service_client::SendMessageServiceClient};
use tonic::Code;

use super::Context;
use crate::{
    addr::Target,
    args::SendArgs,
    connect::Use,
    error::{CliError, ErrorKind},
    output::Printer,
};

/// The request `args` describe.
#[must_use]
pub fn request(args: &SendArgs) -> v1::SendMessageRequest {
    v1::SendMessageRequest {
        room: args.room.clone().unwrap_or_default(),
        // Empty: the service takes the token's identity (or refuses).
        author: args.author.clone().unwrap_or_default(),
        text: args.text.join(" "),
        client_message_id: args.id.clone().unwrap_or_default(),
        client_time_ms: args.time_ms.unwrap_or(0),
    }
}

/// Whether `status` refuses the empty author of a send without `--author`.
fn no_author(args: &SendArgs, status: &tonic::Status) -> bool {
    args.author.is_none()
        && status.code() == Code::InvalidArgument
        && status.message().starts_with("author")
}

/// Sends one message and prints its sequence and id (and whether it was a
/// duplicate of an earlier send with the same `--id`).
///
/// # Errors
/// send-service unreachable, the message refused (`invalid input: …`), or
/// writing the output failed.
pub async fn run<W: Write>(
    ctx: &Context,
    args: &SendArgs,
    out: &mut Printer<W>,
) -> Result<(), CliError> {
    let channel = ctx.connect(Target::Send, Use::Unary).await?;
    let response = SendMessageServiceClient::new(channel)
        .send_message(ctx.request(request(args)))
        .await
        .map_err(|status| {
            let error = ctx.status_error(Target::Send, &status);
            // Only these leave it open whether the message was stored
            // (UNIMPLEMENTED, also exit 69, means it certainly was not).
            let maybe_stored = matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded);
            if maybe_stored && args.id.is_none() {
                // Without a key, a retry after a lost answer could store twice.
                error.with_hint(
                    "the message may or may not be stored; retry with --id KEY to be safe",
                )
            } else if maybe_stored {
                error.with_hint("retry with the same --id; it is stored once")
            } else if no_author(args, &status) {
                error.with_hint(
                    "pass --author NAME; a service that checks tokens takes it from the token",
                )
            } else {
                error
            }
        })?
        .into_inner();
    let message = response.message.ok_or_else(|| {
        CliError::new(
            ErrorKind::Failed,
            "send-service answered without the stored message",
        )
    })?;
    out.sent(&message, response.duplicate)?;
    Ok(())
}
