/*
 * The mounts a box needs that Debian 12's tools make slowly or not at all (each would be a
 * process, ≈ 12-17 ms apiece on a busy 2-core host; these take well under a millisecond):
 *
 *   bindIdmapped(source, target, hostId, count)
 *     Mounts `source` read-only at `target` as an idmapped mount (Linux 5.12+, mount_setattr(2)
 *     with MOUNT_ATTR_IDMAP): a file owned by id k < count on disk appears owned by hostId + k.
 *     The shared base image (owned by the host's root) is the lower layer of a box's overlay
 *     through such a mount, so inside the box's user namespace (0 -> hostId, count ids) it is
 *     root's, while nothing on disk changes and every box keeps sharing one copy. util-linux
 *     learnt `mount -o X-mount.idmap=` in 2.39; Debian 12 has 2.38, whose libmount passes the
 *     option through unused. The kernel takes the mapping from a user namespace: one is made
 *     for the call by a child cloned into it (CLONE_NEWUSER; CLONE_VM, so nothing of the
 *     daemon's memory is copied), which only waits on a pipe until its namespace is opened.
 *
 *   mountSysfs(netnsPath, target)
 *     Mounts a read-only sysfs at `target` from inside the network namespace at `netnsPath`
 *     (sysfs shows the network devices of the namespace it is mounted from): a thread joins
 *     the namespace (setns(2) changes only the calling thread's), mounts, and ends.
 *
 *   unmount(path) -> boolean
 *     umount2(2), lazily (MNT_DETACH) when the mount is busy; false when nothing is mounted there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <node_api.h>

#define CHILD_STACK_BYTES (64 * 1024)

typedef struct {
  const char *what;
  int error;
} failure;

static int fail(failure *f, const char *what) {
  f->what = what;
  f->error = errno;
  return -1;
}

/* The child: its namespace exists once it runs; it leaves when the parent closes the pipe. */
static int hold_namespace(void *arg) {
  int *pipe_fds = arg;
  char byte;
  close(pipe_fds[1]);
  while (read(pipe_fds[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return 0;
}

static int write_map(pid_t pid, const char *file, const char *map, failure *f) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return fail(f, file);
  ssize_t written = write(fd, map, strlen(map));
  int saved = errno;
  close(fd);
  errno = saved;
  return written == (ssize_t)strlen(map) ? 0 : fail(f, file);
}

/* A descriptor of a new user namespace mapping 0..count-1 to hostId..hostId+count-1 (uids and gids). */
static int mapped_namespace(uint32_t host_id, uint32_t count, failure *f) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) return fail(f, "pipe2");
  char *stack = mmap(NULL, CHILD_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    fail(f, "mmap");
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return -1;
  }
  // the child starts with every signal blocked: it shares the daemon's memory, so none of its handlers may run there
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pid_t pid = clone(hold_namespace, stack + CHILD_STACK_BYTES, CLONE_NEWUSER | CLONE_VM | SIGCHLD, pipe_fds);
  int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  int ns = -1;
  if (pid < 0) {
    errno = clone_errno;
    fail(f, "clone(CLONE_NEWUSER)");
  } else {
    char map[64], path[64];
    snprintf(map, sizeof map, "0 %u %u\n", host_id, count);
    snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
    if (write_map(pid, "uid_map", map, f) == 0 && write_map(pid, "gid_map", map, f) == 0) {
      ns = open(path, O_RDONLY | O_CLOEXEC);
      if (ns < 0) fail(f, "open the user namespace");
    }
  }
  close(pipe_fds[1]);
  close(pipe_fds[0]);
  if (pid > 0)
    while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR) {
    }
  munmap(stack, CHILD_STACK_BYTES);
  return ns;
}

static int bind_idmapped(const char *source, const char *target, uint32_t host_id, uint32_t count, failure *f) {
  int ns = mapped_namespace(host_id, count, f);
  if (ns < 0) return -1;
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) {
    fail(f, "open_tree");
    close(ns);
    return -1;
  }
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY, .userns_fd = (uint64_t)ns};
  int result = 0;
  if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
    result = fail(f, "mount_setattr(MOUNT_ATTR_IDMAP) (does the kernel and this filesystem support idmapped mounts?)");
  else if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
    result = fail(f, "move_mount");
  close(tree);
  close(ns);
  return result;
}

