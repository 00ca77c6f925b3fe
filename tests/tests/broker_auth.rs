//! Per-service broker users with least privilege, as deployed
//! (`deploy/k8s/base/nats/auth.conf`): each service does its own job with its
//! own user, the send-service user cannot read the station, and the
//! all-messages-service user cannot publish to it.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, push},
    context::PublishErrorKind,
};
use broker_client::{Broker, BrokerConfig, StartPosition, StationConfig};
use fastchat_e2e::*;
use fastchat_proto::v1;
use fastchat_test_support::workspace_root;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(20);
/// How long a request the broker silently drops takes to fail.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

const SEND_USER: &str = "send-service";
const SEND_PASSWORD: &str = "pSendServiceTestPassword";
const ALL_USER: &str = "all-messages-service";
const ALL_PASSWORD: &str = "pAllMessagesTestPassword";

/// A broker with the deployed users and permissions: the very `auth.conf`
/// that Kubernetes and compose mount, with the passwords that nats-server
/// would read from its environment given inline as config variables.
fn auth_server() -> NatsServer {
    let path = workspace_root().join("deploy/k8s/base/nats/auth.conf");
    let auth =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    NatsServer::start_with(NatsOptions {
        config: Some(format!(
            "SEND_SERVICE_PASSWORD: \"{SEND_PASSWORD}\"\n\
             ALL_MESSAGES_SERVICE_PASSWORD: \"{ALL_PASSWORD}\"\n\
             max_payload: 1MB\n\
             {auth}"
        )),
        ..NatsOptions::default()
    })
}

/// The permission violations nats-server logged, one line each (they name
/// the user and the denied subject).
fn violations(nats: &NatsServer) -> Vec<String> {
    nats.log()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect()
}

fn password(user: &str) -> &'static str {
    if user == SEND_USER {
        SEND_PASSWORD
    } else {
        ALL_PASSWORD
    }
}

fn as_user(mut broker: BrokerConfig, user: &str) -> BrokerConfig {
    broker.user = Some(user.to_owned());
    broker.password = Some(password(user).to_owned());
    broker
}

fn send_config_as(nats: &NatsServer, user: &str) -> send_service::Config {
    let mut config = send_config(&nats.url());
    config.nats = as_user(config.nats, user);
    config
}

fn all_config_as(nats: &NatsServer, user: &str) -> all_messages_service::Config {
    let mut config = all_config(&nats.url());
    config.nats = as_user(config.nats, user);
    config
}

/// broker-client's own connection as `user`, as a service would make it.
fn broker_config_as(nats: &NatsServer, user: &str) -> BrokerConfig {
    as_user(
        BrokerConfig {
            url: nats.url(),
            request_timeout: REQUEST_TIMEOUT,
            max_reconnect_delay: Duration::from_millis(250),
            ..BrokerConfig::default()
        },
        user,
    )
}

/// A raw async-nats connection as `user`, with the server's error messages
/// (`-ERR 'Permissions Violation ...'`) forwarded to the returned receiver.
async fn connect_as(
    nats: &NatsServer,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        let _ = tx.send(error.to_string());
                    }
                }
            })
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    (client, rx)
}

fn js(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone())
}

/// Waits for the server to report a permissions violation naming `subject`.
async fn expect_violation(errors: &mut mpsc::UnboundedReceiver<String>, subject: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let error = errors.recv().await.expect("the connection is open");
            if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
                return error;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no permissions violation for `{subject}` reported"))
}

#[tokio::test]
async fn each_service_does_its_job_with_its_own_user() {
    let nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    let all = start_all(all_config_as(&nats, ALL_USER)).await;

    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(v1::SubscribeRequest {
            room: "auth".into(),
            start: None,
        })
        .await
        .expect("subscribe as all-messages-service")
        .into_inner();
    let mut sender = v1_send(&send).await;
    for text in ["one", "two", "three"] {
        let mut request = message("auth", "ann", text);
        request.client_message_id = text.into();
        sender
            .send_message(request)
            .await
            .expect("send as send-service");
    }
    // A retried send is answered with the stored original (read back by sequence).
    let mut retry = message("auth", "ann", "two again");
    retry.client_message_id = "two".into();
    let again = sender
        .send_message(retry)
        .await
        .expect("retry")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.message.expect("the original").text, "two");

    let events = take(&mut stream, 3, WAIT).await;
    assert_eq!(sequences(&events), [1, 2, 3]);
    let texts: Vec<String> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text),
            Event::Gap(_) => None,
        })
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);

    // History paths: paging and "the last N" (counting consumers, bounded reads).
    let page = reader
        .list_messages(v1::ListMessagesRequest {
            room: "auth".into(),
            before_sequence: 0,
            limit: 2,
        })
        .await
        .expect("list as all-messages-service")
        .into_inner();
    assert_eq!(
        page.messages.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        [2, 3]
    );
    let mut last = reader
        .subscribe(v1::SubscribeRequest {
            room: "auth".into(),
            start: Some(Start::Last(1)),
        })
        .await
        .expect("subscribe to the last message")
        .into_inner();
    assert_eq!(sequences(&take(&mut last, 1, WAIT).await), [3]);

    let denied = violations(&nats);
    assert!(
        denied.is_empty(),
        "the services needed subjects that auth.conf denies:\n{}",
        denied.join("\n")
    );

    // Without the right password nobody gets in.
    for (user, password) in [(SEND_USER, "pWrong"), (ALL_USER, SEND_PASSWORD)] {
        let refused =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                .connect(nats.url())
                .await;
        assert!(refused.is_err(), "{user} with a wrong password was let in");
    }
    assert!(
        async_nats::connect(nats.url()).await.is_err(),
        "an anonymous client was let in"
    );

    send.stop().await.expect("send-service stops cleanly");
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}

