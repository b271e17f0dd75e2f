/*
 * What removing a box's disk needs that Node cannot do itself:
 *
 *   shutdownFilesystem(path)
 *     FS_IOC_SHUTDOWN (ext4's EXT4_IOC_SHUTDOWN, the same number as XFS_IOC_GOINGDOWN) with
 *     NOLOGFLUSH on the filesystem that holds `path`: from then on the kernel writes nothing
 *     to it and drops its dirty pages. A box's disk is deleted right after, so unmounting it
 *     must not first write back what the guest left in the page cache (measured here: 2 GB
 *     dirty, unmounted in 0.07 s after the shutdown instead of a writeback of 2 GB).
 *
 * Only a path crosses this boundary. The caller must be sure nothing on the filesystem is
 * wanted any more: it cannot be undone short of unmounting it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <node_api.h>

/* include/uapi/linux/fs.h since 6.9 (the ext4 and XFS ioctls had this number before); Debian 12's headers lack it */
#ifndef FS_IOC_SHUTDOWN
#define FS_IOC_SHUTDOWN _IOR('X', 125, uint32_t)
#endif
#define FS_SHUTDOWN_FLAGS_NOLOGFLUSH 0x2

static napi_value js_shutdown_filesystem(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[4096];
  size_t length;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &length) != napi_ok || length == 0 || length >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "shutdownFilesystem(path) needs a path");
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    char message[4200];
    snprintf(message, sizeof message, "open %s: %s", path, strerror(errno));
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  uint32_t flags = FS_SHUTDOWN_FLAGS_NOLOGFLUSH;
  int result = ioctl(fd, FS_IOC_SHUTDOWN, &flags);
  int error = errno;
  close(fd);
  if (result < 0) {
    char message[4200];
    snprintf(message, sizeof message, "shutting down the filesystem of %s: %s", path, strerror(error));
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "shutdownFilesystem", NAPI_AUTO_LENGTH, js_shutdown_filesystem, NULL, &fn);
  napi_set_named_property(env, exports, "shutdownFilesystem", fn);
  return exports;
}
