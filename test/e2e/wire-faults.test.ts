import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeFrame, type DeliverFrame, type ErrorFrame, type Frame, type PubAckFrame, type ReceiptFrame } from "../../wire/index.ts";
import { LocalEdge } from "../helpers/edge.ts";
import { ConnectorProcess, ferry } from "../helpers/cli.ts";
import { RawPeer } from "../helpers/raw-peer.ts";
import { waitFor } from "../helpers/wait.ts";

const isPuback = (f: Frame): f is PubAckFrame => f.t === "puback";
const isError = (f: Frame): f is ErrorFrame => f.t === "error";
const isDeliver = (f: Frame): f is DeliverFrame => f.t === "deliver";
const isReceipt = (f: Frame): f is ReceiptFrame => f.t === "receipt";

/**
 * Replayed, reordered, duplicated, forged and garbled frames at the wire,
 * against the real edge: each gets a clear answer, the connection and the
 * other streams carry on, and the destination still receives every message
 * exactly once, in order.
 */
describe("frames replayed, reordered and garbled at the wire", () => {
  let edge: LocalEdge;
  let dir: string;
  let env: Record<string, string>;
  const procs: ConnectorProcess[] = [];
  const peers: RawPeer[] = [];

  const token = (name: string) => (JSON.parse(ferry(["admin", "connector", "add", name, "--json"], env).stdout) as { enrolToken: string }).enrolToken;

  beforeAll(async () => {
    edge = await LocalEdge.start();
    dir = await mkdtemp(join(tmpdir(), "ferry-wire-"));
    env = { FERRY_EDGE: edge.url, FERRY_ADMIN_TOKEN: edge.adminToken };
  });

  afterAll(async () => {
    for (const p of peers) p.close();
    await Promise.all(procs.map((p) => p.stop()));
    await edge?.close();
  });

  it("dedups replays, recovers from reordering, and delivers each message once, in order", async () => {
    const sender = await RawPeer.enrol(edge.url, token("wire-a"), join(dir, "a-state"));
    peers.push(sender);
    const en = ferry(["connector", "enroll", "--edge", edge.url, "--token", token("wire-b"), "--state", join(dir, "b-state")], env);
    expect(en.code, en.stderr).toBe(0);
    expect(ferry(["admin", "route", "add", "wire-a/orders", "wire-b/orders"], env).code).toBe(0);
    await writeFile(join(dir, "b.toml"), `state = "./b-state"\nlog = "json"\n[[channels]]\nname = "orders"\nprotocol = "file"\ninbox = "./b-in"\n`);
    const receiver = new ConnectorProcess(join(dir, "b.toml"));
    procs.push(receiver);
    await receiver.connected();

    const epoch = "wire-epoch-0001";
    sender.send(sender.pub("orders", epoch, [1, 2, 3, 4, 5]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 5 });
    // The same frame again, verbatim: acknowledged, not stored twice.
    sender.send(sender.pub("orders", epoch, [1, 2, 3, 4, 5]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 5 });
    // From the future: nothing past the gap is taken, and the edge says where to resume.
    sender.send(sender.pub("orders", epoch, [8, 9]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 5 });
    expect(await sender.next(isError)).toMatchObject({ code: "SEQ_GAP", expected: 6, ch: "orders" });
    // Reordered: 7 before 6.
    sender.send(sender.pub("orders", epoch, [7]));
    expect(await sender.next(isError)).toMatchObject({ code: "SEQ_GAP", expected: 6 });
    await sender.next(isPuback);
    sender.send(sender.pub("orders", epoch, [6]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 6 });
    // Overlapping duplicates mixed with new messages.
    sender.send(sender.pub("orders", epoch, [4, 5, 6, 7, 8, 9]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 9 });

    await waitFor("9 files at B", async () => (await readdir(join(dir, "b-in"))).filter((n) => !n.startsWith(".")).length >= 9);
    const names = (await readdir(join(dir, "b-in"))).filter((n) => !n.startsWith(".")).sort();
    expect(names).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9].map((s) => `w-${String(s).padStart(3, "0")}.txt`));
    for (const n of names) expect(await readFile(join(dir, "b-in", n), "utf8")).toBe(`message ${Number(n.slice(2, 5))}\n`);
    // The receiver logs a delivery just after its rename: the files can be there a moment before the lines.
    await waitFor("9 deliveries logged at B", async () => receiver.lines.filter((l) => l.msg === "delivered").length >= 9);
    const order = receiver.lines.filter((l) => l.msg === "delivered").map((l) => [l.dseq, String(l.path).slice(-9)]);
    expect(order).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9].map((s) => [s, `w-${String(s).padStart(3, "0")}.txt`]));
    // And the sender hears about it.
    const receipts: ReceiptFrame[] = [];
    await waitFor("receipts for all 9", async () => {
      for (;;) {
        const i = sender.frames.findIndex(isReceipt);
        if (i < 0) break;
        receipts.push(sender.frames.splice(i, 1)[0] as ReceiptFrame);
      }
      return receipts.reduce((n, r) => n + r.ids.length, 0) >= 9;
    });
    expect(receipts.every((r) => r.status === "delivered" && r.dst === "wire-b/orders")).toBe(true);
  });

  it("never lets a hostile file name out of the inbox: kept as a local dead letter, and the stream goes on", async () => {
    const hostile = await RawPeer.enrol(edge.url, token("wire-h"), join(dir, "h-state"));
    peers.push(hostile);
    expect(ferry(["admin", "route", "add", "wire-h/orders", "wire-b/orders"], env).code).toBe(0);
    const frame = (seq: number, filename: string, body: string) => {
      const payload = Buffer.from(body);
      return encodeFrame(
        { t: "pub", ch: "orders", epoch: "wire-epoch-h001", msgs: [{ seq, id: `hostile-${seq}-xxxx`, createdAt: 1, contentType: "text/plain", size: payload.byteLength, sha256: createHash("sha256").update(payload).digest("hex"), fields: { filename } }] },
        [payload],
      );
    };
    hostile.send(frame(1, "../../escaped.txt", "pwned"));
    hostile.send(frame(2, "/etc/ferry-pwned", "pwned"));
    hostile.send(frame(3, "after-hostile.txt", "fine"));
    await waitFor("the next file after the hostile ones", async () => (await readdir(join(dir, "b-in"))).includes("after-hostile.txt"));
    expect(await readdir(dir)).not.toContain("escaped.txt");
    const dead = await readdir(join(dir, "b-state", "dead-letters", "orders"));
    expect(dead.filter((n) => n.endsWith(".json")).length).toBe(2);
    const receiver = procs[0] as ConnectorProcess;
    expect(receiver.lines.filter((l) => l.msg === "delivery refused: unsafe file name; kept as a dead letter").map((l) => l.name)).toEqual(["../../escaped.txt", "/etc/ferry-pwned"]);
  });

  it("answers garbage, oversized frames, forged acks and unknown streams with error frames, and keeps the connection", async () => {
    const peer = await RawPeer.enrol(edge.url, token("wire-c"), join(dir, "c-state"));
    peers.push(peer);
    peer.send(new Uint8Array([1, 2, 3]));
    expect(await peer.next(isError)).toMatchObject({ code: "BAD_FRAME" });
    peer.send(Buffer.from([1, 0, 0, 0, 4, 0x7b, 0x7d, 0x7b, 0x7d]));
    expect(await peer.next(isError)).toMatchObject({ code: "BAD_FRAME" });
    peer.send("not a heartbeat");
    expect(await peer.next(isError)).toMatchObject({ code: "BAD_FRAME" });
    // 17 MiB: above the protocol's 16 MiB, below workerd's 32 MiB socket limit.
    peer.send(new Uint8Array(17 * 1024 * 1024).fill(1));
    expect(await peer.next(isError)).toMatchObject({ code: "TOO_LARGE" });
    // Acknowledging another connector's stream, and a stream that does not exist.
    peer.send(encodeFrame({ t: "ack", src: "wire-a/orders", dst: "wire-b/orders", upTo: 1 }));
    expect(await peer.next(isError)).toMatchObject({ code: "FORBIDDEN" });
    peer.send(encodeFrame({ t: "ack", src: "nobody/none", dst: "wire-c/orders", upTo: 1 }));
    expect(await peer.next(isError)).toMatchObject({ code: "UNKNOWN_STREAM" });
    // Frames only the edge sends.
    peer.send(encodeFrame({ t: "puback", ch: "orders", epoch: "wire-epoch-0001", upTo: 3 }));
    expect(await peer.next(isError)).toMatchObject({ code: "BAD_FRAME" });
    // No route yet from here: refused, named, nothing stored.
    peer.send(peer.pub("orders", "wire-epoch-c001", [1]));
    expect(await peer.next(isError)).toMatchObject({ code: "NO_ROUTE", ch: "orders" });
    // The heartbeat still answers and the socket is open.
    peer.send("ping");
    await waitFor("pong", () => peer.texts.includes("pong"));
    expect(peer.closed).toBeNull();
  });

  it("at the receiving end: refuses acks ahead of what was sent, redelivers on request, dedups repeated acks", async () => {
    const sender = await RawPeer.enrol(edge.url, token("wire-s"), join(dir, "s-state"));
    const receiver = await RawPeer.enrol(edge.url, token("wire-r"), join(dir, "r-state"));
    peers.push(sender, receiver);
    expect(ferry(["admin", "route", "add", "wire-s/dup", "wire-r/dup"], env).code).toBe(0);
    sender.send(sender.pub("dup", "wire-epoch-s001", [1, 2, 3]));
    expect(await sender.next(isPuback)).toMatchObject({ upTo: 3 });
    const first = await receiver.next(isDeliver);
    expect(first.msgs.map((m) => m.dseq)).toEqual([1, 2, 3]);
    expect(first.after).toBe(0);
    receiver.send(encodeFrame({ t: "ack", src: "wire-s/dup", dst: "wire-r/dup", upTo: 4 }));
    expect(await receiver.next(isError)).toMatchObject({ code: "BAD_ACK" });
    // "I lost that frame": the edge pushes the same positions again.
    receiver.send(encodeFrame({ t: "resend", src: "wire-s/dup", dst: "wire-r/dup", from: 2 }));
    const again = await receiver.next(isDeliver);
    expect(again.msgs.map((m) => [m.dseq, m.id])).toEqual(first.msgs.slice(1).map((m) => [m.dseq, m.id]));
    receiver.send(encodeFrame({ t: "ack", src: "wire-s/dup", dst: "wire-r/dup", upTo: 3 }));
    receiver.send(encodeFrame({ t: "ack", src: "wire-s/dup", dst: "wire-r/dup", upTo: 3 }));
    const receipt = await sender.next(isReceipt);
    expect(receipt.ids).toEqual(first.msgs.map((m) => m.id));
    // The repeated ack produced neither an error nor a second receipt: the
    // next receipt the sender sees is for the next message only.
    sender.send(sender.pub("dup", "wire-epoch-s001", [4]));
    const fourth = await receiver.next(isDeliver);
    expect(fourth.msgs.map((m) => m.dseq)).toEqual([4]);
    expect(fourth.after).toBe(3);
    receiver.send(encodeFrame({ t: "ack", src: "wire-s/dup", dst: "wire-r/dup", upTo: 4 }));
    expect((await sender.next(isReceipt)).ids).toEqual(fourth.msgs.map((m) => m.id));
    expect(receiver.frames.filter(isError)).toEqual([]);
  });
});
