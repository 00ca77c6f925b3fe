//! Request bounds, for every gRPC service on a port (health and reflection
//! included):
//!
//! - size: each length-prefixed gRPC message of a request is checked
//!   against `grpc.max_request_bytes` from its 5-byte frame header, as the
//!   body arrives, before any of it is buffered or decoded. A larger one
//!   ends the call with RESOURCE_EXHAUSTED (what clients treat as "too big,
//!   don't retry as is"; tonic's own check answers OUT_OF_RANGE, and only
//!   for the services it is configured on);
//! - time: a body that has not fully arrived `grpc.request_body_timeout`
//!   after the request began ends the call with DEADLINE_EXCEEDED, so a
//!   client sending slowly (or never finishing) cannot hold buffers.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::{Status, body::Body, codegen::http};

use crate::status::{Problem, reason};

/// A gRPC frame header: compression flag, then the length as u32 big-endian.
const HEADER_LEN: usize = 5;

/// Tower layer that bounds every gRPC request (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimitLayer {
    max_message_bytes: usize,
    body_timeout: Duration,
}

impl RequestLimitLayer {
    /// Request messages longer than `max_message_bytes` are refused, and so
    /// is a body not complete within `body_timeout`.
    #[must_use]
    pub fn new(max_message_bytes: usize, body_timeout: Duration) -> Self {
        Self {
            max_message_bytes,
            body_timeout,
        }
    }
}

impl<S> tower::Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimit {
            inner,
            limits: *self,
        }
    }
}

/// The service [`RequestLimitLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limits: RequestLimitLayer,
}

impl<S> tower::Service<http::Request<Body>> for RequestLimit<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return self.inner.call(request);
        }
        let limits = self.limits;
        self.inner.call(request.map(|body| {
            Body::new(
                FrameLimited::new(body, limits.max_message_bytes)
                    .with_deadline(limits.body_timeout),
            )
        }))
    }
}

/// A gRPC request body whose messages may not exceed a length, and which
/// must end in time.
#[derive(Debug)]
struct FrameLimited {
    inner: Body,
    max: usize,
    /// Fires when the body has taken too long; `None` once it ended (or
    /// for none at all).
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    /// The frame header being read (it may span data chunks).
    header: [u8; HEADER_LEN],
    have: usize,
    /// Bytes of the current message still to pass.
    remaining: usize,
}

impl FrameLimited {
    fn new(inner: Body, max: usize) -> Self {
        Self {
            inner,
            max,
            deadline: None,
            header: [0; HEADER_LEN],
            have: 0,
            remaining: 0,
        }
    }

    fn with_deadline(mut self, timeout: Duration) -> Self {
        if !self.inner.is_end_stream() {
            self.deadline = Some((Box::pin(tokio::time::sleep(timeout)), timeout));
        }
        self
    }

    /// Follows the frames through `data`, refusing a header that announces
    /// a message over the limit.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == HEADER_LEN {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let length = u32::from_be_bytes([a, b, c, d]);
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                if length > self.max {
                    return Err(Problem::new(
                        tonic::Code::ResourceExhausted,
                        reason::REQUEST_TOO_LARGE,
                        format!(
                            "request message is {length} bytes; at most {} are accepted \
                             (grpc.max_request_bytes)",
                            self.max
                        ),
                    )
                    .meta("limit", "grpc.max_request_bytes")
                    .status());
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for FrameLimited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if let Some((sleep, timeout)) = &mut this.deadline {
                    ready!(sleep.as_mut().poll(cx));
                    let timeout = *timeout;
                    this.deadline = None;
                    return Poll::Ready(Some(Err(Problem::new(
                        tonic::Code::DeadlineExceeded,
                        reason::REQUEST_BODY_TIMEOUT,
                        format!(
                            "the request body did not arrive within {timeout:?} \
                             (grpc.request_body_timeout)"
                        ),
                    )
                    .status())));
                }
                return Poll::Pending;
            }
        };
        if frame.is_none()
            || frame
                .as_ref()
                .is_some_and(|f| f.as_ref().is_ok_and(Frame::is_trailers))
        {
            this.deadline = None;
        }
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = this.scan(data)
        {
            return Poll::Ready(Some(Err(status)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    fn frame(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, usize::try_from(length).unwrap_or(0)));
        bytes
    }

    #[test]
    fn messages_up_to_the_limit_pass_larger_ones_are_refused() {
        let mut body = FrameLimited::new(Body::empty(), 16);
        let mut stream = frame(16);
        stream.extend(frame(3));
        assert!(body.scan(&stream).is_ok());
        let status = body.scan(&frame(17)).expect_err("over the limit");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("17 bytes"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn headers_split_across_chunks_are_followed() {
        let mut body = FrameLimited::new(Body::empty(), 100);
        let mut stream = frame(10);
        stream.extend(frame(100));
        stream.extend(&[0, 0, 0, 1, 0]); // announces 256 bytes
        // One byte at a time: the worst split.
        let refused = stream.iter().find_map(|b| body.scan(&[*b]).err());
        let status = refused.expect("the third frame is over the limit");
        assert!(
            status.message().contains("256 bytes"),
            "{}",
            status.message()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_end_in_time_is_refused() {
        // A body that sends one chunk and then nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Status>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 10, 1]))))
            .await
            .expect("send");
        let body = Body::new(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let mut limited = FrameLimited::new(body, 100).with_deadline(Duration::from_secs(10));
        assert!(
            limited.frame().await.is_some_and(|f| f.is_ok()),
            "the first chunk passes"
        );
        let started = tokio::time::Instant::now();
        let status = limited
            .frame()
            .await
            .expect("an error, not the end")
            .expect_err("too slow");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("grpc.request_body_timeout"));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(tx);
    }
}
