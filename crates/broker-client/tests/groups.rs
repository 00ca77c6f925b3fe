//! Group consumers and dead letters against a real nats-server: work split
//! across members with nothing lost or doubled, redelivery, poison messages
//! ending in the dead-letter station, and republishing them.

use std::{collections::BTreeSet, time::Duration};

use broker_client::{
    Broker, BrokerConfig, GroupConfig, HeaderMap, StartPosition, Station, StationConfig,
};
use bytes::Bytes;
use fastchat_test_support::NatsServer;
use tokio::time::timeout;

async fn station(server: &NatsServer) -> Station {
    let broker = Broker::connect(&BrokerConfig {
        url: server.url(),
        request_timeout: Duration::from_secs(2),
        ..BrokerConfig::default()
    })
    .await
    .expect("connect");
    timeout(Duration::from_secs(10), broker.wait_connected())
        .await
        .expect("connected");
    broker
        .ensure_station(&StationConfig {
            name: "jobs".into(),
            subjects: vec!["jobs.>".into()],
            // Small: the broker reserves a station's byte limit in its store.
            max_bytes: 64 << 20,
            ..StationConfig::default()
        })
        .await
        .expect("station")
}

async fn publish(station: &Station, body: &str) -> u64 {
    station
        .producer()
        .publish(
            "jobs.work",
            HeaderMap::new(),
            Bytes::from(body.to_owned()),
            body,
        )
        .await
        .expect("publish")
        .sequence
}

fn group(name: &str) -> GroupConfig {
    GroupConfig {
        name: name.into(),
        filter: "jobs.>".into(),
        ack_wait: Duration::from_secs(2),
        max_deliveries: 3,
        ..GroupConfig::default()
    }
}

#[tokio::test]
async fn two_members_split_the_work_with_nothing_lost_or_doubled() {
    const JOBS: usize = 300;
    let server = NatsServer::start();
    let station = station(&server).await;
    let mut published = BTreeSet::new();
    for i in 0..JOBS {
        published.insert(publish(&station, &format!("job-{i}")).await);
    }
    let mut members = Vec::new();
    for _ in 0..2 {
        let mut member = station.group(&group("workers")).await.expect("join");
        members.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Stop once nothing new arrives for a while.
            while let Ok(next) = timeout(Duration::from_secs(2), member.next()).await {
                let message = next.expect("next");
                got.push(message.message.sequence);
                message.ack().await.expect("ack");
                // Let the other member take its share.
                tokio::task::yield_now().await;
            }
            got
        }));
    }
    let mut seen = Vec::new();
    let mut shares = Vec::new();
    for member in members {
        let got = member.await.expect("member");
        shares.push(got.len());
        seen.extend(got);
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), unique.len(), "a message went to two members");
    assert_eq!(unique, published, "a message was lost");
    assert!(
        shares.iter().all(|n| *n > 0),
        "both members got work: {shares:?}"
    );
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_station_and_can_be_republished() {
    let server = NatsServer::start();
    let station = station(&server).await;
    let good = publish(&station, "good").await;
    let poison = publish(&station, "poison").await;
    let mut member = station.group(&group("handlers")).await.expect("join");
    let mut attempts = 0;
    let mut handled = Vec::new();
    timeout(Duration::from_secs(20), async {
        while handled.is_empty() || attempts < 3 {
            let message = member.next().await.expect("next");
            if message.message.payload.as_ref() == b"poison" {
                attempts += 1;
                assert_eq!(message.deliveries, attempts);
                message.fail("cannot parse", None).await.expect("fail");
            } else {
                handled.push(message.message.sequence);
                message.ack().await.expect("ack");
            }
        }
    })
    .await
    .expect("handled within 20 s");
    assert_eq!(handled, vec![good]);

    let letters = station.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.reason, "cannot parse");
    assert_eq!(letter.subject, "jobs.work");
    assert_eq!(letter.original_sequence, poison);
    assert_eq!(letter.group, "handlers");
    assert_eq!(letter.deliveries, 3);
    assert_eq!(letter.payload.as_ref(), b"poison");
    // The group is done with it.
    assert!(
        timeout(Duration::from_millis(500), member.next())
            .await
            .is_err()
    );

    let again = station
        .republish_dead_letter(letter.sequence)
        .await
        .expect("republish");
    assert!(again.sequence > poison);
    assert!(
        station
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    let back = timeout(Duration::from_secs(5), member.next())
        .await
        .expect("redelivered")
        .expect("next");
    assert_eq!(
        (back.message.sequence, back.message.payload.as_ref()),
        (again.sequence, b"poison".as_ref())
    );
    back.ack().await.expect("ack");
}

#[tokio::test]
async fn an_unacknowledged_message_is_redelivered_then_dead_lettered() {
    let server = NatsServer::start();
    let station = station(&server).await;
    let sequence = publish(&station, "crashes-its-consumer").await;
    let config = GroupConfig {
        ack_wait: Duration::from_millis(300),
        max_deliveries: 2,
        ..group("crashy")
    };
    // Each member "crashes": takes the message and drops it unsettled.
    for delivery in 1..=2 {
        let mut member = station.group(&config).await.expect("join");
        let message = timeout(Duration::from_secs(5), member.next())
            .await
            .expect("delivered")
            .expect("next");
        assert_eq!(
            (message.message.sequence, message.deliveries),
            (sequence, delivery)
        );
        drop(message);
    }
    // The next member never sees it: it is moved to the dead letters.
    let mut member = station.group(&config).await.expect("join");
    assert!(
        timeout(Duration::from_secs(2), member.next())
            .await
            .is_err()
    );
    let letters = station.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].original_sequence, sequence);
    assert!(
        letters[0].reason.contains("not acknowledged"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test]
async fn a_new_group_starts_where_asked() {
    let server = NatsServer::start();
    let station = station(&server).await;
    publish(&station, "old").await;
    let newer = publish(&station, "newer").await;
    let config = GroupConfig {
        start: Some(StartPosition::FromSequence(newer)),
        ..group("late")
    };
    let mut member = station.group(&config).await.expect("join");
    let first = timeout(Duration::from_secs(5), member.next())
        .await
        .expect("in time")
        .expect("next");
    assert_eq!(first.message.sequence, newer);
    // nak with a delay: redelivered, not before the delay.
    let started = std::time::Instant::now();
    first
        .nak(Some(Duration::from_millis(400)))
        .await
        .expect("nak");
    let again = timeout(Duration::from_secs(5), member.next())
        .await
        .expect("in time")
        .expect("next");
    assert_eq!((again.message.sequence, again.deliveries), (newer, 2));
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    again.ack().await.expect("ack");
}
