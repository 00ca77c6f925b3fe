//! Per-service broker accounts and users with least privilege, as deployed
//! (`deploy/k8s/base/nats/auth.conf`): each service does its own job with its
//! own user, the send-service user cannot read the station, the
//! all-messages-service user cannot publish to it nor make durable
//! consumers, neither reads the other's replies, each user's connections and
//! subscriptions are capped (on a 3-node cluster too), the live feed survives
//! a broker restart under these rights, and the broker knows only bcrypt
//! hashes.
//!
//! Credentials: the dev overlay's committed example Secret
//! (`deploy/k8s/overlays/dev/secrets.env.example`): clear passwords for the
//! services, bcrypt hashes for the broker, made by `deploy/secrets.sh`. The
//! hashes are committed rather than made here because nothing in this
//! workspace computes bcrypt (no crate for it, no tool on a developer's
//! machine), and those values are public examples anyway; the tests prove
//! that each hash matches its password (the services log in with it) and
//! that a wrong password does not.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{pull, push},
    context::PublishErrorKind,
};
use broker_client::{Broker, BrokerConfig, StartPosition};
use fastchat_e2e::*;
use fastchat_proto::v1;
use fastchat_test_support::NatsCluster;
use fastchat_test_support::workspace_root;
use tokio::{sync::mpsc, task::block_in_place};
use tokio_stream::StreamExt as _;
use v1::subscribe_request::Start;
use v1::subscribe_response::Event;

const WAIT: Duration = Duration::from_secs(20);
/// How long a request the broker silently drops takes to fail.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

const SEND_USER: &str = "send-service";
const ALL_USER: &str = "all-messages-service";
/// The account each user is in (one user per account, so that the
/// account's limits are the user's).
const SEND_ACCOUNT: &str = "SEND";
const ALL_ACCOUNT: &str = "STATION";

const AUTH_CONF: &str = "deploy/k8s/base/nats/auth.conf";
const DEV_SECRETS: &str = "deploy/k8s/overlays/dev/secrets.env.example";

/// `KEY=value` lines of the dev overlay's example Secret.
static SECRETS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let path = workspace_root().join(DEV_SECRETS);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
});

fn secret(key: &str) -> &'static str {
    SECRETS
        .get(key)
        .unwrap_or_else(|| panic!("{DEV_SECRETS} has no {key}"))
}

fn password_key(user: &str) -> &'static str {
    match user {
        SEND_USER => "SEND_SERVICE_PASSWORD",
        ALL_USER => "ALL_MESSAGES_SERVICE_PASSWORD",
        _ => panic!("unknown user {user}"),
    }
}

/// The clear password the service logs in with.
fn password(user: &str) -> &'static str {
    secret(password_key(user))
}

/// The other service's user.
fn other(user: &str) -> &'static str {
    if user == SEND_USER {
        ALL_USER
    } else {
        SEND_USER
    }
}

/// The prefix of the service's reply subjects, as the service sets it by
/// default (`nats.inbox_prefix`).
fn inbox_prefix(user: &str) -> String {
    match user {
        SEND_USER => send_service::Config::default().nats.inbox_prefix,
        ALL_USER => all_messages_service::Config::default().nats.inbox_prefix,
        _ => panic!("unknown user {user}"),
    }
}

