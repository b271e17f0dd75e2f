import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { Socket } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ActivityReport } from "../boxes/idle.js";
import type { HttpRoute } from "../boxes/routes.js";
import type { GatewayError } from "./error-pages.js";
import type { HandedOver } from "./proxy-connection.js";
import type { TlsMaterial } from "./tls.js";

interface Native {
  start(certPem: string, keyPem: string, domain: string, onHandover: (fd: number, peer: string, bytes: Buffer, answer: GatewayError | null) => void): void;
  adopt(fd: number, peer: string): void;
  setRoutes(routes: Array<[string, string, string, string, number]>): void;
  dropBox(sailboxId: string): void;
  take(): EngineTotals;
  stop(): void;
}

/** What the engine counted since the last take(), and its per-box activity (open exchanges, last byte). */
export interface EngineTotals {
  connections: number;
  requests: number;
  tunnels: number;
  bytesIn: number;
  bytesOut: number;
  activity: ActivityReport;
}

/** Where `npm run build` puts the module: packages/server/native/build (from src/ or dist/). */
const MODULE_PATH = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/http-engine.node");

/**
 * The HTTPS data path in C (native/http-engine.c): TLS, Host routing and HTTP/1.1 forwarding
 * over pooled upstream sockets for requests to running boxes, and WebSocket tunnels, in one
 * thread with an epoll loop. What it does not serve (odd or partial heads, sleeping/paused/
 * unknown boxes, failed dials) it hands back as a plaintext socket with the bytes it had read: `onHandover` gives
 * those to the JavaScript proxy, which answers as it always has.
 */
export class HttpEngine {
  private constructor(private readonly native: Native) {}

  /** The engine, or undefined with the reason (not built, or SAIL_HTTP_ENGINE=off). */
  static load(): { engine?: HttpEngine; why?: string } {
    if (process.env.SAIL_HTTP_ENGINE === "off") return { why: "SAIL_HTTP_ENGINE=off" };
    if (!existsSync(MODULE_PATH)) return { why: `${MODULE_PATH} is missing (npm run build compiles it; it needs a C compiler and libssl-dev)` };
    try {
      return { engine: new HttpEngine(createRequire(import.meta.url)(MODULE_PATH) as Native) };
    } catch (err) {
      return { why: `${MODULE_PATH} does not load: ${(err as Error).message}` };
    }
  }

  start(tls: TlsMaterial, domain: string, onHandover: (socket: Socket, handedOver: HandedOver) => void): void {
    this.native.start(tls.cert, tls.key, domain.toLowerCase(), (fd, peer, bytes, answer) => {
      onHandover(new Socket({ fd, readable: true, writable: true }), { peer, bytes, answer });
    });
  }

  /** Take over an accepted connection (created with pauseOnConnect); Node's socket is closed. */
  adopt(socket: Socket): void {
    const fd = (socket as unknown as { _handle: { fd?: number } | null })._handle?.fd;
    if (typeof fd !== "number" || fd < 0) return void socket.destroy();
    this.native.adopt(fd, (socket.remoteAddress ?? "").replace(/^::ffff:/, ""));
    socket.destroy(); // the engine holds its own descriptor
  }

  /** The engine serves running boxes only; every other route is the JavaScript proxy's. */
  setRoutes(routes: Iterable<[string, HttpRoute]>): void {
    const running: Array<[string, string, string, string, number]> = [];
    for (const [label, route] of routes) {
      if (route.status === "running") running.push([label, route.sailboxId, route.generation, route.guestAddress, route.port]);
    }
    this.native.setRoutes(running);
  }

  /** Close the engine's connections and pooled sockets to a box (sleep, terminate). */
  dropBox(sailboxId: string): void {
    this.native.dropBox(sailboxId);
  }

  take(): EngineTotals {
    return this.native.take();
  }

  stop(): void {
    this.native.stop();
  }
}
