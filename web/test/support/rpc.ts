// Test-side helpers, bundled by the browser test with esbuild (they use the
// generated TypeScript of src/gen):
// - clients(): gRPC-web clients from node (HTTP/1.1, like a browser), to seed
//   messages and check what is stored;
// - startMock(): an in-process stand-in for both services (the API's
//   semantics as chat.proto states them, over gRPC-web with CORS), so the
//   page's logic can be exercised without the Rust services.
import { type MessageInitShape, create, fromBinary } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, createClient, cors } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcWebTransport } from "@connectrpc/connect-node";
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import {
  AllMessagesService,
  type ChatMessage,
  ChatMessageSchema,
  SendMessageService,
  SubscribeRequestSchema,
  SubscribeResponseSchema,
} from "../../src/gen/fastchat/v1/chat_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";

export function clients(sendUrl: string, allUrl: string, token?: string) {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const t = (baseUrl: string) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  const send = createClient(SendMessageService, t(sendUrl));
  const all = createClient(AllMessagesService, t(allUrl));
  return {
    async send(room: string, text: string, clientMessageId = "") {
      const res = await send.sendMessage({ room, text, clientMessageId }, { headers, timeoutMs: 10000 });
      return { sequence: res.message!.sequence.toString(), duplicate: res.duplicate, author: res.message!.author };
    },
    async list(room: string, beforeSequence = 0n, limit = 1000) {
      const res = await all.listMessages({ room, beforeSequence, limit }, { headers, timeoutMs: 10000 });
      return {
        messages: res.messages.map((m) => ({ sequence: m.sequence.toString(), text: m.text, author: m.author })),
        next: res.nextBeforeSequence.toString(),
      };
    },
  };
}

// ---------------------------------------------------------------- mock

interface Grant {
  rooms: string[];
  allow: string[];
}

function errorInfo(code: Code, reason: string, metadata: Record<string, string> = {}, retryMs?: number): ConnectError {
  const details = [{ desc: ErrorInfoSchema, value: { reason, domain: "fastchat", metadata } }] as const;
  const all: { desc: typeof ErrorInfoSchema | typeof RetryInfoSchema; value: object }[] = [...details];
  if (retryMs !== undefined) all.push({ desc: RetryInfoSchema, value: { retryDelay: durationFromMs(retryMs) } });
  return new ConnectError(reason, code, undefined, all as never);
}

function b64url(b: Buffer): string {
  return b.toString("base64url");
}

function verify(token: string, secret: Buffer): { sub: string; grants: Grant[] } {
  const [h, p, s] = token.split(".");
  if (!h || !p || !s) throw errorInfo(Code.Unauthenticated, "TOKEN_INVALID");
  const mac = createHmac("sha256", secret).update(`${h}.${p}`).digest();
  const got = Buffer.from(s, "base64url");
  if (got.length !== mac.length || !timingSafeEqual(got, mac)) throw errorInfo(Code.Unauthenticated, "TOKEN_INVALID");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) throw errorInfo(Code.Unauthenticated, "TOKEN_EXPIRED");
  return { sub: claims.sub, grants: claims.rooms ?? [] };
}

function matches(pattern: string, room: string): boolean {
  const re = new RegExp(`^${pattern.split("*").map((x) => x.replace(/[.+?^${}()|[\]\\-]/g, "\\$&")).join("[A-Za-z0-9_-]*")}$`);
  return re.test(room);
}

function allowed(grants: Grant[], room: string, op: string): boolean {
  const g = grants.find((g) => g.rooms.some((p) => matches(p, room)));
  return !!g && g.allow.includes(op);
}

export interface MockOptions {
  secret: Buffer;
  staticDir: string;
  heartbeatMs?: number;
}

export interface Mock {
  sendUrl: string;
  allUrl: string;
  /** Ends every stream (UNAVAILABLE SHUTTING_DOWN), refuses connections for downMs, then serves again on the same port. */
  restartAll(downMs: number): Promise<void>;
  close(): Promise<void>;
}

const ROOM = /^[A-Za-z0-9_-]{1,64}$/;

