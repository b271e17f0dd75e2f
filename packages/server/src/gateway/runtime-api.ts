import { connect } from "node:net";

/**
 * The most one connection sends HAProxy's runtime API: half of `tune.bufsize` (16384, the
 * config's). The management guide (§9.3) says the whole line must fit the buffer; measured on
 * Debian's 2.6.12, one command of 15,360 bytes (bufsize − maxrewrite) or more was never
 * answered, and stuck CLI sessions then filled its ten slots until `stats timeout`.
 */
export const LINE_BUDGET_BYTES = 8192;

/** HAProxy refused a command, answered something else than a success, or did not answer in time. */
export class RuntimeApiError extends Error {
  override readonly name = "RuntimeApiError";
  constructor(
    message: string,
    readonly command?: string,
    readonly answer?: string,
  ) {
    super(message);
  }
}

/**
 * HAProxy's runtime API over its admin socket (management guide §9.3): one connection per call,
 * a line of `;`-separated commands in, every answer out (each ends with an empty line). Calls
 * are queued so they apply in order, and each is bounded by `timeoutMs`.
 */
export class RuntimeApi {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly socketPath: string,
    private readonly timeoutMs = 10_000,
  ) {}

  /** Run commands in order (joined with ";" on one line); resolves with the answers as HAProxy wrote them (for `show …`). */
  run(...commands: string[]): Promise<string> {
    return this.enqueue(() => this.send(commands.join(";")));
  }

  /**
   * Run commands that answer nothing when they succeed (`add map`, `del map`, `set map`,
   * `commit map`), in lines within the buffer; every answer is checked. Rejects with the first
   * command HAProxy refused and its answer ("Key not found.", "entry not found."), or when it
   * answered fewer commands than it was sent; later lines are not sent then.
   */
  change(commands: readonly string[]): Promise<void> {
    return this.enqueue(async () => {
      for (const line of batchLines(commands)) await this.sendChecked(line.split(";"), line);
    });
  }

  /**
   * Replace a map's whole content atomically (§9.3 `prepare map`, `add map @<ver>` with a
   * payload, `commit map @<ver>`): requests go on matching the old entries until the commit,
   * then only the new ones. The payload is sent in chunks within the buffer; a failure before
   * the commit leaves the map as it was (an uncommitted version is dropped by the next commit).
   */
  replaceMap(map: string, entries: ReadonlyArray<readonly [key: string, value: string]>): Promise<void> {
    return this.enqueue(async () => {
      const prepared = await this.send(`prepare map ${map}`);
      const version = /^New version created: (\d+)$/m.exec(prepared)?.[1];
      if (!version) throw new RuntimeApiError(`HAProxy did not prepare a new version of ${map}: ${JSON.stringify(prepared.trim())}`, `prepare map ${map}`, prepared);
      const head = `add map @${version} ${map} <<\n`;
      for (const chunk of payloadChunks(entries, LINE_BUDGET_BYTES - head.length - 1)) {
        // a payload ends with an empty line
        await this.sendChecked([`add map @${version} ${map}`], `${head}${chunk}\n`);
      }
      await this.sendChecked([`commit map @${version} ${map}`], `commit map @${version} ${map}`);
    });
  }

  /** Resolves once every call queued so far was answered (or failed). */
  async drained(): Promise<void> {
    await this.queue.catch(() => {});
  }

  private enqueue<T>(call: () => Promise<T>): Promise<T> {
    const next = this.queue.catch(() => {}).then(call);
    this.queue = next;
    return next;
  }

  /** Send a line whose commands each answer nothing on success. */
  private async sendChecked(commands: readonly string[], line: string): Promise<void> {
    const answers = splitAnswers(await this.send(line));
    for (const [i, command] of commands.entries()) {
      const answer = answers[i];
      if (answer === undefined) throw new RuntimeApiError(`HAProxy answered ${answers.length} of ${commands.length} commands; \`${command}\` got no answer`, command);
      if (answer !== "") throw new RuntimeApiError(`HAProxy refused \`${command}\`: ${answer}`, command, answer);
    }
  }

  private send(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.socketPath);
      let answer = "";
      socket.setEncoding("utf8");
      socket.setTimeout(this.timeoutMs, () => socket.destroy(new RuntimeApiError(`HAProxy's runtime API did not answer \`${line.slice(0, 80)}\` within ${this.timeoutMs} ms`)));
      socket.on("connect", () => socket.end(line.endsWith("\n") ? line : `${line}\n`));
      socket.on("data", (chunk: string) => (answer += chunk));
      socket.on("error", reject);
      socket.on("close", (hadError) => {
        if (!hadError) resolve(answer);
      });
    });
  }
}

/**
 * Each command's answer, from a line's output: HAProxy ends every command's output with an
 * empty line, so a command that succeeded silently answers "". An unterminated last answer
 * (a cut connection) is kept as it is.
 */
export function splitAnswers(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const answers: string[] = [];
  let current: string[] = [];
  for (const line of lines) {
    if (line !== "") {
      current.push(line);
      continue;
    }
    answers.push(current.join("\n"));
    current = [];
  }
  if (current.length) answers.push(current.join("\n"));
  return answers;
}

/** Commands joined with ";" into lines of at most `budget` bytes (each command alone must fit). */
export function batchLines(commands: readonly string[], budget = LINE_BUDGET_BYTES): string[] {
  const lines: string[] = [];
  let line = "";
  for (const command of commands) {
    checkWord(command, /[;\\\n]/);
    if (Buffer.byteLength(command) + 1 > budget) throw new RuntimeApiError(`\`${command.slice(0, 80)}…\` is longer than HAProxy's command buffer allows (${budget} bytes)`, command);
    if (line && Buffer.byteLength(line) + 1 + Buffer.byteLength(command) + 1 > budget) {
      lines.push(line);
      line = "";
    }
    line = line ? `${line};${command}` : command;
  }
  if (line) lines.push(line);
  return lines;
}

/** `key value` lines of a map payload, in chunks of at most `budget` bytes. */
export function payloadChunks(entries: ReadonlyArray<readonly [string, string]>, budget: number): string[] {
  const chunks: string[] = [];
  let chunk = "";
  for (const [key, value] of entries) {
    checkWord(key, /[\s;\\]/);
    checkWord(value, /[\n;\\]/);
    const line = `${key} ${value}\n`;
    if (Buffer.byteLength(line) > budget) throw new RuntimeApiError(`the map entry for ${key.slice(0, 80)} is longer than HAProxy's command buffer allows`);
    if (chunk && Buffer.byteLength(chunk) + Buffer.byteLength(line) > budget) {
      chunks.push(chunk);
      chunk = "";
    }
    chunk += line;
  }
  if (chunk) chunks.push(chunk);
  return chunks;
}

/** Sail's hosts and values never hold these; refusing them keeps one entry from becoming two commands. */
function checkWord(word: string, forbidden: RegExp): void {
  if (forbidden.test(word)) throw new RuntimeApiError(`refusing to send ${JSON.stringify(word.slice(0, 80))} to HAProxy's runtime API: it holds a separator`);
}
