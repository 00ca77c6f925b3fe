// The FastChat chat page: joined rooms, their messages (live through one
// multi-room Subscribe, older ones paged with ListMessages), and sending.
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  AllMessagesService,
  type ChatMessage,
  ListMessagesRequestSchema,
  SendMessageRequestSchema,
  SendMessageService,
} from "./gen/fastchat/v1/chat_pb.js";
import { type CallFailure, failure } from "./errors.js";
import * as session from "./session.js";
import { ROOM_NAME, Store } from "./store.js";
import { type StreamState, Subscriber } from "./subscription.js";

const PAGE = 50;
const SEND_ATTEMPTS = 8;

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from the page`);
  return el as T;
}

const ui = {
  status: $("status"),
  tokenInput: $<HTMLInputElement>("token"),
  signinForm: $<HTMLFormElement>("signin-form"),
  identity: $("identity"),
  signout: $<HTMLButtonElement>("signout"),
  error: $("error"),
  errorText: $("error-text"),
  errorClose: $<HTMLButtonElement>("error-close"),
  roomList: $<HTMLUListElement>("room-list"),
  joinForm: $<HTMLFormElement>("join-room-form"),
  joinInput: $<HTMLInputElement>("join-room"),
  roomTitle: $("room-title"),
  messages: $("messages"),
  loadOlder: $<HTMLButtonElement>("load-older"),
  historyStart: $("history-start"),
  roomNotice: $("room-notice"),
  list: $<HTMLOListElement>("message-list"),
  pending: $<HTMLOListElement>("pending"),
  composerForm: $<HTMLFormElement>("composer-form"),
  author: $<HTMLInputElement>("author"),
  composer: $<HTMLTextAreaElement>("composer"),
};

// ---------------------------------------------------------------- endpoints

interface Endpoints {
  all: string;
  send: string;
}

/** `?all=`/`?send=` override; else own origin and web-config.json's send_url. */
async function endpoints(): Promise<Endpoints> {
  const params = new URLSearchParams(location.search);
  const all = params.get("all") || location.origin;
  let send = params.get("send") ?? "";
  if (!params.has("send")) {
    try {
      const res = await fetch(new URL("web-config.json", location.href), { cache: "no-store" });
      if (res.ok) {
        const cfg: unknown = await res.json();
        if (typeof cfg === "object" && cfg !== null) {
          const url = (cfg as Record<string, unknown>).send_url;
          if (typeof url === "string") send = url;
        }
      }
    } catch {
      // No config: everything from this origin.
    }
  }
  return { all: all.replace(/\/+$/, ""), send: (send || location.origin).replace(/\/+$/, "") };
}

const bearer: Interceptor = (next) => async (req) => {
  const t = session.token();
  if (t) req.header.set("Authorization", `Bearer ${t}`);
  return next(req);
};

// ---------------------------------------------------------------- state

const store = new Store();
let rooms = session.joinedRooms();
let current = session.currentRoom() ?? rooms[0] ?? "general";
if (!rooms.includes(current)) rooms.unshift(current);
/** Rooms the caller may not read: out of the stream until the next sign-in. */
const forbidden = new Map<string, string>();
/** Rooms whose newest page was asked for in this page's life. */
const historyAsked = new Set<string>();
const loadingOlder = new Set<string>();
let allClient: Client<typeof AllMessagesService>;
let sendClient: Client<typeof SendMessageService>;
let subscriber: Subscriber;
let endpointsInUse: Endpoints;

function identity(): string | null {
  const t = session.token();
  if (!t) return null;
  return session.claims(t)?.sub ?? null;
}

// ---------------------------------------------------------------- errors

let errorSource = "";

function showError(f: CallFailure | string, source: string): void {
  const text = typeof f === "string" ? f : f.text;
  ui.errorText.textContent = text;
  ui.error.dataset.reason = typeof f === "string" ? "" : f.reason;
  ui.error.dataset.source = source;
  ui.error.hidden = false;
  errorSource = source;
}

function clearError(source?: string): void {
  if (source !== undefined && errorSource !== source) return;
  ui.error.hidden = true;
  ui.errorText.textContent = "";
  delete ui.error.dataset.reason;
  delete ui.error.dataset.source;
  errorSource = "";
}

ui.errorClose.addEventListener("click", () => clearError());

// ---------------------------------------------------------------- auth

/** Why the server refused the token we hold, if it did (sign in again). */
let tokenRefused: "" | "expired" | "refused" = "";

function renderAuth(): void {
  const t = session.token();
  ui.signinForm.hidden = !!t && !tokenRefused;
  ui.signout.hidden = !t;
  ui.author.hidden = !!t;
  ui.identity.replaceChildren();
  if (t) {
    const sub = identity();
    ui.identity.append("Signed in as ");
    const b = document.createElement("b");
    b.textContent = sub ?? "(token)";
    ui.identity.append(b);
    if (tokenRefused) ui.identity.append(tokenRefused === "expired" ? " — token expired" : " — token refused");
  } else {
    ui.identity.textContent = "Anonymous";
  }
  ui.identity.dataset.signedIn = t ? "true" : "false";
}

function refuseToken(f: CallFailure): void {
  if (!f.auth || !session.token()) return;
  tokenRefused = f.reason === "TOKEN_EXPIRED" ? "expired" : "refused";
  renderAuth();
}

function signIn(t: string | null): void {
  session.setToken(t);
  tokenRefused = "";
  forbidden.clear();
  clearError();
  renderAuth();
  renderRooms();
  showRoom(current, true);
  subscriber.restart();
}

ui.signinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const t = ui.tokenInput.value.trim().replace(/^Bearer\s+/i, "");
  if (!t) return;
  ui.tokenInput.value = "";
  signIn(t);
});
ui.signout.addEventListener("click", () => signIn(null));

// ---------------------------------------------------------------- status

function renderStatus(state: StreamState, why?: CallFailure): void {
  ui.status.dataset.state = state;
  let text: string;
  switch (state) {
    case "connecting":
      text = "connecting…";
      break;
    case "live":
      text = "live";
      break;
    case "reconnecting":
      text = "reconnecting…";
      break;
    case "stopped":
      text = why?.auth ? "signed out" : "stopped";
      break;
  }
  ui.status.textContent = text;
  ui.status.title = why?.text ?? "";
}

// ---------------------------------------------------------------- rooms

function streamRooms(): string[] {
  return rooms.filter((r) => !forbidden.has(r));
}

function renderRooms(): void {
  const items = rooms.map((room) => {
    const li = document.createElement("li");
    li.dataset.room = room;
    li.setAttribute("aria-current", room === current ? "true" : "false");
    if (forbidden.has(room)) {
      li.dataset.forbidden = "true";
      li.title = forbidden.get(room)!;
    }
    const b = document.createElement("button");
    b.type = "button";
    b.className = "room";
    b.dataset.testid = `room-${room}`;
    b.textContent = room;
    b.addEventListener("click", () => showRoom(room));
    li.append(b);
    const unread = store.room(room).unread;
    if (unread > 0 && room !== current) {
      const u = document.createElement("span");
      u.className = "unread";
      u.dataset.testid = "unread";
      u.textContent = String(unread);
      li.append(u);
    }
    const leave = document.createElement("button");
    leave.type = "button";
    leave.className = "leave";
    leave.title = `Leave ${room}`;
    leave.setAttribute("aria-label", `Leave ${room}`);
    leave.dataset.leave = room;
    leave.textContent = "×";
    leave.addEventListener("click", () => leaveRoom(room));
    li.append(leave);
    return li;
  });
  ui.roomList.replaceChildren(...items);
}

function joinRoom(name: string): void {
  if (!ROOM_NAME.test(name)) {
    showError("A room name is 1 to 64 letters, digits, “-” or “_”.", "join");
    return;
  }
  clearError("join");
  if (!rooms.includes(name)) {
    rooms.push(name);
    session.setJoinedRooms(rooms);
    forbidden.delete(name);
    subscriber.restart();
  }
  showRoom(name);
}

function leaveRoom(name: string): void {
  clearError(`room:${name}`);
  rooms = rooms.filter((r) => r !== name);
  session.setJoinedRooms(rooms);
  forbidden.delete(name);
  historyAsked.delete(name);
  store.room(name).clear();
  if (current === name) current = rooms[0] ?? "";
  renderRooms();
  showRoom(current, true);
  subscriber.restart();
}

ui.joinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = ui.joinInput.value.trim().replace(/^#/, "");
  if (!name) return;
  ui.joinInput.value = "";
  joinRoom(name);
});

function forbid(room: string, f: CallFailure): void {
  forbidden.set(room, f.text);
  renderRooms();
  if (room === current) renderRoomNotice();
}

// ---------------------------------------------------------------- messages

function nearBottom(): boolean {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 60;
}

function scrollToBottom(): void {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function messageItem(m: ChatMessage): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.sequence = m.sequence.toString();
  li.dataset.room = m.room;
  li.dataset.author = m.author;
  li.dataset.verified = m.authorVerified ? "true" : "false";
  li.dataset.id = m.id;
  const me = identity();
  if ((me !== null && m.authorVerified && m.author === me) || (me === null && !m.authorVerified && m.author === ui.author.value)) {
    li.classList.add("mine");
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = m.author;
  const badge = document.createElement("span");
  badge.className = m.authorVerified ? "badge verified" : "badge unverified";
  badge.dataset.testid = "verified";
  badge.textContent = m.authorVerified ? "✓ verified" : "unverified";
  badge.title = m.authorVerified
    ? `Sent with ${m.author}'s token`
    : "Sent without a token: anyone could have chosen this name";
  meta.append(author, badge);
  if (m.sentAt) {
    const d = timestampDate(m.sentAt);
    const time = document.createElement("time");
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
    time.textContent = timeFormat.format(d);
    meta.append(time);
  }
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = m.text;
  li.append(meta, text);
  return li;
}

