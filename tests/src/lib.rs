//! Helpers for FastChat's end-to-end tests: start the services in-process on
//! free loopback ports against a test nats-server, and connect gRPC clients.
//!
//! Layers: one module on top of everything — `fastchat-test-support` (the
//! broker), the two service crates (in-process servers), `fastchat-proto`
//! (clients). The tests in `tests/` use only this and those crates.

#![forbid(unsafe_code)]

pub mod attacks;

use std::{net::SocketAddr, time::Duration};

use fastchat_proto::{seed, v1};
use fastchat_runtime::service::ServeError;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

pub use fastchat_test_support::{NatsOptions, NatsServer, workspace_bin};

/// A service running in this process, stopped on drop.
#[derive(Debug)]
pub struct Service {
    /// Where it listens.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Service {
    /// Stops it gracefully and returns how `run` ended.
    ///
    /// # Errors
    /// What `run` returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.cancel.cancel();
        let handle = self.handle.take().expect("not stopped yet");
        tokio::time::timeout(Duration::from_secs(15), handle)
            .await
            .expect("service stops within 15 s")
            .expect("service task did not panic")
    }

    /// `http://addr` for clients.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until its gRPC health is `want`.
    pub async fn wait_health(&self, want: ServingStatus, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = fastchat_runtime::health::check(self.addr, Duration::from_secs(1))
                .await
                .ok();
            if status == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} health is {status:?}, not {want:?}, after {within:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// A service's own broker defaults (name, inbox prefix) pointed at
/// `nats_url`, with short time-outs for tests.
fn broker_config(
    defaults: broker_client::BrokerConfig,
    nats_url: &str,
) -> broker_client::BrokerConfig {
    broker_client::BrokerConfig {
        url: nats_url.to_owned(),
        request_timeout: Duration::from_secs(2),
        max_reconnect_delay: Duration::from_millis(250),
        ..defaults
    }
}

/// Test defaults for send-service against `nats_url`.
#[must_use]
pub fn send_config(nats_url: &str) -> send_service::Config {
    let defaults = send_service::Config::default();
    let mut config = send_service::Config {
        nats: broker_config(defaults.nats.clone(), nats_url),
        ..defaults
    };
    config.send.timeout = Duration::from_secs(3);
    config.shutdown.drain_timeout = Duration::from_secs(3);
    config.auth = unchecked();
    // The broker reserves a station's byte limit in its store (by default
    // 75 % of the free disk): test stations stay small.
    config.station.max_bytes = 256 << 20;
    config.limits = unlimited();
    config
}

/// `auth.mode = "none"`: the tests of other things send without tokens (the
/// authentication tests configure keys and grants themselves).
#[must_use]
pub fn unchecked() -> fastchat_auth::AuthConfig {
    fastchat_auth::AuthConfig {
        mode: fastchat_auth::Mode::None,
        ..fastchat_auth::AuthConfig::default()
    }
}

/// Per-identity limits out of the way (tests of other things send and
/// subscribe as one client, much more than a person would).
#[must_use]
pub fn unlimited() -> fastchat_runtime::config::LimitsConfig {
    fastchat_runtime::config::LimitsConfig {
        send_per_second: 1_000_000,
        send_burst: 1_000_000,
        subscriptions_per_identity: 1_000_000,
    }
}

/// Test defaults for all-messages-service against `nats_url`.
#[must_use]
pub fn all_config(nats_url: &str) -> all_messages_service::Config {
    let defaults = all_messages_service::Config::default();
    let mut config = all_messages_service::Config {
        nats: broker_config(defaults.nats.clone(), nats_url),
        ..defaults
    };
    config.shutdown.drain_timeout = Duration::from_secs(3);
    config.auth = unchecked();
    // The broker reserves a station's byte limit in its store (by default
    // 75 % of the free disk): test stations stay small.
    config.station.max_bytes = 256 << 20;
    config.limits = unlimited();
    config
}

/// Runs a service's `run` in-process on a free loopback port and waits
/// until it is SERVING (broker connected, station ready, and for
/// all-messages-service its live feed running).
async fn start<F, Fut>(run: F) -> Service
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServeError>> + Send + 'static,
{
    let listener = bind().await;
    let addr = listener.local_addr().expect("local addr");
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(run(listener, cancel.clone()));
    let service = Service {
        addr,
        cancel,
        handle: Some(handle),
    };
    service
        .wait_health(ServingStatus::Serving, Duration::from_secs(15))
        .await;
    service
}

/// Starts send-service in-process and waits until it is SERVING.
pub async fn start_send(config: send_service::Config) -> Service {
    start(|listener, cancel| send_service::run(config, listener, cancel)).await
}

/// Starts all-messages-service in-process and waits until it is SERVING.
pub async fn start_all(config: all_messages_service::Config) -> Service {
    start(|listener, cancel| all_messages_service::run(config, listener, cancel)).await
}

async fn channel(endpoint: String) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint)
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the service")
}

