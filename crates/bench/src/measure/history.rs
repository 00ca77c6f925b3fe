//! History: ListMessages p50 for the newest page and a page deep in a
//! station of 1,000,000 messages across 1,000 rooms. The raw servers serve
//! no history; the baselines are the broker's side of the same deep page,
//! in this process: broker-client's page read (what ListMessages asks the
//! broker), and one batched direct get of the page's 51 messages with
//! their first sequence already known (the least a page can cost).

use std::time::Instant;

use anyhow::bail;
use broker_client::{Broker, BrokerConfig, StationConfig};
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

    // The broker's side of the deep page, without the service.
    let broker = Broker::connect(&BrokerConfig {
        url: system.nats.url(),
        ..BrokerConfig::default()
    })
    .await?;
    let station = broker
        .ensure_station_retrying(&StationConfig::default())
        .await?;
    let before = (MESSAGES / 2) as u64;
    let (mut library, mut floor) = (vec![], vec![]);
    for run in 1..=report.runs {
        let (mut library_calls, mut floor_calls) = (Latencies::default(), Latencies::default());
        for call in 0..CALLS {
            let subject = format!("chat.messages.room{}", (call * 37 + run * 101) % ROOMS);
            let started = Instant::now();
            let page = station
                .last_messages(subject.as_str(), 51, Some(before))
                .await?;
            library_calls.record(started.elapsed());
            let Some(first) = page.first().map(|m| m.sequence) else {
                bail!("no page below {before} in {subject}");
            };
            let started = Instant::now();
            let mut read = station
                .read_window(subject.as_str(), first, before, 51)
                .await?;
            let mut got = 0;
            while got < 51 && read.next().await?.is_some_and(|m| m.sequence < before) {
                got += 1;
            }
            floor_calls.record(started.elapsed());
            if got != 51 {
                bail!("the page's window read gave {got} messages, not 51");
            }
        }
        library.push(library_calls.ms(50.0));
        floor.push(floor_calls.ms(50.0));
    }
    let library = report.figure(
        "history",
        "broker-client page read (last_messages, in-process) at sequence 500,000, p50",
        "ms",
        &library,
    );
    let floor = report.figure(
        "history",
        "one batched direct get of that page, its start known, p50",
        "ms",
        &floor,
    );
    report.summary("list_deep_page_broker_ms", library.median);
    report.summary("list_page_direct_get_ms", floor.median);
    Ok(())
}
