//! The raw gRPC baselines: the same fastchat.v1 services with nothing behind
//! them. `SendMessage` echoes; `Subscribe` joins a round of `streams`
//! subscribers (named by the request's room, `round:<streams>:<messages>`)
//! and, once all have joined, streams the same `messages` to each through an
//! in-process broadcast. What FastChat adds on top of these is its cost.
//!
//! The bare relay ([`relay`]) is FastChat's topology with none of its
//! features: `SendMessage` publishes to JetStream and answers after the ack;
//! `Subscribe` passes on what one ordered consumer delivers. No validation,
//! dedup, cursors, history, catch-up or limits.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use async_nats::jetstream::{self, consumer::push};
use bytes::Bytes;
use fastchat_proto::v1::{
    self, all_messages_service_server::AllMessagesServiceServer,
    send_message_service_server::SendMessageServiceServer,
};
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// A message like the ones FastChat stores.
pub fn sample_message(room: &str, sequence: u64, text: String) -> v1::ChatMessage {
    v1::ChatMessage {
        id: "0192f5c4-0000-7000-8000-000000000000".into(),
        room: room.into(),
        author: "bench".into(),
        text,
        sent_at: Some(fastchat_proto::prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        client_time_ms: 0,
        sequence,
        author_verified: true,
    }
}

struct Round {
    expected: usize,
    joined: usize,
    tx: broadcast::Sender<Arc<v1::SubscribeResponse>>,
}

#[derive(Clone, Default)]
struct Raw {
    // Held only to register a stream; nothing is awaited under it.
    rounds: Arc<Mutex<HashMap<String, Round>>>,
}

#[tonic::async_trait]
impl v1::send_message_service_server::SendMessageService for Raw {
    async fn send_message(
        &self,
        request: Request<v1::SendMessageRequest>,
    ) -> Result<Response<v1::SendMessageResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(v1::SendMessageResponse {
            message: Some(sample_message(&r.room, 1, r.text)),
            duplicate: false,
        }))
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

/// A response stream of what `rx` receives, mapped (`None` skips), through
/// a task and a bounded queue: the usual tonic server-streaming shape.
fn forward<T: Send + Sync + 'static>(
    mut rx: broadcast::Receiver<Arc<T>>,
    map: impl Fn(&T) -> Option<v1::SubscribeResponse> + Send + 'static,
) -> Events {
    let (out, out_rx) = mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let item = match rx.recv().await {
                Ok(item) => item,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(response) = map(&item) else { continue };
            if out.send(Ok(response)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(out_rx))
}

#[tonic::async_trait]
impl v1::all_messages_service_server::AllMessagesService for Raw {
    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Events>, Status> {
        let room = request.into_inner().room;
        let mut parts = room.split(':').skip(1).map(str::parse::<usize>);
        let (Some(Ok(streams)), Some(Ok(messages))) = (parts.next(), parts.next()) else {
            return Err(Status::invalid_argument(
                "room must be round:<streams>:<messages>",
            ));
        };
        let (rx, start) = {
            let mut rounds = self
                .rounds
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            let round = rounds.entry(room.clone()).or_insert_with(|| Round {
                expected: streams,
                joined: 0,
                tx: broadcast::channel(messages.max(1)).0,
            });
            round.joined += 1;
            let rx = round.tx.subscribe();
            let start = (round.joined == round.expected).then(|| round.tx.clone());
            if start.is_some() {
                rounds.remove(&room);
            }
            (rx, start)
        };
        if let Some(tx) = start {
            tokio::spawn(async move {
                for sequence in 1..=messages as u64 {
                    let event = v1::subscribe_response::Event::Message(sample_message(
                        "round",
                        sequence,
                        "x".repeat(64),
                    ));
                    let _ = tx.send(Arc::new(v1::SubscribeResponse { event: Some(event) }));
                }
            });
        }
        Ok(Response::new(forward(rx, |event| Some(event.clone()))))
    }

    async fn list_messages(
        &self,
        _request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        Err(Status::unimplemented("not a baseline"))
    }
}

/// Serves the raw baselines until killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let raw = Raw::default();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // As FastChat's in the bench (system.rs): the shared-connection
        // memory figure opens 1,000 streams per connection.
        .max_concurrent_streams(2048)
        .add_service(SendMessageServiceServer::new(raw.clone()))
        .add_service(AllMessagesServiceServer::new(raw))
        .serve(addr)
        .await?;
    Ok(())
}

/// Which half of FastChat a bare relay stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `SendMessage` → JetStream.
    Send,
    /// JetStream → `Subscribe` streams.
    Subscribe,
}

#[derive(Clone)]
struct Relay {
    js: jetstream::Context,
    feed: broadcast::Sender<Arc<v1::ChatMessage>>,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl v1::send_message_service_server::SendMessageService for Relay {
    async fn send_message(
        &self,
        request: Request<v1::SendMessageRequest>,
    ) -> Result<Response<v1::SendMessageResponse>, Status> {
        let r = request.into_inner();
        let mut message = sample_message(&r.room, 0, r.text);
        message.author = r.author;
        let payload = Bytes::from(message.encode_to_vec());
        let ack = self
            .js
            .publish(format!("chat.messages.{}", r.room), payload)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        message.sequence = ack.sequence;
        Ok(Response::new(v1::SendMessageResponse {
            message: Some(message),
            duplicate: false,
        }))
    }
}

#[tonic::async_trait]
impl v1::all_messages_service_server::AllMessagesService for Relay {
    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Events>, Status> {
        let room = request.into_inner().room;
        Ok(Response::new(forward(
            self.feed.subscribe(),
            move |message| {
                (message.room == room).then(|| v1::SubscribeResponse {
                    event: Some(v1::subscribe_response::Event::Message(message.clone())),
                })
            },
        )))
    }

    async fn list_messages(
        &self,
        _request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        Err(Status::unimplemented("not a baseline"))
    }
}

/// Serves one bare relay until killed; listens only once its feed runs.
pub async fn relay(addr: SocketAddr, nats: &str, role: Role) -> anyhow::Result<()> {
    let js = jetstream::new(async_nats::connect(nats).await?);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "chat".into(),
            subjects: vec!["chat.messages.>".into()],
            ..Default::default()
        })
        .await?;
    let (feed, _) = broadcast::channel(1024);
    if role == Role::Subscribe {
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                filter_subject: "chat.messages.>".into(),
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let feed = feed.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivered)) = messages.next().await {
                let sequence = delivered.info().map_or(0, |i| i.stream_sequence);
                if let Ok(mut message) = v1::ChatMessage::decode(delivered.payload.clone()) {
                    message.sequence = sequence;
                    let _ = feed.send(Arc::new(message));
                }
            }
        });
    }
    let relay = Relay { js, feed };
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(SendMessageServiceServer::new(relay.clone()))
        .add_service(AllMessagesServiceServer::new(relay))
        .serve(addr)
        .await?;
    Ok(())
}
