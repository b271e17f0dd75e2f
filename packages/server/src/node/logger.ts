/** The daemon's logger, as the node's rooms use it. */
export type { Logger } from "../logger.js";
