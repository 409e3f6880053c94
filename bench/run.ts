/**
 * `npm run bench`: Ferry's whole path on the local network against NATS
 * JetStream and this machine's ceilings, interleaved run by run, medians of
 * FERRY_BENCH_RUNS runs, ratios Ferry / comparator. Prints tables and
 * writes bench/results/latest.json. Sizes: bench/config.ts (FERRY_BENCH_*;
 * FERRY_BENCH_QUICK=1 for a short development run). Every case is
 * independent: a failure is reported and the others go on. Benchmarks
 * measure and print; nothing here asserts.
 */
import { cpus, release, tmpdir, totalmem } from "node:os";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LocalEdge, ROOT } from "../test/helpers/edge.ts";
import { config, MEDIUM_BYTES, MIB, SMALL_BYTES, wanted } from "./config.ts";
import { idleConnectorPerMonth, opsPerMessage, price, PRICES, type Ops } from "./cost.ts";
import { ferrySerial, ferryWindowed, type Place } from "./ferry.ts";
import { ferryLarge, staleBundle } from "./large.ts";
import { JetStream, NATS_INSTALL, natsServerPath, natsVersion } from "./nats.ts";
import { costTable, figuresTable, ratiosTable, type Ratio, type Row } from "./report.ts";
import { ferryBacklog, ferryScale } from "./scale.ts";
import { r2Ceiling, startCeiling, startRelay } from "./services.ts";
import { guarded, reduce, type Sample } from "./stats.ts";
import { stream } from "./stream.ts";
import { removeQuietly } from "./proc.ts";

/** Ferry on disk, on a route that logs exceptions only. */
const QUIET = "Ferry (disk, --log exceptions)";
/** The same on tmpfs: like for like with JetStream, without the per-message trail. */
const QUIET_TMPFS = "Ferry (tmpfs, --log exceptions)";
const SCALE_MESSAGES = Number(process.env.FERRY_BENCH_SCALE_MESSAGES ?? 10);

type Key = `${string}|${string}`;
const samples = new Map<Key, Sample[]>();
const units = new Map<string, string>();
const order: Key[] = [];

function record(kase: string, system: string, unit: string, s: Sample): void {
  const key: Key = `${kase}|${system}`;
  if (!samples.has(key)) {
    samples.set(key, []);
    order.push(key);
  }
  samples.get(key)?.push(s);
  units.set(kase, unit);
  const what = s.skipped ? `skipped (${s.skipped})` : s.failed ? `failed (${s.failed})` : `${s.rate?.toFixed(1)} ${unit}${s.p50 !== undefined ? `, p50 ${s.p50.toFixed(2)} ms` : ""}`;
  console.error(`  ${kase} / ${system}: ${what}`);
}

