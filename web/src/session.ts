// Where the page keeps things: the token and the stream position in
// sessionStorage (this tab only, gone with it), the joined rooms and the
// anonymous name in localStorage (preferences).
import { ROOM_NAME } from "./store.js";

const TOKEN = "fastchat.token";
const ROOM = "fastchat.room";
const ROOMS = "fastchat.rooms";
const AUTHOR = "fastchat.author";

function get(storage: Storage, key: string): string | null {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}

function set(storage: Storage, key: string, value: string | null): void {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // Storage disabled or full: the page still works, it just forgets.
  }
}

/** Moves a `#token=…` of the URL fragment into sessionStorage and out of the URL. */
export function takeFragmentToken(): void {
  if (!location.hash.startsWith("#")) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  params.delete("token");
  setToken(token.trim() || null);
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

export const token = (): string | null => get(sessionStorage, TOKEN);
export const setToken = (t: string | null): void => set(sessionStorage, TOKEN, t);

export function joinedRooms(): string[] {
  const raw = get(localStorage, ROOMS);
  if (raw !== null) {
    try {
      const list: unknown = JSON.parse(raw);
      if (Array.isArray(list)) {
        const rooms = [...new Set(list.filter((r): r is string => typeof r === "string" && ROOM_NAME.test(r)))];
        return rooms;
      }
    } catch {
      // fall through to the default
    }
  }
  return ["general"];
}
export const setJoinedRooms = (rooms: string[]): void => set(localStorage, ROOMS, JSON.stringify(rooms));

export const currentRoom = (): string | null => get(sessionStorage, ROOM);
export const setCurrentRoom = (room: string): void => set(sessionStorage, ROOM, room);

export const anonymousAuthor = (): string => get(localStorage, AUTHOR) ?? "";
export const setAnonymousAuthor = (a: string): void => set(localStorage, AUTHOR, a);

/** The stream position is per AllMessagesService endpoint. */
function positionKey(allUrl: string): string {
  return `fastchat.position@${allUrl}`;
}
export function position(allUrl: string): bigint | undefined {
  const v = get(sessionStorage, positionKey(allUrl));
  return v !== null && /^[0-9]{1,20}$/.test(v) ? BigInt(v) : undefined;
}
export function setPosition(allUrl: string, p: bigint | undefined): void {
  set(sessionStorage, positionKey(allUrl), p === undefined ? null : p.toString());
}

export interface Claims {
  sub?: string;
  exp?: number;
}

/** The token's claims, for display only (the server checks the token). */
export function claims(t: string): Claims | null {
  const part = t.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const json: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof json !== "object" || json === null) return null;
    const c = json as Record<string, unknown>;
    return {
      sub: typeof c.sub === "string" ? c.sub : undefined,
      exp: typeof c.exp === "number" ? c.exp : undefined,
    };
  } catch {
    return null;
  }
}

/** A random UUID, also where crypto.randomUUID is missing (plain http off localhost). */
export function uuid(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
