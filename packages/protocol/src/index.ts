export * from "./errors.js";
export * from "./types.js";
export * from "./rules.js";
export * from "./lifecycle.js";
export * from "./cidr.js";
export * from "./network.js";
export * from "./pty.js";
export * from "./console.js";
