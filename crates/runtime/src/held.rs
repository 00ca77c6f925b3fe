//! Holding a resource until a response is fully sent. A handler that takes a
//! share of something scarce (a history-read slot, a health-watch slot)
//! returns it in its response's extensions as [`Held`]; [`HoldLayer`] moves
//! it into the response body, so it is given back only when the last byte
//! has gone out (or the client went away) — not when the handler returns,
//! while a page of megabytes still waits in the transport for a client that
//! does not read.

use std::{
    any::Any,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::{Status, body::Body, codegen::http};

/// Something to keep until the response is sent (dropped then).
#[derive(Clone)]
pub struct Held {
    _value: Arc<dyn Any + Send + Sync>,
}

impl Held {
    /// Holds `value` (e.g. a semaphore permit) until the response is sent.
    pub fn new(value: impl Any + Send + Sync) -> Self {
        Self {
            _value: Arc::new(value),
        }
    }

    /// Attaches `value` to `response`: it lives until the body is sent.
    pub fn attach<T>(response: &mut tonic::Response<T>, value: impl Any + Send + Sync) {
        response.extensions_mut().insert(Self::new(value));
    }
}

impl Held {
    /// `response` with this held until its body is dropped.
    pub fn wrap(self, response: http::Response<Body>) -> http::Response<Body> {
        response.map(|body| {
            Body::new(HeldBody {
                inner: body,
                _held: self,
            })
        })
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// Moves a response's [`Held`] into its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct HoldLayer;

impl<S> tower::Layer<S> for HoldLayer {
    type Service = Hold<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hold { inner }
    }
}

/// The service of [`HoldLayer`].
#[derive(Debug, Clone)]
pub struct Hold<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Hold<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            Ok(match response.extensions_mut().remove::<Held>() {
                Some(held) => held.wrap(response),
                None => response,
            })
        })
    }
}

/// A body that keeps [`Held`] alive until it is dropped.
#[derive(Debug)]
struct HeldBody {
    inner: Body,
    _held: Held,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
