import type { SailboxInfo } from "@sail/protocol";
import { useEffect } from "preact/hooks";
import { listApps, listBoxes } from "./api.js";
import { ageOf, imageLabel } from "./format.js";
import { usePoll } from "./poll.js";
import { go } from "./router.js";

/** Every box of the org, newest first, updated every 2 seconds; filter by app. */
export function BoxesPage({ app, onUnauthenticated }: { app?: string; onUnauthenticated: () => void }) {
  const apps = usePoll(listApps, 10_000, []);
  const boxes = usePoll(listBoxes, 2_000, []);
  const unauthenticated = boxes.unauthenticated || apps.unauthenticated;
  useEffect(() => void (unauthenticated && onUnauthenticated()), [unauthenticated]);
  const appNames = new Map((apps.data ?? []).map((a) => [a.id, a.name]));
  // a box of an app made since the last look (by the SDK or the CLI): ask for the apps again now
  const unknownApp = apps.data !== undefined && (boxes.data ?? []).some((b) => !appNames.has(b.appId));
  useEffect(() => void (unknownApp && apps.refresh()), [unknownApp, boxes.data]);
  const appId = app ? apps.data?.find((a) => a.name === app)?.id : undefined;
  const shown = (boxes.data ?? []).filter((b: SailboxInfo) => (app ? b.appId === appId : true) && b.status !== "terminated");
  return (
    <main>
      <div class="toolbar">
        <h1>Boxes</h1>
        <label>
          App{" "}
          <select value={app ?? ""} onChange={(e) => go((e.target as HTMLSelectElement).value ? `#/?app=${encodeURIComponent((e.target as HTMLSelectElement).value)}` : "#/")} data-testid="app-filter">
            <option value="">all apps</option>
            {(apps.data ?? []).map((a) => (
              <option value={a.name}>{a.name}</option>
            ))}
          </select>
        </label>
        <a class="button primary" href="#/new">
          New box
        </a>
      </div>
      {boxes.error && <p class="error">{boxes.error}</p>}
      {boxes.data && shown.length === 0 && <p class="empty">No live boxes{app ? ` in ${app}` : ""}. Create one with “New box” or `sail box create`.</p>}
      {shown.length > 0 && (
        <table class="boxes" data-testid="boxes">
          <thead>
            <tr>
              <th>Name</th>
              <th>Status</th>
              <th>App</th>
              <th>Image</th>
              <th>Age</th>
              <th>CPU</th>
              <th>Memory</th>
              <th>Ports</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((b) => (
              <tr key={b.id} data-box={b.id}>
                <td>
                  <a href={`#/boxes/${encodeURIComponent(b.id)}`}>{b.name ?? b.id}</a>
                  <div class="muted mono">{b.id}</div>
                </td>
                <td>
                  <span class={`status status-${b.status}`}>{b.status}</span>
                </td>
                <td>{appNames.get(b.appId) ?? b.appId}</td>
                <td class="mono">{imageLabel(b.image)}</td>
                <td>{ageOf(b.createdAt)}</td>
                <td>{b.cpu}</td>
                <td>{b.memoryMiB} MiB</td>
                <td class="mono">{(b.listeners ?? []).map((l) => `${l.port}/${l.protocol}`).join(" ") || "–"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}
