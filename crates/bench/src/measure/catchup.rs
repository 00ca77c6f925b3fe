//! Catch-up: a new subscriber replaying 100,000 retained messages (msg/s),
//! against a raw ordered consumer reading and decoding the same.

use std::time::Instant;

use anyhow::bail;
use async_nats::jetstream::consumer::DeliverPolicy;
use fastchat_proto::v1::{self, all_messages_service_client::AllMessagesServiceClient};
use futures::StreamExt as _;
use prost::Message as _;

use super::common::{LIMIT, channel, jetstream, next_message, ordered_messages, publish_raw, rate};
use crate::{report::Report, system::System};

/// (5) A new subscriber replaying 100,000 retained messages vs a raw ordered
/// consumer reading the same.
pub async fn catchup(report: &mut Report) -> anyhow::Result<()> {
    const MESSAGES: usize = 100_000;
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    let took = publish_raw(&js, MESSAGES, |_| "catchup".into(), || "x".repeat(64)).await?;
    eprintln!("[catchup] stored {MESSAGES} messages in {took:?}");
    let (mut raw_rates, mut fc_rates) = (vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[catchup] run {run}/{}", report.runs);
        let stream = js.get_stream("chat").await?;
        let started = Instant::now();
        let mut messages =
            ordered_messages(&js, &stream, "chat.messages.catchup", DeliverPolicy::All).await?;
        for _ in 0..MESSAGES {
            let next = tokio::time::timeout(LIMIT, messages.next()).await?;
            let Some(message) = next else {
                bail!("consumer ended")
            };
            let message = message?;
            std::hint::black_box(v1::ChatMessage::decode(message.payload.as_ref())?);
        }
        raw_rates.push(rate(MESSAGES, started.elapsed()));
        drop(messages);

        let started = Instant::now();
        let mut client = AllMessagesServiceClient::new(channel(&system.all.endpoint()).await?);
        let mut stream = client
            .subscribe(v1::SubscribeRequest {
                rooms: Vec::new(),
                room: "catchup".into(),
                start: None,
            })
            .await?
            .into_inner();
        for got in 0..MESSAGES {
            if tokio::time::timeout(LIMIT, next_message(&mut stream))
                .await??
                .is_none()
            {
                bail!("stream ended after {got}");
            }
        }
        fc_rates.push(rate(MESSAGES, started.elapsed()));
    }
    let raw = report.figure(
        "catchup",
        "raw ordered consumer reading 100,000 messages",
        "msg/s",
        &raw_rates,
    );
    let fc = report.figure(
        "catchup",
        "new subscriber replaying 100,000 messages",
        "msg/s",
        &fc_rates,
    );
    report.summary("catchup_msgs_per_s", fc.median);
    report.summary("catchup_ratio", fc.median / raw.median);
    Ok(())
}
