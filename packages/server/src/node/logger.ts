/** The slice of pino the node's rooms use (structured fields first, then the message): the runtime's one. */
export type { RuntimeLogger as Logger } from "../runtime/runtime.js";