export async function startMock(opts: MockOptions): Promise<Mock> {
  const heartbeatMs = opts.heartbeatMs ?? 2000;
  const stored: ChatMessage[] = [];
  const byClientId = new Map<string, ChatMessage>();
  const waiters = new Set<() => void>();
  let generation = 0;
  const wakeAll = () => {
    for (const w of [...waiters]) w();
  };

  function caller(headers: Headers): { sub: string | null; grants: Grant[] } {
    const a = headers.get("authorization");
    if (!a) return { sub: null, grants: [] };
    const m = /^Bearer (.+)$/i.exec(a);
    if (!m) throw errorInfo(Code.Unauthenticated, "TOKEN_INVALID");
    return verify(m[1]!, opts.secret);
  }
  function check(headers: Headers, room: string, op: string) {
    const c = caller(headers);
    if (!allowed(c.grants, room, op)) {
      if (c.sub === null) throw errorInfo(Code.Unauthenticated, "TOKEN_MISSING");
      throw errorInfo(Code.PermissionDenied, "ROOM_FORBIDDEN", { room, operation: op });
    }
    return c;
  }
  let sendCount = 0;
  const routes = (router: ConnectRouter) => {
    router.service(SendMessageService, {
      sendMessage(req, ctx) {
        const room = req.room || "general";
        const c = check(ctx.requestHeader, room, "write");
        if (!req.text.trim()) throw errorInfo(Code.InvalidArgument, "INVALID_FIELD");
        // Fault injection: every other such send is over the rate limit.
        if (req.text === "rate-limit-me" && sendCount++ % 2 === 0) throw errorInfo(Code.ResourceExhausted, "RATE_LIMITED", {}, 1500);
        const key = `${c.sub}\u0000${room}\u0000${req.clientMessageId}`;
        const dup = req.clientMessageId ? byClientId.get(key) : undefined;
        if (dup) return { message: dup, duplicate: true };
        const m = create(ChatMessageSchema, {
          id: `m${stored.length + 1}`,
          room,
          author: c.sub ?? req.author,
          text: req.text,
          sentAt: timestampNow(),
          clientTimeMs: req.clientTimeMs,
          sequence: BigInt(stored.length + 1),
          authorVerified: c.sub !== null,
        });
        stored.push(m);
        if (req.clientMessageId) byClientId.set(key, m);
        wakeAll();
        // Fault injection: stored, but the answer is lost (the caller must
        // retry with the same client_message_id to have it stored once).
        if (req.text === "lose-first-answer") throw errorInfo(Code.Unavailable, "BROKER_UNAVAILABLE");
        return { message: m, duplicate: false };
      },
    });
    router.service(AllMessagesService, {
      listMessages(req, ctx) {
        if (!ROOM.test(req.room)) throw errorInfo(Code.InvalidArgument, "INVALID_FIELD");
        check(ctx.requestHeader, req.room, "read");
        const limit = req.limit || 50;
        const before = req.beforeSequence || BigInt(Number.MAX_SAFE_INTEGER);
        const older = stored.filter((m) => m.room === req.room && m.sequence < before);
        const page = older.slice(-limit);
        return { messages: page, nextBeforeSequence: older.length > page.length ? page[0]!.sequence : 0n };
      },
      async *subscribe(req, ctx) {
        const myGeneration = generation;
        const names = [...new Set([req.room, ...req.rooms].filter((r) => r))];
        for (const r of names) {
          if (!ROOM.test(r)) throw errorInfo(Code.InvalidArgument, "INVALID_FIELD");
          check(ctx.requestHeader, r, "read");
        }
        const inRooms = (m: ChatMessage) => names.length === 0 || names.includes(m.room);
        const newest = BigInt(stored.length);
        let from: ChatMessage[];
        switch (req.start.case) {
          case "afterSequence": {
            const after = req.start.value;
            if (after > newest) throw errorInfo(Code.InvalidArgument, "BEYOND_NEWEST");
            from = stored.filter((m) => m.sequence > after && inRooms(m));
            break;
          }
          case "last": {
            const n = req.start.value;
            const per = new Map<string, ChatMessage[]>();
            for (const m of stored) if (inRooms(m)) per.set(m.room, [...(per.get(m.room) ?? []), m]);
            from = [...per.values()].flatMap((l) => l.slice(-n)).sort((a, b) => Number(a.sequence - b.sequence));
            break;
          }
          case "newOnly":
            from = [];
            break;
          default:
            from = stored.filter(inRooms);
        }
        const ev = (e: MessageInitShape<typeof SubscribeResponseSchema>["event"]) => create(SubscribeResponseSchema, { event: e });
        for (const m of from) yield ev({ case: "message", value: m });
        let position = newest;
        yield ev({ case: "caughtUp", value: { sequence: position } });
        for (;;) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          let wake: () => void = () => {};
          await new Promise<void>((resolve) => {
            wake = resolve;
            waiters.add(wake);
            timer = setTimeout(resolve, heartbeatMs);
            ctx.signal.addEventListener("abort", wake, { once: true });
          });
          waiters.delete(wake);
          ctx.signal.removeEventListener("abort", wake);
          clearTimeout(timer);
          if (ctx.signal.aborted) return;
          if (generation !== myGeneration) {
            throw new ConnectError("shutting down", Code.Unavailable, undefined, [
              { desc: ErrorInfoSchema, value: { reason: "SHUTTING_DOWN", domain: "fastchat", metadata: { after_sequence: position.toString() } } },
            ]);
          }
          const fresh = stored.filter((m) => m.sequence > position);
          if (fresh.length === 0) {
            yield ev({ case: "heartbeat", value: { sequence: position, time: timestampFromMs(Date.now()) } });
          }
          for (const m of fresh) {
            position = m.sequence;
            if (inRooms(m)) yield ev({ case: "message", value: m });
          }
        }
      },
    });
  };
  const adapter = connectNodeAdapter({ routes, grpcWeb: true, connect: false, grpc: false });
  const withCors = (origin: () => string, serveStatic: boolean) => async (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.headers.origin && req.headers.origin === origin()) {
      res.setHeader("Access-Control-Allow-Origin", req.headers.origin);
      res.setHeader("Vary", "Origin");
      res.setHeader("Access-Control-Expose-Headers", cors.exposedHeaders.join(", "));
      if (req.method === "OPTIONS") {
        res.setHeader("Access-Control-Allow-Methods", cors.allowedMethods.join(", "));
        res.setHeader("Access-Control-Allow-Headers", [...cors.allowedHeaders, "Authorization"].join(", "));
        res.setHeader("Access-Control-Max-Age", "600");
        res.writeHead(204).end();
        return;
      }
    }
    if (serveStatic && req.method === "GET") {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/web-config.json") {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ send_url: sendUrl }));
        return;
      }
      const name = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
      if (/^[A-Za-z0-9_.-]+$/.test(name)) {
        try {
          const body = await readFile(path.join(opts.staticDir, name));
          const type = name.endsWith(".js") ? "text/javascript" : name.endsWith(".css") ? "text/css" : name.endsWith(".html") ? "text/html" : "application/octet-stream";
          res.setHeader("content-type", type);
          res.end(body);
          return;
        } catch {
          // 404 below
        }
      }
      res.writeHead(404).end();
      return;
    }
    adapter(req, res);
  };
  let allUrl = "";
  let sendUrl = "";
  const sendServer = http.createServer(withCors(() => allUrl, false));
  let allServer = http.createServer(withCors(() => allUrl, true));
  const listen = (s: http.Server, port = 0) =>
    new Promise<number>((resolve, reject) => {
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => resolve((s.address() as AddressInfo).port));
    });
  const sendPort = await listen(sendServer);
  const allPort = await listen(allServer);
  sendUrl = `http://127.0.0.1:${sendPort}`;
  allUrl = `http://127.0.0.1:${allPort}`;
  const closeServer = (s: http.Server) =>
    new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  return {
    sendUrl,
    allUrl,
    async restartAll(downMs) {
      generation++;
      wakeAll();
      await new Promise((r) => setTimeout(r, 100));
      await closeServer(allServer);
      await new Promise((r) => setTimeout(r, downMs));
      allServer = http.createServer(withCors(() => allUrl, true));
      await listen(allServer, allPort);
    },
    async close() {
      generation++;
      wakeAll();
      await Promise.all([closeServer(sendServer), closeServer(allServer)]);
    },
  };
}

export function mintToken(secret: Buffer, sub: string, grants: Grant[], ttlSeconds = 3600): string {
  const header = b64url(Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const payload = b64url(Buffer.from(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds, rooms: grants })));
  const sig = b64url(createHmac("sha256", secret).update(`${header}.${payload}`).digest());
  return `${header}.${payload}.${sig}`;
}

/** Decodes a gRPC-web SubscribeRequest body (as the page sent it) for assertions. */
export function decodeSubscribe(body: Uint8Array): { rooms: string[]; start: string; value: string } | null {
  if (body.length < 5 || body[0] !== 0) return null;
  const len = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(1);
  const req = fromBinary(SubscribeRequestSchema, body.subarray(5, 5 + len));
  return {
    rooms: [req.room, ...req.rooms].filter((r) => r),
    start: req.start.case ?? "",
    value: req.start.value === undefined ? "" : String(req.start.value),
  };
}
