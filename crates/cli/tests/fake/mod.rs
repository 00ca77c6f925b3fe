//! A stand-in for both FastChat services, for what the real ones do not do
//! (yet): it records the `authorization` header of every call, answers with
//! the refusals the services will send once they check tokens (statuses with
//! `google.rpc.ErrorInfo` and `RetryInfo` details), and can serve over TLS,
//! with or without requiring a client certificate.
//!
//! What it answers depends on the request:
//! - `SendMessage`: text `limit` is refused `RESOURCE_EXHAUSTED`
//!   `RATE_LIMITED`, retry in 2 s; anything else is stored, with the author
//!   asked for, or `from-token` when none was given but a token was.
//! - `ListMessages`: room `forbidden` is refused `PERMISSION_DENIED`
//!   `ROOM_FORBIDDEN` with a message that quotes the header (as a careless
//!   server might); other rooms have one message.
//! - `Subscribe`: room `expired` is refused `UNAUTHENTICATED`
//!   `TOKEN_EXPIRED`; room `expires` sends one message, then ends with that
//!   refusal; room `limited` is refused `RATE_LIMITED`, retry in 1 s, the
//!   first time, then sends one message; other rooms send one message. A
//!   stream stays open after its messages.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fastchat_proto::v1::{
    self, ChatMessage,
    all_messages_service_server::{AllMessagesService, AllMessagesServiceServer},
    send_message_service_server::{SendMessageService, SendMessageServiceServer},
    subscribe_response::Event,
};
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{
    Code, Request, Response, Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_types::{ErrorDetails, StatusExt as _};

/// One call the fake answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// `SendMessage`, `ListMessages`, `Subscribe` or `Health`.
    pub method: &'static str,
    /// The `authorization` header, if one came.
    pub authorization: Option<String>,
    /// When it came.
    pub at: Instant,
}

/// Every call so far.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn record<T>(&self, method: &'static str, request: &Request<T>) -> Option<String> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0.lock().expect("not poisoned").push(Call {
            method,
            authorization: authorization.clone(),
            at: Instant::now(),
        });
        authorization
    }

    /// The calls so far, oldest first.
    pub fn all(&self) -> Vec<Call> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// The calls of `method` so far.
    pub fn of(&self, method: &str) -> Vec<Call> {
        self.all()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }
}

/// How the fake serves.
#[derive(Debug, Default)]
pub enum Transport {
    /// Plain HTTP/2.
    #[default]
    Plain,
    /// TLS with this certificate and key (PEM).
    Tls { cert: String, key: String },
    /// TLS that also requires a client certificate signed by `client_ca`.
    MutualTls {
        cert: String,
        key: String,
        client_ca: String,
    },
}

/// The fake, serving on loopback until dropped.
pub struct Fake {
    pub addr: SocketAddr,
    pub calls: Calls,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(transport: Transport) -> Self {
        let calls = Calls::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let mut builder = Server::builder();
        let tls = match transport {
            Transport::Plain => None,
            Transport::Tls { cert, key } => {
                Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            }
            Transport::MutualTls {
                cert,
                key,
                client_ca,
            } => Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(cert, key))
                    .client_ca_root(Certificate::from_pem(client_ca)),
            ),
        };
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("server TLS settings");
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<SendMessageServiceServer<Services>>()
            .await;
        reporter
            .set_serving::<AllMessagesServiceServer<Services>>()
            .await;
        let health_calls = calls.clone();
        let health = InterceptedService::new(health, move |request: Request<()>| {
            health_calls.record("Health", &request);
            Ok(request)
        });
        let services = Services {
            calls: calls.clone(),
            limited_once: Arc::new(Mutex::new(false)),
        };
        let router = builder
            .add_service(health)
            .add_service(SendMessageServiceServer::new(services.clone()))
            .add_service(AllMessagesServiceServer::new(services));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            // Handshake failures end single connections, not the server.
            let _ = router.serve_with_incoming(incoming).await;
        });
        Self { addr, calls, task }
    }
}

/// A status as the services send them: ErrorInfo in domain `fastchat`, and
/// RetryInfo when `retry` is given.
pub fn refusal(code: Code, message: &str, reason: &str, retry: Option<Duration>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, "fastchat", HashMap::new());
    if retry.is_some() {
        details.set_retry_info(retry);
    }
    Status::with_error_details(code, message, details)
}

fn message(room: &str, sequence: u64, author: &str, text: &str) -> ChatMessage {
    ChatMessage {
        id: format!("id-{sequence}"),
        room: room.to_owned(),
        author: author.to_owned(),
        text: text.to_owned(),
        sent_at: None,
        client_time_ms: 0,
        sequence,
        author_verified: false,
    }
}

fn expired() -> Status {
    refusal(
        Code::Unauthenticated,
        "the token expired at 2026-01-01T00:00:00Z; get a new one",
        "TOKEN_EXPIRED",
        None,
    )
}

#[derive(Clone)]
struct Services {
    calls: Calls,
    limited_once: Arc<Mutex<bool>>,
}

type Events = Pin<Box<dyn Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SendMessageService for Services {
    async fn send_message(
        &self,
        request: Request<v1::SendMessageRequest>,
    ) -> Result<Response<v1::SendMessageResponse>, Status> {
        let authorization = self.calls.record("SendMessage", &request);
        let request = request.into_inner();
        if request.text == "limit" {
            return Err(refusal(
                Code::ResourceExhausted,
                "too many messages; slow down",
                "RATE_LIMITED",
                Some(Duration::from_secs(2)),
            ));
        }
        let author = match (request.author.as_str(), authorization) {
            ("", Some(_)) => "from-token".to_owned(),
            (author, _) => author.to_owned(),
        };
        let room = if request.room.is_empty() {
            "general".to_owned()
        } else {
            request.room
        };
        Ok(Response::new(v1::SendMessageResponse {
            message: Some(message(&room, 1, &author, &request.text)),
            duplicate: false,
        }))
    }
}

#[tonic::async_trait]
impl AllMessagesService for Services {
    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Events>, Status> {
        self.calls.record("Subscribe", &request);
        let room = request.into_inner().room;
        let first = v1::SubscribeResponse {
            event: Some(Event::Message(message(&room, 1, "ann", "hello"))),
        };
        let events: Events = match room.as_str() {
            "expired" => return Err(expired()),
            "expires" => Box::pin(tokio_stream::iter([Ok(first), Err(expired())])),
            "limited"
                if !std::mem::replace(&mut *self.limited_once.lock().expect("lock"), true) =>
            {
                return Err(refusal(
                    Code::ResourceExhausted,
                    "too many subscriptions opened; slow down",
                    "RATE_LIMITED",
                    Some(Duration::from_secs(1)),
                ));
            }
            _ => Box::pin(tokio_stream::iter([Ok(first)]).chain(tokio_stream::pending())),
        };
        Ok(Response::new(events))
    }

    async fn list_messages(
        &self,
        request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        let authorization = self.calls.record("ListMessages", &request);
        let room = request.into_inner().room;
        if room == "forbidden" {
            return Err(refusal(
                Code::PermissionDenied,
                &format!(
                    "read on room `forbidden` is not allowed for {}",
                    authorization.unwrap_or_default()
                ),
                "ROOM_FORBIDDEN",
                None,
            ));
        }
        Ok(Response::new(v1::ListMessagesResponse {
            messages: vec![message(&room, 1, "ann", "hello")],
            next_before_sequence: 0,
        }))
    }
}

/// A private CA and what it signs, made fresh for each test.
pub struct Pki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        Self {
            ca_pem: ca.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self) -> Leaf {
        self.leaf(vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fastchat test");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
