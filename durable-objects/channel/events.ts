/** One lifecycle event as the channel object records it. */
export type LoggedEvent = {
  messageId: string;
  type: "accepted" | "delivered" | "expired" | "rejected" | "redriven" | "discarded";
  at: number;
  seq: number | null;
  size: number | null;
  sha256: string | null;
  destination: string | null;
  detail: unknown;
};

/** D1 statements per batch: well under its per-batch limits. */
const FLUSH_BATCH = 200;

/**
 * The object's own outbox for the D1 event log. Events are staged in the
 * same SQLite transaction as the state change they describe, then copied to
 * D1 in batches off the delivery path. If D1 is unavailable nothing is lost:
 * they stay here and the object's alarm retries.
 */
export class EventOutbox {
  private readonly sql: SqlStorage;
  private tenant = "";
  private source = "";
  private flushing: Promise<void> | null = null;

  constructor(
    ctx: DurableObjectState,
    private readonly env: Env,
  ) {
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS event_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL)");
    for (const r of this.sql.exec<{ k: string; v: string }>("SELECT k, v FROM meta WHERE k IN ('tenant', 'source')")) {
      if (r.k === "tenant") this.tenant = r.v;
      else this.source = r.v;
    }
  }

  identify(tenant: string, source: string): void {
    this.tenant = tenant;
    this.source = source;
  }

  /** Call inside the transaction that makes the change. */
  stage(events: LoggedEvent[]): void {
    for (const e of events) this.sql.exec("INSERT INTO event_outbox (event) VALUES (?)", JSON.stringify(e));
  }

  pending(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM event_outbox").one().n;
  }

  flushSoon(): void {
    this.flush().catch((e: unknown) => console.warn("event log flush deferred to the alarm", e));
  }

  /** Copies staged events to D1, oldest first; one flush at a time. */
  flush(): Promise<void> {
    this.flushing ??= this.drain().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async drain(): Promise<void> {
    const place = this.env.FERRY_REGION;
    for (;;) {
      const rows = this.sql.exec<{ id: number; event: string }>("SELECT id, event FROM event_outbox ORDER BY id LIMIT ?", FLUSH_BATCH).toArray();
      if (rows.length === 0) return;
      const stmt = this.env.DB.prepare(
        "INSERT INTO events (tenant, message_id, type, at, place, source, destination, seq, size, sha256, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      );
      await this.env.DB.batch(
        rows.map((r) => {
          const e = JSON.parse(r.event) as LoggedEvent;
          return stmt.bind(this.tenant, e.messageId, e.type, e.at, place, this.source, e.destination, e.seq, e.size, e.sha256, e.detail === null ? null : JSON.stringify(e.detail));
        }),
      );
      const last = rows[rows.length - 1];
      if (last) this.sql.exec("DELETE FROM event_outbox WHERE id <= ?", last.id);
    }
  }
}
