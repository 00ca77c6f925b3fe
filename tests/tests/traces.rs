//! Traces end to end, over the real binaries exporting to a fake OTLP
//! collector (`fastchat_test_support::OtlpCollector`): one trace from the
//! client's `traceparent` through send-service's `send` span to a live
//! `deliver` span on each of two all-messages replicas (children of the
//! send), a history replay and a `ListMessages` page linking to it; the same
//! through the HTTP/JSON face; trace ids in the JSON logs; the spans still
//! queued at SIGTERM flushed on the way out.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fastchat_e2e::{NatsServer, message, subscribe, take, take_events, workspace_bin};
use fastchat_proto::v1;
use fastchat_test_support::{OtlpCollector, RecordedSpan, free_port};
use v1::subscribe_request::Start;

/// The client's trace: a sampled parent it made itself.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// A second client's trace, sent over HTTP/JSON.
const JSON_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const JSON_CLIENT_SPAN: &str = "b7ad6b7169203331";

/// A service binary exporting traces to the collector, killed on drop if
/// still running.
struct Process {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Process {
    fn start(
        name: &'static str,
        nats_url: &str,
        collector: &OtlpCollector,
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let port = free_port();
        let mut command = Command::new(workspace_bin(name));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{port}"))
            .env("NATS_URL", nats_url)
            .env("FASTCHAT_AUTH__MODE", "none")
            .env("FASTCHAT_STATION__MAX_BYTES", "268435456")
            .env("FASTCHAT_SHUTDOWN__DRAIN_TIMEOUT", "2s")
            .env("FASTCHAT_METRICS__ENABLED", "false")
            .env("RUST_LOG", "info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            // Export within a tenth of a second rather than five.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the service binary");
        let process = Self { name, port, child };
        process.wait_healthy(Duration::from_secs(20));
        process
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = Command::new(workspace_bin(self.name))
                .arg("healthcheck")
                .env("FASTCHAT_GRPC__LISTEN", format!("127.0.0.1:{}", self.port))
                .stderr(Stdio::null())
                .status()
                .expect("run healthcheck")
                .success();
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(&mut self, within: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(spans: &[RecordedSpan], what: impl Fn(&RecordedSpan) -> bool) -> Vec<&RecordedSpan> {
    spans.iter().filter(|s| what(s)).collect()
}

fn instance(span: &RecordedSpan) -> &str {
    span.resource
        .get("service.instance.id")
        .map_or("", String::as_str)
}

/// Whether `spans` has a live delivery of `message_id` on `replica`, a child
/// of `send` in its trace.
fn delivered_live(
    spans: &[RecordedSpan],
    replica: &str,
    send: &RecordedSpan,
    message_id: &str,
) -> bool {
    spans.iter().any(|s| {
        s.name == "deliver"
            && s.service == "all-messages-service"
            && instance(s) == replica
            && s.attribute("fastchat.delivery") == Some("live")
            && s.attribute("fastchat.message_id") == Some(message_id)
            && s.trace_id == send.trace_id
            && s.parent_span_id == send.span_id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_goes_from_the_client_through_send_to_every_delivery() {
    let started = Instant::now();
    let nats = NatsServer::start();
    let collector = OtlpCollector::start();
    let logs = tempfile::NamedTempFile::new().expect("a log file");
    let send_log = logs.reopen().expect("reopen the log file");
    let send = Process::start(
        "send-service",
        &nats.url(),
        &collector,
        &[
            ("FASTCHAT_LOG__FORMAT", "json"),
            // "stored" is logged at debug, inside the send span.
            ("RUST_LOG", "info,send_service=debug"),
        ],
        Stdio::from(send_log),
    );
    let replica_a = Process::start(
        "all-messages-service",
        &nats.url(),
        &collector,
        &[("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=replica-a")],
        Stdio::inherit(),
    );
    // Replica B exports only at shutdown: what it has then must be flushed.
    let mut replica_b = Process::start(
        "all-messages-service",
        &nats.url(),
        &collector,
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=replica-b"),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
        Stdio::inherit(),
    );

    // One live subscriber on each replica.
    let room = "traced";
    let mut live = Vec::new();
    for replica in [&replica_a, &replica_b] {
        let mut client =
            v1::all_messages_service_client::AllMessagesServiceClient::connect(replica.endpoint())
                .await
                .expect("connect to all-messages-service");
        let mut stream = client
            .subscribe(subscribe(room, Some(Start::NewOnly(true))))
            .await
            .expect("subscribe")
            .into_inner();
        // CaughtUp: the subscription is live.
        take_events(&mut stream, 1, Duration::from_secs(10)).await;
        live.push((client, stream));
    }

    // A send over gRPC with the client's trace context...
    let mut sender =
        v1::send_message_service_client::SendMessageServiceClient::connect(send.endpoint())
            .await
            .expect("connect to send-service");
    let mut request = tonic::Request::new(message(room, "ann", "a secret text"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .expect("ascii"),
    );
    request
        .metadata_mut()
        .insert("tracestate", "vendor=opaque".parse().expect("ascii"));
    let sent = sender
        .send_message(request)
        .await
        .expect("send")
        .into_inner()
        .message
        .expect("the stored message");

    // ...and one over HTTP/JSON with another.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let url = format!("{}/v1/rooms/{room}/messages", send.endpoint());
    let json_traceparent = format!("00-{JSON_TRACE}-{JSON_CLIENT_SPAN}-01");
    let body = tokio::task::spawn_blocking(move || {
        let mut response = agent
            .post(&url)
            .header("traceparent", &json_traceparent)
            .content_type("application/json")
            .send(r#"{"author": "bob", "text": "over json"}"#)
            .expect("POST");
        assert_eq!(response.status(), 200);
        response.body_mut().read_to_string().expect("body")
    })
    .await
    .expect("the JSON send");
    let json_sent: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let json_id = json_sent["message"]["id"]
        .as_str()
        .expect("a message id")
        .to_owned();

    for (_, stream) in &mut live {
        let got = take(stream, 2, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 2);
    }

    // A history replay and a page of the room, on replica A.
    let mut replay_client =
        v1::all_messages_service_client::AllMessagesServiceClient::connect(replica_a.endpoint())
            .await
            .expect("connect");
    let mut replay = replay_client
        .subscribe(subscribe(room, None))
        .await
        .expect("subscribe from the start")
        .into_inner();
    let replayed = take(&mut replay, 2, Duration::from_secs(10)).await;
    assert_eq!(replayed.len(), 2);
    let page = replay_client
        .list_messages(v1::ListMessagesRequest {
            room: room.into(),
            before_sequence: 0,
            limit: 10,
        })
        .await
        .expect("a page")
        .into_inner();
    assert_eq!(page.messages.len(), 2);

    // The send span: a child of the client's, named as the message.
    let spans = collector.wait_for(Duration::from_secs(15), |spans| {
        !find(spans, |s| s.name == "send" && s.trace_id == TRACE).is_empty()
            && !find(spans, |s| s.name == "send" && s.trace_id == JSON_TRACE).is_empty()
    });
    let sends = find(&spans, |s| s.name == "send" && s.trace_id == TRACE);
    assert_eq!(
        sends.len(),
        1,
        "one send span in the client's trace: {spans:#?}"
    );
    let send_span = sends[0].clone();
    assert_eq!(send_span.service, "send-service");
    assert_eq!(send_span.parent_span_id, CLIENT_SPAN);
    assert_eq!(send_span.attribute("fastchat.room"), Some(room));
    assert_eq!(
        send_span.attribute("fastchat.message_id"),
        Some(sent.id.as_str())
    );
    assert_eq!(
        send_span.attribute("fastchat.sequence"),
        Some(sent.sequence.to_string().as_str())
    );
    assert_eq!(send_span.attribute("fastchat.outcome"), Some("stored"));
    let json_send = find(&spans, |s| s.name == "send" && s.trace_id == JSON_TRACE)[0].clone();
    assert_eq!(json_send.parent_span_id, JSON_CLIENT_SPAN);
    assert_eq!(
        json_send.attribute("fastchat.message_id"),
        Some(json_id.as_str())
    );

    // Replica A: live deliveries (children), the replay and the page (links).
    let spans = collector.wait_for(Duration::from_secs(15), |spans| {
        delivered_live(spans, "replica-a", &send_span, &sent.id)
            && delivered_live(spans, "replica-a", &json_send, &json_id)
            && !find(spans, |s| s.name == "page").is_empty()
            && find(spans, |s| {
                s.attribute("fastchat.delivery") == Some("history")
            })
            .len()
                >= 2
    });
    assert!(
        delivered_live(&spans, "replica-a", &send_span, &sent.id),
        "replica A's live delivery, a child of the send: {spans:#?}"
    );
    assert!(delivered_live(&spans, "replica-a", &json_send, &json_id));
    let link = (send_span.trace_id.clone(), send_span.span_id.clone());
    let history = find(&spans, |s| {
        s.name == "deliver"
            && s.attribute("fastchat.delivery") == Some("history")
            && s.attribute("fastchat.message_id") == Some(sent.id.as_str())
    });
    assert_eq!(history.len(), 1, "{spans:#?}");
    assert_eq!(history[0].links, vec![link.clone()]);
    assert_ne!(history[0].trace_id, TRACE, "a replay is a trace of its own");
    let pages = find(&spans, |s| s.name == "page");
    assert_eq!(pages.len(), 1, "{spans:#?}");
    assert_eq!(pages[0].attribute("fastchat.room"), Some(room));
    let page_links: BTreeSet<_> = pages[0].links.iter().cloned().collect();
    let both: BTreeSet<_> = [
        link,
        (json_send.trace_id.clone(), json_send.span_id.clone()),
    ]
    .into();
    assert_eq!(page_links, both);
    // Never the text.
    for span in &spans {
        assert!(
            !span.attributes.values().any(|v| v.contains("secret")),
            "{span:#?}"
        );
    }

    // Replica B exports at shutdown only: SIGTERM flushes its spans.
    assert!(
        !collector.spans().iter().any(|s| instance(s) == "replica-b"),
        "replica B exported before its shutdown"
    );
    drop(live);
    replica_b.terminate(Duration::from_secs(15));
    let spans = collector.wait_for(Duration::from_secs(5), |spans| {
        delivered_live(spans, "replica-b", &send_span, &sent.id)
    });
    assert!(
        delivered_live(&spans, "replica-b", &send_span, &sent.id),
        "replica B's live delivery, flushed at shutdown: {spans:#?}"
    );
    assert!(delivered_live(&spans, "replica-b", &json_send, &json_id));

    // The JSON log line written inside the send span names its ids.
    assert_logged_in(logs.path(), &send_span);
    eprintln!("traces test took {:?}", started.elapsed());
}

fn assert_logged_in(log: &Path, send: &RecordedSpan) {
    let text = std::fs::read_to_string(log).expect("read send-service's log");
    let stored = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "stored" && line["trace_id"] == TRACE);
    let Some(line) = stored else {
        panic!("no `stored` line with trace_id {TRACE} in:\n{text}");
    };
    assert_eq!(line["span_id"], send.span_id.as_str(), "{line}");
}
