import { httpLabel, type ListenerInfo } from "@sail/protocol";
import type { ListenerRow } from "../store/store.js";

/** Where published ports are reachable from outside. */
export interface PublicAddresses {
  /** HTTP listeners are `https://<label>.<domain>[:port]`. */
  domain: string;
  /** The port in public URLs (omitted when 443). */
  publicHttpsPort: number;
  /** The host TCP endpoints advertise. */
  publicHost: string;
}

/** What the node says of a TCP listener's public port (bound, pending, unbound and why). */
export type TcpBindState = Pick<Extract<ListenerInfo, { protocol: "tcp" }>, "state" | "unbound">;

/**
 * A listener's public endpoint: derived from the box id, the port and the daemon's settings,
 * never stored, so URLs are known at create and survive sleep, wake and restarts. A TCP
 * listener also says whether its node holds its public port (`bind`, as the node reported it).
 */
export function listenerInfo(listener: ListenerRow, at: PublicAddresses, bind?: TcpBindState): ListenerInfo {
  if (listener.protocol === "tcp") {
    return {
      sailboxId: listener.sailboxId,
      port: listener.port,
      protocol: "tcp",
      endpoint: { host: at.publicHost, port: listener.publicPort! },
      cidrAllowlist: listener.cidrAllowlist,
      allowPublic: listener.allowPublic,
      proxyProtocol: listener.proxyProtocol,
      state: bind?.state ?? "pending",
      ...(bind?.unbound ? { unbound: bind.unbound } : {}),
    };
  }
  const host = `${httpLabel(listener.sailboxId, listener.port)}.${at.domain}`;
  const portSuffix = at.publicHttpsPort === 443 ? "" : `:${at.publicHttpsPort}`;
  return { sailboxId: listener.sailboxId, port: listener.port, protocol: "http", endpoint: { url: `https://${host}${portSuffix}`, host, port: at.publicHttpsPort }, h2c: listener.h2c };
}
