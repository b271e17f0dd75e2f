import { errorFromWire, type BackgroundExecInfo, type ExecEvent } from "@sail/protocol";
import type { CallOptions, SailClient } from "./client.js";
import { Queue } from "./queue.js";

export interface ExecOutput {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * A command running in a Sailbox. Output streams as it is produced.
 *
 * @example
 * const proc = sb.exec("ls /");
 * for await (const text of proc.stdout) process.stdout.write(text);
 * console.log(await proc.wait());
 */
export class ExecProcess {
  /** What the command writes to stdout, as it writes it. Read it once. */
  readonly stdout: AsyncIterable<string>;
  /** What the command writes to stderr, as it writes it. Read it once. */
  readonly stderr: AsyncIterable<string>;
  private readonly stdoutQueue = new Queue<string>();
  private readonly stderrQueue = new Queue<string>();
  private readonly collected = { stdout: "", stderr: "" };
  private readonly exit: Promise<number>;

  /** @internal */
  constructor(events: AsyncIterable<ExecEvent>) {
    this.stdout = this.stdoutQueue;
    this.stderr = this.stderrQueue;
    this.exit = this.pump(events);
    this.exit.catch(() => {}); // surfaced through wait()/output() and the streams
  }

  /** Resolves to the exit code once the command ends (128+N when killed by signal N). */
  wait(): Promise<number> {
    return this.exit;
  }

  /** Waits for the end and returns everything the command wrote. */
  async output(): Promise<ExecOutput> {
    const exitCode = await this.exit;
    return { exitCode, ...this.collected };
  }

  private async pump(events: AsyncIterable<ExecEvent>): Promise<number> {
    try {
      for await (const event of events) {
        if ("stream" in event) {
          this.collected[event.stream] += event.data;
          (event.stream === "stdout" ? this.stdoutQueue : this.stderrQueue).push(event.data);
        } else if ("exitCode" in event) {
          this.stdoutQueue.end();
          this.stderrQueue.end();
          return event.exitCode;
        } else {
          throw errorFromWire(event, 500);
        }
      }
      throw new Error("the exec stream ended without an exit code");
    } catch (err) {
      this.stdoutQueue.end(err);
      this.stderrQueue.end(err);
      throw err;
    }
  }
}

/**
 * A command started in the background: `wait()` resolves once it has started;
 * it keeps running, and its output goes to a log you can read with `log()`.
 */
export class BackgroundProcess {
  readonly #client: SailClient;
  private info: BackgroundExecInfo | undefined;
  private readonly started: Promise<BackgroundExecInfo>;

  /** @internal */
  constructor(client: SailClient, started: Promise<BackgroundExecInfo>) {
    this.#client = client;
    this.started = started.then((info) => (this.info = info));
    this.started.catch(() => {});
  }

  /** The exec's id, once started. */
  get id(): string | undefined {
    return this.info?.execId;
  }

  /** Resolves (to this process) once the command has started inside the Sailbox. */
  async wait(): Promise<this> {
    await this.started;
    return this;
  }

  /** Everything the command has written to stdout and stderr so far. */
  async log(options: CallOptions = {}): Promise<string> {
    const info = await this.started;
    return this.#client.text(`/v1/sailboxes/${info.sailboxId}/execs/${info.execId}/log`, options);
  }
}
