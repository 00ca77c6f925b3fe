// Browser test of the chat page: headless Debian Chromium (playwright-core)
// against the real services, which it starts itself: a nats-server with
// JetStream, two send-services (one with the test's own rate limit) and an
// all-messages-service (heartbeats every 2 s) on free loopback ports.
//
//   npm run build && npm run test:browser
//
// Environment: NATS_SERVER_BIN (default <repo>/target/tools/nats/bin/nats-server),
// SEND_SERVICE_BIN / ALL_MESSAGES_SERVICE_BIN (default <repo>/target/debug/…),
// CHROMIUM_BIN (default /usr/bin/chromium). A missing one fails the run and
// says how to get it. Screenshots and service logs go to <repo>/target/browser/;
// UPDATE_SCREENSHOT=1 also writes web/screenshot.png (else it is left alone).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const repo = path.resolve(web, "..");
const artifacts = path.join(repo, "target", "browser");
const updateScreenshot = process.env.UPDATE_SCREENSHOT === "1";
const HEARTBEAT_MS = 2000;

// ---------------------------------------------------------------- processes

const children = new Set();
function killAll() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function start(name, bin, args, env) {
  const log = await open(path.join(artifacts, "logs", `${name}.log`), "a");
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", log.fd, log.fd] });
  children.add(child);
  child.exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      children.delete(child);
      void log.close();
      resolve({ code, signal });
    });
  });
  child.once("error", () => {});
  return child;
}

async function stop(child, signal = "SIGTERM") {
  if (!children.has(child)) return;
  child.kill(signal);
  const t = setTimeout(() => child.kill("SIGKILL"), 10000);
  await child.exited;
  clearTimeout(t);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 30000, child) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (child && !children.has(child)) {
      const { code, signal } = await child.exited;
      throw new Error(`${what}: the process exited (${code ?? signal}); see ${artifacts}/logs`);
    }
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last: ${last.message ?? last})` : ""}`);
}

async function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

// ---------------------------------------------------------------- backends

let rpc; // test/support/rpc.ts, bundled
const secret = randomBytes(48);
let backend; // { sendUrl, allUrl, limitedSendUrl, restartAll(), close() }

