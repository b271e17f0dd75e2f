import type { BoxSpec } from "./runtime.js";

/** PID 1 of every box: tini reaps the orphans of detached execs; `sleep infinity` keeps the box up. */
export const BOX_INIT = ["/usr/local/sbin/tini", "-s", "--", "sleep", "infinity"];

/**
 * Docker's default capability set minus NET_RAW (no raw sockets for untrusted code):
 * enough for apt, sshd and servers on low ports; no SYS_ADMIN, NET_ADMIN, SYS_MODULE…
 */
export const BOX_CAPABILITIES = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
  "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

export const BOX_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm", "LANG=C.UTF-8"];

const CPU_PERIOD_US = 100_000;

/** The OCI runtime spec (config.json) of one box. */
export function ociConfig(spec: BoxSpec, options: { rootfs: string; netnsPath: string; nofile: number }) {
  const caps = BOX_CAPABILITIES;
  return {
    ociVersion: "1.0.0",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: BOX_INIT,
      env: BOX_ENV,
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      // no CAP_SYS_RESOURCE here: rlimits stay at or below the daemon's hard limits
      rlimits: [{ type: "RLIMIT_NOFILE", hard: options.nofile, soft: options.nofile }],
      noNewPrivileges: false,
    },
    root: { path: options.rootfs, readonly: false },
    hostname: spec.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", "size=262144k"] },
    ],
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }, { type: "network", path: options.netnsPath }],
      cgroupsPath: `/sail/${spec.id}`,
      resources: {
        memory: { limit: spec.memoryMiB * 1024 * 1024, swap: spec.memoryMiB * 1024 * 1024 },
        pids: { limit: spec.pidsLimit },
        cpu: { quota: Math.round(spec.cpu * CPU_PERIOD_US), period: CPU_PERIOD_US },
        devices: [{ allow: false, access: "rwm" }],
      },
      maskedPaths: [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}