async function version(pkg: string): Promise<string> {
  return ((JSON.parse(await readFile(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version);
}

async function main(): Promise<void> {
  const started = new Date();
  const natsBin = natsServerPath();
  const skipNats = natsBin ? null : `nats-server not found; install it with: ${NATS_INSTALL}`;
  const disk: Place = { name: "disk", root: await mkdtemp(join(tmpdir(), "ferry-bench-")) };
  const tmpfs: Place = { name: "tmpfs", root: await mkdtemp("/dev/shm/ferry-bench-") };
  const stale = staleBundle();
  if (stale) console.error(`warning: ${stale}`);

  console.error(`starting: Ferry edge (state on disk), Ferry edge (state on tmpfs), JetStream, the raw WebSocket relay, the minimal Durable Objects`);
  const edges: Partial<Record<Place["name"], LocalEdge>> = {};
  const stoppers: (() => Promise<void>)[] = [];
  try {
    for (const place of [disk, tmpfs]) {
      const edge = await LocalEdge.start({ stateDir: join(place.root, "edge") });
      edges[place.name] = edge;
      stoppers.push(() => edge.close());
    }
    const js = natsBin ? await JetStream.start(natsBin) : null;
    if (js) stoppers.push(() => js.close());
    const relay = await startRelay();
    stoppers.push(() => relay.service.stop());
    const ceiling = await startCeiling().catch((e: unknown) => {
      console.error(`  the minimal Durable Objects did not start: ${(e as Error).message}`);
      return null;
    });
    if (ceiling) stoppers.push(() => ceiling.close());
    const ceilings: [string, string | null][] = [
      ["raw WebSocket (Node relay)", relay.url],
      ["DO forward", ceiling ? `${ceiling.url}/forward` : null],
      ["DO forward + SQLite", ceiling ? `${ceiling.url}/forward-sql` : null],
    ];
    const ferries = [disk, tmpfs].map((p) => ({ place: p, edge: edges[p.name] as LocalEdge, system: `Ferry (${p.name})` }));
    const [onDisk] = ferries as [(typeof ferries)[number]];

    const jetstream = async (kase: string, unit: string, fn: (j: JetStream) => Promise<Sample>) =>
      record(kase, "JetStream", unit, js ? await guarded(`${kase} JetStream`, () => fn(js)) : { skipped: skipNats as string });
    const ceilingRuns = async (kase: string, unit: string, fn: (url: string, tag: string) => Promise<Sample>, r: number, which = ceilings) => {
      for (const [name, url] of which) record(kase, name, unit, url ? await guarded(`${kase} ${name}`, () => fn(url, `${kase}-${r}`)) : { failed: "the ceiling worker did not start" });
    };

    if (config.warmup) {
      // Not recorded (config.warmup): the same paths, cold JIT paid here by every system alike.
      console.error("warm-up (not recorded)");
      const n = Math.max(100, Math.round(config.small / 10));
      const quiet = (what: string, fn: () => Promise<Sample>) => guarded(`warm-up ${what}`, fn);
      for (const f of ferries) {
        await quiet(f.system, () => ferryWindowed(f.edge, f.place, `warm${f.place.name[0]}`, SMALL_BYTES, n));
        await quiet(`${f.system} --log exceptions`, () => ferryWindowed(f.edge, f.place, `warmq${f.place.name[0]}`, SMALL_BYTES, n, 1, "exceptions"));
      }
      if (js) await quiet("JetStream", () => js.run(SMALL_BYTES, n));
      for (const [name, url] of ceilings) if (url) await quiet(name, () => stream(`${url}/warm-up`, { size: SMALL_BYTES, count: n, mode: "windowed" }));
    }

    for (let r = 0; r < config.runs; r++) {
      console.error(`run ${r + 1} of ${config.runs}`);
      if (wanted("small")) {
        const k = `small 1 KiB x ${config.small.toLocaleString("en-US")}, windowed`;
        for (const f of ferries) record(k, f.system, "msg/s", await guarded(k, () => ferryWindowed(f.edge, f.place, `w${r}${f.place.name[0]}`, SMALL_BYTES, config.small)));
        // The same on a route that logs exceptions only (no per-message event rows: docs/compliance.md).
        record(k, QUIET, "msg/s", await guarded(k, () => ferryWindowed(onDisk.edge, onDisk.place, `wq${r}`, SMALL_BYTES, config.small, 1, "exceptions")));
        const onTmpfs = ferries[1] as (typeof ferries)[number];
        record(k, QUIET_TMPFS, "msg/s", await guarded(k, () => ferryWindowed(onTmpfs.edge, onTmpfs.place, `wqt${r}`, SMALL_BYTES, config.small, 1, "exceptions")));
        await jetstream(k, "msg/s", (j) => j.run(SMALL_BYTES, config.small));
        await ceilingRuns(k, "msg/s", (u, t) => stream(`${u}/${t}`, { size: SMALL_BYTES, count: config.small, mode: "windowed" }), r);
      }
      if (wanted("serial")) {
        const k = `small 1 KiB x ${config.serial}, one at a time`;
        for (const f of ferries) record(k, f.system, "msg/s", await guarded(k, () => ferrySerial(f.edge, f.place, `s${r}${f.place.name[0]}`, SMALL_BYTES, config.serial)));
        record(k, QUIET, "msg/s", await guarded(k, () => ferrySerial(onDisk.edge, onDisk.place, `sq${r}`, SMALL_BYTES, config.serial, "exceptions")));
        await jetstream(k, "msg/s", (j) => j.run(SMALL_BYTES, config.serial, { serial: true }));
        await ceilingRuns(k, "msg/s", (u, t) => stream(`${u}/${t}`, { size: SMALL_BYTES, count: config.serial, mode: "serial" }), r);
      }
      if (wanted("medium")) {
        const k = `medium 256 KiB x ${config.medium}`;
        const mb = (s: Sample): Sample => ({ ...s, rate: Number(s.extra?.mbPerSec ?? Number.NaN) });
        for (const f of ferries) record(k, f.system, "MB/s", mb(await guarded(k, () => ferryWindowed(f.edge, f.place, `m${r}${f.place.name[0]}`, MEDIUM_BYTES, config.medium))));
        await jetstream(k, "MB/s", async (j) => mb(await j.run(MEDIUM_BYTES, config.medium)));
        await ceilingRuns(k, "MB/s", async (u, t) => mb(await stream(`${u}/${t}`, { size: MEDIUM_BYTES, count: config.medium, mode: "windowed" })), r);
      }
      if (wanted("large")) {
        const k = `large ${config.largeMb} MiB file`;
        const f = ferries[0] as (typeof ferries)[number];
        record(k, `${f.system}, connector processes, relayed`, "MB/s", await guarded(k, () => ferryLarge(f.edge, f.place, `l${r}`, config.largeMb)));
        record(k, `${f.system}, connector processes, stored in R2`, "MB/s", await guarded(k, () => ferryLarge(f.edge, f.place, `ls${r}`, config.largeMb, false)));
        // The ceiling for one big transfer: 1 MiB messages, 16 MiB in flight.
        await ceilingRuns(k, "MB/s", async (u, t) => {
          const s = await stream(`${u}/${t}`, { size: MIB, count: config.largeMb, mode: "windowed", frameMessages: 1 });
          return { ...s, rate: Number(s.extra?.mbPerSec), rssMiB: { "bench process": process.memoryUsage().rss / MIB } };
        }, r, ceilings.slice(0, 2));
        // Local R2 alone, store and forward: written whole, then read back (the claim check's two legs).
        record(k, "local R2 (write, then read back)", "MB/s", ceiling ? await guarded(k, () => r2Ceiling(ceiling.url, `r2-${r}`, config.largeMb)) : { failed: "the ceiling worker did not start" });
      }
      if (wanted("fanout")) {
        const k = `fan-out 1 KiB x ${config.fanoutMessages.toLocaleString("en-US")} to ${config.fanout}`;
        for (const f of ferries) record(k, f.system, "msg/s", await guarded(k, () => ferryWindowed(f.edge, f.place, `f${r}${f.place.name[0]}`, SMALL_BYTES, config.fanoutMessages, config.fanout)));
        await jetstream(k, "msg/s", (j) => j.run(SMALL_BYTES, config.fanoutMessages, { fanout: config.fanout }));
      }
    }

    // Heavy, once (not interleaved): each takes minutes at full size and has no comparator.
    if (wanted("scale")) {
      const k = `scale: ${config.connectors.toLocaleString("en-US")} connectors, ${SCALE_MESSAGES} msgs each`;
      // A fresh edge, so its memory curve starts from an empty network.
      const place: Place = { name: "disk", root: join(disk.root, "scale") };
      await mkdir(place.root, { recursive: true });
      const sample = await guarded(k, async () => {
        const edge = await LocalEdge.start({ stateDir: join(place.root, "edge") });
        try {
          return await ferryScale(edge, place, "sc", config.connectors, SCALE_MESSAGES);
        } finally {
          await edge.close();
        }
      });
      record(k, "Ferry (disk)", "msg/s", sample);
    }
    if (wanted("backlog")) {
      const k = `backlog: ${config.queued.toLocaleString("en-US")} x 1 KiB queued, drained`;
      const f = ferries[0] as (typeof ferries)[number];
      record(k, f.system, "msg/s", await guarded(k, () => ferryBacklog(f.edge, f.place, "q", config.queued)));
    }
  } finally {
    for (const stop of stoppers.reverse()) await stop().catch((e: unknown) => console.error(`stopping: ${(e as Error).message}`));
    await removeQuietly(disk.root);
    await removeQuietly(tmpfs.root);
  }

  // Medians, ratios, cost.
  const rows: Row[] = order.map((key) => {
    const [kase, system] = key.split("|") as [string, string];
    return { case: kase, system, unit: units.get(kase) ?? "", figure: reduce(samples.get(key) ?? []) };
  });
  const fig = (kasePrefix: string, system: string) => rows.find((r) => r.case.startsWith(kasePrefix) && r.system === system)?.figure;
  // The small windowed case (its name and the one-at-a-time case's both start with "small").
  const windowedFig = (system: string) => rows.find((r) => r.case.startsWith("small") && r.case.endsWith("windowed") && r.system === system)?.figure;
  const ratios: Ratio[] = [];
  const ratio = (name: string, a: number | undefined, b: number | undefined, target?: { op: ">=" | "<="; x: number }, note?: string) => {
    const value = a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : null;
    const met = target && value !== null ? (target.op === ">=" ? value >= target.x : value <= target.x) : null;
    ratios.push({ name, value, target: target ? `${target.op} ${target.x}` : "-", met, ...(note ? { note } : {}) });
  };
  for (const [p, label] of [["disk", "on disk"], ["tmpfs", "on tmpfs"]] as const) {
    const f = `Ferry (${p})`;
    ratio(`small windowed msg/s, ${label} / JetStream`, windowedFig(f)?.rate, windowedFig("JetStream")?.rate, { op: ">=", x: p === "disk" ? 1 : 1.5 });
    ratio(`small windowed msg/s, ${label}, --log exceptions / JetStream`, windowedFig(p === "disk" ? QUIET : QUIET_TMPFS)?.rate, windowedFig("JetStream")?.rate);
    ratio(`one at a time p50, ${label} / JetStream (lower is better)`, fig("small 1 KiB x " + config.serial, f)?.p50, fig("small 1 KiB x " + config.serial, "JetStream")?.p50, p === "disk" ? { op: "<=", x: 2 } : undefined);
    ratio(`medium MB/s, ${label} / JetStream`, fig("medium", f)?.rate, fig("medium", "JetStream")?.rate);
    ratio(`fan-out msg/s, ${label} / JetStream`, fig("fan-out", f)?.rate, fig("fan-out", "JetStream")?.rate);
    for (const c of ["raw WebSocket (Node relay)", "DO forward", "DO forward + SQLite"]) {
      ratio(`small windowed msg/s, ${label} / ${c}`, windowedFig(f)?.rate, windowedFig(c)?.rate);
    }
  }
  ratio("one at a time p50, on disk / raw WebSocket (lower is better)", fig("small 1 KiB x " + config.serial, "Ferry (disk)")?.p50, fig("small 1 KiB x " + config.serial, "raw WebSocket (Node relay)")?.p50);
  ratio("medium MB/s, on disk / raw WebSocket", fig("medium", "Ferry (disk)")?.rate, fig("medium", "raw WebSocket (Node relay)")?.rate);
  const large = fig("large", "Ferry (disk), connector processes, relayed");
  const stored = fig("large", "Ferry (disk), connector processes, stored in R2");
  ratio("large file MB/s, on disk, relayed (receiver online) / raw WebSocket", large?.rate, fig("large", "raw WebSocket (Node relay)")?.rate, { op: ">=", x: 0.5 }, large?.failed ? `large case failed: ${large.failed}` : undefined);
  ratio("large file MB/s, on disk, stored in R2 (receiver declines relays) / raw WebSocket", stored?.rate, fig("large", "raw WebSocket (Node relay)")?.rate);
  ratio("large file MB/s, stored in R2 / local R2 alone (write, then read back)", stored?.rate, fig("large", "local R2 (write, then read back)")?.rate);
  ratio("local R2 alone / raw WebSocket (what the machine allows a claim check, at most)", fig("large", "local R2 (write, then read back)")?.rate, fig("large", "raw WebSocket (Node relay)")?.rate);
  const connRss = large?.rssMiB || stored?.rssMiB ? Math.max(large?.rssMiB?.sender ?? 0, large?.rssMiB?.receiver ?? 0, stored?.rssMiB?.sender ?? 0, stored?.rssMiB?.receiver ?? 0) : undefined;
  ratios.push({ name: "large file: connector peak RSS MiB (absolute)", value: connRss ?? null, target: "< 150", met: connRss === undefined ? null : connRss < 150, ...(connRss === undefined ? { note: "large case did not complete" } : {}) });
  const scale = rows.find((r) => r.case.startsWith("scale"))?.figure;
  const perConn = scale?.extra?.workerdMiBPerConnector;
  const dev = scale?.extra?.worstDeviationFromLinear;
  ratios.push({
    name: "scale: workerd MiB per connector (absolute)",
    value: typeof perConn === "number" ? perConn : null,
    target: "linear, modest",
    met: typeof perConn === "number" && typeof dev === "number" ? dev < 0.15 && perConn < 1 : null,
    note: typeof dev === "number" ? `worst deviation from the line ${(dev * 100).toFixed(1)}%` : "scale case did not complete",
  });

  // Cost: analytic counts, priced; DO duration from the measured throughput.
  const windowedRate = windowedFig("Ferry (disk)")?.rate ?? 0;
  const serialRate = fig("small 1 KiB x " + config.serial, "Ferry (disk)")?.rate ?? 0;
  const paths = [
    { path: "windowed (1,024 per frame), full audit log", batch: 1024, log: true, rate: windowedRate, target: 1.1 },
    { path: "windowed, full audit log, files (1 field: the name)", batch: 1024, log: true, rate: windowedRate, target: 1.1, fields: 1 },
    // One at a time a flush (100 ms after the first staging, up to 256 small rows) holds the messages of those 100 ms.
    { path: "one at a time, full audit log", batch: 1, log: true, rate: serialRate, target: 1.1, perFlush: Math.min(128, Math.max(1, serialRate / 10)) },
    { path: "windowed, --log exceptions (no per-message log)", batch: 1024, log: false, rate: windowedFig(QUIET)?.rate ?? windowedRate, target: 0.1 },
    { path: "one at a time, --log exceptions", batch: 1, log: false, rate: fig("small 1 KiB x " + config.serial, QUIET)?.rate ?? serialRate, target: 0.1 },
  ];
  const cost = paths.map((p) => {
    const priced = price(opsPerMessage(p.batch, p.log, p.batch, "fields" in p ? p.fields : 0, "perFlush" in p ? p.perFlush : p.batch), p.rate);
    return { ...p, ...priced, target: `<= ${p.target.toFixed(2)}`, met: priced.usdPerMillion <= p.target };
  });
  // The same, measured: what the objects' usage meters counted (medians of the runs).
  const measured = (system: string, path: string, target: number, serial = false) => {
    const f = serial ? fig("small 1 KiB x " + config.serial, system) : windowedFig(system);
    const ops = f?.extra && typeof f.extra["ops.doRequests"] === "number" ? (Object.fromEntries(Object.entries(f.extra).filter(([k]) => k.startsWith("ops.")).map(([k, v]) => [k.slice(4), Number(v)])) as Ops) : null;
    if (!ops || !f?.rate) return [];
    const priced = price(ops, f.rate);
    return [{ path, batch: serial ? 1 : 1024, log: system !== QUIET, rate: f.rate, target: `<= ${target.toFixed(2)}`, ...priced, met: priced.usdPerMillion <= target }];
  };
  cost.push(
    ...measured("Ferry (disk)", "windowed, full audit log: MEASURED (usage meters)", 1.1),
    ...measured(QUIET, "windowed, --log exceptions: MEASURED (usage meters)", 0.1),
    ...measured("Ferry (disk)", "one at a time, full audit log: MEASURED (usage meters)", 1.1, true),
    ...measured(QUIET, "one at a time, --log exceptions: MEASURED (usage meters)", 0.1, true),
  );
  const idle = idleConnectorPerMonth();

  const machine = {
    cpu: `${cpus()[0]?.model ?? "unknown"} x ${cpus().length}`,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    kernel: release(),
    node: process.version,
    wrangler: await version("wrangler"),
    workerd: await version("workerd"),
    natsServer: natsBin ? natsVersion(natsBin) : "absent",
    natsClient: await version("nats"),
  };
  const result = {
    at: started.toISOString(),
    seconds: Math.round((Date.now() - started.getTime()) / 1000),
    machine,
    config: { ...config, smallBytes: SMALL_BYTES, mediumBytes: MEDIUM_BYTES, scaleMessages: SCALE_MESSAGES },
    notes: [
      "Ferry (disk): edge state (workerd SQLite, fsync per commit) and connector spools/delivery logs on disk; Ferry (tmpfs): all of it in /dev/shm, like for like with JetStream, whose nats-server 2.9 acknowledges before any fsync.",
      "Latency: from the call that hands a message to the sender to the receiving handler, one clock (same process).",
      "Scale and backlog run once per bench (not interleaved; no comparator).",
      "Cost: operations counted from the code (analytic) and, for the windowed small cases, as the objects counted them (GET /api/debug/usage), priced at list prices; DO duration from the measured throughput.",
      ...(stale ? [stale] : []),
    ],
    figures: rows,
    ratios,
    cost: { prices: PRICES, paths: cost, idleConnectorPerMonth: idle },
  };
  const out = [
    "",
    `Ferry bench, ${result.at}, ${config.runs} run(s), medians; ${machine.cpu}, ${machine.memoryGiB} GiB, Node ${machine.node}, workerd ${machine.workerd}, ${machine.natsServer}`,
    "Ferry (disk) = every acknowledged message fsynced (edge, sender spool, receiver log); Ferry (tmpfs) = the same on /dev/shm, like for like with JetStream 2.9 (no fsync).",
    "",
    figuresTable(rows),
    "",
    ratiosTable(ratios),
    "",
    costTable(cost),
    `idle connector: $${idle.usd.toFixed(4)} per month at list prices (no duration: the socket hibernates; heartbeats and config refreshes are requests)`,
    "",
  ].join("\n");
  console.log(out);
  await mkdir(join(ROOT, "bench", "results"), { recursive: true });
  await writeFile(join(ROOT, "bench", "results", "latest.json"), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`JSON: bench/results/latest.json (${Math.round(result.seconds / 60)} min)`);
}

await main();
// Undici agents and sockets may linger: the bench is done.
process.exit(0);