async function loadRpc() {
  const out = path.join(artifacts, ".build", "rpc.mjs");
  await build({
    entryPoints: [path.join(web, "test", "support", "rpc.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    packages: "external",
    outfile: out,
    logLevel: "warning",
    absWorkingDir: web,
  });
  // Resolve its imports from web/node_modules.
  const dest = path.join(web, "node_modules", ".fastchat-test-rpc.mjs");
  await copyFile(out, dest);
  return import(pathToFileURL(dest).href);
}

/** Everything the run needs, checked before anything starts; a missing one fails it. */
function prerequisites() {
  const bins = {
    chromium: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    nats: process.env.NATS_SERVER_BIN || path.join(repo, "target", "tools", "nats", "bin", "nats-server"),
    send: process.env.SEND_SERVICE_BIN || path.join(repo, "target", "debug", "send-service"),
    all: process.env.ALL_MESSAGES_SERVICE_BIN || path.join(repo, "target", "debug", "all-messages-service"),
  };
  const missing = [];
  const need = (file, what, how) => {
    if (!existsSync(file)) missing.push(`- ${what} not found at ${file}: ${how}`);
  };
  need(
    bins.chromium,
    "Chromium",
    "install Debian's package as root, `apt-get update && apt-get install -y chromium` (or set CHROMIUM_BIN; `npx playwright install` cannot work here)",
  );
  need(bins.nats, "nats-server", "run `make setup` in the repository (or set NATS_SERVER_BIN)");
  const cargo = "run `cargo build --workspace --bins` in the repository";
  need(bins.send, "send-service", `${cargo} (or set SEND_SERVICE_BIN)`);
  need(bins.all, "all-messages-service", `${cargo} (or set ALL_MESSAGES_SERVICE_BIN)`);
  need(path.join(web, "dist", "index.html"), "the built page", "run `make web` in the repository, or `npm ci && npm run build` in web/");
  if (missing.length) throw new Error(`the browser test cannot run:\n${missing.join("\n")}`);
  return bins;
}

async function servicesBackend(bins) {
  const work = await mkdtemp(path.join(tmpdir(), "fastchat-web-test-"));
  const secretFile = path.join(work, "hmac-secret");
  await writeFile(secretFile, secret, { mode: 0o600 });
  const [natsPort, sendPort, allPort, limitedPort, sendMetrics, allMetrics, limitedMetrics] = await Promise.all(
    [1, 2, 3, 4, 5, 6, 7].map(() => freePort()),
  );
  const natsChild = await start("nats-server", bins.nats, ["-a", "127.0.0.1", "-p", String(natsPort), "-js", "-sd", path.join(work, "js")], {});
  await until("nats-server listening", () => portOpen(natsPort), 15000, natsChild);
  const sendUrl = `http://127.0.0.1:${sendPort}`;
  const allUrl = `http://127.0.0.1:${allPort}`;
  const limitedSendUrl = `http://127.0.0.1:${limitedPort}`;
  const common = {
    FASTCHAT_NATS__URL: `nats://127.0.0.1:${natsPort}`,
    FASTCHAT_AUTH__JWT__HMAC_SECRET_FILE: secretFile,
    FASTCHAT_STATION__MAX_BYTES: "67108864",
    FASTCHAT_STATION__STORAGE: "file",
    RUST_LOG: process.env.RUST_LOG || "info,async_nats=warn",
  };
  const sendEnv = (port, metrics, perSecond, burst) => ({
    ...common,
    FASTCHAT_GRPC__LISTEN: `127.0.0.1:${port}`,
    FASTCHAT_METRICS__LISTEN: `127.0.0.1:${metrics}`,
    FASTCHAT_WEB__ALLOWED_ORIGINS: JSON.stringify([allUrl]),
    FASTCHAT_LIMITS__SEND_PER_SECOND: String(perSecond),
    FASTCHAT_LIMITS__SEND_BURST: String(burst),
  });
  const allEnv = {
    ...common,
    FASTCHAT_GRPC__LISTEN: `127.0.0.1:${allPort}`,
    FASTCHAT_METRICS__LISTEN: `127.0.0.1:${allMetrics}`,
    FASTCHAT_WEB__STATIC_DIR: path.join(web, "dist"),
    FASTCHAT_WEB__SEND_URL: sendUrl,
    FASTCHAT_SUBSCRIPTIONS__HEARTBEAT_INTERVAL: `${HEARTBEAT_MS / 1000}s`,
  };
  const serving = (port) => async () => {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    return res.ok && /^fastchat_serving\{[^}]*\} 1$/m.test(await res.text());
  };
  const sendChild = await start("send-service", bins.send, [], sendEnv(sendPort, sendMetrics, 1000, 1000));
  // The same service with a limit the rate-limit scenario can reach: one a second.
  const limitedChild = await start("send-service-limited", bins.send, [], sendEnv(limitedPort, limitedMetrics, 1, 1));
  let allChild;
  const startAll = async () => {
    allChild = await start("all-messages-service", bins.all, [], allEnv);
    await until("all-messages-service serving (metrics fastchat_serving 1)", serving(allMetrics), 30000, allChild);
    await until(
      "all-messages-service serving the page at / (web.static_dir)",
      async () => (await fetch(`${allUrl}/`)).ok,
      10000,
      allChild,
    );
  };
  await Promise.all([
    until("send-service serving (metrics fastchat_serving 1)", serving(sendMetrics), 30000, sendChild),
    until("rate-limited send-service serving (metrics fastchat_serving 1)", serving(limitedMetrics), 30000, limitedChild),
    startAll(),
  ]);
  const cfg = await (await fetch(`${allUrl}/web-config.json`)).json();
  assert.equal(cfg.send_url.replace(/\/$/, ""), sendUrl, "web-config.json send_url");
  return {
    sendUrl,
    allUrl,
    limitedSendUrl,
    async restartAll(downMs) {
      await stop(allChild, "SIGKILL");
      await sleep(downMs);
      await startAll();
    },
    async close() {
      await Promise.all([stop(allChild), stop(sendChild), stop(limitedChild)]);
      await stop(natsChild);
      await rm(work, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- browser

let chromium;
let browser;

const token = (sub, grants, ttlSeconds) => rpc.mintToken(secret, sub, grants, ttlSeconds);
const everything = [{ rooms: ["*"], allow: ["read", "write"] }];

/** A new browser context on the page; `query` (e.g. "?send=…") goes before the token fragment. */
async function openPage(sub, grants, viewport = { width: 1000, height: 640 }, { ttlSeconds, live = true, query = "" } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${sub} page error]`, e.message));
  page.on("crash", () => console.error(`[${sub} page crashed]`));
  // The page's own console and its failed requests, kept for a failure's report.
  page.journal = [];
  const note = (line) => {
    page.journal.push(`${new Date().toISOString()} ${line}`);
    if (page.journal.length > 200) page.journal.shift();
  };
  page.on("console", (m) => note(`console.${m.type()}: ${m.text()}`));
  page.on("requestfailed", (r) => note(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    if (r.status() >= 400 || r.url().includes("/fastchat.v1.")) note(`response ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.subscribes = [];
  page.on("request", (req) => {
    if (req.url().endsWith("/fastchat.v1.AllMessagesService/Subscribe")) {
      const body = req.postDataBuffer();
      if (body) page.subscribes.push(rpc.decodeSubscribe(new Uint8Array(body)));
    }
  });
  await page.goto(`${backend.allUrl}/${query}#token=${grants ? token(sub, grants, ttlSeconds) : ""}`);
  if (live) await waitLive(page);
  return page;
}

async function waitLive(page, timeout = 20000) {
  try {
    await page.waitForSelector('#status[data-state="live"]', { timeout });
  } catch (e) {
    throw new Error(`${e.message}\n${await report(page)}`);
  }
}

/** What a failed wait saw: the page's status and error, its journal, the services' newest log lines. */
async function report(page) {
  const lines = [];
  try {
    const seen = await page.evaluate(() => ({
      url: location.href.replace(/#.*/, "#…"),
      status: `${document.getElementById("status")?.dataset.state}: ${document.getElementById("status")?.textContent}`,
      error: document.getElementById("error")?.hidden ? "" : document.getElementById("error-text")?.textContent,
      messages: document.querySelectorAll("#message-list li[data-sequence]").length,
    }));
    lines.push(`page ${seen.url}: status ${seen.status}; error banner: ${seen.error || "(none)"}; ${seen.messages} messages shown`);
  } catch (e) {
    lines.push(`page not readable: ${e.message}`);
  }
  lines.push(`subscribes sent: ${JSON.stringify(page.subscribes ?? [])}`);
  lines.push("page journal:", ...(page.journal ?? []).slice(-40).map((l) => `  ${l}`));
  await shot(page, `failed-${Date.now()}`).catch(() => {});
  for (const name of ["all-messages-service", "send-service"]) {
    const text = await readFile(path.join(artifacts, "logs", `${name}.log`), "utf8").catch(() => "");
    lines.push(`${name}.log, last lines:`, ...text.trimEnd().split("\n").slice(-25).map((l) => `  ${l}`));
  }
  return lines.join("\n");
}

/** The data-sequence values shown, as numbers, in page order. */
async function shownSequences(page) {
  return page.$$eval("#message-list li[data-sequence]", (els) => els.map((e) => Number(e.dataset.sequence)));
}

function assertStrictlyIncreasing(seqs, what) {
  for (let i = 1; i < seqs.length; i++) {
    assert.ok(seqs[i] > seqs[i - 1], `${what}: sequences not strictly increasing at ${i}: ${seqs[i - 1]} then ${seqs[i]}`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`) });
}

async function sendFromPage(page, text) {
  await page.fill("#composer", text);
  await page.press("#composer", "Enter");
}

async function waitText(page, text, timeout = 15000) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#message-list li[data-sequence] .text")].some((e) => e.textContent === t),
    text,
    { timeout },
  );
}

/** How many messages with this text are stored in the room (real ListMessages). */
async function storedCount(room, text) {
  const api = rpc.clients(backend.sendUrl, backend.allUrl, token("checker", everything));
  return (await api.list(room)).messages.filter((m) => m.text === text).length;
}

async function shownCount(page, text) {
  return page.$$eval("#message-list li[data-sequence] .text", (els, t) => els.filter((e) => e.textContent === t).length, text);
}

before(async () => {
  const bins = prerequisites();
  await rm(path.join(artifacts, "logs"), { recursive: true, force: true });
  await mkdir(path.join(artifacts, "logs"), { recursive: true });
  rpc = await loadRpc();
  ({ chromium } = await import("playwright-core"));
  backend = await servicesBackend(bins);
  browser = await chromium.launch({
    executablePath: bins.chromium,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      // Containers often give /dev/shm 64 MB, too little for Chromium's renderers.
      "--disable-dev-shm-usage",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  console.log(`chromium ${browser.version()} (${bins.chromium})`);
});

after(async () => {
  await browser?.close().catch(() => {});
  await backend?.close().catch(() => {});
  await rm(path.join(web, "node_modules", ".fastchat-test-rpc.mjs"), { force: true });
  killAll();
});

// ---------------------------------------------------------------- scenarios

let alice;
let bob;

test("two users in one room see each other's messages", async () => {
  alice = await openPage("alice", everything);
  bob = await openPage("bob", everything, { width: 390, height: 720 });
  assert.match(await alice.textContent("#identity"), /alice/);
  await sendFromPage(alice, "hello from alice");
  await waitText(bob, "hello from alice");
  await sendFromPage(bob, "hi alice, bob here\nsecond line");
  await waitText(alice, "hi alice, bob here\nsecond line");
  await sendFromPage(alice, "the page resumes where it left off after a reload");
  await waitText(bob, "the page resumes where it left off after a reload");
  await sendFromPage(bob, "and scrolls back through the history, 50 at a time");
  await waitText(alice, "and scrolls back through the history, 50 at a time");
  const verified = await bob.$eval(
    "#message-list li[data-author='alice']",
    (li) => li.dataset.verified,
  );
  assert.equal(verified, "true", "alice's message is shown as verified");
  // The pending item goes away once stored.
  await alice.waitForFunction(() => document.querySelectorAll("#pending li").length === 0);
  // The first subscription asks for the last 50 of each joined room.
  assert.deepEqual(alice.subscribes[0], { rooms: ["general"], start: "last", value: "50" });
  await bob.waitForFunction(() => document.querySelectorAll("#pending li").length === 0);
  await shot(alice, "two-users-alice");
  await shot(bob, "two-users-bob-phone");
  if (updateScreenshot) await copyFile(path.join(artifacts, "two-users-alice.png"), path.join(web, "screenshot.png"));
});

test("a reload resumes from the saved position: no gap, no duplicate", async () => {
  const api = rpc.clients(backend.sendUrl, backend.allUrl, token("bob", everything));
  for (let i = 0; i < 5; i++) await api.send("general", `before reload ${i}`);
  await waitText(alice, "before reload 4");
  const position = await alice.evaluate(() => document.getElementById("status").dataset.position);
  assert.ok(Number(position) > 0, "a position is kept");
  alice.subscribes.length = 0;
  const reloaded = alice.reload();
  for (let i = 0; i < 3; i++) await api.send("general", `during reload ${i}`);
  await reloaded;
  await waitLive(alice);
  await api.send("general", "after reload");
  await waitText(alice, "after reload");
  const resumed = alice.subscribes[0];
  assert.equal(resumed.start, "afterSequence", "the reloaded page resumes");
  assert.ok(Number(resumed.value) >= Number(position), `resumed after ${resumed.value}, position was ${position}`);
  const stored = (await api.list("general")).messages.map((m) => Number(m.sequence));
  const shown = await shownSequences(alice);
  assertStrictlyIncreasing(shown, "after reload");
  assert.deepEqual(shown, stored.slice(-shown.length), "shown = the newest stored, none missing");
  assert.ok(shown.length >= Math.min(stored.length, 50), "at least a page is shown");
  await shot(alice, "reload");
});

test("scroll-back loads older pages", async () => {
  const api = rpc.clients(backend.sendUrl, backend.allUrl, token("alice", everything));
  const sent = [];
  for (let i = 0; i < 72; i++) sent.push(Number((await api.send("history", `old ${i}`, `seed-${i}`)).sequence));
  // A page opened now is positioned past these (CaughtUp counts every room),
  // so joining the room shows its newest page and scrolling up the rest.
  const dave = await openPage("dave", everything);
  await dave.fill("#join-room", "history");
  await dave.press("#join-room", "Enter");
  await dave.waitForSelector('#room-list li[data-room="history"][aria-current="true"]');
  await dave.waitForFunction(() => document.querySelectorAll("#message-list li[data-sequence]").length >= 50);
  let shown = await shownSequences(dave);
  assert.equal(shown.length, 50, "first page: 50");
  assert.deepEqual(shown, sent.slice(-50));
  // Scroll to the top: the next page comes.
  await dave.$eval("#messages", (m) => {
    m.scrollTop = 0;
  });
  await dave.waitForFunction(() => document.querySelectorAll("#message-list li[data-sequence]").length === 72, null, { timeout: 15000 });
  await dave.waitForSelector("#history-start:not([hidden])");
  shown = await shownSequences(dave);
  assertStrictlyIncreasing(shown, "scroll-back");
  assert.deepEqual(shown, sent);
  // The resubscription names both rooms and resumes.
  const last = dave.subscribes[dave.subscribes.length - 1];
  assert.deepEqual([...last.rooms].sort(), ["general", "history"]);
  assert.equal(last.start, "afterSequence");
  await shot(dave, "scroll-back");
  // A live message in a room not shown counts as unread there.
  await api.send("general", "while dave reads history");
  await dave.waitForSelector('#room-list li[data-room="general"] [data-testid="unread"]');
  await dave.click('[data-testid="room-general"]');
  await waitText(dave, "while dave reads history");
  await dave.context().close();
});

test("a forbidden room shows its reason", async () => {
  const carol = await openPage("carol", [{ rooms: ["general"], allow: ["read", "write"] }]);
  await carol.fill("#join-room", "secret");
  await carol.press("#join-room", "Enter");
  await carol.waitForSelector("#error:not([hidden])");
  assert.equal(await carol.getAttribute("#error", "data-reason"), "ROOM_FORBIDDEN");
  assert.match(await carol.textContent("#error-text"), /not allowed to .* room “secret”/);
  await carol.waitForSelector('#room-list li[data-room="secret"][data-forbidden="true"]');
  // The stream goes on for the rooms that are allowed.
  await waitLive(carol);
  await sendFromPage(alice, "general still works for carol");
  await carol.click('[data-testid="room-general"]');
  await waitText(carol, "general still works for carol");
  await carol.click('[data-testid="room-secret"]');
  await shot(carol, "forbidden-room");
  await carol.context().close();
});

test("an expired token says so", async () => {
  // Past the services' 30 s leeway.
  const erin = await openPage("erin", everything, undefined, { ttlSeconds: -300, live: false });
  await erin.waitForSelector('#status[data-state="stopped"]');
  assert.equal(await erin.textContent("#status"), "signed out");
  assert.equal(await erin.getAttribute("#error", "data-reason"), "TOKEN_EXPIRED");
  assert.match(await erin.textContent("#error-text"), /token has expired/);
  assert.match(await erin.textContent("#identity"), /token expired/);
  // The URL fragment no longer holds the token.
  assert.equal(new URL(erin.url()).hash, "");
  // Signing in with a good token goes live.
  await erin.fill("#token", token("erin", everything));
  await erin.click("#signin");
  await waitLive(erin);
  assert.equal(await erin.isHidden("#error"), true);
  await shot(erin, "signed-in-again");
  await erin.context().close();
});

test("a send whose answer was lost is retried with the same id and stored once", async () => {
  const text = "lose-first-answer";
  const sends = [];
  const pattern = "**/fastchat.v1.SendMessageService/SendMessage";
  await alice.route(pattern, async (route) => {
    const req = route.request();
    sends.push(rpc.decodeSend(new Uint8Array(req.postDataBuffer())));
    if (sends.length === 1) {
      // The request reaches send-service (which stores the message); its
      // answer never reaches the page.
      const res = await route.fetch();
      sends[0].answer = { status: res.status(), grpcStatus: res.headers()["grpc-status"] };
      await route.abort("connectionreset");
    } else {
      await route.continue();
    }
  });
  try {
    await sendFromPage(alice, text);
    await alice.waitForFunction(() => document.querySelectorAll("#pending li").length === 0, null, { timeout: 15000 });
    await waitText(alice, text);
  } finally {
    await alice.unroute(pattern);
  }
  assert.ok(sends.length >= 2, `retried (${sends.length} SendMessage calls)`);
  assert.equal(sends[0].text, text);
  assert.equal(sends[0].answer.status, 200, "the first call was answered by send-service");
  assert.ok([undefined, "0"].includes(sends[0].answer.grpcStatus), `first call OK (grpc-status ${sends[0].answer.grpcStatus})`);
  assert.match(sends[0].clientMessageId, /^[0-9a-f-]{36}$/, "a client_message_id is sent");
  for (const s of sends) assert.equal(s.clientMessageId, sends[0].clientMessageId, "the retry carries the same client_message_id");
  assert.equal(await storedCount("general", text), 1, "stored once");
  assert.equal(await shownCount(alice, text), 1, "shown once");
});

test("rate limited: the delay in words, then sent once", async () => {
  // send-service at limitedSendUrl allows one message a second (burst 1).
  const frank = await openPage("frank", everything, undefined, { query: `?send=${encodeURIComponent(backend.limitedSendUrl)}` });
  // When the page first shows the reason and each message (page clock).
  await frank.evaluate(() => {
    const seen = (window.__seen = {});
    const look = () => {
      const e = document.getElementById("error");
      if (!e.hidden && e.dataset.reason === "RATE_LIMITED") seen.RATE_LIMITED ??= performance.now();
      for (const t of document.querySelectorAll("#message-list li[data-sequence] .text")) seen[`text:${t.textContent}`] ??= performance.now();
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
  const texts = ["fast 1", "fast 2", "fast 3"];
  await sendFromPage(frank, texts[0]);
  await frank.waitForFunction(() => document.querySelectorAll("#pending li").length === 0);
  // Within the second: both over the limit.
  await sendFromPage(frank, texts[1]);
  await sendFromPage(frank, texts[2]);
  await frank.waitForSelector('#error[data-reason="RATE_LIMITED"]:not([hidden])', { timeout: 5000 });
  const words = await frank.textContent("#error-text");
  const m = /^Sending too fast: retrying in (\d+(?:\.\d)?) s\.$/.exec(words);
  assert.ok(m, `the reason with its delay in words: “${words}”`);
  const delayMs = Number(m[1]) * 1000;
  assert.ok(delayMs > 0 && delayMs <= 1000, `a delay of at most 1 s at 1 message/s: ${m[1]} s`);
  await frank.waitForSelector('#pending li[data-state="waiting"]');
  await shot(frank, "rate-limited");
  for (const t of texts) await waitText(frank, t, 15000);
  await frank.waitForFunction(() => document.querySelectorAll("#pending li").length === 0);
  await frank.waitForSelector("#error", { state: "hidden" });
  const seen = await frank.evaluate(() => window.__seen);
  for (const t of texts.slice(1)) {
    const after = seen[`text:${t}`] - seen.RATE_LIMITED;
    assert.ok(after >= delayMs - 100, `“${t}” sent after the delay (${Math.round(after)} ms ≥ ${delayMs} ms)`);
  }
  for (const t of texts) {
    assert.equal(await storedCount("general", t), 1, `“${t}” stored once`);
    assert.equal(await shownCount(frank, t), 1, `“${t}” shown once`);
  }
  await frank.context().close();
});

test("heartbeats: an idle page stays live and its position follows other rooms", async () => {
  // A watchdog of 2.5 heartbeat intervals: without heartbeats the page would
  // take the stream for dead and reconnect within the window below.
  const watchdogMs = Math.round(HEARTBEAT_MS * 2.5);
  const gina = await openPage("gina", everything, undefined, { query: `?watchdog_ms=${watchdogMs}` });
  const subscribes = gina.subscribes.length;
  const position = async () => Number(await gina.getAttribute("#status", "data-position"));
  const before = await position();
  assert.ok(before > 0, "a position after CaughtUp");
  const api = rpc.clients(backend.sendUrl, backend.allUrl, token("bob", everything));
  // A room gina has not joined: only heartbeats can tell her page about it.
  const elsewhere = Number((await api.send("elsewhere", "not for gina")).sequence);
  assert.ok(elsewhere > before);
  const windowMs = HEARTBEAT_MS * 3 + 1000;
  const states = new Set();
  let reachedAt;
  const t0 = Date.now();
  while (Date.now() - t0 < windowMs) {
    states.add(await gina.getAttribute("#status", "data-state"));
    if (reachedAt === undefined && (await position()) >= elsewhere) reachedAt = Date.now() - t0;
    await sleep(100);
  }
  assert.deepEqual([...states], ["live"], `live for ${windowMs} ms`);
  assert.equal(gina.subscribes.length, subscribes, "no resubscription while idle");
  assert.ok(reachedAt !== undefined, `position ${await position()} reached ${elsewhere} (a message in another room)`);
  assert.ok(reachedAt <= HEARTBEAT_MS + 1000, `within a heartbeat interval (${reachedAt} ms)`);
  assert.equal(await gina.$$eval("#message-list li[data-room='elsewhere']", (l) => l.length), 0, "the other room's message is not shown");
  // A reload resumes after that position.
  gina.subscribes.length = 0;
  await gina.reload();
  await waitLive(gina);
  assert.equal(gina.subscribes[0].start, "afterSequence");
  assert.ok(Number(gina.subscribes[0].value) >= elsewhere, `resumed after ${gina.subscribes[0].value}`);
  await gina.context().close();
});

test("an all-messages-service restart: reconnecting, then the missed messages, no gap", async () => {
  const api = rpc.clients(backend.sendUrl, backend.allUrl, token("bob", everything));
  await waitLive(alice);
  const restarted = backend.restartAll(3000);
  await alice.waitForSelector('#status[data-state="reconnecting"]', { timeout: 15000 });
  await shot(alice, "reconnecting");
  for (let i = 0; i < 3; i++) await api.send("general", `while restarting ${i}`);
  await restarted;
  await waitLive(alice, 45000);
  await waitText(alice, "while restarting 2", 20000);
  await sendFromPage(bob, "after the restart");
  await waitText(alice, "after the restart", 20000);
  const stored = (await api.list("general")).messages.map((m) => Number(m.sequence));
  const shown = await shownSequences(alice);
  assertStrictlyIncreasing(shown, "after restart");
  assert.deepEqual(shown, stored.slice(-shown.length), "shown = the newest stored, none missing");
  await shot(alice, "after-restart");
});
