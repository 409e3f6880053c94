import { encodeFrame, ErrorCode, errorFrame, partLength, splitAddress, type RelayedFrame, type RelayFrame, type UploadFrame } from "../../wire/index.ts";
import type { ConnectorSession } from "../session/session.ts";
import { RelayMode, type Transfers, type UploadState } from "./transfers.ts";

/** A relayed part that not every destination answered within this long ends the relay: the payload is stored instead. */
export const RELAY_ANSWER_MS = 20_000;

/** What the sender is told when a relay ends (as an answer to its part, or as a notice). */
const ended = (id: string, why: string) => `the relay of ${id} ended (${why}); it is stored at the edge instead: upload it again`;

type Live = {
  id: string;
  source: string;
  size: number;
  sha256: string;
  chunk: number;
  parts: number;
  /** The file's name, if the sender gave one (shown by the destinations while it travels). */
  name?: string;
  destinations: string[];
  /** Per destination: the parts it wrote, in order. */
  acked: Map<string, number>;
  /** The highest part passed on. */
  sent: number;
  timer: ReturnType<typeof setTimeout> | null;
  /** Notices to the sender go one after another, in the order they were made. */
  notices: Promise<unknown>;
};

export type RelayDeps = {
  transfers: Transfers;
  session: (connector: string) => DurableObjectStub<ConnectorSession>;
};

/**
 * Large payloads relayed (docs/decisions.md D19). While every destination
 * of a source is online and takes relays, an upload's parts are not stored
 * in R2: each is pushed to the destinations as it comes, and the sender's
 * part is acknowledged once every destination wrote it (its last part once
 * each fsynced the whole payload and checked its SHA-256). The claim check
 * is then accepted and sequenced like any other; the destinations find the
 * payload already on their disk. Anything that stops a relay (a destination
 * offline or silent, a restart of this object, a destination's disk) makes
 * it a stored upload from part 1: the sender still holds the payload, and a
 * destination resumes from what it wrote when it fetches the rest from R2.
 *
 * What is relayed lives in memory here; only the count of parts every
 * destination holds is written (one row update per part).
 */
/** A part to pass on: its relay frame (without `dst`) and the destinations that get it. */
export type RelayPush = { frame: Omit<RelayFrame, "dst">; destinations: string[] };
/** What becomes of a part of a relayed upload: passed on (`push`), or answered at once. */
export type RelayStep = { push: RelayPush } | { answer: UploadState };

export class Relays {
  private readonly live = new Map<string, Live>();

  constructor(private readonly d: RelayDeps) {}

  private async ready(destinations: string[]): Promise<boolean> {
    const ready = await Promise.all(destinations.map((d) => this.d.session(splitAddress(d).connector).relayReady().catch(() => false)));
    return ready.every(Boolean);
  }

  /** Relays a new upload if every destination is online and takes relays; null: store it. */
  async open(tenant: string, source: string, region: string | null, f: UploadFrame, destinations: string[]): Promise<UploadState | null> {
    if (destinations.length === 0 || !(await this.ready(destinations))) return null;
    const res = this.d.transfers.openRelay(tenant, source, region, f, destinations);
    if (!res) return null;
    this.live.set(f.id, {
      id: f.id, source, size: f.size, sha256: f.sha256, chunk: f.chunk, parts: f.parts, ...(f.name ? { name: f.name } : {}), destinations,
      acked: new Map(destinations.map((d) => [d, 0])), sent: 0, timer: null, notices: Promise.resolve(),
    });
    return res;
  }

  /** The sender asks again where a relay stands (it reconnected): true if it goes on from `have`. */
  async resume(id: string, have: number): Promise<boolean> {
    const l = this.live.get(id);
    if (!l || !(await this.ready(l.destinations))) return false;
    // The sender sends again from have + 1; destinations answer parts they wrote already as held.
    l.sent = Math.min(l.sent, have);
    return true;
  }

  /**
   * One part from the sender: checked against the relay and counted as
   * passed on. Its bytes are pushed by the caller (`put` here, or the
   * sender's session object itself, which holds them: one copy of each
   * part fewer through this object), who reports a destination that
   * could not take it (`gone`).
   */
  async take(id: string, have: number, part: number, len: number, psha: string): Promise<RelayStep> {
    const l = this.live.get(id);
    if (!l) {
      await this.end(id, "this edge restarted during the relay", false);
      return { answer: { ok: false, code: ErrorCode.UPLOAD_INCOMPLETE, message: ended(id, "this edge restarted") } };
    }
    if (part <= have) return { answer: { ok: true, have, parts: l.parts } };
    // After a resume, answers to parts passed on before it may have moved `have` past `sent`.
    const next = Math.max(l.sent, have) + 1;
    if (part > next) return { answer: { ok: false, code: ErrorCode.BAD_CHUNK, message: `part ${part} of ${id} arrived before part ${next}`, have } };
    const want = partLength(l.size, l.chunk, part);
    if (len !== want) return { answer: { ok: false, code: ErrorCode.BAD_CHUNK, message: `part ${part} of ${id} has ${len} bytes, expected ${want}`, have } };
    l.sent = Math.max(l.sent, part);
    this.arm(l);
    // The part's digest is checked by each destination (which has to read the bytes anyway), not here.
    const frame: RelayPush["frame"] = { t: "relay", src: l.source, id, part, parts: l.parts, size: l.size, sha256: l.sha256, chunk: l.chunk, len, psha, ...(l.name ? { name: l.name } : {}) };
    return { push: { frame, destinations: l.destinations } };
  }

