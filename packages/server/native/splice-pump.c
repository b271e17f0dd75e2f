/*
 * Sail's raw-TCP data path: moves bytes between two connected sockets with splice(2), so
 * they go socket -> pipe -> socket inside the kernel and never through JavaScript.
 *
 * One pump per proxied connection, two threads per pump (one per direction), each blocking
 * in splice. EOF on one side becomes shutdown(SHUT_WR) on the other (half-close); an error
 * on either side shuts both down, which wakes the other thread. When both directions have
 * ended, the pump closes its descriptors and reports to JavaScript through one thread-safe
 * function. drop(id) shuts a pump's sockets down from the JavaScript thread (sleep, close).
 *
 * JavaScript hands over descriptors it owns; the pump dup()s them, so JavaScript may close
 * its copies at once without closing the connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#define PIPE_BYTES (1 << 20)
#define THREAD_STACK (128 * 1024)

typedef struct pump {
  uint32_t id;
  int fd[2];
  int closed;
  int remaining;           /* directions still running */
  int error;               /* first errno seen, 0 if none */
  uint64_t bytes[2];       /* bytes moved fd[0] -> fd[1], and fd[1] -> fd[0] */
  struct pump *next;
} pump_t;

typedef struct {
  pump_t *pump;
  int dir;                 /* 0: fd[0] -> fd[1]; 1: fd[1] -> fd[0] */
  char *head;              /* bytes JavaScript had already read from the source */
  size_t head_len;
} half_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pump_t *pumps = NULL;
static uint32_t next_id = 1;
static napi_threadsafe_function on_done = NULL;
/* napi_make_callback (not napi_call_function): it drains the microtask queue afterwards,
 * so promises the callback resolves settle even when nothing else wakes the event loop */
static napi_async_context done_context = NULL;

/* Shut both sockets down (under the lock: the descriptors may already be closed and reused). */
static void shut_locked(pump_t *p, int how) {
  if (p->closed) return;
  shutdown(p->fd[0], how);
  shutdown(p->fd[1], how);
}

/* The running pump with this id, or NULL (under the lock). */
static pump_t *find_locked(uint32_t id) {
  for (pump_t *p = pumps; p; p = p->next) {
    if (p->id == id) return p;
  }
  return NULL;
}

static void unlink_locked(pump_t *p) {
  for (pump_t **pp = &pumps; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      return;
    }
  }
}

static void fail(pump_t *p, int err) {
  pthread_mutex_lock(&lock);
  if (!p->error) p->error = err;
  shut_locked(p, SHUT_RDWR);
  pthread_mutex_unlock(&lock);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static void *run_half(void *arg) {
  half_t *h = arg;
  pump_t *p = h->pump;
  int from = p->fd[h->dir], to = p->fd[1 - h->dir];
  int pipefd[2] = {-1, -1};

  if (h->head_len && write_all(to, h->head, h->head_len) < 0) {
    fail(p, errno);
    goto done;
  }
  if (h->head_len) p->bytes[h->dir] += h->head_len;
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    fail(p, errno);
    goto done;
  }
  fcntl(pipefd[1], F_SETPIPE_SZ, PIPE_BYTES); /* best effort: fewer, larger moves */
  for (;;) {
    ssize_t n = splice(from, NULL, pipefd[1], NULL, PIPE_BYTES, SPLICE_F_MOVE);
    if (n == 0) { /* EOF: pass the FIN on, keep the other direction open */
      pthread_mutex_lock(&lock);
      if (!p->closed) shutdown(to, SHUT_WR);
      pthread_mutex_unlock(&lock);
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(p, errno);
      break;
    }
    while (n > 0) {
      /* no SPLICE_F_MORE here: it corks the socket (up to 200 ms) waiting for more */
      ssize_t w = splice(pipefd[0], NULL, to, NULL, (size_t)n, SPLICE_F_MOVE);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(p, errno);
        goto done;
      }
      n -= w;
      __atomic_add_fetch(&p->bytes[h->dir], (uint64_t)w, __ATOMIC_RELAXED);
    }
  }
done:
  if (pipefd[0] >= 0) close(pipefd[0]);
  if (pipefd[1] >= 0) close(pipefd[1]);
  free(h->head);
  free(h);

  pthread_mutex_lock(&lock);
  int last = --p->remaining == 0;
  if (last) {
    unlink_locked(p);
    close(p->fd[0]);
    close(p->fd[1]);
    p->closed = 1;
  }
  pthread_mutex_unlock(&lock);
  if (last) napi_call_threadsafe_function(on_done, p, napi_tsfn_blocking);
  return NULL;
}

static void call_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  pump_t *p = data;
  if (env && js_cb) {
    napi_value argv[4], global;
    napi_create_uint32(env, p->id, &argv[0]);
    napi_create_double(env, (double)p->bytes[0], &argv[1]);
    napi_create_double(env, (double)p->bytes[1], &argv[2]);
    napi_create_int32(env, p->error, &argv[3]);
    napi_get_global(env, &global); /* make_callback needs an object as `this` */
    napi_make_callback(env, done_context, global, js_cb, 4, argv, NULL);
  }
  free(p);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, message);
  return NULL;
}