fn auth_conf() -> String {
    let path = workspace_root().join(AUTH_CONF);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `limits { <key>: N }` of `account` in auth.conf.
fn account_limit(account: &str, key: &str) -> usize {
    let conf = auth_conf();
    let mut current = None;
    for line in conf.lines() {
        let trimmed = line.trim();
        if line.starts_with("  ") && !line.starts_with("   ") && trimmed.ends_with('{') {
            current = trimmed.strip_suffix('{').map(|name| name.trim().to_owned());
        }
        if current.as_deref() == Some(account)
            && let Some(value) = trimmed.strip_prefix(&format!("{key}:"))
        {
            return value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{AUTH_CONF}: {account} {key}: {e}"));
        }
    }
    panic!("{AUTH_CONF}: no {key} in account {account}");
}

/// A broker with the deployed accounts, users and permissions: the very
/// `auth.conf` that Kubernetes and compose mount (see [`auth_config`]).
fn auth_server() -> NatsServer {
    auth_server_with(NatsOptions::default())
}

/// [`auth_server`] with other options (e.g. a monitoring port).
fn auth_server_with(options: NatsOptions) -> NatsServer {
    NatsServer::start_with(NatsOptions {
        config: Some(format!("max_payload: 1MB\n{}", auth_config())),
        ..options
    })
}

/// The deployed `auth.conf` with the bcrypt hashes that nats-server would
/// read from its environment given inline as config variables. The broker
/// sees no clear password.
fn auth_config() -> String {
    let auth = auth_conf();
    let mut config = String::new();
    for user in [SEND_USER, ALL_USER] {
        let key = format!("{}_BCRYPT", password_key(user));
        // In double quotes, as the Secret holds it: a literal string.
        let hash = secret(&key);
        assert!(
            hash.starts_with("\"$2") && hash.ends_with('"'),
            "{DEV_SECRETS}: {key} is not a bcrypt hash in double quotes: {hash}"
        );
        assert!(
            auth.contains(&format!("password: ${key}\n")),
            "{AUTH_CONF} must give {user} the password hash ${key}"
        );
        config.push_str(&format!("{key}: {hash}\n"));
    }
    config.push_str(&auth);
    for user in [SEND_USER, ALL_USER] {
        assert!(
            !config.contains(password(user)),
            "the broker's configuration holds {user}'s clear password"
        );
    }
    config
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

/// How the log names a user in a violation line.
fn logged_user(user: &str) -> String {
    format!("user:{user}\"")
}

fn as_user(mut broker: BrokerConfig, user: &str) -> BrokerConfig {
    broker.user = Some(user.to_owned());
    broker.password = Some(password(user).to_owned());
    // The user's own inbox prefix, as deployed (some tests connect one
    // service's broker config as the other user).
    broker.inbox_prefix = inbox_prefix(user);
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

fn options_as(user: &str, password: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox_prefix(user))
        .request_timeout(Some(REQUEST_TIMEOUT))
}

/// A raw async-nats connection as `user` (with the service's inbox prefix),
/// with the server's error messages (`-ERR 'Permissions Violation ...'`)
/// forwarded to the returned receiver.
async fn connect_as(
    nats: &NatsServer,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = options_as(user, password(user))
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

/// Waits for the server to report an error containing `what` (e.g.
/// `maximum subscriptions exceeded`).
async fn expect_server_error(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let error = errors.recv().await.expect("the connection is open");
            if error.to_lowercase().contains(&what.to_lowercase()) {
                return error;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server reported no `{what}`"))
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

/// Publishes a JetStream API request to `subject` without waiting for an
/// answer (a denied one never gets one) and expects the violation.
async fn expect_denied_request(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
    body: &'static str,
) {
    client
        .publish_with_reply(subject.to_owned(), client.new_inbox(), body.into())
        .await
        .expect("the client sends PUB");
    client.flush().await.expect("flush");
    expect_violation(errors, subject).await;
}

#[tokio::test]
async fn each_service_does_its_job_with_its_own_user() {
    let nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    let all = start_all(all_config_as(&nats, ALL_USER)).await;

    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
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
            _ => None,
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
            rooms: Vec::new(),
            room: "auth".into(),
            start: Some(Start::Last(1)),
        })
        .await
        .expect("subscribe to the last message")
        .into_inner();
    assert_eq!(sequences(&take(&mut last, 1, WAIT).await), [3]);
    // The whole station, from the start (a bounded read of every room).
    let mut everything = reader
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: String::new(),
            start: Some(Start::AfterSequence(0)),
        })
        .await
        .expect("subscribe to every room")
        .into_inner();
    assert_eq!(sequences(&take(&mut everything, 3, WAIT).await), [1, 2, 3]);

    let denied = violations(&nats);
    assert!(
        denied.is_empty(),
        "the services needed subjects that auth.conf denies:\n{}",
        denied.join("\n")
    );

    // Without the right password nobody gets in: the hashes are checked.
    for (user, password) in [
        (SEND_USER, "pWrong"),
        (ALL_USER, password(SEND_USER)),
        (SEND_USER, secret("SEND_SERVICE_PASSWORD_BCRYPT")),
    ] {
        let refused = options_as(user, password).connect(nats.url()).await;
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
    // Nor anything else of the station's API.
    for subject in [
        "$JS.API.STREAM.DELETE.chat",
        "$JS.API.STREAM.PURGE.chat",
        "$JS.API.STREAM.UPDATE.chat",
        "$JS.API.STREAM.MSG.DELETE.chat",
        "$JS.API.STREAM.NAMES",
    ] {
        expect_denied_request(&client, &mut errors, subject, "{}").await;
    }

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
        .ensure_station(&send_config(&nats.url()).station)
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
            .all(|v| v.contains(&logged_user(SEND_USER))),
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
        .ensure_station(&all_config(&nats.url()).station)
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
        denied.iter().all(|v| v.contains(&logged_user(ALL_USER))),
        "only the test's probes were denied: {denied:?}"
    );
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}

/// Each user may subscribe only under its own inbox prefix: neither can read
/// the other's replies (JetStream API answers, publish acks, consumer
/// deliveries), not even through `_INBOX.>` or `>`.
#[tokio::test]
async fn neither_service_reads_the_others_replies() {
    let nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    let all = start_all(all_config_as(&nats, ALL_USER)).await;
    assert_eq!(inbox_prefix(SEND_USER), "_INBOX.send");
    assert_eq!(inbox_prefix(ALL_USER), "_INBOX.all");

    let mut spies = Vec::new();
    for user in [SEND_USER, ALL_USER] {
        let (client, mut errors) = connect_as(&nats, user).await;
        let theirs = format!("{}.>", inbox_prefix(other(user)));
        for subject in [theirs.as_str(), "_INBOX.>", ">"] {
            let spy = client
                .subscribe(subject.to_owned())
                .await
                .expect("the client sends SUB");
            let error = expect_violation(&mut errors, subject).await;
            eprintln!("{user} subscribing to {subject}: {error}");
            spies.push((user, subject.to_owned(), spy));
        }
        // Nor may it inject a reply into the other's inbox.
        client
            .publish(format!("{}.forged", inbox_prefix(other(user))), "x".into())
            .await
            .expect("the client sends PUB");
        client.flush().await.expect("flush");
        expect_violation(
            &mut errors,
            &format!("{}.forged", inbox_prefix(other(user))),
        )
        .await;
        // Its own prefix is allowed: that is where its replies arrive.
        let own = client
            .subscribe(format!("{}.probe.>", inbox_prefix(user)))
            .await
            .expect("subscribe to its own inbox");
        client.flush().await.expect("flush");
        drop(own);
    }

    // Traffic on both sides: send-service's publish acks and API replies,
    // all-messages-service's API replies and consumer deliveries.
    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: "inbox".into(),
            start: Some(Start::AfterSequence(0)),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut sender = v1_send(&send).await;
    for text in ["a", "b"] {
        sender
            .send_message(message("inbox", "ann", text))
            .await
            .expect("send");
    }
    assert_eq!(sequences(&take(&mut stream, 2, WAIT).await), [1, 2]);
    let page = reader
        .list_messages(v1::ListMessagesRequest {
            room: "inbox".into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.messages.len(), 2);

    for (user, subject, mut spy) in spies {
        let seen = tokio::time::timeout(Duration::from_millis(300), spy.next()).await;
        assert!(
            !matches!(seen, Ok(Some(_))),
            "{user} received a message on its denied subscription to `{subject}`"
        );
    }
    // Only the test's probes were denied: not its own inbox, and nothing
    // the services did.
    let denied = violations(&nats);
    let probes = [
        "_INBOX.send.>",
        "_INBOX.all.>",
        "_INBOX.>",
        "\">\"",
        ".forged",
    ];
    let unexpected: Vec<_> = denied
        .iter()
        .filter(|v| !probes.iter().any(|p| v.contains(p)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    send.stop().await.expect("send-service stops cleanly");
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}

/// all-messages-service may create ephemeral consumers on `chat` and delete
/// them, nothing more: no durable consumer by any API, no named consumer, no
/// other stream, no stream deletion.
#[tokio::test]
async fn all_messages_user_has_only_ephemeral_consumers_of_the_station() {
    let nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    v1_send(&send)
        .await
        .send_message(message("general", "ann", "hello"))
        .await
        .expect("send");
    let (client, mut errors) = connect_as(&nats, ALL_USER).await;
    let js = js(&client);
    let station = js.get_stream("chat").await.expect("stream info is allowed");
    let consumers = station.cached_info().state.consumer_count;

    // A durable consumer, the way async-nats makes one
    // ($JS.API.CONSUMER.CREATE.chat.<name>) ...
    let durable = station
        .create_consumer(pull::Config {
            durable_name: Some("spy".into()),
            ..Default::default()
        })
        .await;
    assert!(durable.is_err(), "all-messages-service created a durable");
    let error = expect_violation(&mut errors, "$JS.API.CONSUMER.CREATE.chat.spy").await;
    eprintln!("durable consumer as {ALL_USER}: {error}");
    // ... with a filter in the subject, and by the legacy durable API.
    expect_denied_request(
        &client,
        &mut errors,
        "$JS.API.CONSUMER.CREATE.chat.spy.chat.messages.>",
        r#"{"stream_name":"chat","config":{"durable_name":"spy","filter_subject":"chat.messages.>"}}"#,
    )
    .await;
    expect_denied_request(
        &client,
        &mut errors,
        "$JS.API.CONSUMER.DURABLE.CREATE.chat.spy",
        r#"{"stream_name":"chat","config":{"durable_name":"spy"}}"#,
    )
    .await;
    // The one create subject it has refuses a durable name (the server's
    // rule for the 5-token subject).
    let reply = client
        .request(
            "$JS.API.CONSUMER.CREATE.chat",
            r#"{"stream_name":"chat","config":{"durable_name":"spy","ack_policy":"explicit"}}"#
                .into(),
        )
        .await
        .expect("the server answers");
    let reply = String::from_utf8_lossy(&reply.payload).into_owned();
    assert!(
        reply.contains("\"error\"") && reply.contains("durable"),
        "a durable was created through the ephemeral subject: {reply}"
    );
    eprintln!("durable through $JS.API.CONSUMER.CREATE.chat: {reply}");
    // A named ephemeral (the name is in the subject) is denied too.
    let named = station
        .create_consumer(pull::Config {
            name: Some("named".into()),
            ..Default::default()
        })
        .await;
    assert!(
        named.is_err(),
        "all-messages-service created a named consumer"
    );
    expect_violation(&mut errors, "$JS.API.CONSUMER.CREATE.chat.named").await;

    // The station itself and other streams are out of reach.
    let deleted = js.delete_stream("chat").await;
    assert!(deleted.is_err(), "all-messages-service deleted the station");
    expect_violation(&mut errors, "$JS.API.STREAM.DELETE.chat").await;
    for (subject, body) in [
        ("$JS.API.STREAM.PURGE.chat", "{}"),
        (
            "$JS.API.STREAM.UPDATE.chat",
            r#"{"name":"chat","subjects":["chat.messages.>"]}"#,
        ),
        ("$JS.API.STREAM.MSG.DELETE.chat", r#"{"seq":1}"#),
        (
            "$JS.API.STREAM.CREATE.other",
            r#"{"name":"other","subjects":["other.>"]}"#,
        ),
        ("$JS.API.STREAM.NAMES", "{}"),
        ("$JS.API.STREAM.LIST", "{}"),
        (
            "$JS.API.CONSUMER.CREATE.other",
            r#"{"stream_name":"other","config":{}}"#,
        ),
        ("$JS.API.CONSUMER.LIST.chat", "{}"),
        ("$JS.API.CONSUMER.DELETE.other.x", ""),
    ] {
        expect_denied_request(&client, &mut errors, subject, body).await;
    }

    // What it does need still works: an ephemeral pull consumer, a pull,
    // and deleting the consumer again.
    let consumer = station
        .create_consumer(pull::Config {
            filter_subject: "chat.messages.>".into(),
            ..Default::default()
        })
        .await
        .expect("an ephemeral consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let message = batch
        .next()
        .await
        .expect("one message")
        .expect("a message, not an error");
    assert_eq!(message.subject.as_str(), "chat.messages.general");
    let name = consumer.cached_info().name.clone();
    js.delete_consumer_from_stream(&name, "chat")
        .await
        .expect("delete its own consumer");

    let station = js.get_stream("chat").await.expect("stream info");
    assert_eq!(station.cached_info().state.messages, 1);
    assert_eq!(
        station.cached_info().state.consumer_count,
        consumers,
        "a consumer was left behind"
    );
    assert!(
        violations(&nats)
            .iter()
            .all(|v| v.contains(&logged_user(ALL_USER))),
        "only the test's probes were denied: {:?}",
        violations(&nats)
    );
    send.stop().await.expect("send-service stops cleanly");
}

/// The connections of `account` the broker holds (its `/connz`).
fn connections_of(nats: &NatsServer, account: &str) -> usize {
    let (status, body) = nats
        .monitor_get(&format!("/connz?acc={account}&limit=1"))
        .expect("monitoring answers");
    assert_eq!(status, 200, "{body}");
    // `num_connections` counts this page (limit=1); `total` all of them.
    let field = "\"total\":";
    let at = body
        .find(field)
        .unwrap_or_else(|| panic!("no total: {body}"))
        + field.len();
    body[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("total unreadable: {body}"))
}

/// A connection attempt as `user` that the broker must refuse for the
/// account's connection limit. async-nats 0.51 may report such a connection
/// as established (it reads the server's answer to CONNECT as success when
/// anything but -ERR comes first), so the broker's view decides: it logged
/// the refusal and the connection is not usable.
async fn expect_connection_refused(nats: &NatsServer, user: &str) -> String {
    let before = nats
        .log()
        .matches("maximum account active connections exceeded")
        .count();
    let attempt = options_as(user, password(user))
        .max_reconnects(1)
        .connect(nats.url())
        .await;
    let outcome = match attempt {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("maximum account active connections exceeded"),
                "{user}: {e}"
            );
            e
        }
        Ok(client) => {
            let flushed = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
            assert!(
                !matches!(flushed, Ok(Ok(()))),
                "{user}: a connection beyond the limit works"
            );
            format!(
                "connected, then closed by the broker ({:?})",
                client.connection_state()
            )
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while nats
        .log()
        .matches("maximum account active connections exceeded")
        .count()
        == before
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user}: the broker did not refuse the connection for the limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outcome
}

/// Each user may hold `max_connections` connections (its account's limit,
/// cluster-wide), however many the other holds: the next one is refused.
#[tokio::test]
async fn each_user_has_its_own_connection_limit() {
    let nats = auth_server_with(NatsOptions {
        monitor_port: Some(0),
        ..NatsOptions::default()
    });
    for (user, account) in [(SEND_USER, SEND_ACCOUNT), (ALL_USER, ALL_ACCOUNT)] {
        let limit = account_limit(account, "max_connections");
        assert!(
            limit >= 8,
            "{account}: max_connections {limit} is below 4 processes"
        );
        // One at a time, as processes start: the broker's check-then-count is
        // not atomic, so a burst of simultaneous logins can be cut short of
        // the limit (one reason for the headroom in auth.conf).
        let mut clients = Vec::with_capacity(limit);
        for n in 1..=limit {
            let client = options_as(user, password(user))
                .connect(nats.url())
                .await
                .unwrap_or_else(|e| panic!("{user}: connection {n} of {limit}: {e}"));
            clients.push(client);
        }
        for client in &clients {
            client.flush().await.expect("an admitted connection works");
        }
        assert_eq!(connections_of(&nats, account), limit);

        let refused = expect_connection_refused(&nats, user).await;
        eprintln!("{user}: connection {} refused: {refused}", limit + 1);
        assert_eq!(connections_of(&nats, account), limit);

        // The other user is not affected by this one's connections.
        let other_user = other(user);
        let theirs = options_as(other_user, password(other_user))
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("{other_user} while {user} is at its limit: {e}"));
        theirs
            .flush()
            .await
            .expect("the other user's connection works");
        drop(theirs);

        // A closed connection frees its slot.
        drop(clients.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while connections_of(&nats, account) >= limit {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user}: no slot freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let again = options_as(user, password(user))
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("{user}: reconnect into the freed slot: {e}"));
        again.flush().await.expect("the new connection works");
        drop(again);
        drop(clients);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while connections_of(&nats, account) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user}: connections linger"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Each connection may hold `max_subscriptions` subscriptions (its account's
/// limit); the next SUB is refused.
#[tokio::test]
async fn each_connection_has_a_subscription_limit() {
    let nats = auth_server();
    for (user, account) in [(SEND_USER, SEND_ACCOUNT), (ALL_USER, ALL_ACCOUNT)] {
        let limit = account_limit(account, "max_subscriptions");
        let (client, mut errors) = connect_as(&nats, user).await;
        let prefix = inbox_prefix(user);
        let mut subs = Vec::with_capacity(limit);
        for i in 0..limit {
            subs.push(
                client
                    .subscribe(format!("{prefix}.limit.{i}"))
                    .await
                    .expect("the client sends SUB"),
            );
        }
        client.flush().await.expect("flush");
        assert!(
            errors.try_recv().is_err(),
            "{user}: an error before reaching {limit} subscriptions"
        );
        let _over = client
            .subscribe(format!("{prefix}.limit.over"))
            .await
            .expect("the client sends SUB");
        let error = expect_server_error(&mut errors, "maximum subscriptions exceeded").await;
        eprintln!("{user}: subscription {} refused: {error}", limit + 1);
        drop(subs);
    }
}

/// After a broker restart, all-messages-service's live feed and a
/// subscriber's stream resume as its (restricted) user at once, with nothing
/// denied: broker-client makes a fresh unnamed ephemeral consumer from the
/// last sequence itself, instead of letting async-nats re-create it under a
/// name (`$JS.API.CONSUMER.CREATE.chat.<name>_<n>.<filter>`), which auth.conf
/// denies (a named create could as well be a durable one; it then took
/// broker-client's 10 s stall check to recover).
#[tokio::test]
async fn live_feed_resumes_after_a_broker_restart() {
    let mut nats = auth_server();
    let send = start_send(send_config_as(&nats, SEND_USER)).await;
    let all = start_all(all_config_as(&nats, ALL_USER)).await;
    let mut sender = v1_send(&send).await;
    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: "restart".into(),
            start: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    sender
        .send_message(message("restart", "ann", "before"))
        .await
        .expect("send");
    assert_eq!(sequences(&take(&mut stream, 1, WAIT).await), [1]);

    nats.restart();
    let restarted = tokio::time::Instant::now();
    // send-service reconnects and sends again (retrying while it reconnects).
    loop {
        match sender
            .send_message(message("restart", "ann", "after"))
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert!(restarted.elapsed() < WAIT, "send after restart: {status}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let events = take(&mut stream, 1, Duration::from_secs(60)).await;
    assert_eq!(sequences(&events), [2]);
    let denied = violations(&nats);
    eprintln!(
        "message after the restart delivered {:?} after it; broker denied:\n{}",
        restarted.elapsed(),
        denied.join("\n")
    );
    assert!(denied.is_empty(), "denied after the restart: {denied:?}");
    assert!(
        restarted.elapsed() < Duration::from_secs(8),
        "the live feed took {:?} to resume",
        restarted.elapsed()
    );
    send.stop().await.expect("send-service stops cleanly");
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}

/// The prod topology: a 3-node cluster with the station at R3 and each
/// service on another node. send-service's imports reach the station across
/// routes (publish acks, duplicate answers, readiness probes), and a user's
/// connection limit counts its connections on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_limits_hold_across_a_cluster() {
    let cluster = block_in_place(|| NatsCluster::start_with(3, &auth_config()));
    // The test nodes have a 1 GB store: the station's 4 GiB default would not fit.
    let mut config = send_config_as(cluster.node(1), SEND_USER);
    config.station.replicas = 3;
    config.station.max_bytes = 256 << 20;
    let send = start_send(config).await;
    let mut config = all_config_as(cluster.node(2), ALL_USER);
    config.station.replicas = 3;
    config.station.max_bytes = 256 << 20;
    let all = start_all(config).await;

    let mut reader = v1_all(&all).await;
    let mut stream = reader
        .subscribe(v1::SubscribeRequest {
            rooms: Vec::new(),
            room: "cluster".into(),
            start: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut sender = v1_send(&send).await;
    for text in ["one", "two"] {
        let mut request = message("cluster", "ann", text);
        request.client_message_id = text.into();
        sender.send_message(request).await.expect("send");
    }
    let mut retry = message("cluster", "ann", "two again");
    retry.client_message_id = "two".into();
    let again = sender
        .send_message(retry)
        .await
        .expect("retry")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.message.expect("the original").text, "two");
    assert_eq!(sequences(&take(&mut stream, 2, WAIT).await), [1, 2]);
    let denied: Vec<String> = cluster.nodes().iter().flat_map(violations).collect();
    assert!(denied.is_empty(), "{denied:?}");

    // send-service holds 2 connections (on node 1); open more round the
    // nodes until the account's limit refuses them.
    let limit = account_limit(SEND_ACCOUNT, "max_connections");
    let mut clients = Vec::new();
    let mut refused = 0;
    for n in 0..limit + 4 {
        let node = cluster.node(n % 3);
        match options_as(SEND_USER, password(SEND_USER))
            .max_reconnects(1)
            .connect(node.url())
            .await
        {
            Ok(client) => clients.push(client),
            Err(e) => {
                assert!(
                    e.to_string().contains("maximum account active connections"),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    // Each node learns the others' counts through the system account; an
    // over-limit connection it already admitted is closed then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held: usize = cluster
            .nodes()
            .iter()
            .map(|node| connections_of(node, SEND_ACCOUNT))
            .sum();
        if held <= limit || tokio::time::Instant::now() > deadline {
            break held;
        }
    };
    eprintln!(
        "cluster: {} admitted, {refused} refused at connect; {held} held of {limit}",
        clients.len()
    );
    assert!(
        held <= limit,
        "{held} connections of {SEND_ACCOUNT} over its {limit}"
    );
    assert!(
        refused > 0 || clients.len() + 2 > limit,
        "nothing was refused"
    );
    drop(clients);

    send.stop().await.expect("send-service stops cleanly");
    all.stop()
        .await
        .expect("all-messages-service stops cleanly");
}