#[tokio::test]
async fn send_service_user_cannot_read_the_station() {
    let nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    let mut sender = v1_send(&send).await;
    sender
        .send_message(message("auth", "ann", "secret"))
        .await
        .expect("send");

    let (client, mut errors) = connect_as(&nats, SEND_USER).await;
    let js = js(&client);
    let station = js
        .get_stream("chat")
        .await
        .expect("station info is allowed (start-up check)");
    assert_eq!(station.cached_info().state.messages, 1);

    // No consumer of any kind: ordered push (what fan-out uses) ...
    let ordered = station
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: "chat.messages.>".into(),
            ..Default::default()
        })
        .await;
    assert!(ordered.is_err(), "send-service created an ordered consumer");
    let error = expect_violation(&mut errors, "$JS.API.CONSUMER.CREATE.chat").await;
    eprintln!("ordered consumer as {SEND_USER}: {error}");
    // ... nor a durable pull consumer.
    let durable = station
        .create_consumer(pull::Config {
            durable_name: Some("spy".into()),
            ..Default::default()
        })
        .await;
    assert!(durable.is_err(), "send-service created a durable consumer");
    expect_violation(&mut errors, "$JS.API.CONSUMER.CREATE.chat").await;

    // No plain subscription to the station's subjects either.
    let mut spy = client
        .subscribe("chat.messages.>")
        .await
        .expect("the client sends SUB");
    let error = expect_violation(&mut errors, "chat.messages.>").await;
    eprintln!("core subscription as {SEND_USER}: {error}");
    sender
        .send_message(message("auth", "ann", "unseen"))
        .await
        .expect("send");
    let seen = tokio::time::timeout(Duration::from_secs(1), spy.next()).await;
    assert!(
        !matches!(seen, Ok(Some(_))),
        "send-service's user received a chat message"
    );

    // Through broker-client, as a service would: the read fails.
    let broker = Broker::connect(&broker_config_as(&nats, SEND_USER))
        .await
        .expect("connect");
    broker.wait_connected().await;
    let station = broker
        .ensure_station(&StationConfig::default())
        .await
        .expect("the send-service user may check the station");
    let fan_out = station.fan_out("chat.messages.>", StartPosition::All).await;
    let error = fan_out.expect_err("send-service must not read the station");
    eprintln!(
        "broker-client fan-out as {SEND_USER}: {error} (kind: {:?})",
        error.kind()
    );
    let read = station.read("chat.messages.>", StartPosition::All).await;
    assert!(read.is_err(), "send-service must not read history");

    assert!(
        violations(&nats)
            .iter()
            .all(|v| v.contains(&format!("user:{SEND_USER}\""))),
        "only the test's probes were denied: {:?}",
        violations(&nats)
    );
    send.stop().await.expect("send-service stops cleanly");
}

#[tokio::test]
async fn all_messages_user_cannot_publish_to_the_station() {
    let nats = auth_server();
    let all = start_all(all_config_as(&nats, ALL_USER)).await;

    let (client, mut errors) = connect_as(&nats, ALL_USER).await;
    let js = js(&client);

    // A JetStream publish gets no ack: the server drops it and reports the
    // violation asynchronously on the connection.
    let ack = js
        .publish("chat.messages.general", "spoofed".into())
        .await
        .expect("the client buffers the publish")
        .await;
    let error = ack.expect_err("all-messages-service published to the station");
    assert_eq!(error.kind(), PublishErrorKind::TimedOut, "{error}");
    let violation = expect_violation(&mut errors, "chat.messages.general").await;
    eprintln!("JetStream publish as {ALL_USER}: {error}; server: {violation}");

    // A plain publish is dropped the same way.
    client
        .publish("chat.messages.dev", "spoofed".into())
        .await
        .expect("the client sends PUB");
    client.flush().await.expect("flush");
    expect_violation(&mut errors, "chat.messages.dev").await;

    // Through broker-client, as a service would.
    let broker = Broker::connect(&broker_config_as(&nats, ALL_USER))
        .await
        .expect("connect");
    broker.wait_connected().await;
    let station = broker
        .ensure_station(&StationConfig::default())
        .await
        .expect("the all-messages-service user may check the station");
    let published = station
        .producer()
        .publish(
            "chat.messages.general",
            broker_client::HeaderMap::new(),
            "spoofed".into(),
            "spoof-1",
        )
        .await;
    let error = published.expect_err("all-messages-service must not produce");
    eprintln!(
        "broker-client publish as {ALL_USER}: {error} (kind: {:?})",
        error.kind()
    );

    // Nothing was stored, and the user can still read.
    let state = station.state().await.expect("station state");
    assert_eq!(state.messages, 0, "a denied publish was stored");
    let page = v1_all(&all)
        .await
        .list_messages(v1::ListMessagesRequest {
            room: "general".into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect("list")
        .into_inner();
    assert!(page.messages.is_empty(), "{:?}", page.messages);

    let denied = violations(&nats);
    assert!(
        denied.iter().any(|v| v.contains("chat.messages.general")),
        "the broker logged the denied publish: {denied:?}"
    );
    assert!(
        denied
            .iter()
            .all(|v| v.contains(&format!("user:{ALL_USER}\""))),
        "only the test's probes were denied: {denied:?}"
    );
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}