/* init(onDone(id, bytesAtoB, bytesBtoA, errno)): once per process. */
static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (on_done) return NULL;
  napi_create_string_utf8(env, "sail-splice-pump", NAPI_AUTO_LENGTH, &name);
  if (napi_async_init(env, NULL, name, &done_context) != napi_ok) {
    napi_throw_error(env, NULL, "could not create the pump's async context");
    return NULL;
  }
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_done, &on_done) != napi_ok) {
    napi_throw_error(env, NULL, "could not create the pump's completion callback");
    return NULL;
  }
  /* pumps alone must not keep the process alive */
  napi_unref_threadsafe_function(env, on_done);
  return NULL;
}

static int copy_head(napi_env env, napi_value value, char **out, size_t *len) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  *out = NULL;
  *len = 0;
  if (type == napi_undefined || type == napi_null) return 0;
  void *data;
  if (napi_get_buffer_info(env, value, &data, len) != napi_ok) return -1;
  if (*len == 0) return 0;
  *out = malloc(*len);
  if (!*out) return -1;
  memcpy(*out, data, *len);
  return 0;
}

/* pump(fdA, fdB, headForB?, headForA?) -> id. The descriptors are dup()ed. */
static napi_value js_pump(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!on_done) {
    napi_throw_error(env, NULL, "init() first");
    return NULL;
  }
  int32_t fds[2];
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fds[0]) != napi_ok || napi_get_value_int32(env, argv[1], &fds[1]) != napi_ok) {
    napi_throw_type_error(env, NULL, "pump(fdA, fdB, headForB?, headForA?)");
    return NULL;
  }
  half_t *halves[2] = {calloc(1, sizeof(half_t)), calloc(1, sizeof(half_t))};
  pump_t *p = calloc(1, sizeof(pump_t));
  if (!p || !halves[0] || !halves[1]) {
    free(p); free(halves[0]); free(halves[1]);
    return throw_errno(env, "pump", ENOMEM);
  }
  if ((argc > 2 && copy_head(env, argv[2], &halves[0]->head, &halves[0]->head_len) < 0) ||
      (argc > 3 && copy_head(env, argv[3], &halves[1]->head, &halves[1]->head_len) < 0)) {
    free(halves[0]->head); free(halves[1]->head); free(p); free(halves[0]); free(halves[1]);
    napi_throw_type_error(env, NULL, "the heads must be Buffers");
    return NULL;
  }
  p->fd[0] = p->fd[1] = -1;
  for (int i = 0; i < 2; i++) {
    p->fd[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
    int flags = p->fd[i] < 0 ? -1 : fcntl(p->fd[i], F_GETFL);
    /* blocking: the threads wait in splice; the JavaScript copy is closed right after */
    if (flags < 0 || fcntl(p->fd[i], F_SETFL, flags & ~O_NONBLOCK) < 0) {
      int err = errno;
      if (p->fd[0] >= 0) close(p->fd[0]);
      if (p->fd[1] >= 0) close(p->fd[1]);
      free(halves[0]->head); free(halves[1]->head); free(p); free(halves[0]); free(halves[1]);
      return throw_errno(env, "pump: dup", err);
    }
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, THREAD_STACK);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

  pthread_mutex_lock(&lock);
  p->id = next_id++;
  if (next_id == 0) next_id = 1;
  p->remaining = 2;
  p->next = pumps;
  pumps = p;
  uint32_t id = p->id;
  int started = 0, err = 0;
  for (int i = 0; i < 2; i++) {
    halves[i]->pump = p;
    halves[i]->dir = i;
    pthread_t thread;
    err = pthread_create(&thread, &attr, run_half, halves[i]);
    if (err) break;
    started++;
  }
  if (started < 2) {
    /* account for the halves that never ran; shut down so a started one ends too */
    if (!p->error) p->error = err;
    for (int i = started; i < 2; i++) {
      free(halves[i]->head);
      free(halves[i]);
    }
    p->remaining -= 2 - started;
    shut_locked(p, SHUT_RDWR);
    if (started == 0) {
      unlink_locked(p);
      close(p->fd[0]);
      close(p->fd[1]);
      free(p);
      pthread_mutex_unlock(&lock);
      pthread_attr_destroy(&attr);
      return throw_errno(env, "pump: thread", err);
    }
  }
  pthread_mutex_unlock(&lock);
  pthread_attr_destroy(&attr);
  napi_value result;
  napi_create_uint32(env, id, &result);
  return result;
}

/* drop(id): shut both sockets down; the pump reports through onDone as usual. */
static napi_value js_drop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return NULL;
  pthread_mutex_lock(&lock);
  pump_t *p = find_locked(id);
  if (p) shut_locked(p, SHUT_RDWR);
  pthread_mutex_unlock(&lock);
  return NULL;
}

/* bytes(id) -> [aToB, bToA] while it runs, or undefined. */
static napi_value js_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result = NULL;
  uint32_t id;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return NULL;
  pthread_mutex_lock(&lock);
  pump_t *p = find_locked(id);
  if (p) {
    napi_value a, b;
    napi_create_array_with_length(env, 2, &result);
    napi_create_double(env, (double)__atomic_load_n(&p->bytes[0], __ATOMIC_RELAXED), &a);
    napi_create_double(env, (double)__atomic_load_n(&p->bytes[1], __ATOMIC_RELAXED), &b);
    napi_set_element(env, result, 0, a);
    napi_set_element(env, result, 1, b);
  }
  pthread_mutex_unlock(&lock);
  return result;
}

static napi_value init_module(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"init", NULL, js_init, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pump", NULL, js_pump, NULL, NULL, NULL, napi_enumerable, NULL},
    {"drop", NULL, js_drop, NULL, NULL, NULL, napi_enumerable, NULL},
    {"bytes", NULL, js_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
