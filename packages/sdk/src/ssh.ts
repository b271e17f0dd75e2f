import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { checkSshPublicKey, InvalidArgumentError } from "@sail/protocol";

const DEFAULT_KEYS = [".ssh/id_ed25519.pub", ".ssh/id_rsa.pub"];

/**
 * The public key for `ssh`: `true` reads ~/.ssh/id_ed25519.pub, else ~/.ssh/id_rsa.pub, on
 * the caller's machine; a string is a key itself or a path to one.
 */
export function resolveSshKey(ssh: true | string, home = homedir()): string {
  if (ssh === true) {
    const tried = DEFAULT_KEYS.map((k) => join(home, k));
    for (const path of tried) {
      let text: string;
      try {
        text = readFileSync(path, "utf8");
      } catch {
        continue;
      }
      return checkSshPublicKey(text, path);
    }
    throw new InvalidArgumentError("SAIL_SSH_KEY_INVALID", `ssh: true found no public key: tried ${tried.join(" and ")}. Create one with \`ssh-keygen -t ed25519\`, or pass ssh: "<path-or-key>"`, {
      field: "ssh",
      tried,
    });
  }
  if (typeof ssh !== "string" || ssh.trim() === "") throw new InvalidArgumentError("SAIL_SSH_KEY_INVALID", "ssh must be true, a public key, or the path to one", { field: "ssh" });
  if (/^(ssh-|ecdsa-|sk-)/.test(ssh.trim())) return checkSshPublicKey(ssh, "the ssh key given");
  const path = resolve(ssh.replace(/^~(?=\/)/, home));
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidArgumentError("SAIL_SSH_KEY_INVALID", `cannot read the ssh public key ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`, { field: "ssh", tried: [path] });
  }
  return checkSshPublicKey(text, path);
}
