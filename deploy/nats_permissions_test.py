"""Smoke test of the NATS per-service accounts and permissions in deploy/k8s/base/nats/auth.conf.

Run by deploy/check.sh. Starts one nats-server on a free loopback port with JetStream in
a temporary directory, includes the real auth.conf, and gives it what a deployment gives
it: only bcrypt hashes (made here with fresh random passwords), in its environment, in
double quotes. Then, as each service's user and with that service's inbox prefix, does
the JetStream operations that service needs (they must succeed) and some it must not do
(they must be refused). Prints one PASS/FAIL line per step; exits 1 on any failure.
tests/tests/broker_auth.rs covers the same ground through the services themselves, plus
the connection and subscription limits.

Usage: python nats_permissions_test.py NATS_SERVER_BINARY AUTH_CONF
"""

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import bcrypt
import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig, StorageType

SEND_PASSWORD = "p" + secrets.token_hex(16)
ALL_MESSAGES_PASSWORD = "p" + secrets.token_hex(16)
# nats.inbox_prefix of each service (its default).
SEND_INBOX = "_INBOX.send"
ALL_INBOX = "_INBOX.all"
STREAM = StreamConfig(
    name="chat",
    subjects=["chat.messages.>"],
    storage=StorageType.FILE,
    num_replicas=1,
    duplicate_window=120.0,
    max_age=7 * 24 * 3600.0,
    allow_direct=True,
)

failures = 0


