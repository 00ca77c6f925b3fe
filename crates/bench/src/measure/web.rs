//! Web transports: send → subscriber p50/p99 with 100 subscribers of one
//! room, each on its own connection, over native gRPC Subscribe (tonic,
//! HTTP/2), gRPC-web Subscribe over HTTP/1.1 and Server-Sent Events over
//! HTTP/1.1 (hyper's HTTP/1 client, reading the response body frame by frame
//! as it arrives), at the same rate and count. Native gRPC, measured in the
//! same run, is the baseline of the two others.

use std::{net::SocketAddr, time::Instant};

use anyhow::{Context as _, bail};
use bytes::{Buf as _, Bytes, BytesMut};
use fastchat_proto::v1::{
    self, send_message_service_client::SendMessageServiceClient, subscribe_request::Start,
    subscribe_response::Event,
};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, StatusCode,
    body::Incoming,
    header::{ACCEPT, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::task::{JoinHandle, JoinSet};

use super::common::{
    LIMIT, Latencies, Percentiles, channel, next_message, now_nanos, pacer, since_nanos,
    subscribe_new,
};
use crate::{report::Report, system::System};

/// Subscribers of the room, one connection each.
const SUBSCRIBERS: usize = 100;
/// A moderate steady rate: 20,000 deliveries a second to the subscribers.
const RATE: u64 = 200;
const SECONDS: u64 = 2;

/// How the subscribers read the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Native gRPC Subscribe (tonic, HTTP/2).
    Grpc,
    /// gRPC-web Subscribe over HTTP/1.1.
    GrpcWeb,
    /// `GET /v1/rooms/{room}/events?new_only=true` over HTTP/1.1.
    Sse,
}

impl Transport {
    const ALL: [Self; 3] = [Self::Grpc, Self::GrpcWeb, Self::Sse];

    fn name(self) -> &'static str {
        match self {
            Self::Grpc => "native gRPC Subscribe (HTTP/2)",
            Self::GrpcWeb => "gRPC-web Subscribe (HTTP/1.1)",
            Self::Sse => "SSE events (HTTP/1.1)",
        }
    }
}

/// The send time a message's text carries ([`now_nanos`]).
fn sent_at(text: &str) -> anyhow::Result<u64> {
    text.parse()
        .with_context(|| format!("message text `{text}` is not a send time"))
}

/// An HTTP/1.1 connection of its own to `addr` (hyper's client, no Nagle).
async fn http1(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends when the response body is dropped and the connection closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `request` on a connection of its own; the response's body, read as
/// it arrives, once its status is 200 and its content type starts with
/// `content_type`.
async fn open(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    content_type: &str,
) -> anyhow::Result<Chunks> {
    let mut sender = http1(addr).await?;
    let response = sender.send_request(request).await?;
    if response.version() != hyper::Version::HTTP_11 {
        bail!("answered over {:?}, not HTTP/1.1", response.version());
    }
    let kind = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if response.status() != StatusCode::OK || !kind.starts_with(content_type) {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!(
            "{status} {kind}, not {content_type}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(Chunks {
        body: response.into_body(),
        buffer: BytesMut::new(),
        _connection: sender,
    })
}

/// A streamed response body read as it arrives: its DATA frames append to a
/// buffer that the parsers below take whole units from.
struct Chunks {
    body: Incoming,
    buffer: BytesMut,
    /// Held while the body is read: the connection stays the stream's.
    _connection: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Chunks {
    /// Appends the body's next DATA frame to the buffer; false at its end.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        loop {
            let Some(frame) = self.body.frame().await else {
                return Ok(false);
            };
            if let Ok(data) = frame?.into_data() {
                self.buffer.extend_from_slice(&data);
                return Ok(true);
            }
        }
    }

    /// The next gRPC-web frame: its flag (0x00 a message, 0x80 the
    /// trailers) and payload; `None` at the end of the body.
    async fn web_frame(&mut self) -> anyhow::Result<Option<(u8, Bytes)>> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]);
                let len = usize::try_from(len)?;
                if self.buffer.len() >= 5 + len {
                    let flag = self.buffer[0];
                    self.buffer.advance(5);
                    return Ok(Some((flag, self.buffer.split_to(len).freeze())));
                }
            }
            if !self.fill().await? {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                bail!("body ended within a frame");
            }
        }
    }

    /// The next line (without its line ending); `None` at the end of the
    /// body.
    async fn line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = std::str::from_utf8(&line)?;
                return Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// A gRPC-web Subscribe stream.
