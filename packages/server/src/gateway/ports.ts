import { createServer } from "node:net";

/**
 * A daemon that was just killed may leave processes holding the port for a moment: wait (up
 * to 3 s) until it can be bound. A port another program holds is reported then, with the
 * address, before anything starts on it.
 */
export async function waitForFreePort(host: string, port: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const probe = createServer();
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      probe.once("error", resolve).listen(port, host, () => probe.close(() => resolve(undefined)));
    });
    if (!error) return;
    if (error.code !== "EADDRINUSE" || attempt >= 30) throw new Error(`the HTTPS gateway could not listen on ${host}:${port}: ${error.message}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
