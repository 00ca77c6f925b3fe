//! The stations layer against a real nats-server: creation, conflicts,
//! publishing, start positions, reads and recovery from a broker restart.

use std::time::Duration;

use broker_client::{
    Broker, BrokerConfig, ErrorKind, HeaderMap, Read, StartPosition, Station, StationConfig,
    Subjects,
};
use bytes::Bytes;
use fastchat_test_support::NatsServer;
use tokio::time::timeout;

fn station_config() -> StationConfig {
    StationConfig {
        name: "test".into(),
        subjects: vec!["test.>".into()],
        // The broker reserves a station's byte limit in its store, which
        // by default is 75 % of the free disk: keep test stations small.
        max_bytes: 64 << 20,
        ..StationConfig::default()
    }
}

async fn connect(server: &NatsServer) -> Broker {
    connect_reading(server, true).await
}

/// A broker connection reading history with batched direct gets
/// (`batch_reads`) or with a consumer per read.
async fn connect_reading(server: &NatsServer, batch_reads: bool) -> Broker {
    connect_with(BrokerConfig {
        url: server.url(),
        batch_reads,
        request_timeout: Duration::from_secs(2),
        max_reconnect_delay: Duration::from_millis(200),
        ..BrokerConfig::default()
    })
    .await
}

async fn connect_with(config: BrokerConfig) -> Broker {
    let broker = Broker::connect(&config).await.expect("connect");
    timeout(Duration::from_secs(10), broker.wait_connected())
        .await
        .expect("connected within 10 s");
    broker
}

/// The test station seen from a connection of its own.
struct Observer(async_nats::jetstream::Context);

impl Observer {
    async fn new(server: &NatsServer) -> Self {
        let client = async_nats::connect(server.url())
            .await
            .expect("connect an observer");
        Self(async_nats::jetstream::new(client))
    }

    /// The consumers the broker holds for the test station.
    async fn consumers(&self) -> usize {
        self.0
            .get_stream("test")
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .consumer_count
    }
}

async fn publish(station: &Station, subject: &str, body: &str, id: &str) -> u64 {
    station
        .producer()
        .publish(subject, HeaderMap::new(), Bytes::from(body.to_owned()), id)
        .await
        .expect("publish")
        .sequence
}

#[tokio::test]
async fn station_creation_is_idempotent_and_conflicts_name_the_field() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let config = station_config();
    broker.ensure_station(&config).await.expect("create");
    broker
        .ensure_station(&config)
        .await
        .expect("same definition again");

    let mut other = config.clone();
    other.max_age = Duration::from_secs(3600);
    let err = broker.ensure_station(&other).await.expect_err("conflict");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("max_age"), "{err}");

    let mut other = config.clone();
    other.duplicate_window = Duration::from_secs(30);
    let err = broker.ensure_station(&other).await.expect_err("conflict");
    assert!(err.to_string().contains("duplicate_window"), "{err}");
}

#[tokio::test]
async fn publish_returns_sequence_and_detects_duplicates() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    let producer = station.producer();
    let first = producer
        .publish(
            "test.a",
            HeaderMap::new(),
            Bytes::from_static(b"one"),
            "id-1",
        )
        .await
        .expect("publish");
    assert_eq!((first.sequence, first.duplicate), (1, false));
    let again = producer
        .publish(
            "test.a",
            HeaderMap::new(),
            Bytes::from_static(b"one"),
            "id-1",
        )
        .await
        .expect("publish duplicate");
    assert!(again.duplicate);
    assert_eq!(
        again.sequence, first.sequence,
        "a duplicate reports the original sequence"
    );
    let second = producer
        .publish(
            "test.a",
            HeaderMap::new(),
            Bytes::from_static(b"two"),
            "id-2",
        )
        .await
        .expect("publish");
    assert_eq!((second.sequence, second.duplicate), (2, false));

    let stored = station
        .get(1)
        .await
        .expect("get")
        .expect("message 1 exists");
    assert_eq!(stored.payload.as_ref(), b"one");
    assert!(station.get(99).await.expect("get").is_none());

    let err = producer
        .publish("elsewhere.a", HeaderMap::new(), Bytes::new(), "id-3")
        .await
        .expect_err("no station captures this subject");
    assert_ne!(err.kind(), ErrorKind::Conflict);
}

