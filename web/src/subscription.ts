// One Subscribe stream for all joined rooms, resumed after every drop from
// the last position seen, so nothing is missed and (with the store's
// de-duplication by sequence) nothing is shown twice.
import { create } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  type AllMessagesService,
  type ChatMessage,
  SubscribeRequestSchema,
} from "./gen/fastchat/v1/chat_pb.js";
import { type CallFailure, failure } from "./errors.js";

export type StreamState = "connecting" | "live" | "reconnecting" | "stopped";

export interface SubscriberHooks {
  rooms(): string[];
  message(m: ChatMessage, live: boolean): void;
  gap(from: bigint, to: bigint): void;
  position(sequence: bigint): void;
  state(state: StreamState, why?: CallFailure): void;
  /**
   * A failure that retrying the same request will not cure. Return true to
   * subscribe again at once (after the hook changed what rooms() gives, say),
   * false to stop until restart().
   */
  fatal(f: CallFailure): boolean;
  /** The saved position is unusable (BEYOND_NEWEST): start over. */
  reset(): void;
}

export interface SubscriberOptions {
  /** Messages per room on a first subscription (no position yet). */
  initialLast: number;
  /** No event for this long: the stream is taken as dead (heartbeats are 15 s by default). */
  watchdogMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
}

export class Subscriber {
  private generation = 0;
  private abort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private running = false;

  constructor(
    private readonly client: Client<typeof AllMessagesService>,
    private readonly hooks: SubscriberHooks,
    private readonly options: SubscriberOptions,
    /** Last position seen: of a message, CaughtUp or Heartbeat. */
    public position: bigint | undefined,
  ) {}

  /** (Re)subscribes now with the current rooms and position. */
  restart(): void {
    const generation = ++this.generation;
    this.abort?.abort();
    this.wake?.();
    this.running = true;
    void this.run(generation);
  }

  stop(): void {
    this.generation++;
    this.running = false;
    this.abort?.abort();
    this.wake?.();
    this.hooks.state("stopped");
  }

  get active(): boolean {
    return this.running;
  }

  private advance(sequence: bigint): void {
    if (this.position === undefined || sequence > this.position) {
      this.position = sequence;
      this.hooks.position(sequence);
    }
  }

  private async run(generation: number): Promise<void> {
    let attempt = 0;
    let everConnected = false;
    const current = () => generation === this.generation;
    while (current()) {
      const rooms = this.hooks.rooms();
      if (rooms.length === 0) {
        this.running = false;
        this.hooks.state("stopped");
        return;
      }
      this.hooks.state(everConnected || attempt > 0 ? "reconnecting" : "connecting");
      const request = create(SubscribeRequestSchema, {
        room: rooms[0],
        rooms: rooms.slice(1),
        start:
          this.position !== undefined
            ? { case: "afterSequence", value: this.position }
            : { case: "last", value: this.options.initialLast },
      });
      const abort = new AbortController();
      this.abort = abort;
      let watchdogFired = false;
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          watchdogFired = true;
          abort.abort();
        }, this.options.watchdogMs);
      };
      let failed: CallFailure | undefined;
      let live = false;
      try {
        arm();
        for await (const res of this.client.subscribe(request, { signal: abort.signal })) {
          if (!current()) break;
          arm();
          const ev = res.event;
          switch (ev.case) {
            case "message":
              this.hooks.message(ev.value, live);
              this.advance(ev.value.sequence);
              break;
            case "gap":
              this.hooks.gap(ev.value.fromSequence, ev.value.toSequence);
              break;
            case "caughtUp":
              this.advance(ev.value.sequence);
              live = true;
              everConnected = true;
              attempt = 0;
              this.hooks.state("live");
              break;
            case "heartbeat":
              this.advance(ev.value.sequence);
              break;
          }
        }
      } catch (err) {
        if (!current()) {
          clearTimeout(watchdog);
          return;
        }
        failed = watchdogFired ? undefined : failure(err);
      } finally {
        clearTimeout(watchdog);
        if (this.abort === abort) this.abort = undefined;
      }
      if (!current()) return;
      if (failed && failed.reason === "BEYOND_NEWEST") {
        this.position = undefined;
        this.hooks.reset();
        continue;
      }
      if (failed && failed.position !== undefined && this.position === undefined) {
        this.position = failed.position;
      }
      if (failed && !failed.retryable) {
        if (this.hooks.fatal(failed)) continue;
        this.running = false;
        this.hooks.state("stopped", failed);
        return;
      }
      // Dropped (error, watchdog, or the stream ended): back off, then resume.
      this.hooks.state("reconnecting", failed);
      const base = Math.min(
        this.options.backoffMaxMs,
        this.options.backoffInitialMs * 2 ** Math.min(attempt, 16),
      );
      let delay = base / 2 + (Math.random() * base) / 2;
      if (failed?.retryAfterMs !== undefined) delay = Math.max(delay, failed.retryAfterMs);
      attempt++;
      let wake: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
        this.wake = wake;
      });
      if (this.wake === wake) this.wake = undefined;
    }
  }
}
