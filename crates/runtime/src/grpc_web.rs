//! gRPC-web where a request asks for it: gRPC and gRPC-web requests go
//! through tonic-web's translation, everything else (the web page, JSON)
//! past it — tonic-web alone answers every other HTTP/1.1 request with
//! 400.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    codegen::http::{Request, Response, header},
};
use tower::{Layer, Service};

/// Applies [`tonic_web::GrpcWebLayer`] to gRPC and gRPC-web requests only.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcWebLayer;

impl<S: Clone> Layer<S> for GrpcWebLayer {
    type Service = GrpcWeb<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcWeb {
            web: tonic_web::GrpcWebLayer::new().layer(inner.clone()),
            plain: inner,
        }
    }
}

/// See [`GrpcWebLayer`].
#[derive(Debug, Clone)]
pub struct GrpcWeb<S> {
    web: tonic_web::GrpcWebService<S>,
    plain: S,
}

fn is_grpc(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl<S> Service<Request<Body>> for GrpcWeb<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match Service::<Request<Body>>::poll_ready(&mut self.web, cx) {
            Poll::Ready(Ok(())) => self.plain.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if is_grpc(&request) {
            Box::pin(self.web.call(request))
        } else {
            Box::pin(self.plain.call(request))
        }
    }
}
