import type { ListenerInfo, SailboxInfo, SailboxTraffic } from "@sail/protocol";
import { useEffect, useRef, useState } from "preact/hooks";
import { boxAction, describeError, getBox, getExecLog, getExecs, getTraffic, terminateBox } from "./api.js";
import { Sparkline } from "./chart.js";
import { ageOf, bytes, imageLabel, tcpCommand } from "./format.js";
import { usePoll } from "./poll.js";
import { go } from "./router.js";
import { TerminalPanel } from "./terminal.js";

/** One box: what it is, its URLs and endpoints, their traffic, actions, background logs and a terminal. */
export function BoxPage({ id, onUnauthenticated }: { id: string; onUnauthenticated: () => void }) {
  const box = usePoll(() => getBox(id), 2_000, [id]);
  useEffect(() => void (box.unauthenticated && onUnauthenticated()), [box.unauthenticated]);
  if (!box.data) return <main>{box.error ? <p class="error">{box.error}</p> : <p class="muted">Loading…</p>}</main>;
  const b = box.data;
  const ended = b.status === "terminated" || b.status === "failed";
  return (
    <main>
      <div class="toolbar">
        <h1>
          {b.name ?? b.id}{" "}
          <span class={`status status-${b.status}`} data-testid="status">
            {b.status}
          </span>
        </h1>
      </div>
      {box.error && <p class="error">{box.error}</p>}
      <dl class="facts">
        <dt>id</dt>
        <dd class="mono">{b.id}</dd>
        <dt>image</dt>
        <dd class="mono">{imageLabel(b.image)}</dd>
        <dt>limits</dt>
        <dd>
          {b.cpu} CPU, {b.memoryMiB} MiB memory, {b.diskMiB === null ? "no disk limit" : `${b.diskMiB} MiB disk (${b.diskInodes ?? "?"} files)`}
        </dd>
        <dt>age</dt>
        <dd>{ageOf(b.createdAt)}</dd>
        <dt>idle sleep</dt>
        <dd>{b.idleTimeout ? `after ${b.idleTimeout}s idle` : "never"}</dd>
        {b.failureReason && (
          <>
            <dt>failure</dt>
            <dd class="error">{b.failureReason}</dd>
          </>
        )}
      </dl>
      {!ended && <Actions box={b} onChange={box.refresh} />}
      <Listeners listeners={b.listeners ?? []} />
      {!ended && (b.listeners ?? []).length > 0 && <Traffic id={b.id} />}
      {!ended && <TerminalPanel sailboxId={b.id} />}
      {!ended && <ExecLogs id={b.id} />}
    </main>
  );
}

function Actions({ box, onChange }: { box: SailboxInfo; onChange: () => void }) {
  const [confirming, setConfirming] = useState<"sleep" | "pause" | "terminate" | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const run = async (work: () => Promise<unknown>, after?: () => void) => {
    setBusy(true);
    setError(undefined);
    try {
      await work();
      after?.();
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
      setConfirming(undefined);
      onChange();
    }
  };
  const can = { sleep: box.status === "running", pause: box.status === "running" || box.status === "sleeping", resume: box.status === "paused" || box.status === "sleeping" };
  const explain = {
    sleep: "Sleep: open connections drop and the box freezes; the next request to its URLs wakes it.",
    pause: "Pause: the box freezes and traffic does not wake it (HTTP gets 503, TCP is closed) until you resume it.",
    terminate: "Terminate: the box, its files and its URLs are gone for good.",
  };
  return (
    <section class="panel actions">
      <h2>Actions</h2>
      <div class="buttons">
        <button type="button" disabled={busy || !can.sleep} onClick={() => setConfirming("sleep")}>
          Sleep
        </button>
        <button type="button" disabled={busy || !can.pause} onClick={() => setConfirming("pause")}>
          Pause
        </button>
        <button type="button" disabled={busy || !can.resume} onClick={() => run(() => boxAction(box.id, "resume"))}>
          Resume
        </button>
        <button type="button" class="danger" disabled={busy} onClick={() => setConfirming("terminate")}>
          Terminate
        </button>
      </div>
      {confirming && (
        <div class="confirm" role="alertdialog" aria-label={`Confirm ${confirming}`}>
          <p>{explain[confirming]}</p>
          <button
            type="button"
            class={confirming === "terminate" ? "danger" : "primary"}
            disabled={busy}
            onClick={() =>
              confirming === "terminate"
                ? run(
                    () => terminateBox(box.id),
                    () => go("#/"),
                  )
                : run(() => boxAction(box.id, confirming))
            }
          >
            Yes, {confirming} {box.name ?? box.id}
          </button>
          <button type="button" onClick={() => setConfirming(undefined)}>
            Cancel
          </button>
        </div>
      )}
      {error && <p class="error">{error}</p>}
    </section>
  );
}