  /** Destinations that could not take a pushed part: the relay ends, the upload is stored instead. */
  async gone(id: string, destinations: string[]): Promise<UploadState> {
    const why = `${destinations.join(", ")} went offline`;
    await this.end(id, why, false);
    return { ok: false, code: ErrorCode.UPLOAD_INCOMPLETE, message: ended(id, why) };
  }

  /** One part from the sender, passed on to every destination from here. */
  async put(id: string, have: number, part: number, bytes: Uint8Array, psha: string): Promise<UploadState> {
    const step = await this.take(id, have, part, bytes.byteLength, psha);
    if ("answer" in step) return step.answer;
    const missed = await pushPart(step.push, bytes, (connector) => this.d.session(connector));
    return missed.length > 0 ? this.gone(id, missed) : { ok: true, have, parts: step.push.frame.parts, relaying: true };
  }

  /** A destination answered a relayed part. */
  async answer(f: RelayedFrame): Promise<void> {
    const l = this.live.get(f.id);
    if (!l || l.source !== f.src || !l.acked.has(f.dst)) return;
    const ch = splitAddress(l.source).channel;
    if (f.ok) {
      l.acked.set(f.dst, Math.max(l.acked.get(f.dst) ?? 0, f.have));
      const all = Math.min(...l.acked.values());
      const before = this.d.transfers.row(l.id)?.have ?? 0;
      if (all <= before) return;
      this.d.transfers.relayed(l.id, all);
      if (all >= l.parts) this.forget(l);
      else this.arm(l, true);
      this.notify(l, encodeFrame({ t: "uploaded", ch, id: l.id, have: all, parts: l.parts }));
      return;
    }
    if (f.code === ErrorCode.BAD_CHUNK) {
      // Damaged on the way (or out of order after a damaged one): the sender sends again from the part named.
      const have = this.d.transfers.row(l.id)?.have ?? 0;
      this.notify(l, errorFrame(ErrorCode.BAD_CHUNK, `${f.dst}: ${f.message ?? "part refused"}`, { ch, id: l.id, part: f.part, have }));
      return;
    }
    await this.end(l.id, `${f.dst}: ${f.message ?? f.code ?? "refused"}`, true);
  }

  /**
   * Ends a relay: the upload is stored from part 1 instead. `tell`: the
   * sender hears of it here (otherwise from the step that ended it).
   */
  async end(id: string, why: string, tell: boolean): Promise<void> {
    const l = this.live.get(id);
    if (l) this.forget(l);
    const row = this.d.transfers.row(id);
    if (!row || row.relay !== RelayMode.RELAYING) return;
    console.warn(JSON.stringify({ event: "relay ended", id, why }));
    const stored = await this.d.transfers.toStore(id);
    if (stored && tell && l) {
      this.notify(l, errorFrame(ErrorCode.UPLOAD_INCOMPLETE, ended(id, why), { ch: splitAddress(l.source).channel, id }));
    }
  }

  /**
   * A destination connected again: parts pushed to its old connection and
   * not answered are lost with it, so relays waiting on it end now (rather
   * than after RELAY_ANSWER_MS).
   */
  async reattached(destination: string): Promise<void> {
    for (const l of [...this.live.values()]) {
      if ((l.acked.get(destination) ?? l.sent) < l.sent) await this.end(l.id, `${destination} reconnected with parts unanswered`, true);
    }
  }

  private forget(l: Live): void {
    if (l.timer) clearTimeout(l.timer);
    l.timer = null;
    this.live.delete(l.id);
  }

  /** Waits for the destinations' answers; silence for RELAY_ANSWER_MS ends the relay. `progress`: start the wait afresh. */
  private arm(l: Live, progress = false): void {
    if (progress && l.timer) {
      clearTimeout(l.timer);
      l.timer = null;
    }
    const all = Math.min(...l.acked.values());
    if (l.timer || l.sent <= all) return;
    l.timer = setTimeout(() => {
      l.timer = null;
      if (this.live.get(l.id) !== l) return;
      const silent = l.destinations.filter((d) => (l.acked.get(d) ?? 0) < l.sent);
      void this.end(l.id, `no answer from ${silent.join(", ")} within ${RELAY_ANSWER_MS / 1000} s`, true).catch((e: unknown) => console.error("ending a relay failed", l.id, e));
    }, RELAY_ANSWER_MS);
  }

  private notify(l: Live, frame: Uint8Array): void {
    const sender = this.d.session(splitAddress(l.source).connector);
    l.notices = l.notices.then(() => sender.notify(frame)).catch((e: unknown) => console.warn("relay notice to the sender failed", l.id, e));
  }
}

/** Pushes a relayed part to each destination's session object; the destinations that did not take it. */
export async function pushPart(push: RelayPush, bytes: Uint8Array, session: (connector: string) => { deliver(frame: Uint8Array): Promise<boolean> }): Promise<string[]> {
  const pushed = await Promise.all(push.destinations.map((dst) => session(splitAddress(dst).connector).deliver(encodeFrame({ ...push.frame, dst }, [bytes])).catch(() => false)));
  return push.destinations.filter((_, i) => !pushed[i]);
}