/// A fastchat.v1 all-messages client whose HTTP/2 stream receive window is
/// small (64 KiB), like a slow mobile client's: the transport cannot absorb
/// a burst (hyper's default windows hold megabytes, thousands of messages),
/// so a reader that does not keep up really falls behind on the server. The
/// connection window stays at 1 MiB: h2 allows a client half its connection
/// window of small unread DATA frames, then closes the connection.
pub async fn v1_all_small_window(
    service: &Service,
) -> v1::all_messages_service_client::AllMessagesServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(service.endpoint())
        .expect("valid endpoint")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(1024 * 1024)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the service");
    v1::all_messages_service_client::AllMessagesServiceClient::new(channel)
}

/// A fastchat.v1 send client.
pub async fn v1_send(
    service: &Service,
) -> v1::send_message_service_client::SendMessageServiceClient<Channel> {
    v1::send_message_service_client::SendMessageServiceClient::new(
        channel(service.endpoint()).await,
    )
}

/// A fastchat.v1 all-messages client.
pub async fn v1_all(
    service: &Service,
) -> v1::all_messages_service_client::AllMessagesServiceClient<Channel> {
    v1::all_messages_service_client::AllMessagesServiceClient::new(
        channel(service.endpoint()).await,
    )
}

/// A seed send client.
pub async fn seed_send(
    service: &Service,
) -> seed::send_message_service_client::SendMessageServiceClient<Channel> {
    seed::send_message_service_client::SendMessageServiceClient::new(
        channel(service.endpoint()).await,
    )
}

/// A seed all-messages client.
pub async fn seed_all(
    service: &Service,
) -> seed::all_messages_service_client::AllMessagesServiceClient<Channel> {
    seed::all_messages_service_client::AllMessagesServiceClient::new(
        channel(service.endpoint()).await,
    )
}

/// A subscription request for `room` (empty = every room) from `start`
/// (`None` = every retained message).
#[must_use]
pub fn subscribe(room: &str, start: Option<v1::subscribe_request::Start>) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        room: room.into(),
        start,
        rooms: Vec::new(),
    }
}

/// A send request.
#[must_use]
pub fn message(room: &str, author: &str, text: &str) -> v1::SendMessageRequest {
    v1::SendMessageRequest {
        room: room.into(),
        author: author.into(),
        text: text.into(),
        client_message_id: String::new(),
        client_time_ms: 0,
    }
}

/// Reads `n` messages from a v1 subscription (Gap events are returned too;
/// CaughtUp and Heartbeat are skipped: [`take_events`] returns them),
/// failing after `within`.
pub async fn take(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
    n: usize,
    within: Duration,
) -> Vec<v1::subscribe_response::Event> {
    use v1::subscribe_response::Event;
    take_matching(stream, n, within, |e| {
        !matches!(e, Event::CaughtUp(_) | Event::Heartbeat(_))
    })
    .await
}

/// Reads `n` events of any kind from a v1 subscription, failing after
/// `within`.
pub async fn take_events(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
    n: usize,
    within: Duration,
) -> Vec<v1::subscribe_response::Event> {
    take_matching(stream, n, within, |_| true).await
}

async fn take_matching(
    stream: &mut tonic::Streaming<v1::SubscribeResponse>,
    n: usize,
    within: Duration,
    keep: fn(&v1::subscribe_response::Event) -> bool,
) -> Vec<v1::subscribe_response::Event> {
    let mut events = Vec::with_capacity(n);
    tokio::time::timeout(within, async {
        while events.len() < n {
            match stream.message().await {
                Ok(Some(response)) => events.extend(response.event.filter(keep)),
                Ok(None) => panic!("stream ended after {} events", events.len()),
                Err(status) => panic!("stream failed after {} events: {status}", events.len()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} events within {within:?}", events.len()));
    events
}

/// The sequences of the messages among `events`.
#[must_use]
pub fn sequences(events: &[v1::subscribe_response::Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            v1::subscribe_response::Event::Message(m) => Some(m.sequence),
            _ => None,
        })
        .collect()
}

/// The `q`-quantile of `values` (nearest rank; zero if empty), sorting
/// them.
#[must_use]
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank below the slice's length"
    )]
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// `d` in milliseconds with one decimal, for reports.
#[must_use]
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
