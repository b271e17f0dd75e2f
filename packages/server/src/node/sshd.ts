/**
 * SSH in a box: OpenSSH (in the base image) configured for key-only root login. Host
 * keys are generated on the first start and kept in the box's own layer, so they do not
 * change across sshd restarts, daemon restarts or sleep.
 */

/** Our settings come first via sshd_config.d, and the first value sshd reads wins. */
const SSHD_CONFIG = [
  "# Written by Sail: key-only root login.",
  "PermitRootLogin prohibit-password",
  "PubkeyAuthentication yes",
  "PasswordAuthentication no",
  "KbdInteractiveAuthentication no",
  "PermitEmptyPasswords no",
  "UsePAM no",
  "AllowTcpForwarding yes",
].join("\n");

/** Start sshd unless it runs: a lock makes concurrent calls start one daemon, never two. */
export const START_SSHD_SCRIPT = [
  "set -e",
  "exec 9>/run/sail-sshd.lock",
  "flock 9",
  "mkdir -p /run/sshd",
  "ssh-keygen -A >/dev/null",
  "if ! pgrep -x sshd >/dev/null; then /usr/sbin/sshd </dev/null >/dev/null 2>&1; fi",
  "pgrep -x sshd >/dev/null",
].join("\n");

/** Install the user's key and the config, then start sshd. `publicKey` is already validated. */
export function installSshdScript(publicKey: string): string {
  return [
    "set -e",
    "umask 077",
    "mkdir -p /root/.ssh",
    `printf '%s\\n' '${publicKey}' > /root/.ssh/authorized_keys`,
    "umask 022",
    `cat > /etc/ssh/sshd_config.d/sail.conf <<'SAIL_EOF'\n${SSHD_CONFIG}\nSAIL_EOF`,
    START_SSHD_SCRIPT,
  ].join("\n");
}
