//! all-messages-service: streams chat messages — history from any cursor,
//! then live — to any number of subscribers.
//!
//! Each instance reads the whole `chat` station with its own fan-out
//! consumer ([`hub`]), so every replica sees every message; each subscription
//! replays its history from the station and then follows the live feed
//! (`subscription`).
//!
//! Modules, as layers from the ground up: `config`, `shares` (fair shares
//! per instance, connection and address) and `error`; `hub` (the
//! live feed); `subscription` (one subscriber's replay, live and catch-up);
//! `service` (the gRPC faces, history pages); `trace` (the
//! delivery spans); `http` (JSON history and
//! Server-Sent Events, through `service`); [`run`] here.

#![forbid(unsafe_code)]

pub mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod hub;
mod newest;
mod service;
mod shares;
mod subscription;
mod trace;

use fastchat_proto::{seed, v1};
use fastchat_runtime::service::{self as lifecycle, ServeError, Spec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;
pub use service::{DEFAULT_PAGE, MAX_PAGE};

type SeedServer = seed::all_messages_service_server::AllMessagesServiceServer<service::Api>;
type V1Server = v1::all_messages_service_server::AllMessagesServiceServer<service::Api>;

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
    let hub = hub::Hub::new(
        config.subscriptions.live_buffer,
        config.subscriptions.max_queued_bytes,
    );
    let spec = Spec {
        services: &[SeedServer::NAME, V1Server::NAME],
        // Subscriptions need the live feed: not SERVING before it runs.
        also_ready: Some(hub.started()),
    };
    lifecycle::run(&config, spec, listener, cancel, |router, context| {
        context
            .tracker
            .spawn(std::sync::Arc::clone(&hub).run(context.clone()));
        let api = service::Api::new(
            hub,
            context.station.clone(),
            config.subscriptions.clone(),
            config.history.clone(),
            &config.limits,
            context.gate.clone(),
            context.cancel.clone(),
            context.tracker.clone(),
        );
        let json = http::routes(api.clone());
        let mut router = router
            .add_service(SeedServer::new(api.clone()))
            .add_service(V1Server::new(api));
        let grpc = std::mem::take(router.axum_router_mut());
        *router.axum_router_mut() = grpc.merge(json);
        router
    })
    .await
}
