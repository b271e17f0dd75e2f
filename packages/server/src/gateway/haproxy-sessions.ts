import { execFile } from "node:child_process";
import type { Logger } from "./haproxy.js";
import { splitAnswers, type RuntimeApi } from "./runtime-api.js";

/**
 * Ends every connection HAProxy holds to a box's guest: its sessions (`show sess` →
 * `shutdown session`, each answer checked) and its idle server connections (`ss -K`).
 */
export class SessionDrops {
  /** Idle guest connections being closed, which `settled()` waits for. */
  private readonly closing = new Set<Promise<void>>();

  constructor(
    private readonly api: RuntimeApi,
    private readonly log: Logger,
  ) {}

  /** Close every session and connection to these guest addresses of one box. */
  drop(sailboxId: string, addresses: Set<string>): void {
    const closing = closeTcpTo([...addresses])
      .catch((err) => this.log.warn({ sailboxId, err: String(err) }, "could not close connections to the guest"))
      .finally(() => this.closing.delete(closing));
    this.closing.add(closing);
    void this.api
      .run("show sess all")
      .then(async (sessions) => {
        const ids = sessionsTo(sessions, addresses);
        if (!ids.length) return;
        const answers = splitAnswers(await this.api.run(...ids.map((id) => `shutdown session ${id}`)));
        // a session that ended meanwhile is "No such session": the goal is reached anyway
        const refused = answers.filter((a) => a !== "" && !a.startsWith("No such session"));
        if (answers.length < ids.length || refused.length)
          this.log.warn({ sailboxId, answers: refused.slice(0, 3), expected: ids.length, got: answers.length }, "HAProxy did not shut every session down");
      })
      .catch((err) => this.log.warn({ sailboxId, err: String(err) }, "could not drop HAProxy sessions"));
  }

  /** Resolves once the idle connections being closed now are gone. */
  async settled(): Promise<void> {
    await Promise.all(this.closing);
  }
}

/** Session ids (`0x…`) in `show sess all` whose server connection goes to one of `addresses`. */
export function sessionsTo(text: string, addresses: Set<string>): string[] {
  const ids: string[] = [];
  let current: string | undefined;
  for (const line of text.split("\n")) {
    const start = /^(0x[0-9a-f]+): \[/.exec(line);
    if (start) current = start[1];
    const server = /^\s+server=guest \(id=\d+\) addr=([^\s]+):\d+/.exec(line);
    if (server && current && addresses.has(server[1]!)) ids.push(current);
  }
  return ids;
}

/**
 * Abort every TCP connection of the host to these addresses (`ss -K`, the kernel's
 * SOCK_DESTROY): HAProxy's idle ones among them, which no runtime-API command reaches by
 * destination. The peer gets a reset.
 */
function closeTcpTo(addresses: string[]): Promise<void> {
  const filter = addresses.flatMap((address, i) => [...(i ? ["or"] : []), "dst", address]);
  return new Promise((resolve, reject) => {
    execFile("ss", ["-K", "-t", "-n", ...filter], { timeout: 5000 }, (err) => (err ? reject(err) : resolve()));
  });
}
