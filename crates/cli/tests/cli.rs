//! The real `fastchat` binary, run as a process, against both services
//! in-process and a real nats-server: send, duplicates, history paging, bad
//! input, health, addresses of the wrong service, and `tail` resuming after
//! all-messages-service restarts on the same port.

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
