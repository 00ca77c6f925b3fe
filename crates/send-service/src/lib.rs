//! send-service: validates chat messages and stores them in the `chat`
//! station, answering only once JetStream has stored them.
//!
//! It serves two APIs on one port: the seed `ChatMessage.SendMessageService`
//! (room `general`) and `fastchat.v1.SendMessageService`, over gRPC,
//! gRPC-web and HTTP/JSON.
//!
//! Modules, as layers from the ground up: `config` and `error`; `validate`
//! (the rules a message must meet); `store` (publishing to the station);
//! `service` (the two gRPC faces); `http` (the JSON routes, through
//! `service`); [`run`] here.

#![forbid(unsafe_code)]

pub mod config;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod service;
mod store;
mod trace;
mod unicode;
mod validate;

use fastchat_proto::{seed, v1};
use fastchat_runtime::service::{self as lifecycle, ServeError, Spec};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;
pub use error::SendError;

type SeedServer = seed::send_message_service_server::SendMessageServiceServer<service::Api>;
type V1Server = v1::send_message_service_server::SendMessageServiceServer<service::Api>;

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
    let spec = Spec {
        services: &[SeedServer::NAME, V1Server::NAME],
        also_ready: None,
    };
    lifecycle::run(&config, spec, listener, cancel, |router, context| {
        let store = store::Store::new(context.station.clone(), config.send.timeout);
        let api = service::Api::new(
            store,
            config.send.clone(),
            context.gate.clone(),
            &config.limits,
        );
        let rate = api.rate();
        let cancel = context.cancel.clone();
        context.tracker.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            while cancel.run_until_cancelled(tick.tick()).await.is_some() {
                rate.forget_idle();
            }
        });
        let json = http::routes(
            api.clone(),
            config.grpc.max_request_bytes,
            config.grpc.request_body_timeout,
        );
        let mut router = router
            .add_service(SeedServer::new(api.clone()))
            .add_service(V1Server::new(api));
        let grpc = std::mem::take(router.axum_router_mut());
        *router.axum_router_mut() = grpc.merge(json);
        router
    })
    .await
}
