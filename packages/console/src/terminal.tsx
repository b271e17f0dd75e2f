import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import type { PtyServerMessage } from "@sail/protocol";
import { useEffect, useRef, useState } from "preact/hooks";

/**
 * A terminal in the box: xterm.js (the terminal emulator, which parses the guest's bytes) over
 * the PTY WebSocket on the console's own origin. The session cookie authenticates it; the
 * daemon checks the Origin of the upgrade.
 */
export function TerminalPanel({ sailboxId }: { sailboxId: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [session, setSession] = useState(0);
  const [state, setState] = useState<"idle" | "connecting" | "open" | "ended">("idle");
  const [message, setMessage] = useState<string | undefined>(undefined);

  useEffect(() => {
    if (session === 0 || !host.current) return;
    const term = new Terminal({ cursorBlink: true, fontSize: 13, fontFamily: "'DejaVu Sans Mono', monospace", theme: { background: "#0f172a", foreground: "#e2e8f0" }, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fit.fit();
    term.focus();
    setState("connecting");
    setMessage(undefined);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/sailboxes/${encodeURIComponent(sailboxId)}/pty?cols=${term.cols}&rows=${term.rows}`);
    ws.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    let ended = false;
    const end = (text: string) => {
      if (ended) return;
      ended = true;
      setState("ended");
      setMessage(text);
    };
    ws.onopen = () => setState("open");
    ws.onmessage = (event: MessageEvent<ArrayBuffer | string>) => {
      if (typeof event.data !== "string") return term.write(new Uint8Array(event.data));
      const control = JSON.parse(event.data) as PtyServerMessage;
      if (control.type === "exit") end(`The program exited with code ${control.exitCode}.`);
      else end(`${control.error.code}: ${control.error.message}`);
    };
    ws.onclose = (event) => end(`The terminal's connection closed (WebSocket code ${event.code}).`);
    const send = (data: Uint8Array | string) => ws.readyState === WebSocket.OPEN && ws.send(data);
    const typed = term.onData((data) => send(encoder.encode(data)));
    const binary = term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    const resized = term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(host.current);
    return () => {
      observer.disconnect();
      typed.dispose();
      binary.dispose();
      resized.dispose();
      ws.onclose = null;
      ws.close();
      term.dispose();
    };
  }, [session, sailboxId]);

  return (
    <section class="panel terminal-panel">
      <header>
        <h2>Terminal</h2>
        <span class={`term-state term-${state}`}>{state === "open" ? "connected" : state === "connecting" ? "connecting…" : state === "ended" ? "ended" : ""}</span>
        <button type="button" onClick={() => setSession((n) => n + 1)}>
          {session === 0 ? "Open terminal" : "New terminal"}
        </button>
      </header>
      {message && (
        <p class="term-message" role="status">
          {message}
        </p>
      )}
      <div class="terminal" ref={host} data-testid="terminal" hidden={session === 0} />
    </section>
  );
}
