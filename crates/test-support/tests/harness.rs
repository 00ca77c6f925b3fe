//! The harness against a real nats-server: the ports it picks, monitoring,
//! restarts in place, failures that explain themselves, a small cluster.

use std::{
    net::{TcpListener, TcpStream},
    time::Duration,
};

use async_nats::jetstream;
use fastchat_test_support::{NatsCluster, NatsOptions, NatsServer, free_port};

fn monitored(name: Option<&str>) -> NatsServer {
    NatsServer::start_with(NatsOptions {
        monitor_port: Some(0),
        server_name: name.map(str::to_owned),
        ..NatsOptions::default()
    })
}

#[test]
fn picks_its_own_ports_and_its_monitoring_answers() {
    let server = monitored(None);
    let monitor = server.monitor_port().expect("monitoring was asked for");
    assert_ne!(server.port(), 0);
    assert_ne!(monitor, server.port());
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    TcpStream::connect(("127.0.0.1", server.port())).expect("clients can connect");
    assert_eq!(server.health(), Ok(()));
    assert!(server.healthy());

    let (status, body) = server.monitor_get("/varz").expect("/varz answers");
    assert_eq!(status, 200);
    let varz: serde_json::Value = serde_json::from_str(&body).expect("/varz is JSON");
    assert_eq!(varz["port"], u64::from(server.port()));
    // (`http_port` there says -1, as configured: the ports file has the real
    // one, which answered.)

    // Not an error: the status is the answer.
    let (status, _) = server
        .monitor_get("/no-such-page")
        .expect("the server answers");
    assert_eq!(status, 404);
}

#[test]
fn without_monitoring_there_is_nothing_to_ask() {
    let server = NatsServer::start();
    assert_eq!(server.monitor_port(), None);
    assert!(server.monitor_get("/varz").is_err());
    assert!(!server.healthy());
    assert!(server.stream_report("ANY").is_err());
}

#[test]
fn a_fixed_client_port_is_used() {
    let port = free_port();
    let server = NatsServer::start_with(NatsOptions {
        port: Some(port),
        ..NatsOptions::default()
    });
    assert_eq!(server.port(), port);
}

#[test]
fn restart_keeps_the_ports_and_the_store() {
    let mut server = monitored(None);
    let (port, monitor) = (server.port(), server.monitor_port());
    let store = server.store_dir().to_owned();
    server.stop();
    assert!(!server.is_running());
    server.restart();
    assert!(server.is_running());
    assert_eq!(
        (server.port(), server.monitor_port(), server.store_dir()),
        (port, monitor, store.as_path())
    );
    assert_eq!(server.health(), Ok(()));
    assert_eq!(
        server.log().matches("Server is ready").count(),
        2,
        "the log covers both runs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_report_shows_what_is_stored_across_a_restart() {
    let mut server = monitored(Some("solo"));
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "REPORTED".to_owned(),
        subjects: vec!["reported.>".to_owned()],
        ..jetstream::stream::Config::default()
    })
    .await
    .expect("create the stream");
    for text in ["a", "b", "c"] {
        js.publish("reported.x", text.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    let report = tokio::task::block_in_place(|| server.stream_report("REPORTED"))
        .expect("/jsz")
        .expect("the server holds the stream");
    assert_eq!(report.server, "solo");
    // Alone, it leads its own stream and has no other replicas.
    assert_eq!(
        (report.leader.as_deref(), report.replicas.len()),
        (Some("solo"), 0)
    );
    assert_eq!(
        (report.messages, report.first_sequence, report.last_sequence),
        (3, 1, 3)
    );
    assert_eq!(
        tokio::task::block_in_place(|| server.stream_report("ABSENT")),
        Ok(None)
    );

    tokio::task::block_in_place(|| server.restart());
    let report = tokio::task::block_in_place(|| server.stream_report("REPORTED"))
        .expect("/jsz")
        .expect("the store kept the stream");
    assert_eq!((report.messages, report.last_sequence), (3, 3));
}

#[test]
fn a_server_that_exits_early_says_why() {
    let error = NatsServer::try_start_with(NatsOptions {
        config: Some("jetstream { max_file_store: lots }\n".to_owned()),
        ..NatsOptions::default()
    })
    .expect_err("a broken config");
    assert!(error.contains("nats-server exited"), "{error}");
    assert!(
        error.contains("max_file_store"),
        "the server's own words: {error}"
    );
}

#[test]
fn a_taken_fixed_port_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let error = NatsServer::try_start_with(NatsOptions {
        port: Some(port),
        ..NatsOptions::default()
    })
    .expect_err("the port is taken");
    assert!(error.contains("address already in use"), "{error}");
}

#[test]
fn a_cluster_forms_and_a_node_restarts_in_place() {
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    assert_eq!(cluster.index_of("n2"), Some(2));
    assert_eq!(cluster.node(0).name(), Some("n0"));

    let node = cluster.node(1);
    let (port, monitor) = (node.port(), node.monitor_port());
    cluster.node_mut(1).restart();
    let node = cluster.node(1);
    assert_eq!((node.port(), node.monitor_port()), (port, monitor));
    cluster.wait_healthy(Duration::from_secs(30));
}
