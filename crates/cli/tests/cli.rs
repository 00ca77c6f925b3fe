//! The real `fastchat` binary, run as a process, against both services
//! in-process and a real nats-server: send, duplicates, history paging, bad
//! input, health, addresses of the wrong service, and `tail` resuming after
//! all-messages-service restarts on the same port.
//!
//! Tokens and TLS against a stand-in for the services ([`fake`]): that
//! tokens reach every call but health, how refusals with error details are
//! reported, `https://` with a private CA and with client certificates; and
//! `fastchat token`, checked with fastchat-auth's own verifier.

mod fake;

use std::{
    net::SocketAddr,
    process::{Output, Stdio},
    time::Duration,
};

use fastchat_e2e::{
    NatsServer, Service, all_config, message, send_config, start_all, start_send, v1_send,
};
use fastchat_proto::v1::{self, all_messages_service_client::AllMessagesServiceClient};
use fastchat_test_support::free_port;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// Bound on any one `fastchat` run.
const RUN: Duration = Duration::from_secs(30);
/// Bound on waiting for one line of `tail`.
const LINE: Duration = Duration::from_secs(20);

fn fastchat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fastchat"));
    command
        .env_remove("FASTCHAT_SEND_ADDR")
        .env_remove("FASTCHAT_ALL_ADDR")
        .env_remove("FASTCHAT_TOKEN")
        .env_remove("FASTCHAT_CA_FILE")
        .env_remove("FASTCHAT_CERT_FILE")
        .env_remove("FASTCHAT_KEY_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `fastchat args…` to the end.
async fn run(args: &[&str]) -> Output {
    let child = fastchat()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fastchat");
    tokio::time::timeout(RUN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("fastchat {args:?} did not finish within {RUN:?}"))
        .expect("wait for fastchat")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

struct System {
    _nats: NatsServer,
    send: Service,
    all: Service,
}

impl System {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let send = start_send(send_config(&nats.url())).await;
        let all = start_all(all_config(&nats.url())).await;
        Self {
            _nats: nats,
            send,
            all,
        }
    }

    fn send_addr(&self) -> String {
        self.send.addr.to_string()
    }

    fn all_addr(&self) -> String {
        self.all.endpoint()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_sequence_and_id() {
    let system = System::start().await;
    let addr = system.send_addr();
    let output = run(&[
        "--send-addr",
        &addr,
        "send",
        "--author",
        "ann",
        "hello",
        "world",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let line = stdout(&output);
    assert!(line.starts_with("stored #1 in general, id "), "{line}");

    let output = run(&[
        "--send-addr",
        &addr,
        "--json",
        "send",
        "--room",
        "dev",
        "--author",
        "bob",
        "--time-ms",
        "1700000000000",
        "hi dev",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let sent = &lines[0];
    assert_eq!(sent["type"], "sent");
    assert_eq!(sent["sequence"], 2);
    assert_eq!(sent["room"], "dev");
    assert_eq!(sent["author"], "bob");
    assert_eq!(sent["text"], "hi dev");
    assert_eq!(sent["client_time_ms"], 1_700_000_000_000_i64);
    assert_eq!(sent["duplicate"], false);
    assert!(
        sent["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_stored_once_and_reported_as_duplicate() {
    let system = System::start().await;
    let addr = system.send_addr();
    let send = |text: &'static str| {
        let addr = addr.clone();
        async move {
            run(&[
                "--send-addr",
                &addr,
                "--json",
                "send",
                "--author",
                "ann",
                "--id",
                "key-1",
                text,
            ])
            .await
        }
    };
    let first = send("once").await;
    assert!(first.status.success(), "{}", stderr(&first));
    let again = send("once").await;
    assert!(again.status.success(), "{}", stderr(&again));
    let (first, again) = (&json_lines(&first)[0], &json_lines(&again)[0]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["sequence"], again["sequence"]);

    // Human output says so too.
    let output = run(&[
        "--send-addr",
        &addr,
        "send",
        "--author",
        "ann",
        "--id",
        "key-1",
        "once",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("duplicate: already stored as #1 in general"),
        "{}",
        stdout(&output)
    );

    let history = run(&[
        "--all-addr",
        &system.all_addr(),
        "history",
        "--room",
        "general",
    ])
    .await;
    assert_eq!(stdout(&history).lines().count(), 1, "{}", stdout(&history));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_oldest_first() {
    let system = System::start().await;
    let mut client = v1_send(&system.send).await;
    for i in 1..=5 {
        client
            .send_message(message("dev", "ann", &format!("m{i}")))
            .await
            .expect("send");
    }
    client
        .send_message(message("other", "bob", "elsewhere"))
        .await
        .expect("send");
    let all = system.all_addr();

    // Text: the newest two, oldest first, then how to get the next page.
    let output = run(&[
        "--all-addr",
        &all,
        "history",
        "--room",
        "dev",
        "--limit",
        "2",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("[dev] #4 ") && lines[0].ends_with(" ann: m4"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("[dev] #5 ") && lines[1].ends_with(" ann: m5"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "-- older messages: fastchat history --room dev --limit 2 --before 4"
    );

    // JSON: walk every page with the printed `next_before`.
    let mut texts = Vec::new();
    let mut before: Option<u64> = None;
    for _ in 0..5 {
        let before_arg = before.map(|b| b.to_string());
        let mut args = vec![
            "--all-addr",
            all.as_str(),
            "--json",
            "history",
            "--room",
            "dev",
            "--limit",
            "2",
        ];
        if let Some(b) = &before_arg {
            args.extend(["--before", b.as_str()]);
        }
        let output = run(&args).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let lines = json_lines(&output);
        let (page_end, messages) = lines.split_last().expect("a page line");
        assert_eq!(page_end["type"], "page");
        assert_eq!(page_end["count"], messages.len());
        let mut page: Vec<String> = messages
            .iter()
            .map(|m| m["text"].as_str().expect("text").to_owned())
            .collect();
        page.append(&mut texts);
        texts = page;
        match page_end["next_before"].as_u64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5"]);

    let empty = run(&["--all-addr", &all, "history", "--room", "nobody"]).await;
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert_eq!(stdout(&empty), "(no messages in nobody)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_non_zero_naming_the_field() {
    let system = System::start().await;
    let send = system.send_addr();
    let output = run(&["--send-addr", &send, "send", "--author", "   ", "hi"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).is_empty(), "{output:?}");
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "one line: {error}");
    assert!(error.contains("invalid input: author"), "{error}");

    let output = run(&[
        "--send-addr",
        &send,
        "send",
        "--room",
        "no spaces",
        "--author",
        "ann",
        "hi",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("invalid input: room"),
        "{}",
        stderr(&output)
    );

    let output = run(&["--all-addr", &system.all_addr(), "history", "--room", "a.b"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("room"), "{}", stderr(&output));

    // Without --author (and without a token) the service refuses the empty
    // author; the error says how to give one.
    let output = run(&["--send-addr", &send, "send", "hi"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let error = stderr(&output);
    assert!(
        error.contains("invalid input: author") && error.contains("pass --author NAME"),
        "{error}"
    );

    // Usage errors are clap's (exit 2), before any call.
    let output = run(&["send", "--author", "ann"]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("<TEXT>"), "{}", stderr(&output));

    // Nothing was stored.
    let output = run(&[
        "--all-addr",
        &system.all_addr(),
        "history",
        "--room",
        "general",
    ])
    .await;
    assert_eq!(stdout(&output), "(no messages in general)\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_both_services_and_a_dead_address() {
    let system = System::start().await;
    // Addresses from the environment this time, one without a scheme.
    let output = tokio::time::timeout(
        RUN,
        fastchat()
            .arg("health")
            .env("FASTCHAT_SEND_ADDR", system.send_addr())
            .env("FASTCHAT_ALL_ADDR", system.all_addr())
            .output(),
    )
    .await
    .expect("health in time")
    .expect("run health");
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("send-service ") && lines[0].ends_with(" SERVING"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("all-messages-service ") && lines[1].ends_with(" SERVING"),
        "{text}"
    );

    let dead = format!("127.0.0.1:{}", free_port());
    let output = run(&[
        "--send-addr",
        &system.send_addr(),
        "--all-addr",
        &dead,
        "--json",
        "health",
    ])
    .await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines[0]["status"], "SERVING");
    assert_eq!(lines[1]["service"], "all-messages-service");
    assert_eq!(lines[1]["status"], "unreachable");
    assert!(
        stderr(&output).contains("not serving: all-messages-service"),
        "{}",
        stderr(&output)
    );

    // Other commands say which service they could not reach.
    let output = run(&["--send-addr", &dead, "send", "--author", "ann", "hi"]).await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    assert!(
        stderr(&output).starts_with(&format!(
            "fastchat: cannot reach send-service at http://{dead}: "
        )),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_addresses_name_the_service_that_is_missing() {
    let system = System::start().await;
    // Each address given for the other service.
    let (send_at_all, all_at_send) = (system.all_addr(), system.send_addr());

    // `send` at all-messages-service: one line naming the service expected
    // and where it usually is, not a bare UNIMPLEMENTED.
    let output = run(&["--send-addr", &send_at_all, "send", "--author", "ann", "hi"]).await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    assert!(stdout(&output).is_empty(), "{output:?}");
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "one line: {error}");
    assert!(
        error.starts_with(&format!("fastchat: no send-service at {send_at_all}: ")),
        "{error}"
    );
    for hint in [
        "UNIMPLEMENTED for fastchat.v1.SendMessageService",
        "http://127.0.0.1:50051",
        "--send-addr",
        "FASTCHAT_SEND_ADDR",
    ] {
        assert!(error.contains(hint), "{hint:?} in {error}");
    }
    // Certainly not stored, so no advice about retrying with --id.
    assert!(!error.contains("--id"), "{error}");

    // `history` and `tail` at send-service say the same of theirs.
    for args in [
        &["--all-addr", &all_at_send, "history", "--room", "general"][..],
        &["--all-addr", &all_at_send, "tail"][..],
    ] {
        let output = run(args).await;
        assert_eq!(output.status.code(), Some(69), "{args:?}: {output:?}");
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "{args:?}: {error}");
        for hint in [
            "no all-messages-service at ",
            "fastchat.v1.AllMessagesService",
            "http://127.0.0.1:50052",
            "--all-addr",
            "FASTCHAT_ALL_ADDR",
        ] {
            assert!(error.contains(hint), "{args:?}: {hint:?} in {error}");
        }
    }

    // `health` no longer calls either SERVING: each line says which service
    // is missing at that address.
    let output = run(&[
        "--send-addr",
        &send_at_all,
        "--all-addr",
        &all_at_send,
        "--json",
        "health",
    ])
    .await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, service, grpc, flag) in [
        (
            &lines[0],
            "send-service",
            "no fastchat.v1.SendMessageService here (NOT_FOUND)",
            "--send-addr",
        ),
        (
            &lines[1],
            "all-messages-service",
            "no fastchat.v1.AllMessagesService here (NOT_FOUND)",
            "--all-addr",
        ),
    ] {
        assert_eq!(line["service"], service, "{line}");
        assert_eq!(line["status"], "missing", "{line}");
        let error = line["error"].as_str().expect("an error");
        assert!(error.starts_with(grpc) && error.contains(flag), "{line}");
    }
    assert_eq!(
        stderr(&output),
        format!(
            "fastchat: not serving: send-service (missing at {send_at_all}), \
             all-messages-service (missing at http://{all_at_send})\n"
        )
    );

    // Text output too; and with one address right, only the other is named.
    let output = run(&[
        "--send-addr",
        &all_at_send,
        "--all-addr",
        &all_at_send,
        "health",
    ])
    .await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(" SERVING"), "{text}");
    assert!(
        lines[1].starts_with("all-messages-service ")
            && lines[1].contains(" missing: no fastchat.v1.AllMessagesService here"),
        "{text}"
    );
    assert_eq!(
        stderr(&output),
        format!("fastchat: not serving: all-messages-service (missing at http://{all_at_send})\n")
    );
}

/// all-messages-service on a listener we bound ourselves, so a new instance
/// can take over the same port.
struct AllOnPort {
    addr: SocketAddr,
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

impl AllOnPort {
    async fn start(nats_url: &str, listener: std::net::TcpListener) -> Self {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("local addr");
        let cancel = CancellationToken::new();
        let run = all_messages_service::run(all_config(nats_url), listener, cancel.clone());
        let handle = tokio::spawn(async move { run.await.map_err(|e| e.to_string()) });
        // Usable once ListMessages answers (the station is ready and the
        // live feed runs).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answered = async {
                let mut client = AllMessagesServiceClient::connect(format!("http://{addr}"))
                    .await
                    .ok()?;
                client
                    .list_messages(v1::ListMessagesRequest {
                        room: "general".into(),
                        before_sequence: 0,
                        limit: 1,
                    })
                    .await
                    .ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), answered)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "all-messages-service at {addr} not usable"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            addr,
            cancel,
            handle,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("stops within 15 s")
            .expect("no panic")
            .expect("clean stop");
    }
}

/// Binds `addr` again, retrying while the old socket lets go of it.
async fn bind_again(addr: SocketAddr) -> std::net::TcpListener {
    for _ in 0..50 {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("cannot bind {addr} again within 5 s");
}

/// A `fastchat tail` process whose stdout and stderr lines arrive on channels.
struct Tail {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    stderr_seen: Vec<String>,
}

impl Tail {
    fn spawn(args: &[&str]) -> Self {
        let child = fastchat()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fastchat tail");
        Self::from_child(child)
    }

    /// A tail already spawned with piped stdout and stderr.
    fn from_child(mut child: Child) -> Self {
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// The next stdout line as JSON.
    async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(LINE, self.stdout.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no tail line within {LINE:?}; stderr: {:?}",
                    self.stderr_so_far()
                )
            })
            .unwrap_or_else(|| panic!("tail ended; stderr: {:?}", self.stderr_so_far()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Waits for a stderr line containing `needle`.
    async fn stderr_contains(&mut self, needle: &str) -> String {
        if let Some(line) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + LINE;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no stderr line with {needle:?}: {:?}", self.stderr_seen)
                })
                .unwrap_or_else(|| {
                    panic!("stderr closed without {needle:?}: {:?}", self.stderr_seen)
                });
            self.stderr_seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn stderr_so_far(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        &self.stderr_seen
    }

    /// Ctrl-C, then the exit status and whatever stdout still held.
    async fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("tail exits within 10 s of Ctrl-C")
            .expect("wait for tail");
        let mut rest = Vec::new();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.stdout.recv()).await
        {
            rest.push(line);
        }
        (status, rest)
    }
}

fn lines(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_resumes_after_a_restart_printing_each_message_once() {
    let nats = NatsServer::start();
    let send = start_send(send_config(&nats.url())).await;
    let mut sender = v1_send(&send).await;
    let mut send_text = async |text: &str| {
        sender
            .send_message(message("general", "ann", text))
            .await
            .expect("send")
            .into_inner()
            .message
            .expect("stored message")
            .sequence
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let first = AllOnPort::start(&nats.url(), listener).await;
    let addr = first.addr;

    // History first…
    for i in 1..=3 {
        send_text(&format!("m{i}")).await;
    }
    let all_addr = addr.to_string();
    let mut tail = Tail::spawn(&[
        "--all-addr",
        &all_addr,
        "--json",
        "tail",
        "--room",
        "general",
    ]);
    let mut printed = Vec::new();
    for _ in 0..3 {
        printed.push(tail.next().await);
    }
    // …then live.
    for i in 4..=5 {
        send_text(&format!("m{i}")).await;
    }
    for _ in 0..2 {
        printed.push(tail.next().await);
    }

    // The instance goes away; messages keep being stored meanwhile.
    first.stop().await;
    tail.stderr_contains("lost all-messages-service").await;
    for i in 6..=7 {
        send_text(&format!("m{i}")).await;
    }
    // A new instance on the same port: tail finds it by itself.
    let second = AllOnPort::start(&nats.url(), bind_again(addr).await).await;
    for _ in 0..2 {
        printed.push(tail.next().await);
    }
    let resumed = tail.stderr_contains("resuming after sequence").await;
    assert!(resumed.contains("resuming after sequence 5"), "{resumed}");
    let last = send_text("m8").await;
    printed.push(tail.next().await);

    let (status, rest) = tail.interrupt().await;
    assert!(status.success(), "Ctrl-C ends tail with 0: {status:?}");
    assert!(rest.is_empty(), "nothing more was printed: {rest:?}");

    let texts: Vec<&str> = printed
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    let sequences: Vec<u64> = printed
        .iter()
        .map(|m| m["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>());
    assert!(
        printed
            .iter()
            .all(|m| m["type"] == "message" && m["room"] == "general")
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_text_lines_from_a_start_and_refuses_a_bad_cursor() {
    let system = System::start().await;
    let mut client = v1_send(&system.send).await;
    for (room, text) in [("a", "one"), ("b", "two"), ("a", "three")] {
        client
            .send_message(message(room, "ann", text))
            .await
            .expect("send");
    }
    let all = system.all_addr();
    let mut tail = Tail::spawn(&["--all-addr", &all, "tail", "--all", "--after", "1"]);
    for expected in ["[b] #2 ", "[a] #3 "] {
        let line = tokio::time::timeout(LINE, tail.stdout.recv())
            .await
            .expect("a line in time")
            .expect("tail running");
        assert!(line.starts_with(expected), "{line}");
    }
    let (status, rest) = tail.interrupt().await;
    assert!(status.success(), "{status:?}");
    assert!(rest.is_empty(), "{rest:?}");

    // A cursor beyond the newest message is refused: exit 1, not a retry loop.
    let output = run(&["--all-addr", &all, "tail", "--after", "1000"]).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).starts_with("fastchat: invalid input: "),
        "{}",
        stderr(&output)
    );
}

// ---------------------------------------------------------------------------
// fastchat token

/// A secret as `openssl rand -base64 48 > FILE` writes it: with a newline.
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ=";

/// The claims of a JWT, unverified.
fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url claims");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// fastchat-auth's verifier, configured as a service would be.
fn verifier(
    secret_file: &std::path::Path,
    jwt: impl FnOnce(&mut fastchat_auth::JwtConfig),
) -> fastchat_auth::Authenticator {
    let mut config = fastchat_auth::AuthConfig::default();
    config.jwt.hmac_secret_file = Some(secret_file.to_owned());
    jwt(&mut config.jwt);
    fastchat_auth::Authenticator::new(&config).expect("a usable auth config")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_prints_only_a_development_token_the_service_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let with_newline = dir.path().join("hmac.key");
    std::fs::write(&with_newline, format!("{SECRET}\n")).expect("write secret");
    let file = with_newline.to_str().expect("utf-8 path");
    let before = unix_now();
    let output = run(&[
        "token",
        "--secret-file",
        file,
        "--sub",
        "alice",
        "--rooms",
        "general,team-*=read,write;*=read",
        "--ttl",
        "1h",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    let token = printed.strip_suffix('\n').expect("one line");
    assert!(
        !token.contains(char::is_whitespace),
        "only the token: {printed:?}"
    );

    let claims = claims_of(token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["rooms"],
        serde_json::json!([
            {"rooms": ["general", "team-*"], "allow": ["read", "write"]},
            {"rooms": ["*"], "allow": ["read"]},
        ])
    );
    let exp = claims["exp"].as_u64().expect("exp");
    let iat = claims["iat"].as_u64().expect("iat");
    assert_eq!(exp - iat, 3600);
    assert!(iat >= before && iat <= unix_now(), "{claims}");
    assert!(
        claims.get("iss").is_none() && claims.get("aud").is_none(),
        "{claims}"
    );

    // Signed with the secret as the service reads it: the trailing newline
    // is not part of it.
    let secret = fastchat_auth::read_hmac_secret(&with_newline).expect("secret");
    assert_eq!(secret, SECRET.as_bytes());
    let without_newline = dir.path().join("hmac-no-newline.key");
    std::fs::write(&without_newline, SECRET).expect("write secret");
    for secret_file in [&with_newline, &without_newline] {
        let caller = verifier(secret_file, |_| {})
            .verify_at(token, std::time::SystemTime::now())
            .expect("the service's verifier accepts it");
        assert_eq!(caller.identity(), "alice");
        assert_eq!(caller.grants().len(), 2);
    }

    // stderr says what it is, and that it is for development.
    let note = stderr(&output);
    assert_eq!(note.lines().count(), 1, "{note}");
    assert!(
        note.starts_with("fastchat: development token for sub=alice"),
        "{note}"
    );
    assert!(note.contains("For development only"), "{note}");
    assert!(!note.contains(token), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_claims_match_the_services_jwt_settings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("hmac.key");
    std::fs::write(&key, format!("{SECRET}\r\n")).expect("write secret");
    let output = run(&[
        "--json",
        "token",
        "--secret-file",
        key.to_str().expect("utf-8"),
        "--sub",
        "bob",
        "--issuer",
        "fastchat-dev",
        "--audience",
        "fastchat",
        "--user-claim",
        "preferred_username",
        "--ttl",
        "90s",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim_end().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["preferred_username"], "bob");
    assert!(
        claims.get("sub").is_none() && claims.get("rooms").is_none(),
        "{claims}"
    );
    assert_eq!(claims["iss"], "fastchat-dev");
    assert_eq!(claims["aud"], "fastchat");
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        90
    );
    let caller = verifier(&key, |jwt| {
        jwt.issuer = Some("fastchat-dev".into());
        jwt.audience = Some("fastchat".into());
        jwt.user_claim = "preferred_username".into();
    })
    .verify_at(&token, std::time::SystemTime::now())
    .expect("accepted with the same settings");
    assert_eq!(caller.identity(), "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refuses_a_missing_or_short_secret_and_bad_grants() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.key");
    let missing = missing.to_str().expect("utf-8");
    let output = run(&["token", "--secret-file", missing, "--sub", "alice"]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stdout(&output).is_empty(), "{output:?}");
    assert!(
        stderr(&output).starts_with(&format!("fastchat: --secret-file: cannot read {missing}: ")),
        "{}",
        stderr(&output)
    );

    let short = dir.path().join("short.key");
    std::fs::write(&short, "too short\n").expect("write");
    let output = run(&[
        "token",
        "--secret-file",
        short.to_str().expect("utf-8"),
        "--sub",
        "alice",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stdout(&output).is_empty(), "{output:?}");
    assert!(
        stderr(&output).contains("holds 9 bytes"),
        "{}",
        stderr(&output)
    );

    let key = dir.path().join("hmac.key");
    std::fs::write(&key, SECRET).expect("write");
    let key = key.to_str().expect("utf-8");
    let output = run(&[
        "token",
        "--secret-file",
        key,
        "--sub",
        "alice",
        "--rooms",
        "general=admin",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("`admin` is not an operation"),
        "{}",
        stderr(&output)
    );
    let output = run(&[
        "token",
        "--secret-file",
        key,
        "--sub",
        "alice",
        "--ttl",
        "0s",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("--ttl must be above zero"),
        "{}",
        stderr(&output)
    );
}

// ---------------------------------------------------------------------------
// Tokens on calls, refusals with details (against the stand-in)

fn authorization(call: &fake::Call) -> Option<&str> {
    call.authorization.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_with_send_tail_and_history_but_not_health() {
    let fake = fake::Fake::start(fake::Transport::Plain).await;
    let addr = fake.addr.to_string();
    let calls = &fake.calls;

    // --token, on send: the author may be left out.
    let output = run(&[
        "--send-addr",
        &addr,
        "--json",
        "--token",
        "tok.en.1",
        "send",
        "hi",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(json_lines(&output)[0]["author"], "from-token");
    assert_eq!(
        authorization(&calls.of("SendMessage")[0]),
        Some("Bearer tok.en.1")
    );
    assert!(!stdout(&output).contains("tok.en.1"));

    // FASTCHAT_TOKEN, on history.
    let output = tokio::time::timeout(
        RUN,
        fastchat()
            .args(["--all-addr", &addr, "history", "--room", "dev"])
            .env("FASTCHAT_TOKEN", "tok.en.2")
            .output(),
    )
    .await
    .expect("in time")
    .expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        authorization(&calls.of("ListMessages")[0]),
        Some("Bearer tok.en.2")
    );

    // --token-file (with the newline `fastchat token >FILE` leaves), on
    // tail; it wins over FASTCHAT_TOKEN.
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok.en.3\n").expect("write");
    let token_file = token_file.to_str().expect("utf-8");
    let mut tail = {
        let mut child = fastchat();
        child
            .args([
                "--all-addr",
                &addr,
                "--json",
                "tail",
                "--room",
                "dev",
                "--token-file",
                token_file,
            ])
            .env("FASTCHAT_TOKEN", "tok.en.2")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Tail::from_child(child.spawn().expect("spawn tail"))
    };
    assert_eq!(tail.next().await["text"], "hello");
    let (status, _) = tail.interrupt().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        authorization(&calls.of("Subscribe")[0]),
        Some("Bearer tok.en.3")
    );

    // Both on the command line: a usage error, before any call, that does
    // not quote the token.
    let before = calls.all().len();
    let output = run(&[
        "--all-addr",
        &addr,
        "--token",
        "tok.en.4",
        "--token-file",
        token_file,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("exclude each other"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("tok.en.4"), "{}", stderr(&output));
    assert_eq!(calls.all().len(), before);

    // health: no token.
    let output = run(&[
        "--send-addr",
        &addr,
        "--all-addr",
        &addr,
        "--token",
        "tok.en.5",
        "health",
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let health = calls.of("Health");
    assert_eq!(health.len(), 2, "{health:?}");
    assert!(
        health.iter().all(|c| c.authorization.is_none()),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_explained_with_their_own_exit_statuses() {
    let fake = fake::Fake::start(fake::Transport::Plain).await;
    let addr = fake.addr.to_string();

    // PERMISSION_DENIED: the server's message, exit 77, the token redacted
    // where the server quoted it.
    let output = run(&[
        "--all-addr",
        &addr,
        "--token",
        "se.cr.et",
        "history",
        "--room",
        "forbidden",
    ])
    .await;
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    let error = stderr(&output);
    assert_eq!(
        error,
        "fastchat: all-messages-service denied the request: read on room `forbidden` is not \
         allowed for Bearer <redacted>\n"
    );

    // RATE_LIMITED with RetryInfo: when to retry, exit 75.
    let output = run(&["--send-addr", &addr, "--token", "t.o.k", "send", "limit"]).await;
    assert_eq!(output.status.code(), Some(75), "{output:?}");
    assert_eq!(
        stderr(&output),
        "fastchat: send-service is limiting the rate of requests: too many messages; slow \
         down (retry in 2s)\n"
    );

    // tail, TOKEN_EXPIRED at subscribing: stops at once with the hint; no
    // second attempt.
    let started = std::time::Instant::now();
    let output = run(&[
        "--all-addr",
        &addr,
        "--token",
        "t.o.k",
        "tail",
        "--room",
        "expired",
    ])
    .await;
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    assert_eq!(
        stderr(&output),
        "fastchat: all-messages-service refused the token: the token expired at \
         2026-01-01T00:00:00Z; get a new one (get a fresh token and set --token, --token-file \
         or FASTCHAT_TOKEN)\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fake.calls.of("Subscribe").len(), 1);

    // tail, TOKEN_EXPIRED after a message: stops, saying where to resume.
    let output = run(&[
        "--all-addr",
        &addr,
        "--json",
        "--token",
        "t.o.k",
        "tail",
        "--room",
        "expires",
    ])
    .await;
    assert_eq!(output.status.code(), Some(77), "{output:?}");
    assert_eq!(json_lines(&output)[0]["text"], "hello");
    let error = stderr(&output);
    assert!(
        error.starts_with("fastchat: all-messages-service refused the token: ")
            && error.ends_with(" (resume with tail --after 1)\n"),
        "{error}"
    );
    assert_eq!(fake.calls.of("Subscribe").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_waits_as_long_as_the_service_asks() {
    let fake = fake::Fake::start(fake::Transport::Plain).await;
    let addr = fake.addr.to_string();
    let mut tail = Tail::spawn(&["--all-addr", &addr, "--json", "tail", "--room", "limited"]);
    let note = tail
        .stderr_contains("refused the subscription for now")
        .await;
    assert!(
        note.contains(
            "(RESOURCE_EXHAUSTED: too many subscriptions opened; slow down); retrying in 1s, \
             as the service asked"
        ),
        "{note}"
    );
    assert_eq!(tail.next().await["text"], "hello");
    let (status, _) = tail.interrupt().await;
    assert!(status.success(), "{status:?}");
    let subscribes = fake.calls.of("Subscribe");
    assert_eq!(subscribes.len(), 2, "{subscribes:?}");
    let waited = subscribes[1].at - subscribes[0].at;
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
}

// ---------------------------------------------------------------------------
// TLS

/// Writes `contents` to `name` in `dir`; its path as text.
fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_addresses_use_tls_trusting_the_ca_file() {
    let pki = fake::Pki::new("fastchat test CA");
    let server = pki.server();
    let fake = fake::Fake::start(fake::Transport::Tls {
        cert: server.cert,
        key: server.key,
    })
    .await;
    let https = format!("https://127.0.0.1:{}", fake.addr.port());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = write(&dir, "ca.pem", &pki.ca_pem);

    // With the CA: send (with its token), history and health work.
    let output = run(&[
        "--send-addr",
        &https,
        "--ca-file",
        &ca_file,
        "--token",
        "t.l.s",
        "send",
        "--author",
        "ann",
        "over tls",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("stored #1 in general"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        authorization(&fake.calls.of("SendMessage")[0]),
        Some("Bearer t.l.s")
    );
    let output = tokio::time::timeout(
        RUN,
        fastchat()
            .args(["--send-addr", &https, "--all-addr", &https, "health"])
            .env("FASTCHAT_CA_FILE", &ca_file)
            .output(),
    )
    .await
    .expect("in time")
    .expect("run");
    assert!(output.status.success(), "{output:?}");

    // Without it, the system's roots do not know the CA: unreachable (69),
    // saying what to pass.
    let output = run(&["--send-addr", &https, "send", "--author", "ann", "hi"]).await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.starts_with(&format!("fastchat: cannot reach send-service at {https}: ")),
        "{error}"
    );
    assert!(
        error.contains(
            "the server's certificate is not signed by a CA this system trusts; pass --ca-file FILE"
        ),
        "{error}"
    );

    // Another CA: named as the one that did not sign it.
    let other = write(&dir, "other.pem", &fake::Pki::new("another CA").ca_pem);
    let output = run(&[
        "--all-addr",
        &https,
        "--ca-file",
        &other,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    assert!(
        stderr(&output).contains(&format!("not signed by the CA in --ca-file {other}")),
        "{}",
        stderr(&output)
    );

    // A file that is no certificate: a usage error before any connection.
    let junk = write(&dir, "junk.pem", "hello\n");
    let output = run(&[
        "--all-addr",
        &https,
        "--ca-file",
        &junk,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("holds no PEM certificate"),
        "{}",
        stderr(&output)
    );

    // http:// to a TLS server stays plaintext, and so fails.
    let plain = format!("http://127.0.0.1:{}", fake.addr.port());
    let output = run(&[
        "--send-addr",
        &plain,
        "--ca-file",
        &ca_file,
        "--timeout",
        "3s",
        "send",
        "--author",
        "ann",
        "hi",
    ])
    .await;
    assert_ne!(output.status.code(), Some(0), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = fake::Pki::new("fastchat test CA");
    let server = pki.server();
    let fake = fake::Fake::start(fake::Transport::MutualTls {
        cert: server.cert,
        key: server.key,
        client_ca: pki.ca_pem.clone(),
    })
    .await;
    let https = format!("https://localhost:{}", fake.addr.port());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = write(&dir, "ca.pem", &pki.ca_pem);
    let client = pki.client();
    let cert_file = write(&dir, "client.pem", &client.cert);
    let key_file = write(&dir, "client.key", &client.key);

    let output = run(&[
        "--all-addr",
        &https,
        "--ca-file",
        &ca_file,
        "--cert-file",
        &cert_file,
        "--key-file",
        &key_file,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("[dev] #1 "),
        "{}",
        stdout(&output)
    );

    // Without a client certificate the server refuses; the error says what
    // to pass.
    let output = run(&[
        "--all-addr",
        &https,
        "--ca-file",
        &ca_file,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("--cert-file and --key-file"), "{error}");

    // tail too: it stops instead of retrying for ever.
    let output = run(&["--all-addr", &https, "--ca-file", &ca_file, "tail"]).await;
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let error = stderr(&output);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("--cert-file and --key-file"), "{error}");

    // A key that is not the certificate's: a usage error.
    let other_key = write(&dir, "other.key", &pki.client().key);
    let output = run(&[
        "--all-addr",
        &https,
        "--ca-file",
        &ca_file,
        "--cert-file",
        &cert_file,
        "--key-file",
        &other_key,
        "history",
        "--room",
        "dev",
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr(&output).contains("the TLS files cannot be used"),
        "{}",
        stderr(&output)
    );
}
