import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { ProgressBars } from "./progress.ts";

describe("progress bars", () => {
  it("draws a line per transfer with its name, share, rate and ETA; a name's control characters are not written to the terminal", () => {
    let now = 0;
    const out = new PassThrough() as unknown as NodeJS.WriteStream;
    let written = "";
    (out as unknown as PassThrough).on("data", (d: Buffer) => (written += d.toString()));
    const bars = new ProgressBars(out, () => now);
    bars.update({ direction: "down", channel: "files", id: "a".repeat(32), name: "evil\x1b]0;pwned\x07.bin", done: 0, total: 100 * 1024 * 1024 });
    now = 1000;
    bars.update({ direction: "down", channel: "files", id: "a".repeat(32), name: "evil\x1b]0;pwned\x07.bin", done: 25 * 1024 * 1024, total: 100 * 1024 * 1024 });
    const [line] = bars.lines();
    expect(line).toMatch(/^↓ evil\?\]0;pwned\?\.bin\s+\[#{6}-{18}\]  25%   25\.0 MiB\/s ETA 00:03$/);
    // Only the bars' own cursor movements reach the terminal, never the name's.
    expect(written.replace(/\x1b\[(\d+F|2K)/g, "")).not.toMatch(/[\x00-\x09\x0b-\x1f]/);
  });
});
