/** `POST /v1/console/login-links`: open `apiUrl + path` in a browser, once, before `expiresAt`. */
export interface ConsoleLoginLink {
  path: string;
  expiresAt: string;
}

/** One listener's counters since the daemon (or its gateway) started; clients take differences for rates. */
export interface ListenerTraffic {
  port: number;
  protocol: "http" | "tcp";
  /** Connections open now (HTTP: client connections to the listener's host; TCP: the box's piped connections). */
  open: number;
  /** HTTP requests forwarded (HTTP), connections accepted (TCP). */
  requests: number;
  /** From clients, to clients. */
  bytesIn: number;
  bytesOut: number;
  /** Answers the gateway gave itself or connections it closed, by reason (cidr, paused, SAIL_NOTHING_LISTENING, …). */
  refusals: Record<string, number>;
}

/** `GET /v1/sailboxes/{id}/traffic`. */
export interface SailboxTraffic {
  sailboxId: string;
  /** Wakes from sleep since the daemon started. */
  wakes: number;
  sampledAt: string;
  listeners: ListenerTraffic[];
}