/// Batched direct gets: reads, counts and "n-th last" create no consumer
/// on the broker at all, however many run at once.
#[tokio::test]
async fn batch_reads_create_no_consumer() {
    let server = NatsServer::start();
    let broker = connect_reading(&server, true).await;
    assert!(
        broker.batch_reads(),
        "the test broker serves batched direct gets"
    );
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    for i in 1..=20 {
        publish(&station, "test.a", &i.to_string(), &format!("m{i}")).await;
    }
    let observer = Observer::new(&server).await;
    let mut reads = Vec::new();
    for _ in 0..50 {
        reads.push(
            station
                .read_paced("test.>", StartPosition::All, 3)
                .await
                .expect("read"),
        );
    }
    assert_eq!(station.count_from("test.a", 5).await.expect("count"), 16);
    assert_eq!(
        station
            .nth_last_sequence("test.a", 4, None)
            .await
            .expect("nth"),
        Some(17)
    );
    let mut seqs = vec![Vec::new(); reads.len()];
    for (read, seqs) in reads.iter_mut().zip(&mut seqs) {
        let first = read.next().await.expect("next").expect("a message");
        seqs.push(first.sequence);
    }
    // Fifty reads under way (a consumer each, on the other path).
    assert_eq!(
        observer.consumers().await,
        0,
        "reads under way hold no consumer"
    );
    for (read, seqs) in reads.iter_mut().zip(&mut seqs) {
        while let Some(m) = read.next().await.expect("next") {
            seqs.push(m.sequence);
        }
        assert_eq!(*seqs, (1..=20).collect::<Vec<u64>>());
    }
}

