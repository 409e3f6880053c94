export * from "./address.ts";
export * from "./errors.ts";
export * from "./frames.ts";
export * from "./digest.ts";
export * from "./ids.ts";
export * from "./api.ts";
export * from "./audit.ts";
export type * from "./admin-types.ts";
export * from "./receipts.ts";
