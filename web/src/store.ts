// Messages per room, kept in sequence order, each sequence once.
import type { ChatMessage } from "./gen/fastchat/v1/chat_pb.js";

export class RoomLog {
  /** Sorted by sequence, ascending, no duplicates. */
  readonly messages: ChatMessage[] = [];
  private readonly seen = new Set<bigint>();
  /** ListMessages said there is nothing older than what we hold. */
  noOlder = false;
  /** Messages arrived while the room was not shown. */
  unread = 0;

  has(sequence: bigint): boolean {
    return this.seen.has(sequence);
  }

  /** Adds a message; returns its index, or -1 if it was already there. */
  add(m: ChatMessage): number {
    if (this.seen.has(m.sequence)) return -1;
    this.seen.add(m.sequence);
    const list = this.messages;
    // Usually the newest: append. Otherwise binary search.
    if (list.length === 0 || list[list.length - 1]!.sequence < m.sequence) {
      list.push(m);
      return list.length - 1;
    }
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.sequence < m.sequence) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, m);
    return lo;
  }

  /** The sequence to page back from (messages older than this), 0n = newest. */
  oldest(): bigint {
    return this.messages.length ? this.messages[0]!.sequence : 0n;
  }

  clear(): void {
    this.messages.length = 0;
    this.seen.clear();
    this.noOlder = false;
    this.unread = 0;
  }
}

export class Store {
  private readonly rooms = new Map<string, RoomLog>();

  room(name: string): RoomLog {
    let log = this.rooms.get(name);
    if (!log) {
      log = new RoomLog();
      this.rooms.set(name, log);
    }
    return log;
  }

  clear(): void {
    for (const log of this.rooms.values()) log.clear();
  }
}

export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