/** Adds a message to its room's log, and to the view if that room is shown. */
function addMessage(m: ChatMessage, countUnread: boolean): void {
  const log = store.room(m.room);
  const index = log.add(m);
  if (index < 0) return;
  if (m.room !== current) {
    if (countUnread && rooms.includes(m.room)) {
      log.unread++;
      renderRooms();
    }
    return;
  }
  const stick = nearBottom();
  const li = messageItem(m);
  const next = log.messages[index + 1];
  const before = next ? ui.list.querySelector(`li[data-sequence="${next.sequence}"]`) : null;
  ui.list.insertBefore(li, before);
  if (stick && !next) scrollToBottom();
}

function renderRoomNotice(): void {
  const why = forbidden.get(current);
  ui.roomNotice.hidden = !why;
  ui.roomNotice.textContent = why ?? "";
  const log = store.room(current);
  ui.historyStart.hidden = !log.noOlder || !!why;
  ui.loadOlder.hidden = log.noOlder || !!why || !current;
  ui.loadOlder.disabled = loadingOlder.has(current);
  ui.loadOlder.textContent = loadingOlder.has(current) ? "Loading…" : "Load older messages";
}

function showRoom(room: string, force = false): void {
  if (room === current && !force && ui.list.dataset.room === room) return;
  current = room;
  if (room) session.setCurrentRoom(room);
  const log = store.room(room);
  log.unread = 0;
  ui.roomTitle.textContent = room;
  ui.list.dataset.room = room;
  ui.list.replaceChildren(...log.messages.map(messageItem));
  renderPending();
  renderRooms();
  renderRoomNotice();
  ui.composer.disabled = !room;
  scrollToBottom();
  if (room && !historyAsked.has(room) && !forbidden.has(room)) {
    historyAsked.add(room);
    void loadOlder(room, true);
  }
}

