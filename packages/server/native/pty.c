/*
 * The two things an interactive exec needs that Node cannot do itself:
 *
 *   receiveFd(socketFd) -> Promise<number>
 *     `crun exec --tty --console-socket PATH` opens the pseudo-terminal inside the box and
 *     sends its master end over the unix socket at PATH as SCM_RIGHTS ancillary data
 *     (runtime-spec "console socket"). Node's net module never hands such descriptors to
 *     JavaScript, so the daemon accepts the connection (paused: libuv reads nothing) and
 *     this receives the descriptor on a threadpool thread (poll, then recvmsg).
 *
 *   setWindowSize(masterFd, cols, rows)
 *     TIOCSWINSZ on the master: the kernel sends SIGWINCH to the terminal's foreground
 *     process group, which is how `stty size`, shells and editors learn the new size.
 *
 * Only descriptors and sizes cross this boundary: the bytes of the terminal (the guest's
 * output) are never read here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <node_api.h>

/* crun sends the descriptor right after it connects; this bounds a peer that never does */
#define RECEIVE_TIMEOUT_MS 10000

typedef struct {
  int socket_fd;
  int received_fd;
  int error;
  const char *what;
  napi_deferred deferred;
  napi_async_work work;
} receive_job;

static void receive_execute(napi_env env, void *data) {
  (void)env;
  receive_job *job = data;
  struct pollfd pfd = {.fd = job->socket_fd, .events = POLLIN};
  int ready;
  do ready = poll(&pfd, 1, RECEIVE_TIMEOUT_MS);
  while (ready < 0 && errno == EINTR);
  if (ready < 0) {
    job->error = errno;
    job->what = "poll";
    return;
  }
  if (ready == 0) {
    job->error = ETIMEDOUT;
    job->what = "waiting for the terminal's descriptor";
    return;
  }
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n;
  do n = recvmsg(job->socket_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    job->error = errno;
    job->what = "recvmsg";
    return;
  }
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS || cmsg->cmsg_len != CMSG_LEN(sizeof(int)) || (msg.msg_flags & MSG_CTRUNC)) {
    job->error = EPROTO;
    job->what = "the console socket's message carried no descriptor";
    return;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
  if (!isatty(fd)) {
    close(fd);
    job->error = ENOTTY;
    job->what = "the received descriptor is not a terminal";
    return;
  }
  job->received_fd = fd;
}

static void receive_complete(napi_env env, napi_status status, void *data) {
  receive_job *job = data;
  if (status != napi_ok && !job->error) {
    job->error = ECANCELED;
    job->what = "receiveFd";
  }
  if (job->error) {
    char message[256];
    snprintf(message, sizeof message, "%s: %s", job->what, strerror(job->error));
    napi_value text, err;
    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, NULL, text, &err);
    napi_reject_deferred(env, job->deferred, err);
  } else {
    napi_value fd;
    napi_create_int32(env, job->received_fd, &fd);
    napi_resolve_deferred(env, job->deferred, fd);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static int int_arg(napi_env env, napi_value value, int32_t *out) {
  return napi_get_value_int32(env, value, out) == napi_ok ? 0 : -1;
}

static napi_value js_receive_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t socket_fd;
  if (argc < 1 || int_arg(env, argv[0], &socket_fd) || socket_fd < 0) {
    napi_throw_type_error(env, NULL, "receiveFd(socketFd) needs a descriptor");
    return NULL;
  }
  receive_job *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  job->socket_fd = socket_fd;
  job->received_fd = -1;
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "sail-pty-receive", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, receive_execute, receive_complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

static napi_value js_set_window_size(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd, cols, rows;
  if (argc < 3 || int_arg(env, argv[0], &fd) || int_arg(env, argv[1], &cols) || int_arg(env, argv[2], &rows) || fd < 0 || cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
    napi_throw_type_error(env, NULL, "setWindowSize(fd, cols, rows) needs a descriptor and sizes 1-65535");
    return NULL;
  }
  struct winsize size = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &size) < 0) {
    char message[128];
    snprintf(message, sizeof message, "TIOCSWINSZ: %s", strerror(errno));
    napi_throw_error(env, NULL, message);
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "receiveFd", NAPI_AUTO_LENGTH, js_receive_fd, NULL, &fn);
  napi_set_named_property(env, exports, "receiveFd", fn);
  napi_create_function(env, "setWindowSize", NAPI_AUTO_LENGTH, js_set_window_size, NULL, &fn);
  napi_set_named_property(env, exports, "setWindowSize", fn);
  return exports;
}
