//! all-messages-service: streams chat messages — history from any cursor,
//! then live — to any number of subscribers.
//!
//! Each instance reads the whole `chat` station with its own fan-out
//! consumer ([`hub`]), so every replica sees every message; each subscription
//! replays its history from the station and then follows the live feed
//! ([`subscription`]).

#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod hub;
mod service;
pub mod subscription;

use fastchat_proto::{seed, v1};
use fastchat_runtime::service::{self as lifecycle, ServeError, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;
pub use service::{DEFAULT_PAGE, MAX_PAGE};

/// Serves all-messages-service on `listener` until `cancel` fires.
///
/// # Errors
/// A permanent broker error (e.g. the station exists with another
/// definition) or a transport failure.
pub async fn run(
    config: Config,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    type SeedServer = seed::all_messages_service_server::AllMessagesServiceServer<service::Api>;
    type V1Server = v1::all_messages_service_server::AllMessagesServiceServer<service::Api>;
    let hub = hub::Hub::new(config.subscriptions.live_buffer);
    let settings = Settings {
        grpc: &config.grpc,
        nats: &config.nats,
        station: &config.station,
        drain_timeout: config.shutdown.drain_timeout,
        health_services: &[SeedServer::NAME, V1Server::NAME],
        // Subscriptions need the live feed: not SERVING before it runs.
        also_ready: Some(hub.started()),
    };
    let max_request = config.grpc.max_request_bytes;
    let limits = config.subscriptions.clone();
    lifecycle::run(settings, listener, cancel, move |router, context| {
        context
            .tracker
            .spawn(std::sync::Arc::clone(&hub).run(context.clone()));
        let api = service::Api::new(
            hub,
            context.station.clone(),
            limits,
            context.cancel.clone(),
            context.tracker.clone(),
        );
        router
            .add_service(SeedServer::new(api.clone()).max_decoding_message_size(max_request))
            .add_service(V1Server::new(api).max_decoding_message_size(max_request))
    })
    .await
}