/** One page of a room's history: the newest (first time shown), else older than what is held. */
async function loadOlder(room: string, newest = false): Promise<void> {
  const log = store.room(room);
  if (loadingOlder.has(room) || (log.noOlder && !newest) || forbidden.has(room)) return;
  loadingOlder.add(room);
  if (room === current) renderRoomNotice();
  const m = ui.messages;
  const fromBottom = m.scrollHeight - m.scrollTop;
  const wasNearBottom = nearBottom();
  try {
    const res = await allClient.listMessages(
      create(ListMessagesRequestSchema, {
        room,
        beforeSequence: newest ? 0n : log.oldest(),
        limit: PAGE,
      }),
      { timeoutMs: 15000 },
    );
    if (res.nextBeforeSequence === 0n) log.noOlder = true;
    if (room === current) {
      for (const msg of res.messages) {
        if (msg.room === room) addMessageQuiet(msg);
      }
      // Keep what the reader was looking at where it was.
      if (newest && wasNearBottom) scrollToBottom();
      else m.scrollTop = m.scrollHeight - fromBottom;
    } else {
      for (const msg of res.messages) if (msg.room === room) log.add(msg);
    }
    clearError("history");
  } catch (err) {
    const f = failure(err);
    refuseToken(f);
    if (f.reason === "ROOM_FORBIDDEN") forbid(f.metadata.room || room, f);
    showError(f, f.reason === "ROOM_FORBIDDEN" ? `room:${f.metadata.room || room}` : "history");
    // Asked again when the room is shown next (after signing in, say).
    if (newest) historyAsked.delete(room);
  } finally {
    loadingOlder.delete(room);
    if (room === current) renderRoomNotice();
  }
}