function Listeners({ listeners }: { listeners: ListenerInfo[] }) {
  return (
    <section class="panel">
      <h2>Listeners</h2>
      {listeners.length === 0 && <p class="muted">This box publishes no ports. Publish them when you create a box (HTTP ports get an HTTPS URL, TCP ports a public port).</p>}
      <ul class="listeners">
        {listeners.map((l) => (
          <li key={l.port}>
            <span class="port mono">
              {l.port}/{l.protocol}
            </span>
            {l.protocol === "http" ? (
              <a href={l.endpoint.url} target="_blank" rel="noopener noreferrer" class="mono" data-testid={`url-${l.port}`}>
                {l.endpoint.url}
              </a>
            ) : (
              <CopyLine text={tcpCommand(l)} extra={l.cidrAllowlist.length ? `from ${l.cidrAllowlist.join(", ")}` : "from anywhere"} />
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function CopyLine({ text, extra }: { text: string; extra: string }) {
  const [copied, setCopied] = useState(false);
  const line = useRef<HTMLElement>(null);
  const copy = async () => {
    // the clipboard API exists in secure contexts only (HTTPS, or the loopback address): elsewhere, select the line for Ctrl-C
    if (!navigator.clipboard) return void getSelection()?.selectAllChildren(line.current!);
    await navigator.clipboard.writeText(text);
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return (
    <span class="copyline">
      <code ref={line} data-testid="copy-line">
        {text}
      </code>
      <button type="button" onClick={() => void copy()}>
        {copied ? "Copied" : "Copy"}
      </button>
      <span class="muted">{extra}</span>
    </span>
  );
}

const SAMPLES = 30;

/** Requests/s, open connections, bytes/s and refusals per listener, from the daemon's counters every 2 s. */
function Traffic({ id }: { id: string }) {
  const history = useRef<SailboxTraffic[]>([]);
  const traffic = usePoll(
    async () => {
      const sample = await getTraffic(id);
      history.current = [...history.current, sample].slice(-(SAMPLES + 1));
      return sample;
    },
    2_000,
    [id],
  );
  const samples = history.current;
  if (!traffic.data) return null;
  const rate = (port: number, key: "requests" | "bytesIn" | "bytesOut") =>
    samples.slice(1).map((s, i) => {
      const before = samples[i]!;
      const seconds = Math.max(0.001, (Date.parse(s.sampledAt) - Date.parse(before.sampledAt)) / 1000);
      const now = s.listeners.find((l) => l.port === port)?.[key] ?? 0;
      const then = before.listeners.find((l) => l.port === port)?.[key] ?? 0;
      return Math.max(0, now - then) / seconds;
    });
  return (
    <section class="panel traffic" data-testid="traffic">
      <header>
        <h2>Traffic</h2>
        <span class="muted">wakes from sleep: {traffic.data.wakes}</span>
      </header>
      {traffic.data.listeners.map((l) => {
        const refusals = Object.entries(l.refusals);
        return (
          <div class="traffic-row" key={l.port}>
            <div class="port mono">
              {l.port}/{l.protocol}
            </div>
            <Sparkline values={samples.slice(1).map((s) => s.listeners.find((x) => x.port === l.port)?.open ?? 0)} label="open connections" format={(n) => String(n)} />
            <Sparkline values={rate(l.port, "requests")} label={l.protocol === "http" ? "requests/s" : "connections/s"} format={(n) => n.toFixed(1)} />
            <Sparkline values={rate(l.port, "bytesIn")} label="in" format={(n) => `${bytes(n)}/s`} />
            <Sparkline values={rate(l.port, "bytesOut")} label="out" format={(n) => `${bytes(n)}/s`} />
            <div class="refusals">
              <span class="muted">refused</span>
              {refusals.length === 0 ? (
                <span> none</span>
              ) : (
                refusals.map(([reason, n]) => (
                  <div class="mono" key={reason}>
                    {reason} ×{n}
                  </div>
                ))
              )}
            </div>
          </div>
        );
      })}
    </section>
  );
}

function ExecLogs({ id }: { id: string }) {
  const execs = usePoll(() => getExecs(id), 5_000, [id]);
  const [open, setOpen] = useState<string | undefined>(undefined);
  const log = usePoll(() => (open ? getExecLog(id, open) : Promise.resolve("")), 3_000, [id, open]);
  return (
    <section class="panel">
      <h2>Background execs</h2>
      {execs.error && <p class="error">{execs.error}</p>}
      {execs.data?.length === 0 && (
        <p class="muted">
          None yet: <code>sail box exec {id} --background -- CMD</code> starts one.
        </p>
      )}
      <ul class="execs">
        {(execs.data ?? []).map((e) => (
          <li key={e.execId}>
            <button type="button" class="link" onClick={() => setOpen(open === e.execId ? undefined : e.execId)}>
              <code>{e.cmd}</code>
            </button>{" "}
            <span class="muted">started {ageOf(e.startedAt)} ago</span>
            {open === e.execId && <pre class="log">{log.error ?? (log.data || "(no output yet)")}</pre>}
          </li>
        ))}
      </ul>
    </section>
  );
}
