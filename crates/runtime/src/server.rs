//! The gRPC server scaffold every service uses: tonic with the configured
//! limits and the request-size layer, reflection, and serving on an
//! already-bound listener (through the accept loop of [`crate::listener`],
//! over TLS if `grpc.tls` says so) until a shutdown token fires, with a
//! bounded drain.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};

use crate::{
    config::GrpcConfig, health::WatchLimitLayer, held::HoldLayer, limit::RequestLimitLayer,
    listener, service::ServeError, tls::Tls,
};

/// The layers [`builder`] puts around every service.
pub type Layers = Stack<WatchLimitLayer, Stack<HoldLayer, Stack<RequestLimitLayer, Identity>>>;

/// The router a service adds its gRPC services to.
pub type Router = tonic::transport::server::Router<Layers>;

/// The HTTP/2 limits, all in one place, with the reason for each value.
mod h2 {
    /// Initial flow-control window per stream: what a client may send on
    /// one stream before we read. Requests are at most
    /// `grpc.max_request_bytes` (64 KiB by default) plus a frame header, so
    /// more buys nothing; HTTP/2's own default is 65,535.
    pub const STREAM_WINDOW: u32 = 64 * 1024 + 5;
    /// Initial window per connection: room for a few concurrent requests
    /// without holding megabytes per connection (hyper's default is 5 MiB).
    pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
    /// Largest frame we accept: HTTP/2's default and minimum, 16 KiB.
    pub const MAX_FRAME: u32 = 16 * 1024;
    /// Largest header block: 16 KiB (hyper's default) holds a bearer token,
    /// a traceparent and gRPC's headers many times over.
    pub const MAX_HEADER_LIST: u32 = 16 * 1024;
    /// Streams a client may reset before we have accepted them (rapid reset,
    /// CVE-2023-44487): hyper's default.
    pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
    /// Streams a client may make us reset with protocol errors before the
    /// connection gets GOAWAY ENHANCE_YOUR_CALM (CVE-2025-8671, "MadeYouReset";
    /// tonic sets no limit unless asked). A well-behaved client causes none.
    pub const MAX_LOCAL_ERROR_RESETS: usize = 256;
    /// Time to answer a keep-alive ping before the connection is dropped.
    pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
    // SETTINGS floods: h2 keeps at most one received SETTINGS frame pending
    // and writes its ACK before reading further frames, so a flood costs the
    // CPU of parsing it and stalls the flooding connection itself once it
    // stops reading our ACKs; h2 has no setting to cut it off sooner. The
    // connection caps (grpc.max_connections, _per_address) bound how many.
}

/// A tonic server builder with the configured limits.
#[must_use]
pub fn builder(config: &GrpcConfig) -> Server<Layers> {
    // TCP options are set by the accept loop (`listener`): tonic ignores
    // the builder's for a listener it did not bind itself.
    Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .initial_stream_window_size(h2::STREAM_WINDOW)
        .initial_connection_window_size(h2::CONNECTION_WINDOW)
        .http2_adaptive_window(Some(false))
        .max_frame_size(h2::MAX_FRAME)
        .http2_max_header_list_size(h2::MAX_HEADER_LIST)
        .http2_max_pending_accept_reset_streams(Some(h2::MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(h2::MAX_LOCAL_ERROR_RESETS))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(h2::KEEPALIVE_TIMEOUT))
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(config.max_connection_age_grace)
        .layer(RequestLimitLayer::new(
            config.max_request_bytes,
            config.request_body_timeout,
        ))
        .layer(HoldLayer)
        .layer(WatchLimitLayer::new(config.max_health_watches))
}

/// Adds gRPC reflection (both `grpc.reflection.v1` and the older
/// `v1alpha` that several GUI clients still ask for) listing exactly
/// `services` and the health service: a client browsing a port sees what
/// that port serves, not every FastChat API.
///
/// # Errors
/// Only if the embedded descriptor sets were corrupt (a build defect).
pub fn add_reflection(
    router: Router,
    services: &[&str],
) -> Result<Router, tonic_reflection::server::Error> {
    let builder = |reflection: &str| {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(fastchat_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(HEALTH_SERVICE)
                .with_service_name(reflection),
            |builder, name| builder.with_service_name(*name),
        )
    };
    Ok(router
        .add_service(builder("grpc.reflection.v1.ServerReflection").build_v1()?)
        .add_service(builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?))
}

/// The standard gRPC health service's name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Serves `router` on `listener` until `cancel` fires, then lets in-flight
/// calls finish for at most `drain`. With `grpc.tls` set, the port speaks
/// TLS only, with certificates re-read when their files change.
///
/// # Errors
/// [`ServeError::Tls`] if the TLS files cannot be used at start-up (a
/// configuration error); [`ServeError::Transport`] if the transport fails.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    config: &GrpcConfig,
    cancel: CancellationToken,
    drain: Duration,
) -> Result<(), ServeError> {
    let tls = Tls::load(
        &config.tls,
        crate::tls::RELOAD_INTERVAL,
        cancel.child_token(),
    )
    .await?;
    if let Some(tls) = &tls {
        tracing::info!(
            mutual = tls.mutual(),
            "gRPC over TLS only (ALPN h2, http/1.1)"
        );
    }
    let incoming = listener::incoming_with(
        listener,
        config.connection_limits(),
        "grpc",
        tls,
        cancel.child_token(),
    );
    let shutdown = cancel.clone();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        shutdown.cancelled().await;
    });
    tokio::pin!(server);
    if let Some(result) = cancel.run_until_cancelled(&mut server).await {
        return Ok(result?);
    }
    match tokio::time::timeout(drain, server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(?drain, "drain time over; closing remaining calls");
            Ok(())
        }
    }
}
