// Test-side helpers, bundled by the browser test with esbuild (they use the
// generated TypeScript of src/gen):
// - clients(): gRPC-web clients from node (HTTP/1.1, like a browser), to seed
//   messages and check what the real services stored;
// - mintToken(): HS256 tokens signed with the test's own key;
// - decodeSubscribe() / decodeSend(): what the page put in a request body.
import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { createHmac } from "node:crypto";
import {
  AllMessagesService,
  SendMessageRequestSchema,
  SendMessageService,
  SubscribeRequestSchema,
} from "../../src/gen/fastchat/v1/chat_pb.js";

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

interface Grant {
  rooms: string[];
  allow: string[];
}

function b64url(b: Buffer): string {
  return b.toString("base64url");
}

export function mintToken(secret: Buffer, sub: string, grants: Grant[], ttlSeconds = 3600): string {
  const header = b64url(Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const payload = b64url(Buffer.from(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds, rooms: grants })));
  const sig = b64url(createHmac("sha256", secret).update(`${header}.${payload}`).digest());
  return `${header}.${payload}.${sig}`;
}

/** The message of a gRPC-web request body: one uncompressed data frame. */
function frame(body: Uint8Array): Uint8Array | null {
  if (body.length < 5 || body[0] !== 0) return null;
  const len = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(1);
  return body.subarray(5, 5 + len);
}

/** Decodes a gRPC-web SubscribeRequest body (as the page sent it) for assertions. */
export function decodeSubscribe(body: Uint8Array): { rooms: string[]; start: string; value: string } | null {
  const msg = frame(body);
  if (!msg) return null;
  const req = fromBinary(SubscribeRequestSchema, msg);
  return {
    rooms: [req.room, ...req.rooms].filter((r) => r),
    start: req.start.case ?? "",
    value: req.start.value === undefined ? "" : String(req.start.value),
  };
}

/** Decodes a gRPC-web SendMessageRequest body (as the page sent it) for assertions. */
export function decodeSend(body: Uint8Array): { room: string; text: string; clientMessageId: string } | null {
  const msg = frame(body);
  if (!msg) return null;
  const req = fromBinary(SendMessageRequestSchema, msg);
  return { room: req.room, text: req.text, clientMessageId: req.clientMessageId };
}
