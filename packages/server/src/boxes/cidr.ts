/**
 * The CIDR rules are @sail/protocol's (cidr.ts: one implementation for the SDK, the config,
 * the runtime and the gateway); import them from there. This re-export keeps create.ts's
 * import while boxes/ is being restructured.
 */
export { normalizeCidr } from "@sail/protocol";
