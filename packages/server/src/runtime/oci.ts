import { existsSync, readdirSync } from "node:fs";
import type { BoxSpec } from "./runtime.js";
import { userNamespaceSpec, type IdRange } from "./userns.js";

/** PID 1 of every box: tini reaps the orphans of detached execs; `sleep infinity` keeps the box up. */
export const BOX_INIT = ["/usr/local/sbin/tini", "-s", "--", "sleep", "infinity"];

/**
 * Docker's default capability set minus NET_RAW (no raw sockets for untrusted code):
 * enough for apt, sshd and servers on low ports; no SYS_ADMIN, NET_ADMIN, SYS_MODULE…
 */
export const BOX_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

export const BOX_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm", "LANG=C.UTF-8"];

const CPU_PERIOD_US = 100_000;

const EPERM = 1;
const ENOSYS = 38;
const CLONE_NEWUSER = 0x10000000;

/**
 * System calls a box may not make (EPERM): kernel keyrings, BPF, perf, userfaultfd and
 * io_uring (frequent kernel-exploit surfaces), module and kexec loading, mounts and
 * namespace changes (no unprivileged user namespaces either), clock and swap changes,
 * reboot, the kernel log, file handles that bypass path checks. Most already fail without
 * the capability; the filter also covers what a kernel allows unprivileged.
 */
export const DENIED_SYSCALLS = [
  "add_key",
  "keyctl",
  "request_key",
  "bpf",
  "perf_event_open",
  "userfaultfd",
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "create_module",
  "mount",
  "umount2",
  "pivot_root",
  "mount_setattr",
  "move_mount",
  "open_tree",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "unshare",
  "setns",
  "open_by_handle_at",
  "name_to_handle_at",
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  "adjtimex",
  "swapon",
  "swapoff",
  "acct",
  "reboot",
  "syslog",
  "lookup_dcookie",
  "quotactl",
  "iopl",
  "ioperm",
  "uselib",
  "vhangup",
  "nfsservctl",
  "get_kernel_syms",
  "query_module",
];

const SECCOMP_ARCHES: Record<BoxSpec["arch"], string[]> = {
  amd64: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  arm64: ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
};

/** Everything allowed except the list above; clone3 says ENOSYS so libc falls back to clone, whose flags are checked. */
export function seccompProfile(arch: BoxSpec["arch"]) {
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: SECCOMP_ARCHES[arch],
    syscalls: [
      { names: DENIED_SYSCALLS, action: "SCMP_ACT_ERRNO", errnoRet: EPERM },
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS },
      // clone(CLONE_NEWUSER...): flags are argument 0 on x86-64 and arm64
      { names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: EPERM, args: [{ index: 0, value: CLONE_NEWUSER, valueTwo: CLONE_NEWUSER, op: "SCMP_CMP_MASKED_EQ" }] },
    ],
  };
}

/**
 * Paths a box reads as empty (a file) or an empty read-only directory: Docker's current default
 * (moby daemon/pkg/oci/defaults.go). Kernel memory and key lists, timer and scheduler internals
 * that leak other tenants' activity, interrupt counts and RAPL energy counters (powercap:
 * the PLATYPUS power side channel, CVE-2020-8694; /proc/interrupts and thermal_throttle:
 * GHSA-6fw5-f8r9-fgfm), firmware tables. A path this kernel lacks is skipped by crun.
 */
export const MASKED_PATHS = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/interrupts",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/sys/devices/virtual/powercap",
  "/sys/firmware",
];

/** Read-only inside the box; /sys/fs/cgroup's tmpfs too (in a user namespace crun cannot mount it read-only). */
export const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys/fs/cgroup"];

let thermalThrottle: string[] | undefined;

/** Each CPU's thermal_throttle directory the host has (Docker masks them too: they count throttling events of every tenant). */
function thermalThrottlePaths(cpuDir = "/sys/devices/system/cpu"): string[] {
  thermalThrottle ??= readdirSync(cpuDir)
    .filter((entry) => /^cpu\d+$/.test(entry))
    .map((cpu) => `${cpuDir}/${cpu}/thermal_throttle`)
    .filter((path) => existsSync(path));
  return thermalThrottle;
}

/**
 * The OCI runtime spec (config.json) of one box. The seccomp filter is for the host's
 * architecture even in an emulated box: qemu-user makes the host's system calls.
 *
 * The box has a user namespace of its own (`ids`). Its network namespace stays the host
 * root's (the daemon configures it), so it cannot mount a sysfs (the kernel ties sysfs to the
 * network namespace's owner): `sysfs` is one the daemon mounted for that network namespace
 * (network.ts), bound read-only with the masked paths over it. Its root cannot change the
 * namespace's sysctls either, so the daemon lets it bind ports below 1024 there.
 */
export function ociConfig(spec: BoxSpec, options: { rootfs: string; netnsPath: string; sysfs: string; nofile: number; hostArch: BoxSpec["arch"]; ids: IdRange; cgroupsPath?: string }) {
  const caps = BOX_CAPABILITIES;
  const userns = userNamespaceSpec(options.ids);
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
      { destination: "/sys", type: "bind", source: options.sysfs, options: ["rbind", "rro", "nosuid", "noexec", "nodev"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
      { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", "size=262144k"] },
    ],
    linux: {
      namespaces: [userns.namespace, { type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }, { type: "network", path: options.netnsPath }],
      uidMappings: userns.uidMappings,
      gidMappings: userns.gidMappings,
      cgroupsPath: options.cgroupsPath ?? `/sail/${spec.id}`,
      seccomp: seccompProfile(options.hostArch),
      resources: {
        memory: { limit: spec.memoryMiB * 1024 * 1024, swap: spec.memoryMiB * 1024 * 1024 },
        pids: { limit: spec.pidsLimit },
        cpu: { quota: Math.round(spec.cpu * CPU_PERIOD_US), period: CPU_PERIOD_US },
        devices: [{ allow: false, access: "rwm" }],
      },
      maskedPaths: [...MASKED_PATHS, ...thermalThrottlePaths()],
      readonlyPaths: READONLY_PATHS,
    },
  };
}