def report(ok: bool, what: str, detail: str = "") -> None:
    global failures
    if not ok:
        failures += 1
    print(f"  {'PASS' if ok else 'FAIL'} {what}{(': ' + detail) if detail else ''}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def expect_ok(what, coro):
    try:
        result = await asyncio.wait_for(coro, 5)
        report(True, what)
        return result
    except Exception as exc:  # noqa: BLE001 - any error is a failure here
        report(False, what, f"{type(exc).__name__}: {exc}")
        return None


async def expect_denied(what, subject, violations, coro):
    """The server must report a permissions violation for `subject`, and the call fail."""
    violations.clear()
    try:
        await asyncio.wait_for(coro, 3)
        failed = False
    except Exception:  # noqa: BLE001 - timeouts, no responders, JetStream errors
        failed = True
    # nats-py lower-cases the server's error text.
    def reported():
        return any(subject.lower() in v.lower() for v in violations)

    for _ in range(20):
        if reported():
            break
        await asyncio.sleep(0.05)
    seen = reported()
    detail = "" if seen and failed else f"call failed={failed}, violation reported={seen}"
    report(seen and failed, what, detail)


async def expect_sub_denied(what, nc, subject, violations):
    """A SUB the server must refuse (it reports a violation; nothing is delivered)."""
    violations.clear()
    sub = await nc.subscribe(subject)
    await nc.flush(timeout=2)
    for _ in range(40):
        if any(subject.lower() in v.lower() for v in violations):
            break
        await asyncio.sleep(0.05)
    seen = any(subject.lower() in v.lower() for v in violations)
    report(seen, what, "" if seen else "no violation reported")
    return sub


async def connect(port, user, password, inbox, violations):
    async def error_cb(exc):
        violations.append(str(exc))

    return await nats.connect(
        f"nats://127.0.0.1:{port}",
        user=user,
        password=password,
        inbox_prefix=inbox.encode(),
        error_cb=error_cb,
        allow_reconnect=False,
        connect_timeout=3,
    )


async def run(port: int) -> None:
    send_violations: list = []
    am_violations: list = []
    send = await connect(port, "send-service", SEND_PASSWORD, SEND_INBOX, send_violations)
    am = await connect(port, "all-messages-service", ALL_MESSAGES_PASSWORD, ALL_INBOX,
                       am_violations)
    send_js = send.jetstream(timeout=3)
    am_js = am.jetstream(timeout=3)
    # For requests the server drops: they can only time out.
    send_denied = send.jetstream(timeout=1)
    am_denied = am.jetstream(timeout=1)

    print("send-service (account SEND, imports from STATION):")
    await expect_ok("create station chat", send_js.add_stream(STREAM))
    ack = await expect_ok(
        "publish chat.messages.general and await the ack",
        send_js.publish("chat.messages.general", b"hello", headers={"Nats-Msg-Id": "m-1"}),
    )
    dup = await expect_ok(
        "publish the same Nats-Msg-Id again",
        send_js.publish("chat.messages.general", b"hello", headers={"Nats-Msg-Id": "m-1"}),
    )
    report(dup is not None and dup.duplicate, "second publish is flagged duplicate")
    await expect_ok("stream info", send_js.stream_info("chat"))
    if ack is not None:
        msg = await expect_ok("direct get", send_js.get_msg("chat", seq=ack.seq, direct=True))
        report(msg is not None and msg.data == b"hello", "direct get returns the message")
    await expect_denied(
        "cannot read by $JS.API.STREAM.MSG.GET (direct get only)",
        "$JS.API.STREAM.MSG.GET.chat",
        send_violations,
        send_denied.get_msg("chat", seq=1),
    )
    await expect_denied(
        "cannot ask account info",
        "$JS.API.INFO",
        send_violations,
        send_denied.account_info(),
    )
    await expect_denied(
        "cannot create a consumer",
        "$JS.API.CONSUMER.CREATE.chat",
        send_violations,
        send_denied.subscribe("chat.messages.>", stream="chat", ordered_consumer=True),
    )
    await expect_denied(
        "cannot delete the station",
        "$JS.API.STREAM.DELETE.chat",
        send_violations,
        send_denied.delete_stream("chat"),
    )
    await expect_denied(
        "cannot list streams",
        "$JS.API.STREAM.LIST",
        send_violations,
        send_denied.streams_info(),
    )
    await expect_sub_denied("cannot subscribe to all-messages-service's replies",
                            send, ALL_INBOX + ".>", send_violations)
    await expect_sub_denied("cannot subscribe to _INBOX.>", send, "_INBOX.>", send_violations)
    await expect_sub_denied("cannot subscribe to the station's subjects", send,
                            "chat.messages.>", send_violations)

    print("all-messages-service (account STATION):")
    await expect_ok("create station chat (idempotent, same definition)", am_js.add_stream(STREAM))
    await expect_ok("stream info", am_js.stream_info("chat"))
    await expect_ok("stream info with a subjects filter",
                    am_js.stream_info("chat", subjects_filter="chat.messages.>"))
    sub = await expect_ok(
        "ordered push consumer on chat.messages.> ($JS.API.CONSUMER.CREATE.chat)",
        am_js.subscribe("chat.messages.>", stream="chat", ordered_consumer=True),
    )
    if sub is not None:
        msg = await expect_ok("receive the stored message", sub.next_msg(timeout=3))
        report(msg is not None and msg.data == b"hello", "message payload matches")
        await expect_ok("unsubscribe", sub.unsubscribe())
    # An unnamed ephemeral pull consumer, as broker-client makes one (nats-py's
    # pull_subscribe would name it, and named creates are denied).
    info = await expect_ok(
        "ephemeral pull consumer ($JS.API.CONSUMER.CREATE.chat)",
        am_js._jsm.add_consumer("chat", ConsumerConfig(
            filter_subject="chat.messages.>", ack_policy=AckPolicy.NONE,
            mem_storage=True, num_replicas=1, inactive_threshold=30.0)),
    )
    if info is not None:
        psub = await expect_ok("bind to it",
                               am_js.pull_subscribe_bind(consumer=info.name, stream="chat"))
        if psub is not None:
            msgs = await expect_ok("fetch (MSG.NEXT)", psub.fetch(1, timeout=3))
            report(bool(msgs), "fetched one message")
        await expect_ok("delete its consumer", am_js.delete_consumer("chat", info.name))
    # History as broker-client reads it: a batched direct get (ADR-31), answered with the
    # messages and an end-of-batch status on its own inbox.
    async def batch_get():
        inbox = ALL_INBOX + ".batch"
        sub = await am.subscribe(inbox)
        await am.publish("$JS.API.DIRECT.GET.chat", json.dumps(
            {"seq": 1, "next_by_subj": "chat.messages.>", "batch": 10}).encode(), reply=inbox)
        first = await sub.next_msg(timeout=3)
        await sub.unsubscribe()
        return first
    first = await expect_ok("batched direct get ($JS.API.DIRECT.GET.chat)", batch_get())
    leader = await expect_ok("a message from the leader ($JS.API.STREAM.MSG.GET.chat)",
                             am_js.get_msg("chat", seq=1))
    report(leader is not None and leader.data == b"hello", "the leader's copy matches")
    report(first is not None and first.data == b"hello"
           and (first.headers or {}).get("Nats-Num-Pending") is not None,
           "the batch holds the stored message with its pending count")
    await expect_denied(
        "cannot create a durable consumer ($JS.API.CONSUMER.DURABLE.CREATE)",
        "$JS.API.CONSUMER.DURABLE.CREATE.chat.spy",
        am_violations,
        am_denied._jsm.add_consumer("chat", ConsumerConfig(durable_name="spy")),
    )
    await expect_denied(
        "cannot create a named (or durable) consumer ($JS.API.CONSUMER.CREATE.chat.<name>)",
        "$JS.API.CONSUMER.CREATE.chat.spy",
        am_violations,
        am_denied._jsm.add_consumer("chat", ConsumerConfig(name="spy", durable_name="spy")),
    )
    try:
        reply = await am.request(
            "$JS.API.CONSUMER.CREATE.chat",
            json.dumps({"stream_name": "chat", "config": {"durable_name": "spy",
                                                          "ack_policy": "explicit"}}).encode(),
            timeout=3,
        )
        answer = json.loads(reply.data)
        report("error" in answer, "the ephemeral create subject refuses a durable name",
               "" if "error" in answer else f"created: {answer}")
    except Exception as exc:  # noqa: BLE001
        report(False, "the ephemeral create subject refuses a durable name",
               f"{type(exc).__name__}: {exc}")
    await expect_denied(
        "cannot delete the station",
        "$JS.API.STREAM.DELETE.chat",
        am_violations,
        am_denied.delete_stream("chat"),
    )
    await expect_denied(
        "cannot create another stream",
        "$JS.API.STREAM.CREATE.other",
        am_violations,
        am_denied.add_stream(StreamConfig(name="other", subjects=["other.>"])),
    )

    async def core_publish():
        await am.publish("chat.messages.general", b"forged")
        await am.flush(timeout=2)
        for _ in range(20):
            if any("chat.messages.general" in v.lower() for v in am_violations):
                raise PermissionError("refused")
            await asyncio.sleep(0.05)

    await expect_denied(
        "cannot publish to chat.messages.> (core)",
        "chat.messages.general",
        am_violations,
        core_publish(),
    )
    await expect_denied(
        "cannot publish to chat.messages.> (JetStream)",
        "chat.messages.general",
        am_violations,
        am_denied.publish("chat.messages.general", b"forged"),
    )
    await expect_sub_denied("cannot subscribe to send-service's replies",
                            am, SEND_INBOX + ".>", am_violations)
    await expect_sub_denied("cannot subscribe to _INBOX.>", am, "_INBOX.>", am_violations)
    info = await send_js.stream_info("chat")
    report(info.state.messages == 1, "station still holds exactly one message",
           f"holds {info.state.messages}")

    print("anonymous / wrong password:")
    async def quiet(_exc):
        pass

    async def refused(what, **kwargs):
        try:
            nc = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False,
                                    connect_timeout=2, error_cb=quiet, **kwargs)
            await nc.close()
            report(False, what, "was accepted")
        except Exception:  # noqa: BLE001
            report(True, what)

    await refused("connection without credentials is refused")
    await refused("wrong password is refused", user="send-service", password="pWrong")
    await refused("the other service's password is refused", user="send-service",
                  password=ALL_MESSAGES_PASSWORD)

    await send.close()
    await am.close()


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    server, auth_conf = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="fastchat-nats-perm-")
    proc = None
    try:
        port = free_port()
        shutil.copy(auth_conf, os.path.join(tmp, "auth.conf"))
        conf = os.path.join(tmp, "nats.conf")
        with open(conf, "w") as f:
            f.write(
                f"listen: 127.0.0.1:{port}\n"
                f"jetstream {{ store_dir: \"{tmp}/js\", max_file_store: 64MB, max_memory_store: 16MB }}\n"
                "include ./auth.conf\n"
            )
        # What the Secret / compose .env give the broker: hashes in double quotes.
        def hashed(password):
            return '"' + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode() + '"'

        env = {k: v for k, v in os.environ.items() if not k.endswith("_PASSWORD")}
        env.update(SEND_SERVICE_PASSWORD_BCRYPT=hashed(SEND_PASSWORD),
                   ALL_MESSAGES_SERVICE_PASSWORD_BCRYPT=hashed(ALL_MESSAGES_PASSWORD))
        log = open(os.path.join(tmp, "nats.log"), "w")
        proc = subprocess.Popen([server, "-c", conf], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(open(os.path.join(tmp, "nats.log")).read(), file=sys.stderr)
                    print("  FAIL nats-server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        asyncio.run(asyncio.wait_for(run(port), 60))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