/** Inserts into the shown room without scrolling (the caller restores the scroll). */
function addMessageQuiet(m: ChatMessage): void {
  const log = store.room(m.room);
  const index = log.add(m);
  if (index < 0) return;
  const next = log.messages[index + 1];
  const before = next ? ui.list.querySelector(`li[data-sequence="${next.sequence}"]`) : null;
  ui.list.insertBefore(messageItem(m), before);
}

ui.loadOlder.addEventListener("click", () => void loadOlder(current));
ui.messages.addEventListener("scroll", () => {
  if (ui.messages.scrollTop < 40 && current && historyAsked.has(current)) void loadOlder(current);
});

function gapNotice(from: bigint, to: bigint): void {
  const li = document.createElement("li");
  li.className = "notice";
  li.dataset.testid = "gap";
  li.textContent =
    from === to
      ? `Message ${from} is no longer retained.`
      : `Messages ${from}–${to} are no longer retained.`;
  ui.list.append(li);
}

// ---------------------------------------------------------------- sending

interface Outgoing {
  id: string;
  room: string;
  text: string;
  author: string;
  clientTimeMs: bigint;
  state: "sending" | "waiting" | "failed";
  note: string;
}

const outbox: Outgoing[] = [];

function renderPending(): void {
  const stick = nearBottom();
  const items = outbox
    .filter((o) => o.room === current)
    .map((o) => {
      const li = document.createElement("li");
      li.className = "msg pending mine";
      li.dataset.clientMessageId = o.id;
      li.dataset.state = o.state;
      const meta = document.createElement("div");
      meta.className = "meta";
      const state = document.createElement("span");
      state.className = "state";
      state.textContent = o.state === "sending" ? "sending…" : o.note;
      meta.append(state);
      if (o.state === "failed") {
        const retry = document.createElement("button");
        retry.type = "button";
        retry.textContent = "Retry";
        retry.dataset.testid = "retry";
        retry.addEventListener("click", () => void deliver(o));
        const discard = document.createElement("button");
        discard.type = "button";
        discard.textContent = "Discard";
        discard.addEventListener("click", () => {
          outbox.splice(outbox.indexOf(o), 1);
          renderPending();
        });
        meta.append(retry, discard);
      }
      const text = document.createElement("div");
      text.className = "text";
      text.textContent = o.text;
      li.append(meta, text);
      return li;
    });
  ui.pending.replaceChildren(...items);
  if (stick) scrollToBottom();
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Sends one message, retrying what may be retried with the same client_message_id. */
async function deliver(o: Outgoing): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    o.state = "sending";
    renderPending();
    try {
      const res = await sendClient.sendMessage(
        create(SendMessageRequestSchema, {
          room: o.room,
          author: o.author,
          text: o.text,
          clientMessageId: o.id,
          clientTimeMs: o.clientTimeMs,
        }),
        { timeoutMs: 15000 },
      );
      outbox.splice(outbox.indexOf(o), 1);
      // Shown at once; the stream brings it too (and the log keeps it once).
      if (res.message) addMessage(res.message, false);
      renderPending();
      clearError("send");
      if (o.room === current) scrollToBottom();
      return;
    } catch (err) {
      const f = failure(err);
      showError(f, "send");
      refuseToken(f);
      if (f.reason === "ROOM_FORBIDDEN" && f.metadata.operation !== "write") forbid(f.metadata.room || o.room, f);
      if (f.retryable && attempt + 1 < SEND_ATTEMPTS) {
        const backoff = Math.min(10000, 500 * 2 ** attempt);
        const wait = Math.max(f.retryAfterMs ?? 0, backoff);
        o.state = "waiting";
        o.note = `not sent yet, retrying in ${Math.ceil(wait / 1000)} s`;
        renderPending();
        await sleep(wait);
        continue;
      }
      o.state = "failed";
      o.note = `not sent: ${f.text}`;
      renderPending();
      return;
    }
  }
}