/// A long read (more than 4,096 messages still to go after its first
/// batch) moves to a push consumer while the process has a place for one
/// (`replay_consumers`); the others stay on direct gets. Either way every
/// message comes once, in order, and the consumer goes when the read does.
#[tokio::test]
async fn long_reads_move_to_a_bounded_number_of_consumers() {
    const STORED: u64 = 6000;
    let server = NatsServer::start();
    let broker = connect_with(BrokerConfig {
        url: server.url(),
        replay_consumers: 1,
        ..BrokerConfig::default()
    })
    .await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    for i in 1..=STORED {
        publish(&station, "test.a", "x", &format!("m{i}")).await;
    }
    let observer = Observer::new(&server).await;
    let consumers = || observer.consumers();
    let mut read1 = station
        .read("test.a", StartPosition::All)
        .await
        .expect("read");
    let mut first = sequences(&mut read1, 600).await;
    assert_eq!(
        consumers().await,
        1,
        "the first long read moved to a consumer"
    );
    let mut read2 = station
        .read("test.>", StartPosition::All)
        .await
        .expect("read");
    let mut second = sequences(&mut read2, 600).await;
    assert_eq!(
        consumers().await,
        1,
        "no place left: the second stays on direct gets"
    );
    first.extend(sequences(&mut read1, usize::MAX).await);
    second.extend(sequences(&mut read2, usize::MAX).await);
    let all: Vec<u64> = (1..=STORED).collect();
    assert_eq!(first, all, "the moved read: every message once, in order");
    assert_eq!(second, all, "the direct read: every message once, in order");
    drop((read1, read2));
    timeout(Duration::from_secs(5), async {
        while consumers().await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the moved read's consumer deleted with it");
    // A short read never takes a place; a long one takes the freed place.
    let mut short = station
        .read("test.a", StartPosition::FromSequence(STORED - 1000))
        .await
        .expect("read");
    assert_eq!(sequences(&mut short, 600).await.len(), 600);
    assert_eq!(consumers().await, 0, "1,001 messages: no consumer");
    let mut long = station
        .read("test.a", StartPosition::All)
        .await
        .expect("read");
    assert_eq!(sequences(&mut long, 600).await.len(), 600);
    assert_eq!(consumers().await, 1, "the place is free again");
}

/// The sequences of up to `n` more messages of `read`.
async fn sequences(read: &mut Read, n: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n {
        match read.next().await.expect("next") {
            Some(message) => got.push(message.sequence),
            None => break,
        }
    }
    got
}

/// A paced read deletes its consumer when it ends and when it is dropped
/// half-way: a slow subscriber's catch-ups leave nothing on the broker.
#[tokio::test]
async fn consumer_reads_leave_no_consumer_behind() {
    let server = NatsServer::start();
    let broker = connect_reading(&server, false).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    for i in 1..=5 {
        publish(&station, "test.a", &i.to_string(), &format!("m{i}")).await;
    }
    let observer = Observer::new(&server).await;
    let consumers = || observer.consumers();
    let mut finished = station
        .read_paced("test.>", StartPosition::All, 2)
        .await
        .expect("paced read");
    let mut abandoned = station
        .read_paced("test.>", StartPosition::All, 2)
        .await
        .expect("paced read");
    // Pushed reads clean up after themselves too.
    let mut pushed = station
        .read("test.>", StartPosition::All)
        .await
        .expect("read");
    assert_eq!(consumers().await, 3, "one consumer per read while reading");
    while pushed.next().await.expect("next").is_some() {}
    drop(pushed);
    let mut seqs = Vec::new();
    while let Some(m) = finished.next().await.expect("next") {
        seqs.push(m.sequence);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let first = abandoned.next().await.expect("next").expect("a message");
    assert_eq!(first.sequence, 1);
    drop(abandoned);
    timeout(Duration::from_secs(5), async {
        while consumers().await != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both consumers deleted within 5 s (their inactivity threshold is 30 s)");
    drop(finished);
}

#[tokio::test]
async fn reads_honour_every_start_position_and_filter() {
    for batch_reads in [true, false] {
        reads_honour_every_start_position_and_filter_when(batch_reads).await;
    }
}

async fn reads_honour_every_start_position_and_filter_when(batch_reads: bool) {
    let server = NatsServer::start();
    let broker = connect_reading(&server, batch_reads).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    for i in 1..=6 {
        let room = if i % 2 == 0 { "even" } else { "odd" };
        publish(
            &station,
            &format!("test.{room}"),
            &i.to_string(),
            &format!("m{i}"),
        )
        .await;
    }
    let since = broker_client::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&station, "test.odd", "7", "m7").await;

    // Each case read both ways: pushed, and paced two messages at a time
    // (several batches, then the end).
    async fn collect(station: &Station, filter: &str, start: StartPosition) -> Vec<u64> {
        async fn all(mut read: broker_client::Read) -> Vec<u64> {
            let mut seqs = Vec::new();
            while let Some(m) = read.next().await.expect("next") {
                seqs.push(m.sequence);
            }
            seqs
        }
        let pushed = all(station.read(filter, start).await.expect("read")).await;
        let paced = all(station
            .read_paced(filter, start, 2)
            .await
            .expect("paced read"))
        .await;
        assert_eq!(
            paced, pushed,
            "paced and pushed reads of {filter} from {start:?}"
        );
        pushed
    }
    assert_eq!(
        collect(&station, "test.>", StartPosition::All).await,
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        collect(&station, "test.even", StartPosition::All).await,
        vec![2, 4, 6]
    );
    assert_eq!(
        collect(&station, "test.>", StartPosition::after(4)).await,
        vec![5, 6, 7]
    );
    assert_eq!(
        collect(&station, "test.odd", StartPosition::after(3)).await,
        vec![5, 7]
    );
    assert_eq!(
        collect(&station, "test.>", StartPosition::Since(since)).await,
        vec![7]
    );
    assert_eq!(
        collect(&station, "test.>", StartPosition::after(7)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        collect(&station, "test.>", StartPosition::New).await,
        Vec::<u64>::new()
    );

    assert_eq!(
        station
            .nth_last_sequence("test.odd", 2, None)
            .await
            .expect("nth"),
        Some(5)
    );
    assert_eq!(
        station
            .nth_last_sequence("test.odd", 2, Some(5))
            .await
            .expect("nth"),
        Some(1)
    );
    assert_eq!(
        station
            .nth_last_sequence("test.even", 4, None)
            .await
            .expect("nth"),
        None
    );
    assert_eq!(station.count_from("test.even", 3).await.expect("count"), 2);
}

/// Several subjects in one read, count and "n-th last": what a
/// subscription of several rooms asks for.
#[tokio::test]
async fn reads_and_counts_over_several_subjects() {
    for batch_reads in [true, false] {
        reads_and_counts_over_several_subjects_when(batch_reads).await;
    }
}

async fn reads_and_counts_over_several_subjects_when(batch_reads: bool) {
    let server = NatsServer::start();
    let broker = connect_reading(&server, batch_reads).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    // a: 1, 4, 7; b: 2, 5; c: 3, 6
    for i in 1..=7 {
        let room = ["c", "a", "b"][i % 3];
        publish(
            &station,
            &format!("test.{room}"),
            &i.to_string(),
            &format!("m{i}"),
        )
        .await;
    }
    let ab = Subjects::any(["test.a", "test.b", "test.a"]).expect("two subjects");
    let mut read = station.read(&ab, StartPosition::All).await.expect("read");
    let mut seqs = Vec::new();
    while let Some(m) = read.next().await.expect("next") {
        seqs.push(m.sequence);
    }
    assert_eq!(seqs, vec![1, 2, 4, 5, 7]);
    let mut paced = station
        .read_paced(&ab, StartPosition::after(2), 2)
        .await
        .expect("paced read");
    let mut seqs = Vec::new();
    while let Some(m) = paced.next().await.expect("next") {
        seqs.push(m.sequence);
    }
    assert_eq!(seqs, vec![4, 5, 7]);
    assert_eq!(station.count_from(&ab, 3).await.expect("count"), 3);
    assert_eq!(
        station.nth_last_sequence(&ab, 3, None).await.expect("nth"),
        Some(4)
    );
    assert_eq!(
        station
            .nth_last_sequence(&ab, 2, Some(5))
            .await
            .expect("nth"),
        Some(2)
    );
    assert_eq!(
        station.nth_last_sequence(&ab, 6, None).await.expect("nth"),
        None
    );
    let last = |n, before| {
        let (station, ab) = (&station, &ab);
        async move {
            station
                .last_messages(ab, n, before)
                .await
                .expect("last messages")
                .iter()
                .map(|m| m.sequence)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(last(3, None).await, vec![4, 5, 7]);
    assert_eq!(last(2, Some(5)).await, vec![2, 4]);
    // Fewer than asked for: all of them.
    assert_eq!(last(6, None).await, vec![1, 2, 4, 5, 7]);
    assert_eq!(last(6, Some(3)).await, vec![1, 2]);
    assert_eq!(last(0, None).await, Vec::<u64>::new());
    // One subject, a window of a sparse one grows until it holds them.
    let c = station
        .last_messages("test.c", 2, None)
        .await
        .expect("last of c");
    assert_eq!(c.iter().map(|m| m.sequence).collect::<Vec<_>>(), vec![3, 6]);
    assert_eq!(c[1].payload.as_ref(), b"6");
}

#[tokio::test]
async fn fan_out_sees_new_messages_and_survives_a_broker_restart() {
    let mut server = NatsServer::start();
    let broker = connect(&server).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    publish(&station, "test.a", "old", "old").await;
    let mut fan_out = station
        .fan_out("test.>", StartPosition::New)
        .await
        .expect("fan-out");
    publish(&station, "test.a", "1", "n1").await;
    let first = timeout(Duration::from_secs(5), fan_out.next())
        .await
        .expect("first");
    assert_eq!((first.sequence, first.payload.as_ref()), (2, b"1".as_ref()));

    server.restart();
    timeout(Duration::from_secs(20), async {
        loop {
            broker.wait_connected().await;
            if station
                .producer()
                .publish("test.a", HeaderMap::new(), Bytes::from_static(b"2"), "n2")
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("publishing works again after the restart");
    let second = timeout(Duration::from_secs(20), fan_out.next())
        .await
        .expect("resumed");
    assert_eq!(
        (second.sequence, second.payload.as_ref()),
        (3, b"2".as_ref())
    );
}

#[tokio::test]
async fn publish_fails_fast_while_the_broker_is_down() {
    let mut server = NatsServer::start();
    let broker = connect(&server).await;
    let station = broker
        .ensure_station(&station_config())
        .await
        .expect("station");
    server.stop();
    timeout(Duration::from_secs(10), async {
        while broker.state() == broker_client::ConnectionState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the client notices the outage");
    let err = timeout(
        Duration::from_secs(5),
        station
            .producer()
            .publish("test.a", HeaderMap::new(), Bytes::from_static(b"x"), "x"),
    )
    .await
    .expect("answers within the request timeout")
    .expect_err("broker is down");
    assert!(err.is_transient(), "{err:?}");
}

/// What the broker answers is classified by its typed kind (JetStream API
/// error codes, request kinds), and the async-nats error stays the source.
#[tokio::test]
async fn broker_refusals_carry_their_kind_and_source() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let config = StationConfig {
        max_message_size: 1024,
        ..station_config()
    };
    let station = broker.ensure_station(&config).await.expect("station");

    // Larger than the station's max_message_size: the broker refuses it.
    let err = station
        .producer()
        .publish(
            "test.big",
            HeaderMap::new(),
            Bytes::from(vec![b'x'; 4096]),
            "big",
        )
        .await
        .expect_err("too large for the station");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the async-nats error is kept: {err:?}"
    );
    assert_eq!(
        station.state().await.expect("state").messages,
        0,
        "nothing stored"
    );

    // The stream deleted behind our back: reads and state say NotFound.
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
        .delete_stream("test")
        .await
        .expect("delete the stream");
    let err = station.state().await.expect_err("the stream is gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let err = station
        .read("test.>", StartPosition::All)
        .await
        .expect_err("the stream is gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(!err.is_transient());
}

/// A station whose byte limit the broker cannot reserve is a configuration
/// error naming the key, not a retry loop.
#[tokio::test]
async fn a_station_larger_than_the_broker_store_is_refused_naming_max_bytes() {
    let server = NatsServer::start_with(fastchat_test_support::NatsOptions {
        config: Some("jetstream { max_file_store: 10MB }\n".into()),
        ..fastchat_test_support::NatsOptions::default()
    });
    let broker = connect(&server).await;
    let config = StationConfig {
        max_bytes: 100 << 20,
        ..station_config()
    };
    let err = broker
        .ensure_station(&config)
        .await
        .expect_err("does not fit");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("station.max_bytes = 104857600"),
        "{err}"
    );
    let fits = StationConfig {
        max_bytes: 5 << 20,
        ..station_config()
    };
    broker
        .ensure_station(&fits)
        .await
        .expect("a station that fits");
}
