//! `fastchat history`: one page of a room's history, oldest first.

use std::io::Write;

use fastchat_proto::v1::{self, all_messages_service_client::AllMessagesServiceClient};

use super::Context;
use crate::{addr::Target, args::HistoryArgs, connect::Use, error::CliError, output::Printer};

/// The request `args` describe (0 = "from the newest" / "service default").
#[must_use]
pub fn request(args: &HistoryArgs) -> v1::ListMessagesRequest {
    v1::ListMessagesRequest {
        room: args.room.clone(),
        before_sequence: args.before.unwrap_or(0),
        limit: args.limit.unwrap_or(0),
    }
}

/// Prints one page, oldest first, then the `--before` of the next page when
/// older messages exist.
///
/// # Errors
/// all-messages-service unreachable, the request refused, or writing failed.
pub async fn run<W: Write>(
    ctx: &Context,
    args: &HistoryArgs,
    out: &mut Printer<W>,
) -> Result<(), CliError> {
    let channel = ctx.connect(Target::All, Use::Unary).await?;
    let page = AllMessagesServiceClient::new(channel)
        .list_messages(ctx.request(request(args)))
        .await
        .map_err(|status| ctx.status_error(Target::All, &status))?
        .into_inner();
    for message in &page.messages {
        out.message(message)?;
    }
    out.page_end(
        &args.room,
        page.messages.len(),
        page.next_before_sequence,
        args.limit,
    )?;
    Ok(())
}
