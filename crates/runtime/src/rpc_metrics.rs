//! Per-RPC metrics for every gRPC (and gRPC-web) call on a port:
//! `fastchat_grpc_requests_total{method, code}` when a call ends, and
//! `fastchat_grpc_request_duration_seconds{method}` from the request to
//! its end (for a stream: its whole life). A call of a method the port does
//! not serve is counted as method `unknown`, so no client can make up label
//! values.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Frame, SizeHint};
use tonic::{
    Code,
    body::Body,
    codegen::http::{self, HeaderMap},
};

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if !grpc {
                return Ok(response);
            }
            let mut call = Call {
                method,
                started: Instant::now(),
                ended: false,
            };
            // Trailers-only (an error before any message): the status is in
            // the headers and the call is over.
            if let Some(code) = code_of(response.headers()) {
                call.end(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(Counted { inner: body, call })))
        })
    }
}

/// A call whose end is still to be counted.
struct Call {
    method: String,
    started: Instant,
    ended: bool,
}

impl Call {
    fn end(&mut self, code: Code) {
        if self.ended {
            return;
        }
        self.ended = true;
        let method = if code == Code::Unimplemented {
            "unknown".to_owned()
        } else {
            std::mem::take(&mut self.method)
        };
        metrics::counter!(
            "fastchat_grpc_requests_total",
            "method" => method.clone(),
            "code" => crate::json::code_name(code),
        )
        .increment(1);
        metrics::histogram!("fastchat_grpc_request_duration_seconds", "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    /// A response body dropped before its trailers: the client went away.
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

fn code_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// A response body that counts its call when its trailers pass.
struct Counted {
    inner: Body,
    call: Call,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.end(code_of(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(status)) => this.call.end(status.code()),
            None => this.call.end(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
