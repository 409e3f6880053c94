/**
 * Capped exponential backoff with full jitter, so a fleet of connectors that
 * lost the edge at once does not come back at once. Reset only after the
 * connection stayed up for a while (a flapping link keeps backing off).
 */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly baseMs = 250,
    private readonly capMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 16));
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
  }
}
