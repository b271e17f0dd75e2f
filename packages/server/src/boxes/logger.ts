/** The daemon's logger, as the control plane's rooms use it. */
export type { Logger } from "../logger.js";
