// What a failed call means, from its google.rpc details (never from the
// status message's text, which is for logs and may change).
import { Code, ConnectError } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

export interface CallFailure {
  code: Code;
  /** ErrorInfo reason of domain "fastchat", or "" if the status had none. */
  reason: string;
  metadata: Record<string, string>;
  /** RetryInfo's delay in ms, if any. */
  retryAfterMs: number | undefined;
  /** BadRequest's offending fields. */
  fields: { field: string; description: string }[];
  /** Words for a person. */
  text: string;
  /** Whether retrying the same call later may succeed. */
  retryable: boolean;
  /** Whether it is about the token (sign in again). */
  auth: boolean;
  /** A stream's resume position (metadata after_sequence), if given. */
  position: bigint | undefined;
}

export function failure(err: unknown): CallFailure {
  const ce = ConnectError.from(err);
  let reason = "";
  let metadata: Record<string, string> = {};
  for (const info of ce.findDetails(ErrorInfoSchema)) {
    if (info.domain === "fastchat" || reason === "") {
      reason = info.reason;
      metadata = { ...info.metadata };
    }
  }
  let retryAfterMs: number | undefined;
  for (const retry of ce.findDetails(RetryInfoSchema)) {
    if (retry.retryDelay) retryAfterMs = durationMs(retry.retryDelay);
  }
  const fields = ce
    .findDetails(BadRequestSchema)
    .flatMap((b) => b.fieldViolations)
    .map((v) => ({ field: v.field, description: v.description }));
  const f: CallFailure = {
    code: ce.code,
    reason,
    metadata,
    retryAfterMs,
    fields,
    text: "",
    retryable: false,
    auth: false,
    position: parsePosition(metadata.after_sequence),
  };
  f.text = describe(f, ce);
  f.retryable = isRetryable(f);
  f.auth = ce.code === Code.Unauthenticated;
  return f;
}

function parsePosition(v: string | undefined): bigint | undefined {
  if (v === undefined || !/^[0-9]{1,20}$/.test(v)) return undefined;
  return BigInt(v);
}

function seconds(ms: number | undefined): string {
  if (ms === undefined) return "a moment";
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

function operationWords(op: string | undefined): string {
  switch (op) {
    case "write":
    case "send":
      return "write in";
    case "read":
    case "subscribe":
    case "list":
      return "read";
    default:
      return op ? `${op}` : "use";
  }
}

function describe(f: CallFailure, ce: ConnectError): string {
  const m = f.metadata;
  switch (f.reason) {
    case "TOKEN_MISSING":
      return "You are signed out, and this is not open to anonymous users: sign in with a token.";
    case "TOKEN_INVALID":
      return "The token was not accepted (malformed, wrongly signed or not for this service): sign in again.";
    case "TOKEN_EXPIRED":
      return "Your token has expired (or is not valid yet): sign in with a new one.";
    case "ROOM_FORBIDDEN":
      return m.room
        ? `You are not allowed to ${operationWords(m.operation)} room “${m.room}”.`
        : `You are not allowed to ${operationWords(m.operation)} this room.`;
    case "AUTHOR_MISMATCH":
      return "With a token you can only send as yourself.";
    case "RATE_LIMITED":
      return `Sending too fast: retrying in ${seconds(f.retryAfterMs)}.`;
    case "TOO_MANY_SUBSCRIPTIONS":
      return `Too many open streams${m.limit ? ` (${m.limit})` : ""}: close other tabs.`;
    case "INVALID_FIELD": {
      const list = f.fields
        .map((v) => (v.description ? `${v.field}: ${v.description}` : v.field))
        .join("; ");
      return list ? `Not accepted: ${list}.` : "Not accepted: a field breaks a rule.";
    }
    case "BEYOND_NEWEST":
      return "The saved position is past the newest message (the store was reset): starting over.";
    case "BROKER_UNAVAILABLE":
      return "The message store is unreachable right now; retrying.";
    case "SHUTTING_DOWN":
      return "The server is restarting; retrying.";
    case "HISTORY_BUSY":
    case "BROKER_BUSY":
      return "The server is busy; retrying.";
    case "SUBSCRIBER_STALLED":
      return "The stream fell behind; reconnecting.";
    case "STORE_FULL":
      return "The message store is full; messages cannot be sent now.";
    case "REQUEST_TOO_LARGE":
      return "The message is too large.";
    case "INTERNAL":
      return "The server failed unexpectedly.";
  }
  switch (ce.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Aborted:
      return "The server cannot be reached; retrying.";
    case Code.DeadlineExceeded:
      return "The server took too long; retrying.";
    case Code.Unauthenticated:
      return "Not signed in (or the token was refused): sign in again.";
    case Code.PermissionDenied:
      return "Not allowed.";
    case Code.InvalidArgument:
      return "Not accepted by the server.";
    case Code.ResourceExhausted:
      return "Over a server limit; retrying later.";
    default:
      return `The call failed (${Code[ce.code] ?? ce.code}).`;
  }
}

function isRetryable(f: CallFailure): boolean {
  switch (f.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Aborted:
    case Code.DeadlineExceeded:
    case Code.Internal:
      return true;
    case Code.ResourceExhausted:
      return f.reason !== "STORE_FULL" && f.reason !== "REQUEST_TOO_LARGE";
    default:
      return false;
  }
}
