import { connect, type Socket } from "node:net";
import type { HttpRoute } from "../boxes/routes.js";

/** Before answering 502, retry the guest dial briefly: servers restart (E2B uses 100, 200, 300 ms). */
const DIAL_RETRY_DELAYS_MS = [100, 200, 300];
const DIAL_TIMEOUT_MS = 5_000;
/** An idle pooled socket is closed after this long (below common server keep-alive timeouts). */
const IDLE_MS = 4_000;
const MAX_IDLE_PER_TARGET = 256;

/**
 * Keep-alive sockets to guests, keyed by the box's lifecycle (`generation`) and port,
 * so a socket from before a restart or wake is never reused; all of a box's sockets,
 * idle or busy, can be dropped at once.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, Socket[]>();
  private readonly byBox = new Map<string, Set<Socket>>();
  private readonly idleCleanup = new WeakMap<Socket, () => void>();

  async acquire(route: HttpRoute): Promise<{ socket?: Socket; reused: boolean; error?: string }> {
    const list = this.idle.get(key(route));
    while (list?.length) {
      const socket = list.pop()!;
      this.idleCleanup.get(socket)?.();
      if (!socket.destroyed && socket.readyState === "open") return { socket, reused: true };
    }
    let lastError = "";
    for (let attempt = 0; ; attempt++) {
      try {
        const socket = await dial(route.guestAddress, route.port);
        this.track(route.sailboxId, socket);
        return { socket, reused: false };
      } catch (err) {
        lastError = (err as NodeJS.ErrnoException).code ?? String(err);
        if (attempt >= DIAL_RETRY_DELAYS_MS.length) return { reused: false, error: lastError };
        await new Promise((resolve) => setTimeout(resolve, DIAL_RETRY_DELAYS_MS[attempt]));
      }
    }
  }

  /** Dial without pooling (tunnels for TCP listeners use this). */
  async dialOnce(route: { sailboxId: string; guestAddress: string; port: number }): Promise<Socket> {
    const socket = await dial(route.guestAddress, route.port, true);
    this.track(route.sailboxId, socket);
    return socket;
  }

  release(route: HttpRoute, socket: Socket): void {
    const k = key(route);
    let list = this.idle.get(k);
    if (!list) this.idle.set(k, (list = []));
    if (list.length >= MAX_IDLE_PER_TARGET) return void socket.destroy();
    const remove = () => {
      const i = list.indexOf(socket);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0 && this.idle.get(k) === list) this.idle.delete(k);
    };
    const onClose = () => remove();
    const onData = () => socket.destroy(); // a guest must not speak unasked
    socket.on("close", onClose);
    socket.on("data", onData);
    socket.setTimeout(IDLE_MS, () => socket.destroy());
    this.idleCleanup.set(socket, () => {
      socket.off("close", onClose);
      socket.off("data", onData);
      socket.setTimeout(0);
      this.idleCleanup.delete(socket);
    });
    list.push(socket);
  }

  /** Close every socket to a box (it sleeps, pauses or ends). */
  dropBox(sailboxId: string): void {
    for (const socket of this.byBox.get(sailboxId) ?? []) socket.destroy();
    this.byBox.delete(sailboxId);
  }

  closeAll(): void {
    for (const id of [...this.byBox.keys()]) this.dropBox(id);
  }

  private track(sailboxId: string, socket: Socket): void {
    let set = this.byBox.get(sailboxId);
    if (!set) this.byBox.set(sailboxId, (set = new Set()));
    set.add(socket);
    socket.on("error", () => socket.destroy()); // whoever uses it sees "close"
    socket.once("close", () => {
      set.delete(socket);
      if (set.size === 0 && this.byBox.get(sailboxId) === set) this.byBox.delete(sailboxId);
    });
  }
}

const key = (route: HttpRoute) => `${route.generation}:${route.port}`;

function dial(host: string, port: number, allowHalfOpen = false): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true, allowHalfOpen });
    const timer = setTimeout(() => onError(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: "ETIMEDOUT" })), DIAL_TIMEOUT_MS);
    const onError = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      resolve(socket);
    });
  });
}