typedef struct {
  const char *netns_path;
  const char *target;
  failure f;
} sysfs_job;

static void *mount_sysfs_thread(void *arg) {
  sysfs_job *job = arg;
  int netns = open(job->netns_path, O_RDONLY | O_CLOEXEC);
  if (netns < 0) {
    fail(&job->f, "open the network namespace");
    return NULL;
  }
  if (setns(netns, CLONE_NEWNET) < 0)
    fail(&job->f, "setns(CLONE_NEWNET)");
  else if (mount("sysfs", job->target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    fail(&job->f, "mount sysfs");
  close(netns);
  return NULL;
}

static int string_arg(napi_env env, napi_value value, char *buffer, size_t size) {
  size_t length;
  return napi_get_value_string_utf8(env, value, buffer, size, &length) == napi_ok && length < size - 1 ? 0 : -1;
}

static void throw_failure(napi_env env, const failure *f) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s", f->what, strerror(f->error));
  napi_throw_error(env, NULL, message);
}

static napi_value js_mount_sysfs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char netns_path[4096], target[4096];
  if (argc < 2 || string_arg(env, argv[0], netns_path, sizeof netns_path) || string_arg(env, argv[1], target, sizeof target)) {
    napi_throw_type_error(env, NULL, "mountSysfs(netnsPath, target) needs two paths");
    return NULL;
  }
  sysfs_job job = {.netns_path = netns_path, .target = target};
  pthread_t thread;
  int error = pthread_create(&thread, NULL, mount_sysfs_thread, &job);
  if (error) {
    job.f.what = "pthread_create";
    job.f.error = error;
  } else
    pthread_join(thread, NULL);
  if (job.f.what) throw_failure(env, &job.f);
  return NULL;
}

static napi_value js_unmount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[4096];
  if (argc < 1 || string_arg(env, argv[0], path, sizeof path)) {
    napi_throw_type_error(env, NULL, "unmount(path) needs a path");
    return NULL;
  }
  int result = umount2(path, UMOUNT_NOFOLLOW);
  if (result < 0 && errno == EBUSY) result = umount2(path, UMOUNT_NOFOLLOW | MNT_DETACH);
  bool unmounted = result == 0;
  // EINVAL: not a mount point; ENOENT: no such path. Both mean nothing is mounted there.
  if (result < 0 && errno != EINVAL && errno != ENOENT) {
    failure f = {0};
    fail(&f, "umount2");
    throw_failure(env, &f);
    return NULL;
  }
  napi_value answer;
  napi_get_boolean(env, unmounted, &answer);
  return answer;
}

static napi_value js_bind_idmapped(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char source[4096], target[4096];
  uint32_t host_id, count;
  if (argc < 4 || string_arg(env, argv[0], source, sizeof source) || string_arg(env, argv[1], target, sizeof target) ||
      napi_get_value_uint32(env, argv[2], &host_id) != napi_ok || napi_get_value_uint32(env, argv[3], &count) != napi_ok || count == 0 ||
      (uint64_t)host_id + count > UINT32_MAX) {
    napi_throw_type_error(env, NULL, "bindIdmapped(source, target, hostId, count) needs two paths and an id range below 2^32-1");
    return NULL;
  }
  failure f = {0};
  if (bind_idmapped(source, target, host_id, count, &f) < 0) throw_failure(env, &f);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "bindIdmapped", NAPI_AUTO_LENGTH, js_bind_idmapped, NULL, &fn);
  napi_set_named_property(env, exports, "bindIdmapped", fn);
  napi_create_function(env, "mountSysfs", NAPI_AUTO_LENGTH, js_mount_sysfs, NULL, &fn);
  napi_set_named_property(env, exports, "mountSysfs", fn);
  napi_create_function(env, "unmount", NAPI_AUTO_LENGTH, js_unmount, NULL, &fn);
  napi_set_named_property(env, exports, "unmount", fn);
  return exports;
}