function submitComposer(): void {
  const text = ui.composer.value;
  if (!text.trim() || !current) return;
  let author = "";
  if (!session.token()) {
    author = ui.author.value.trim();
    if (!author) {
      showError("Enter a name to send without signing in.", "send");
      ui.author.focus();
      return;
    }
    session.setAnonymousAuthor(author);
  }
  const o: Outgoing = {
    id: session.uuid(),
    room: current,
    text,
    author,
    clientTimeMs: BigInt(Date.now()),
    state: "sending",
    note: "",
  };
  outbox.push(o);
  ui.composer.value = "";
  autosize();
  scrollToBottom();
  void deliver(o);
}

function autosize(): void {
  ui.composer.style.height = "auto";
  ui.composer.style.height = `${Math.min(ui.composer.scrollHeight + 2, 160)}px`;
}

ui.composer.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submitComposer();
  }
});
ui.composer.addEventListener("input", autosize);
ui.composerForm.addEventListener("submit", (e) => {
  e.preventDefault();
  submitComposer();
});

// ---------------------------------------------------------------- start

async function start(): Promise<void> {
  session.takeFragmentToken();
  ui.author.value = session.anonymousAuthor();
  renderAuth();
  endpointsInUse = await endpoints();
  const options = { useBinaryFormat: true, interceptors: [bearer] };
  allClient = createClient(
    AllMessagesService,
    createGrpcWebTransport({ baseUrl: endpointsInUse.all, ...options }),
  );
  sendClient = createClient(
    SendMessageService,
    createGrpcWebTransport({ baseUrl: endpointsInUse.send, ...options }),
  );
  const params = new URLSearchParams(location.search);
  const watchdogMs = Number(params.get("watchdog_ms")) || 35000;
  subscriber = new Subscriber(
    allClient,
    {
      rooms: streamRooms,
      message: (m) => addMessage(m, true),
      gap: gapNotice,
      position: (p) => {
        session.setPosition(endpointsInUse.all, p);
        ui.status.dataset.position = p.toString();
      },
      state: (state, why) => {
        renderStatus(state, why);
        if (state === "live") clearError("stream");
      },
      fatal: (f) => {
        if (f.reason === "ROOM_FORBIDDEN" && f.metadata.room && rooms.includes(f.metadata.room)) {
          // Stays shown when the stream goes on live without that room.
          showError(f, `room:${f.metadata.room}`);
          forbid(f.metadata.room, f);
          return streamRooms().length > 0;
        }
        showError(f, "stream");
        refuseToken(f);
        return false;
      },
      reset: () => {
        session.setPosition(endpointsInUse.all, undefined);
        store.clear();
        historyAsked.clear();
        showRoom(current, true);
      },
    },
    { initialLast: PAGE, watchdogMs, backoffInitialMs: 500, backoffMaxMs: 15000 },
    session.position(endpointsInUse.all),
  );
  const p = subscriber.position;
  if (p !== undefined) ui.status.dataset.position = p.toString();
  renderRooms();
  showRoom(current, true);
  subscriber.restart();
}

void start();
