import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "./log.ts";

function capture(format: "pretty" | "json") {
  const out = new PassThrough();
  let text = "";
  out.on("data", (d: Buffer) => (text += d.toString()));
  return { log: createLogger({ format, level: "info", stream: out }), text: () => text };
}

describe("logs", () => {
  it("writes a partner's file name with control characters escaped on a terminal, and as it is in JSON", () => {
    const name = "evil\x1b]0;pwned\x07\u009b31m.bin";
    const pretty = capture("pretty");
    pretty.log("info", "delivered", { file: name, size: 3, plain: "report.csv" });
    const line = pretty.text();
    expect(line).toMatch(/ info  delivered file="evil\\u001b]0;pwned\\u0007\\u009b31m\.bin" size=3 plain=report\.csv\n$/);
    expect(line.slice(0, -1)).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    const json = capture("json");
    json.log("info", "delivered", { file: name });
    expect((JSON.parse(json.text()) as { file: string }).file).toBe(name);
  });
});
