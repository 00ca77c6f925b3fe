//! History: ListMessages p50 for the newest page and a page deep in a
//! station of 1,000,000 messages across 1,000 rooms; there is no baseline
//! (the raw servers serve no history).

use std::time::Instant;

use anyhow::bail;
use fastchat_proto::v1::{self, all_messages_service_client::AllMessagesServiceClient};

use super::common::{Latencies, channel, jetstream, publish_raw};
use crate::{report::Report, system::System};

/// History paging deep in a large station: ListMessages on a station of
/// 1,000,000 messages across 1,000 rooms.
pub async fn history(report: &mut Report) -> anyhow::Result<()> {
    const MESSAGES: usize = 1_000_000;
    const ROOMS: usize = 1000;
    const CALLS: usize = 20;
    let system = System::start()?;
    let js = jetstream(&system.nats.url()).await?;
    eprintln!("[history] storing {MESSAGES} messages across {ROOMS} rooms ...");
    let took = publish_raw(
        &js,
        MESSAGES,
        |i| format!("room{}", i % ROOMS),
        || "x".repeat(64),
    )
    .await?;
    eprintln!("[history] stored in {took:?}");
    let mut client = AllMessagesServiceClient::new(channel(&system.all.endpoint()).await?);
    let (mut newest, mut deep) = (vec![], vec![]);
    for run in 1..=report.runs {
        eprintln!("[history] run {run}/{}", report.runs);
        let (mut newest_calls, mut deep_calls) = (Latencies::default(), Latencies::default());
        for call in 0..CALLS {
            let room = format!("room{}", (call * 37 + run * 101) % ROOMS);
            let started = Instant::now();
            client
                .list_messages(v1::ListMessagesRequest {
                    room: room.clone(),
                    before_sequence: 0,
                    limit: 50,
                })
                .await?;
            newest_calls.record(started.elapsed());
            // A page from the middle of the station's history.
            let started = Instant::now();
            let page = client
                .list_messages(v1::ListMessagesRequest {
                    room,
                    before_sequence: (MESSAGES / 2) as u64,
                    limit: 50,
                })
                .await?
                .into_inner();
            deep_calls.record(started.elapsed());
            if page.messages.len() != 50 {
                bail!("a deep page had {} messages, not 50", page.messages.len());
            }
        }
        newest.push(newest_calls.ms(50.0));
        deep.push(deep_calls.ms(50.0));
    }
    let newest = report.figure(
        "history",
        "ListMessages newest page (50), 1M msgs / 1,000 rooms, p50",
        "ms",
        &newest,
    );
    let deep = report.figure(
        "history",
        "ListMessages page at sequence 500,000, p50",
        "ms",
        &deep,
    );
    report.summary("list_newest_page_ms", newest.median);
    report.summary("list_deep_page_ms", deep.median);
    Ok(())
}
