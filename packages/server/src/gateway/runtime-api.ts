import { connect } from "node:net";

/**
 * HAProxy's runtime API over its admin socket (management.txt §9.3): one connection per call,
 * the command line in, the whole answer out. Commands are queued so they apply in order.
 */
export class RuntimeApi {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly socketPath: string) {}

  /** Run commands in order (joined with ";" on one line); resolves with the answers. */
  run(...commands: string[]): Promise<string> {
    const next = this.queue.catch(() => {}).then(() => this.send(commands.join(";")));
    this.queue = next;
    return next;
  }

  /** Resolves once every command queued so far was answered. */
  async drained(): Promise<void> {
    await this.queue.catch(() => {});
  }

  private send(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.socketPath);
      let answer = "";
      socket.setEncoding("utf8");
      socket.setTimeout(10_000, () => socket.destroy(new Error(`HAProxy's runtime API did not answer \`${line.slice(0, 80)}\``)));
      socket.on("connect", () => socket.end(`${line}\n`));
      socket.on("data", (chunk: string) => (answer += chunk));
      socket.on("error", reject);
      socket.on("close", (hadError) => {
        if (!hadError) resolve(answer);
      });
    });
  }
}