struct WebSubscription(Chunks);

impl WebSubscription {
    async fn open(addr: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let message = v1::SubscribeRequest {
            rooms: Vec::new(),
            room: room.to_owned(),
            start: Some(Start::NewOnly(true)),
        }
        .encode_to_vec();
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
        framed.extend_from_slice(&message);
        let request = Request::post("/fastchat.v1.AllMessagesService/Subscribe")
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(Full::new(Bytes::from(framed)))?;
        Ok(Self(open(addr, request, "application/grpc-web").await?))
    }

    /// The next event; an error once the trailers (or the end) come.
    async fn event(&mut self) -> anyhow::Result<Event> {
        loop {
            match self.0.web_frame().await? {
                Some((0, data)) => {
                    if let Some(event) = v1::SubscribeResponse::decode(data)?.event {
                        return Ok(event);
                    }
                }
                Some((flag, data)) if flag & 0x80 != 0 => {
                    bail!("gRPC-web stream ended: {}", String::from_utf8_lossy(&data))
                }
                Some((flag, _)) => bail!("gRPC-web frame with flag {flag:#x}"),
                None => bail!("gRPC-web body ended without trailers"),
            }
        }
    }
}

/// One Server-Sent Event (comments, the heartbeats, are skipped).
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    data: String,
}

/// An SSE stream of one room.
struct SseSubscription(Chunks);

