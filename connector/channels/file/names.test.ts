import { describe, expect, it } from "vitest";
import { safeInboxName, UnsafeNameError } from "./names.ts";

function reason(name: string): string {
  try {
    safeInboxName(name);
  } catch (e) {
    expect(e).toBeInstanceOf(UnsafeNameError);
    expect((e as UnsafeNameError).code).toBe("UNSAFE_NAME");
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(name)}`);
}

describe("file names from the network", () => {
  it("accepts ordinary names, subfolders and unicode", () => {
    expect(safeInboxName("invoice-0001.csv")).toBe("invoice-0001.csv");
    expect(safeInboxName("2026/11/report.pdf")).toBe("2026/11/report.pdf");
    expect(safeInboxName("Lieferschein März.txt")).toBe("Lieferschein März.txt");
    expect(safeInboxName(".hidden-but-fine")).toBe(".hidden-but-fine");
  });

  it("refuses everything that could leave the inbox or confuse a file system", () => {
    expect(reason("")).toMatch(/empty/);
    expect(reason("../x")).toMatch(/'\.\.' segments/);
    expect(reason("a/../../b")).toMatch(/'\.\.' segments/);
    expect(reason("./a")).toMatch(/'\.' and '\.\.'/);
    expect(reason("/etc/passwd")).toMatch(/absolute/);
    expect(reason("C:evil")).toMatch(/drive letters/);
    expect(reason("a\\b")).toMatch(/backslashes/);
    expect(reason("a//b")).toMatch(/empty path segment/);
    expect(reason("a/")).toMatch(/empty path segment/);
    expect(reason("bad\u0000name")).toMatch(/control characters/);
    expect(reason("line\nbreak")).toMatch(/control characters/);
    expect(reason("CON")).toMatch(/device name/);
    expect(reason("con.txt")).toMatch(/device name/);
    expect(reason("dir/LPT9.log")).toMatch(/device name/);
    expect(reason("trailing.")).toMatch(/ends with a dot or a space/);
    expect(reason("trailing ")).toMatch(/ends with a dot or a space/);
    expect(reason(".ferry-tmp/x")).toMatch(/reserved/);
    expect(reason("x".repeat(256))).toMatch(/longer than 255 bytes/);
    expect(reason("a/".repeat(600))).toMatch(/longer than 1024 bytes/);
  });
});
