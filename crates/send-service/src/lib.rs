//! send-service: validates chat messages and stores them in the `chat`
//! station, answering only once JetStream has stored them.
//!
//! It serves two APIs on one port: the seed `ChatMessage.SendMessageService`
//! (room `general`) and `fastchat.v1.SendMessageService`.

#![forbid(unsafe_code)]

pub mod config;
mod error;
mod sender;
mod service;
mod validate;

use fastchat_proto::{seed, v1};
use fastchat_runtime::service::{self as lifecycle, ServeError, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;
pub use error::SendError;

/// Serves send-service on `listener` until `cancel` fires.
///
/// # Errors
/// A permanent broker error (e.g. the station exists with another
/// definition) or a transport failure.
pub async fn run(
    config: Config,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    type SeedServer = seed::send_message_service_server::SendMessageServiceServer<service::Api>;
    type V1Server = v1::send_message_service_server::SendMessageServiceServer<service::Api>;
    let settings = Settings {
        grpc: &config.grpc,
        nats: &config.nats,
        station: &config.station,
        drain_timeout: config.shutdown.drain_timeout,
        health_services: &[SeedServer::NAME, V1Server::NAME],
        also_ready: None,
    };
    let max_request = config.grpc.max_request_bytes;
    let send = config.send.clone();
    lifecycle::run(settings, listener, cancel, move |router, context| {
        let api = service::Api::new(sender::Sender::new(context.station.clone(), send));
        router
            .add_service(SeedServer::new(api.clone()).max_decoding_message_size(max_request))
            .add_service(V1Server::new(api).max_decoding_message_size(max_request))
    })
    .await
}
