/**
 * For tests of the rate-limiting bindings. Locally (miniflare) a limiter
 * counts in fixed windows aligned to the wall clock: a test that fills a
 * budget and expects the next call refused fails if a window ends in the
 * middle of it (the count starts again). Returns once at least `needMs`
 * remain in the current window of `periodS` seconds: at once most of the
 * time, else when the next window begins (under `periodS` seconds).
 */
export async function roomInWindow(periodS: number, needMs: number): Promise<void> {
  const period = periodS * 1000;
  if (needMs >= period) throw new Error(`a test needing ${needMs} ms cannot fit a ${periodS} s window`);
  for (;;) {
    const left = period - (Date.now() % period);
    if (left >= needMs) return;
    // The clock is the condition: wait for the window to turn, then look again.
    await new Promise((r) => setTimeout(r, left + 5));
  }
}
