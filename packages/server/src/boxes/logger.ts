import type { Logger as PinoLogger } from "pino";

/** The daemon's logger (pino): the rooms use its structured calls, fields first, then the message. */
export type Logger = Pick<PinoLogger, "debug" | "info" | "warn" | "error">;
