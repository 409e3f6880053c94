import type { Usage } from "../wire/admin-types.ts";

export type { Usage };

/** Counters from zero: the bench reads them to measure a message's cost instead of only deriving it from the code. */
export function newUsage(): Usage {
  return { requests: 0, webSocketMessagesIn: 0, sqlRowsRead: 0, sqlRowsWritten: 0, d1RowsRead: 0, d1RowsWritten: 0 };
}

/** Cursors whose counts are still followed: a cursor read lazily after later statements is still counted. */
const FOLLOWED = 64;

/**
 * The object's SQLite behind a meter: every cursor's `rowsRead` and
 * `rowsWritten` (workerd's own counters, the billed ones) are added to
 * `usage`. Counts move as cursors are read, so `settle()` adds what the
 * recent ones read since last time; call it before reading `usage`.
 */
export function meteredSql(sql: SqlStorage, usage: Usage): { sql: SqlStorage; settle: () => void } {
  const seen = new Map<SqlStorageCursor<Record<string, SqlStorageValue>>, { read: number; written: number }>();
  const settle = () => {
    for (const [cursor, was] of seen) {
      usage.sqlRowsRead += cursor.rowsRead - was.read;
      usage.sqlRowsWritten += cursor.rowsWritten - was.written;
      was.read = cursor.rowsRead;
      was.written = cursor.rowsWritten;
    }
    for (const cursor of seen.keys()) {
      if (seen.size <= FOLLOWED) break;
      seen.delete(cursor);
    }
  };
  const exec = <T extends Record<string, SqlStorageValue>>(query: string, ...bindings: unknown[]): SqlStorageCursor<T> => {
    const cursor = sql.exec<T>(query, ...bindings);
    if (seen.size >= FOLLOWED * 2) settle();
    seen.set(cursor as unknown as SqlStorageCursor<Record<string, SqlStorageValue>>, { read: 0, written: 0 });
    return cursor;
  };
  const metered = new Proxy(sql, {
    get(target, prop) {
      if (prop === "exec") return exec;
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { sql: metered, settle };
}
