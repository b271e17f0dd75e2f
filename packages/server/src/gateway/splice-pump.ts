import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";

interface Native {
  init(onDone: (id: number, aToB: number, bToA: number, errno: number) => void): void;
  pump(fdA: number, fdB: number, headForB?: Buffer | null, headForA?: Buffer | null): number;
  drop(id: number): void;
  bytes(id: number): [number, number] | undefined;
  stats(): PumpStats;
}

export interface PumpStats {
  /** Pump threads started (a fixed pool, started on the first connection). */
  threads: number;
  /** Connections being pumped. */
  connections: number;
  /** Pipes open: lent to directions with bytes in flight, or spare. */
  pipes: number;
}

export interface PumpResult {
  /** Bytes moved from the first socket to the second, and back. */
  aToB: number;
  bToA: number;
  /** The first error either side hit (an errno), or 0 after a clean close. */
  errno: number;
}

/** Where `npm run build` puts the module: packages/server/native/build (from src/ or dist/). */
const MODULE_PATH = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/splice-pump.node");

/** What Node exposes of a TCP socket's libuv handle. */
interface TcpHandle {
  fd: number;
  reading: boolean;
  readStop(): number;
}

/**
 * Zero-copy raw-TCP forwarding: two connected sockets are handed to a native pump that moves
 * bytes with splice(2) in the kernel (native/splice-pump.c) on a small, fixed pool of threads,
 * with half-close, error propagation and back-pressure. JavaScript keeps nothing of them but an
 * id to drop them by.
 */
export class SplicePumps {
  private readonly waiting = new Map<number, (result: PumpResult) => void>();

  private constructor(private readonly native: Native) {
    native.init((id, aToB, bToA, errno) => {
      const resolve = this.waiting.get(id);
      this.waiting.delete(id);
      resolve?.({ aToB, bToA, errno });
    });
  }

  /** The native pump, or undefined (with the reason) when it was not built for this host. */
  static load(): { pumps?: SplicePumps; why?: string } {
    if (!existsSync(MODULE_PATH)) return { why: `${MODULE_PATH} is missing (npm run build compiles it; it needs a C compiler)` };
    try {
      return { pumps: new SplicePumps(createRequire(import.meta.url)(MODULE_PATH) as Native) };
    } catch (err) {
      return { why: `${MODULE_PATH} does not load: ${(err as Error).message}` };
    }
  }

  /** Connections being pumped now. */
  get size(): number {
    return this.waiting.size;
  }

  /**
   * Take over two connected sockets (created with allowHalfOpen, not yet piped anywhere):
   * bytes Node already read from one go to the other first; the Node sockets are destroyed
   * (the pump holds its own descriptors). `finished` resolves when both directions ended.
   */
  splice(a: Socket, b: Socket, options: { prefixForB?: Buffer } = {}): { id: number; finished: Promise<PumpResult> } {
    const handleA = detach(a);
    const handleB = detach(b);
    // bytes for b go through the pump, first: a Node write still queued would die with the socket
    const headForB = options.prefixForB ? Buffer.concat([options.prefixForB, ...(handleA.head ? [handleA.head] : [])]) : handleA.head;
    const id = this.native.pump(handleA.fd, handleB.fd, headForB, handleB.head);
    // the pump dup()ed the descriptors: closing Node's copies leaves the connections open
    a.destroy();
    b.destroy();
    const finished = new Promise<PumpResult>((resolve) => this.waiting.set(id, resolve));
    return { id, finished };
  }

  /** Close both sides of a pumped connection now (sleep, shutdown); `finished` follows. */
  drop(id: number): void {
    this.native.drop(id);
  }

  bytes(id: number): [number, number] | undefined {
    return this.native.bytes(id);
  }

  stats(): PumpStats {
    return this.native.stats();
  }
}

/** Stop Node reading a socket and collect what it had read but nobody consumed. */
function detach(socket: Socket): { fd: number; head: Buffer | null } {
  const handle = (socket as unknown as { _handle: TcpHandle | null })._handle;
  if (!handle || typeof handle.fd !== "number" || handle.fd < 0) throw new Error("the socket has no open descriptor");
  const chunks: Buffer[] = [];
  // read() may ask the handle to read again; that only registers interest, so the
  // readStop right after runs before any further bytes can reach Node
  for (let chunk: Buffer | null; (chunk = socket.read() as Buffer | null) !== null;) chunks.push(chunk);
  handle.reading = false;
  handle.readStop();
  return { fd: handle.fd, head: chunks.length ? Buffer.concat(chunks) : null };
}
