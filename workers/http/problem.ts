import type { Context } from "hono";
import type { ZodError } from "zod";

/**
 * The one exception type of the HTTP edge. `onError` turns it into an RFC 9457
 * problem-details response; anything else becomes a 500 that names no
 * internals.
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(detail);
  }
}

export function invalid(error: ZodError, what: string): ApiError {
  const errors = error.issues.map((i) => ({ field: i.path.join(".") || "(body)", message: i.message }));
  const first = errors[0];
  return new ApiError(400, "Invalid request", `${what}: ${first ? `${first.field}: ${first.message}` : "invalid"}`, { errors });
}

export function problem(c: Context, err: unknown): Response {
  if (err instanceof ApiError) {
    // Refusals of credentials and floods are security events: say so in the Worker's log.
    if (err.status === 401 || err.status === 403 || err.status === 429) {
      console.warn(JSON.stringify({ event: "refused", status: err.status, path: new URL(c.req.url).pathname, method: c.req.method, reason: err.detail, client: c.req.header("cf-connecting-ip") ?? null }));
    }
    return c.json(
      { type: "about:blank", title: err.title, status: err.status, detail: err.detail, instance: new URL(c.req.url).pathname, ...err.extra },
      err.status as 400,
      { "content-type": "application/problem+json" },
    );
  }
  console.error("unhandled error", err);
  return c.json(
    { type: "about:blank", title: "Internal error", status: 500, detail: "the edge failed to handle this request; nothing was changed" },
    500,
    { "content-type": "application/problem+json" },
  );
}

/** Parses a JSON body with a schema, or throws a 400 naming the bad field. */
export async function parseBody<T>(c: Context, schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: ZodError } }, what: string): Promise<T> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, "Invalid request", `${what}: the body must be JSON`);
  }
  const r = schema.safeParse(body);
  if (!r.success) throw invalid(r.error, what);
  return r.data;
}
