import { connect, type Socket } from "node:net";

/** Before giving up on a guest that refused, retry briefly: servers restart (E2B waits 100, 200, 300 ms). */
const DIAL_RETRY_MS = [100, 200, 300];
const DIAL_TIMEOUT_MS = 5_000;

/** A connection to a guest port; rejects with the socket's error (ECONNREFUSED: nothing listens). */
export function dial(host: string, port: number, options: { allowHalfOpen?: boolean } = {}): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true, allowHalfOpen: options.allowHalfOpen ?? false });
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

/** `dial`, retried while the guest refuses; undefined when it never accepted. */
export async function dialWithRetries(host: string, port: number, options: { allowHalfOpen?: boolean } = {}): Promise<Socket | undefined> {
  for (let attempt = 0; ; attempt++) {
    const socket = await dial(host, port, options).catch(() => undefined);
    if (socket || attempt >= DIAL_RETRY_MS.length) return socket;
    await new Promise((resolve) => setTimeout(resolve, DIAL_RETRY_MS[attempt]));
  }
}
