//! The gRPC server scaffold every service uses: tonic with the configured
//! limits and the request-size layer, gRPC-web for browsers (HTTP/1.1 next
//! to HTTP/2) with CORS from `web.allowed_origins`, reflection, and serving
//! on an already-bound listener (through the accept loop of
//! [`crate::listener`], over TLS if `grpc.tls` says so) until a shutdown
//! token fires, with a bounded drain.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::{HeaderName, HeaderValue, Method};
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    config::{GrpcConfig, WebConfig},
    grpc_web::GrpcWebLayer,
    health::WatchLimitLayer,
    held::HoldLayer,
    limit::RequestLimitLayer,
    listener,
    rpc_metrics::RpcMetricsLayer,
    service::ServeError,
    tls::Tls,
};

/// The layers [`builder`] puts around every service, outermost first: CORS
/// (a preflight is answered here, before anything else sees it), gRPC-web
/// translation, per-RPC metrics, the request bounds, page slots held until sent, and the
/// health-watch cap.
pub type Layers = Stack<
    WatchLimitLayer,
    Stack<
        HoldLayer,
        Stack<
            RequestLimitLayer,
            Stack<RpcMetricsLayer, Stack<GrpcWebLayer, Stack<CorsLayer, Identity>>>,
        >,
    >,
>;

/// What a service serves: its gRPC services (`add_service`) and any plain
/// HTTP routes (`axum_router_mut`, e.g. the JSON API), all behind the same
/// layers of [`builder`].
pub type Router = tonic::service::Routes;

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

/// A tonic server builder with the configured limits, speaking gRPC over
/// HTTP/2 and gRPC-web over HTTP/1.1 or HTTP/2, with CORS for `web`.
#[must_use]
pub fn builder(config: &GrpcConfig, web: &WebConfig) -> Server<Layers> {
    // TCP options are set by the accept loop (`listener`): tonic ignores
    // the builder's for a listener it did not bind itself.
    Server::builder()
        // Browsers (gRPC-web) and curl (JSON) speak HTTP/1.1 too; hyper
        // then bounds the time to read a request head (30 s).
        .accept_http1(true)
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
        .layer(cors(web))
        .layer(GrpcWebLayer)
        .layer(RpcMetricsLayer)
        .layer(RequestLimitLayer::new(
            config.max_request_bytes,
            config.request_body_timeout,
        ))
        .layer(HoldLayer)
        .layer(WatchLimitLayer::new(config.max_health_watches))
}

/// Request headers a web page may send: what gRPC-web, Connect and
/// EventSource clients send, the bearer token and a trace context.
const ALLOWED_HEADERS: [&str; 10] = [
    "authorization",
    "content-type",
    "accept",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
    "tracestate",
    "last-event-id",
    "connect-protocol-version",
];

/// Response headers scripts may read: a gRPC-web status travels in them
/// when a call fails before any message (trailers-only).
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "retry-after",
];

/// CORS as `web.allowed_origins` says: exactly those origins (or any, for
/// `"*"`); none by default, so a page elsewhere cannot call the port until
/// an operator allows it. Preflights are answered here and never reach a
/// service (so never authentication, which a preflight cannot pass: it
/// carries no token).
fn cors(web: &WebConfig) -> CorsLayer {
    let origins = if web.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            web.allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(3600))
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
    web: &WebConfig,
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
    let server = builder(config, web)
        .add_routes(router)
        .serve_with_incoming_shutdown(incoming, async move {
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
