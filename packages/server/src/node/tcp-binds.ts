import type { TcpListenerState } from "@sail/protocol";

/** What the TCP data path says of one public port. */
export interface TcpBind {
  state: TcpListenerState;
  /** Why the host could not bind it (the OS's code, e.g. EADDRINUSE), and since when. */
  unbound?: { code: string; message: string; since: string };
}

/**
 * Which public TCP ports the host holds, as the TCP data path reports them (it binds, and
 * retries a port another program holds). `listener.wait()` and the listener views read it.
 */
export class TcpBinds {
  private readonly ports = new Map<number, TcpBind>();

  /** The data path's latest word on a port; undefined: it no longer serves it. */
  note(publicPort: number, bind: TcpBind | undefined): void {
    if (bind) this.ports.set(publicPort, bind);
    else this.ports.delete(publicPort);
  }

  /** A port the data path has not reported yet is being bound. */
  of(publicPort: number): TcpBind {
    return this.ports.get(publicPort) ?? { state: "pending" };
  }
}
