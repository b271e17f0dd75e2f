import type { CreateSailboxRequest, IngressPortSpec, SailboxInfo } from "@sail/protocol";
import { useState } from "preact/hooks";
import { api, describeError, mintApp } from "./api.js";
import { go } from "./router.js";

/** "3000, 8080" → [3000, 8080]; what is not a number goes to the daemon as typed, which names the rule it breaks. */
const portList = (text: string) =>
  text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((p) => (/^\d+$/.test(p) ? Number(p) : (p as unknown as number)));
const list = (text: string) => text.split(/[\s,]+/).filter(Boolean);

/** The form `sail box create` is: name, app, HTTP and TCP ports with an allowlist, an SSH key. */
export function CreatePage() {
  const [form, setForm] = useState({ name: "", app: "default", http: "", tcp: "", allow: "", allowPublic: false, sshKey: "" });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const set = (key: keyof typeof form) => (e: Event) => {
    const target = e.target as HTMLInputElement;
    setForm({ ...form, [key]: target.type === "checkbox" ? target.checked : target.value });
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const app = await mintApp(form.app.trim() || "default");
      const allow = list(form.allow);
      const tcp: IngressPortSpec[] = portList(form.tcp).map((port) => ({
        port,
        protocol: "tcp",
        ...(allow.length ? { cidrAllowlist: allow } : {}),
        ...(form.allowPublic ? { allowPublic: true } : {}),
      }));
      const request: CreateSailboxRequest = {
        appId: app.id,
        image: { name: "debian" },
        ...(form.name.trim() ? { name: form.name.trim() } : {}),
        ingressPorts: [...portList(form.http), ...tcp],
        ...(form.sshKey.trim() ? { ssh: { publicKey: form.sshKey.trim() } } : {}),
      };
      const box = await api<SailboxInfo>("POST", "/v1/sailboxes", request);
      go(`#/boxes/${encodeURIComponent(box.id)}`);
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main>
      <h1>New box</h1>
      <form class="create" onSubmit={submit}>
        <label>
          Name <input name="name" value={form.name} onInput={set("name")} placeholder="web-demo" autocomplete="off" />
          <small>optional; letters, digits and dashes, unique among the app's live boxes</small>
        </label>
        <label>
          App <input name="app" value={form.app} onInput={set("app")} autocomplete="off" />
          <small>created if missing</small>
        </label>
        <label>
          HTTP ports <input name="http" value={form.http} onInput={set("http")} placeholder="3000" autocomplete="off" />
          <small>each gets an HTTPS URL (https://PORT-ID.domain); serve on 0.0.0.0 inside the box</small>
        </label>
        <label>
          TCP ports <input name="tcp" value={form.tcp} onInput={set("tcp")} placeholder="5432" autocomplete="off" />
          <small>each gets a public TCP port</small>
        </label>
        <label>
          TCP allowlist <input name="allow" value={form.allow} onInput={set("allow")} placeholder="203.0.113.0/24" autocomplete="off" />
          <small>only these sources may connect to the TCP ports (CIDRs, comma-separated); empty: anyone</small>
        </label>
        <label class="check">
          <input type="checkbox" name="allowPublic" checked={form.allowPublic} onChange={set("allowPublic")} /> Allow a well-known unauthenticated TCP port (5432, 6379, …) from anywhere
        </label>
        <label>
          SSH public key <textarea name="sshKey" value={form.sshKey} onInput={set("sshKey")} rows={2} placeholder="ssh-ed25519 AAAA… you@laptop" />
          <small>optional: starts sshd for root with this key and publishes port 22</small>
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? "Creating…" : "Create box"}
          </button>
          <a class="button" href="#/">
            Cancel
          </a>
        </div>
      </form>
    </main>
  );
}
