/** Why a file name from the network was refused. */
export class UnsafeNameError extends Error {
  override readonly name = "UnsafeNameError";
  readonly code = "UNSAFE_NAME";
  constructor(
    readonly fileName: string,
    reason: string,
  ) {
    super(`unsafe file name ${JSON.stringify(fileName.slice(0, 200))}: ${reason}`);
  }
}

const DEVICE = /^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\..*)?$/i;
const enc = new TextEncoder();

/**
 * Validates a file name that came from the network and returns it as a safe
 * relative path ('/'-separated). Whatever a sender puts in the envelope, a
 * delivered file can never land outside the inbox.
 */
export function safeInboxName(name: string): string {
  if (name.length === 0) throw new UnsafeNameError(name, "empty");
  if (enc.encode(name).byteLength > 1024) throw new UnsafeNameError(name, "longer than 1024 bytes");
  if (name.includes("\\")) throw new UnsafeNameError(name, "backslashes are not allowed (use '/')");
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we refuse
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new UnsafeNameError(name, "control characters are not allowed");
  if (name.startsWith("/")) throw new UnsafeNameError(name, "absolute paths are not allowed");
  if (/^[a-zA-Z]:/.test(name)) throw new UnsafeNameError(name, "drive letters are not allowed");
  const segments = name.split("/");
  for (const s of segments) {
    if (s === "") throw new UnsafeNameError(name, "empty path segment");
    if (s === "." || s === "..") throw new UnsafeNameError(name, "'.' and '..' segments are not allowed");
    if (enc.encode(s).byteLength > 255) throw new UnsafeNameError(name, "a segment is longer than 255 bytes");
    if (/[. ]$/.test(s)) throw new UnsafeNameError(name, "a segment ends with a dot or a space");
    if (DEVICE.test(s)) throw new UnsafeNameError(name, `'${s}' is a device name`);
    if (s.startsWith(".ferry-")) throw new UnsafeNameError(name, "names starting with .ferry- are reserved");
  }
  return segments.join("/");
}