impl SseSubscription {
    async fn open(addr: SocketAddr, room: &str) -> anyhow::Result<Self> {
        let request = Request::get(format!("/v1/rooms/{room}/events?new_only=true"))
            .header(HOST, addr.to_string())
            .header(ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))?;
        Ok(Self(open(addr, request, "text/event-stream").await?))
    }

    /// The next event, parsed line by line as the lines arrive.
    async fn event(&mut self) -> anyhow::Result<SseEvent> {
        let mut current = SseEvent::default();
        loop {
            let Some(line) = self.0.line().await? else {
                bail!("event stream ended")
            };
            if line.is_empty() {
                if !current.data.is_empty() {
                    if current.event.is_empty() {
                        "message".clone_into(&mut current.event);
                    }
                    return Ok(current);
                }
                current = SseEvent::default();
            } else if line.starts_with(':') {
                // A comment: the heartbeats.
            } else if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => value.clone_into(&mut current.event),
                    "data" => {
                        if !current.data.is_empty() {
                            current.data.push('\n');
                        }
                        current.data.push_str(value);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Opens one subscriber of `room` over `transport` on a connection of its
/// own and waits for its CaughtUp (it is live from then on); the returned
/// task records the latency of the next `total` messages.
async fn subscriber(
    transport: Transport,
    all: &str,
    room: &str,
    total: usize,
) -> anyhow::Result<JoinHandle<anyhow::Result<Latencies>>> {
    let addr: SocketAddr = all
        .strip_prefix("http://")
        .unwrap_or(all)
        .parse()
        .with_context(|| format!("{all} is not http://ip:port"))?;
    let mut latency = Latencies::default();
    Ok(match transport {
        Transport::Grpc => {
            let mut stream = subscribe_new(channel(all).await?, room).await?;
            loop {
                match stream.message().await? {
                    Some(v1::SubscribeResponse {
                        event: Some(Event::CaughtUp(_)),
                    }) => break,
                    Some(_) => {}
                    None => bail!("stream ended before CaughtUp"),
                }
            }
            tokio::spawn(async move {
                for got in 0..total {
                    let Some(m) = next_message(&mut stream).await? else {
                        bail!("stream ended after {got}")
                    };
                    latency.record(since_nanos(sent_at(&m.text)?));
                }
                anyhow::Ok(latency)
            })
        }
        Transport::GrpcWeb => {
            let mut stream = WebSubscription::open(addr, room).await?;
            while !matches!(stream.event().await?, Event::CaughtUp(_)) {}
            tokio::spawn(async move {
                let mut got = 0;
                while got < total {
                    if let Event::Message(m) = stream.event().await? {
                        latency.record(since_nanos(sent_at(&m.text)?));
                        got += 1;
                    }
                }
                anyhow::Ok(latency)
            })
        }
        Transport::Sse => {
            let mut stream = SseSubscription::open(addr, room).await?;
            loop {
                let event = stream.event().await?;
                match event.event.as_str() {
                    "caught_up" => break,
                    "error" => bail!("event stream failed: {}", event.data),
                    _ => {}
                }
            }
            tokio::spawn(async move {
                let mut got = 0;
                while got < total {
                    let event = stream.event().await?;
                    match event.event.as_str() {
                        "message" => {
                            let data: serde_json::Value = serde_json::from_str(&event.data)?;
                            let text = data["text"].as_str().context("a message without text")?;
                            latency.record(since_nanos(sent_at(text)?));
                            got += 1;
                        }
                        "error" => bail!("event stream failed after {got}: {}", event.data),
                        _ => {}
                    }
                }
                anyhow::Ok(latency)
            })
        }
    })
}

/// Opens [`SUBSCRIBERS`] subscribers of `room` over `transport`, then sends
/// at [`RATE`] for [`SECONDS`] (text: the send time); the latency of every
/// subscriber's every message.
async fn deliver(
    transport: Transport,
    (send, all): (&str, &str),
    room: &str,
) -> anyhow::Result<Latencies> {
    let total = usize::try_from(RATE * SECONDS)?;
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        readers.push(subscriber(transport, all, room, total).await?);
    }
    let send_channel = channel(send).await?;
    let mut ticker = pacer(RATE);
    let mut sends = JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let mut client = SendMessageServiceClient::new(send_channel.clone());
        let room = room.to_owned();
        sends.spawn(async move {
            client
                .send_message(v1::SendMessageRequest {
                    room,
                    author: "bench".into(),
                    text: now_nanos().to_string(),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    let deadline = Instant::now() + LIMIT;
    let mut latency = Latencies::default();
    for reader in readers {
        let got = tokio::time::timeout_at(deadline.into(), reader)
            .await
            .with_context(|| {
                format!("{} subscribers not done within {LIMIT:?}", transport.name())
            })???;
        latency.add(&got)?;
    }
    Ok(latency)
}

/// (9) Delivery latency to 100 subscribers of one room, each on its own
/// connection, over native gRPC, gRPC-web over HTTP/1.1 and SSE over
/// HTTP/1.1, at the same rate and count; the web transports' p99 against
/// native gRPC's.
pub async fn web(report: &mut Report) -> anyhow::Result<()> {
    // No heartbeats during a run: every event is a message.
    let system = System::start_with(&[(
        "FASTCHAT_SUBSCRIPTIONS__HEARTBEAT_INTERVAL",
        "1h".to_owned(),
    )])?;
    let mut results = [
        Percentiles::default(),
        Percentiles::default(),
        Percentiles::default(),
    ];
    for run in 1..=report.runs {
        // Each transport goes first, second and third in turn.
        for i in 0..Transport::ALL.len() {
            let t = (i + run - 1) % Transport::ALL.len();
            let transport = Transport::ALL[t];
            eprintln!("[web] run {run}/{}: {}", report.runs, transport.name());
            let room = format!("web{run}t{t}");
            results[t].push(&deliver(transport, system.endpoints(), &room).await?);
        }
    }
    let [grpc, grpc_web, sse] = results;
    report.note(format!(
        "web: per transport and run, {} messages at {RATE} msg/s to {SUBSCRIBERS} subscribers of \
         one room, each on its own connection; the transports take turns going first",
        RATE * SECONDS
    ));
    let mut figures = |transport: Transport, got: &Percentiles| {
        let what = format!(
            "SendMessage → 100 subscribers, one connection each, {}",
            transport.name()
        );
        let p50 = report.figure("web", format!("{what} p50"), "ms", &got.p50);
        let p99 = report.figure("web", format!("{what} p99"), "ms", &got.p99);
        (p50.median, p99.median)
    };
    let (grpc_p50, grpc_p99) = figures(Transport::Grpc, &grpc);
    let (web_p50, web_p99) = figures(Transport::GrpcWeb, &grpc_web);
    let (sse_p50, sse_p99) = figures(Transport::Sse, &sse);
    report.summary("web_grpc_p50_ms", grpc_p50);
    report.summary("web_grpc_p99_ms", grpc_p99);
    report.summary("grpc_web_p50_ms", web_p50);
    report.summary("grpc_web_p99_ms", web_p99);
    report.summary("sse_p50_ms", sse_p50);
    report.summary("sse_p99_ms", sse_p99);
    report.summary("grpc_web_vs_grpc_p99_ratio", web_p99 / grpc_p99);
    report.summary("sse_vs_grpc_p99_ratio", sse_p99 / grpc_p99);
    Ok(())
}
