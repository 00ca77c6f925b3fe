//! The metrics port: Prometheus text at `GET /metrics`, `GET /healthz`
//! answers 200 while the process runs, anything else 404. It is served
//! through the same accept loop as the gRPC port (connection caps, a
//! handshake deadline) and with a header-read timeout, so nobody can hold
//! its sockets; the exporter crate's own listener had neither, and spun on
//! EMFILE.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::listener::{self, Limits};

/// What the metrics port allows: it serves a scraper or two, not clients.
const LIMITS: Limits = Limits {
    max_connections: 64,
    max_per_address: 16,
    handshake_timeout: Duration::from_secs(5),
};
/// Time a scraper has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often histograms and summaries are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

/// Serves `handle`'s metrics on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, cancel: CancellationToken) {
    let upkeep = {
        let handle = handle.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            while cancel.run_until_cancelled(tick.tick()).await.is_some() {
                handle.run_upkeep();
            }
        })
    };
    let mut incoming = listener::incoming(listener, LIMITS, "metrics", cancel.clone());
    while let Some(conn) = incoming.next().await {
        let Ok(conn) = conn else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(answer(&request, &handle)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
    upkeep.abort();
}

fn answer(request: &Request<Incoming>, handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (&Method::GET, "/healthz") => {
            text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: this port serves GET /metrics and GET /healthz\n".into(),
        ),
    }
}
