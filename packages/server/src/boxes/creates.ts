import { createHash } from "node:crypto";
import { checkIdempotencyKey, sailError, type CreateSailboxRequest, type SailboxInfo } from "@sail/protocol";
import type { OrgRow, SailboxRow, Store } from "../store/store.js";
import { CreateAbandonedError, type BoxCreator, type CreatePlan } from "./create.js";
import { ProgressRelay, type ProgressSink } from "./images.js";
import type { Logger } from "./logger.js";

/** How long a create's Idempotency-Key is remembered: a day, as Stripe keeps its keys. */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 60 * 60 * 1000;

/** One caller's hold on a create: its progress, its outcome, and a way to leave. */
export interface CreateTicket {
  /** The box, or the typed refusal; `CreateAbandonedError` once every caller left. */
  result: Promise<SailboxInfo>;
  /** The key's create had answered before: this is that box again (as it is now). */
  replayed: boolean;
  /** Hear progress from now on (the latest step at once). */
  listen(sink: ProgressSink): void;
  /** This caller went away: once nobody waits, the create is abandoned and leaves nothing. */
  leave(): void;
}

/** A create in flight, and how many callers wait for it (the first, and retries that joined it). */
class PendingCreate {
  readonly progress = new ProgressRelay();
  private readonly abandon = new AbortController();
  private waiters = 0;
  private settled = false;
  readonly result: Promise<SailboxInfo>;
  private resolve!: (info: SailboxInfo) => void;
  private reject!: (err: unknown) => void;

  constructor(readonly requestSha256: string) {
    this.result = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.result.catch(() => {}); // a caller that joined hears it through its ticket
  }

  /** The create's outcome, once it runs. */
  follow(run: Promise<SailboxInfo>): void {
    run.then(this.resolve, this.reject);
  }

  fail(err: unknown): void {
    this.reject(err);
  }

  get signal(): AbortSignal {
    return this.abandon.signal;
  }

  settle(): void {
    this.settled = true;
  }

  ticket(): CreateTicket {
    this.waiters++;
    let stop: (() => void) | undefined;
    let left = false;
    return {
      result: this.result,
      replayed: false,
      listen: (sink) => (stop = this.progress.listen(sink)),
      leave: () => {
        if (left) return;
        left = true;
        stop?.();
        if (--this.waiters === 0 && !this.settled) this.abandon.abort();
      },
    };
  }
}

/**
 * Creates as callers see them: a create with an `Idempotency-Key` is made once per org and key
 * (for `IDEMPOTENCY_KEY_TTL_MS`): a retry with the same body joins the create in flight or gets
 * the box it made; the same key with another body is refused. A create nobody waits for any
 * more is abandoned (BoxCreator.run leaves nothing of it).
 */
export class Creates {
  private readonly pending = new Map<string, PendingCreate>();

  constructor(
    private readonly store: Store,
    private readonly creator: BoxCreator,
    private readonly describe: (box: SailboxRow) => Promise<SailboxInfo>,
    private readonly log: Logger,
    private readonly keepMs = IDEMPOTENCY_KEY_TTL_MS,
  ) {}

  /** Start a create, or join the one this key names. Refusals of the request throw here, before any answer starts. */
  async begin(org: OrgRow, request: Record<string, unknown>, key?: string): Promise<CreateTicket> {
    const startedAt = Date.now();
    if (key === undefined) return (await this.start(org, request, startedAt)).ticket();
    checkIdempotencyKey(key);
    const requestSha256 = hashRequest(request);
    await this.store.forgetIdempotentCreates(new Date(Date.now() - this.keepMs).toISOString());
    const slot = `${org.id} ${key}`;
    const done = await this.store.findIdempotentCreate(org.id, key);
    const box = done && (await this.store.getSailbox(done.sailboxId));
    if (done && box) {
      this.checkSameRequest(done.requestSha256, requestSha256, key);
      return answered(await this.describe(box));
    }
    const inFlight = this.pending.get(slot);
    if (inFlight) this.checkSameRequest(inFlight.requestSha256, requestSha256, key);
    if (inFlight && !inFlight.signal.aborted) return inFlight.ticket();
    // every caller had left the one in flight: start afresh, inserting only once its undo is done (its name frees up)
    return (await this.start(org, request, startedAt, { key, requestSha256 }, inFlight?.result)).ticket();
  }

  /**
   * The pending create is registered before the first await (a retry with the same key that
   * arrives meanwhile joins it); its result settles once the plan and the run did.
   */
  private async start(org: OrgRow, request: Record<string, unknown>, startedAt: number, idempotency?: { key: string; requestSha256: string }, abandoned?: Promise<unknown>): Promise<PendingCreate> {
    const pending = new PendingCreate(idempotency?.requestSha256 ?? "");
    const slot = idempotency && `${org.id} ${idempotency.key}`;
    if (slot) this.pending.set(slot, pending);
    const forget = () => {
      pending.settle();
      if (slot && this.pending.get(slot) === pending) this.pending.delete(slot);
    };
    let plan: CreatePlan;
    try {
      plan = await this.creator.plan(org, request as unknown as CreateSailboxRequest);
    } catch (err) {
      forget();
      pending.fail(err);
      throw err;
    }
    pending.follow(
      this.creator
        .run(plan, { signal: pending.signal, onProgress: pending.progress.emit, startedAt, notBefore: abandoned?.catch(() => {}) })
        .then(async (info) => {
          // before any caller hears of the box: a retry from now on gets it from the store
          if (idempotency) await this.store.rememberIdempotentCreate(org.id, idempotency.key, idempotency.requestSha256, info.id);
          return info;
        })
        .finally(forget),
    );
    pending.result.catch((err: unknown) => {
      if (err instanceof CreateAbandonedError) this.log.info({ app: plan.app.name, name: plan.name, image: plan.image.name, reason: err.message }, "create abandoned: nothing was made");
    });
    return pending;
  }

  private checkSameRequest(stored: string, given: string, key: string): void {
    if (stored === given) return;
    throw sailError(
      "SAIL_IDEMPOTENCY_KEY_REUSED",
      `The Idempotency-Key ${JSON.stringify(key)} was used for another create request within the last ${this.keepMs / 3_600_000} hours: send a new key for a new request`,
      { field: "Idempotency-Key" },
    );
  }
}

/** A create that had answered already. */
function answered(info: SailboxInfo): CreateTicket {
  return { result: Promise.resolve(info), replayed: true, listen: () => {}, leave: () => {} };
}

/** The body's hash, independent of key order (the SDKs may serialise a retry differently). */
function hashRequest(request: unknown): string {
  return createHash("sha256").update(canonicalJson(request)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
