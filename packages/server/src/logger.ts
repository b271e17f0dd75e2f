/**
 * The daemon's logger as every room sees it: the structured calls of pino's (daemon.ts makes
 * the pino logger and hands it down), fields first, then the message. One interface rather than
 * pino's own type, whose overloads a test's recorder of three functions cannot satisfy.
 */
export interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}
