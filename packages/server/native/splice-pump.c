/*
 * Sail's raw-TCP data path: moves bytes between two connected sockets with splice(2), so
 * they go socket -> pipe -> socket inside the kernel and never through JavaScript.
 *
 * A fixed pool of worker threads (started on the first pump: online CPUs, at most 4, or
 * SAIL_PUMP_THREADS), each with its own epoll loop over non-blocking sockets, so the thread
 * count does not grow with the connections. A connection stays on the thread it was given
 * and only that thread touches its state; a lock-protected registry serves drop() and bytes().
 *
 * Pipes are lent from a per-thread free list only while a direction has bytes in flight, so an
 * idle connection holds just its two sockets. When the destination is full, the direction keeps
 * its pipe and stops reading its source until the destination drains: the pump never holds more
 * than one pipe of data per direction, and a slow reader pushes back on the sender.
 *
 * EOF on one side becomes shutdown(SHUT_WR) on the other (half-close); an error on either side
 * shuts both down and ends the connection. When both directions have ended, the pump closes its
 * descriptors and reports to JavaScript through one thread-safe function. drop(id) shuts a
 * connection's sockets down from the JavaScript thread (sleep, close) and has its thread end it.
 *
 * JavaScript hands over descriptors it owns; the pump dup()s them, so JavaScript may close
 * its copies at once without closing the connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

#define PIPE_BYTES (1 << 20)
#define THREAD_STACK (256 * 1024)
#define DEFAULT_THREADS_MAX 4
#define THREADS_MAX 64
/* Spare pipes kept per thread. Few on purpose: an empty 1 MiB pipe still counts against the
 * user's pipe-buffer allowance (fs.pipe-user-pages-soft, 64 MiB by default), past which an
 * unprivileged process's new pipes shrink to two pages. */
#define FREE_PIPES 16
/* Pipe-fulls one direction may move per wake-up before its thread serves other connections
 * (epoll is level-triggered, so what is left is reported again). */
#define ROUNDS 8
#define BUCKETS 4096
#define EVENTS 128

struct conn;
struct worker;

typedef struct {
  int pipe[2];             /* lent while bytes are in flight, else -1 */
  size_t in_pipe;          /* bytes in the pipe not yet written to the destination */
  char *head;              /* bytes JavaScript had already read from the source */
  size_t head_len, head_off;
  int done;                /* EOF passed on as shutdown(SHUT_WR) */
} dir_t;

typedef struct {
  struct conn *conn;
  int k;
} side_t;

typedef struct conn {
  uint32_t id;
  int fd[2];
  struct worker *worker;
  int closed;              /* under the lock: the fds may be reused by now */
  int dropped;             /* set under the lock, read atomically by the thread */
  int finished;            /* ended; events for it later in the same batch are stale */
  int error;               /* first errno seen, 0 if none */
  uint64_t bytes[2];       /* bytes moved fd[0] -> fd[1], and fd[1] -> fd[0] (atomics) */
  dir_t d[2];              /* d[i] moves fd[i] -> fd[1 - i] */
  side_t side[2];          /* epoll's data for fd[k] */
  uint32_t mask[2];        /* events registered for fd[k] */
  int hup[2];              /* fd[k] hung up and was taken out of epoll */
  struct conn *hnext;      /* registry bucket */
  struct conn *qnext;      /* the thread's incoming queue, then its finished list */
} conn_t;

typedef struct worker {
  pthread_t thread;
  int epfd, evfd;
  /* the thread's own */
  int spare[FREE_PIPES][2];
  int nspare;
  conn_t *finished;        /* ended in this batch, reported after it */
  /* under the lock */
  conn_t *incoming, **incoming_tail;
  uint32_t *drops;         /* ids drop() asked to end */
  size_t ndrops, drops_cap;
  unsigned load;           /* connections on this thread */
} worker_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static conn_t *registry[BUCKETS];
static unsigned connections = 0;
static uint32_t next_id = 1;
static worker_t *workers = NULL;
static unsigned nworkers = 0;
static unsigned next_worker = 0;
static int64_t pipes = 0; /* atomic: pipes open, lent or spare */
static napi_threadsafe_function on_done = NULL;
/* napi_make_callback (not napi_call_function): it drains the microtask queue afterwards,
 * so promises the callback resolves settle even when nothing else wakes the event loop */
static napi_async_context done_context = NULL;

static conn_t *find_locked(uint32_t id) {
  for (conn_t *c = registry[id % BUCKETS]; c; c = c->hnext) {
    if (c->id == id) return c;
  }
  return NULL;
}

static void unlink_locked(conn_t *c) {
  for (conn_t **pp = &registry[c->id % BUCKETS]; *pp; pp = &(*pp)->hnext) {
    if (*pp == c) {
      *pp = c->hnext;
      connections--;
      return;
    }
  }
}

static void close_pipe(int fds[2]) {
  close(fds[0]);
  close(fds[1]);
  fds[0] = fds[1] = -1;
  __atomic_sub_fetch(&pipes, 1, __ATOMIC_RELAXED);
}

static int lend_pipe(worker_t *w, dir_t *d) {
  if (d->pipe[0] >= 0) return 0;
  if (w->nspare > 0) {
    w->nspare--;
    d->pipe[0] = w->spare[w->nspare][0];
    d->pipe[1] = w->spare[w->nspare][1];
    return 0;
  }
  if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    d->pipe[0] = d->pipe[1] = -1;
    return -1;
  }
  __atomic_add_fetch(&pipes, 1, __ATOMIC_RELAXED);
  fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_BYTES); /* best effort: fewer, larger moves */
  return 0;
}

/* Give a direction's pipe back; one still holding bytes cannot be reused. */
static void return_pipe(worker_t *w, dir_t *d) {
  if (d->pipe[0] < 0) return;
  if (d->in_pipe == 0 && w->nspare < FREE_PIPES) {
    w->spare[w->nspare][0] = d->pipe[0];
    w->spare[w->nspare][1] = d->pipe[1];
    w->nspare++;
    d->pipe[0] = d->pipe[1] = -1;
  } else {
    close_pipe(d->pipe);
  }
  d->in_pipe = 0;
}

static int pending(const dir_t *d) {
  return d->head_off < d->head_len || d->in_pipe > 0;
}

/*
 * Move what direction i can without blocking: first the head, then pipe-fulls. Returns 0, or
 * the errno that ends the connection. A full destination leaves the bytes pending (and the
 * source unread) until epoll reports the destination writable.
 */
static int run_dir(worker_t *w, conn_t *c, int i) {
  dir_t *d = &c->d[i];
  int from = c->fd[i], to = c->fd[1 - i];
  if (d->done) return 0;
  while (d->head_off < d->head_len) {
    ssize_t n = send(to, d->head + d->head_off, d->head_len - d->head_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : errno;
    }
    d->head_off += (size_t)n;
    __atomic_add_fetch(&c->bytes[i], (uint64_t)n, __ATOMIC_RELAXED);
  }
  if (d->head) {
    free(d->head);
    d->head = NULL;
    d->head_len = d->head_off = 0;
  }
  for (int round = 0;; round++) {
    while (d->in_pipe > 0) {
      /* no SPLICE_F_MORE here: it corks the socket (up to 200 ms) waiting for more */
      ssize_t n = splice(d->pipe[0], NULL, to, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : errno;
      }
      d->in_pipe -= (size_t)n;
      __atomic_add_fetch(&c->bytes[i], (uint64_t)n, __ATOMIC_RELAXED);
    }
    return_pipe(w, d);
    /* a source that hung up is out of epoll and would not be reported again; all it will ever
     * send is queued already, so it is moved in one go */
    if (round == ROUNDS && !c->hup[i]) break;
    if (lend_pipe(w, d) < 0) return errno;
    ssize_t n = splice(from, NULL, d->pipe[1], NULL, PIPE_BYTES, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      int err = errno;
      return_pipe(w, d);
      if (err == EINTR) continue;
      return err == EAGAIN ? 0 : err;
    }
    if (n == 0) { /* EOF: pass the FIN on, keep the other direction open */
      return_pipe(w, d);
      shutdown(to, SHUT_WR);
      d->done = 1;
      return 0;
    }
    d->in_pipe = (size_t)n;
  }
  return 0;
}

/* Read a source only while its direction has nothing pending; watch a destination only while
 * something waits for it. */
static int watch(worker_t *w, conn_t *c) {
  for (int k = 0; k < 2; k++) {
    if (c->hup[k]) continue;
    uint32_t events = 0;
    if (!c->d[k].done && !pending(&c->d[k])) events |= EPOLLIN;
    if (!c->d[1 - k].done && pending(&c->d[1 - k])) events |= EPOLLOUT;
    if (events == c->mask[k]) continue;
    struct epoll_event ev = {.events = events, .data.ptr = &c->side[k]};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd[k], &ev) < 0) return errno;
    c->mask[k] = events;
  }
  return 0;
}

/* End a connection on its thread; JavaScript hears of it once the current batch is done. */
static void finish(worker_t *w, conn_t *c, int err) {
  if (c->finished) return;
  c->finished = 1;
  if (err && !c->error) c->error = err;
  for (int k = 0; k < 2; k++) {
    if (!c->hup[k]) epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd[k], NULL);
  }
  for (int i = 0; i < 2; i++) {
    return_pipe(w, &c->d[i]);
    free(c->d[i].head);
    c->d[i].head = NULL;
  }
  if (!c->d[0].done || !c->d[1].done) { /* an error or a drop: the peers see it at once */
    shutdown(c->fd[0], SHUT_RDWR);
    shutdown(c->fd[1], SHUT_RDWR);
  }
  pthread_mutex_lock(&lock);
  unlink_locked(c);
  close(c->fd[0]);
  close(c->fd[1]);
  c->closed = 1;
  w->load--;
  pthread_mutex_unlock(&lock);
  c->qnext = w->finished;
  w->finished = c;
}

/* Run the directions in `which` (bit i: d[i]) and re-arm epoll, or end the connection. */
static void step(worker_t *w, conn_t *c, int which) {
  int err = 0;
  if (__atomic_load_n(&c->dropped, __ATOMIC_RELAXED)) {
    finish(w, c, 0);
    return;
  }
  for (int i = 0; i < 2 && !err; i++) {
    if (which & (1 << i)) err = run_dir(w, c, i);
  }
  if (!err && c->d[0].done && c->d[1].done) {
    finish(w, c, 0);
    return;
  }
  if (!err) err = watch(w, c);
  if (err) finish(w, c, err);
}

static void on_event(worker_t *w, conn_t *c, int k, uint32_t events) {
  if (c->finished) return;
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd[k], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
      finish(w, c, err);
      return;
    }
  }
  if (events & EPOLLHUP) {
    /* Level-triggered HUP is reported for as long as it lasts, whatever the mask, and it lasts
     * while d[k] drains the rest of fd[k] into a slow destination. Nothing more can arrive on
     * fd[k], and its other role (destination of d[1 - k]) has ended too (we shut its writing
     * down, or it is closed and writes fail), so stop watching it. */
    c->hup[k] = 1;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd[k], NULL);
    step(w, c, 3);
    return;
  }
  int which = 0;
  if (events & EPOLLIN) which |= 1 << k;
  if (events & EPOLLOUT) which |= 1 << (1 - k);
  if (events & EPOLLERR) which = 3;
  step(w, c, which);
}

static void adopt(worker_t *w, conn_t *c) {
  for (int k = 0; k < 2; k++) {
    struct epoll_event ev = {.events = 0, .data.ptr = &c->side[k]};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd[k], &ev) < 0) {
      int err = errno;
      if (k == 1) epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd[0], NULL);
      c->hup[0] = c->hup[1] = 1; /* neither is registered now */
      finish(w, c, err);
      return;
    }
  }
  step(w, c, 3);
}

/* New connections and drops, handed over by the JavaScript thread. */
static void take_mail(worker_t *w) {
  uint64_t count;
  while (read(w->evfd, &count, sizeof count) < 0 && errno == EINTR) {}
  pthread_mutex_lock(&lock);
  conn_t *incoming = w->incoming;
  w->incoming = NULL;
  w->incoming_tail = &w->incoming;
  uint32_t *drops = w->drops;
  size_t ndrops = w->ndrops;
  w->drops = NULL;
  w->ndrops = w->drops_cap = 0;
  pthread_mutex_unlock(&lock);
  /* adopt first: a drop may name a connection that is still in the incoming queue */
  while (incoming) {
    conn_t *c = incoming;
    incoming = c->qnext;
    c->qnext = NULL;
    adopt(w, c);
  }
  for (size_t i = 0; i < ndrops; i++) {
    pthread_mutex_lock(&lock);
    conn_t *c = find_locked(drops[i]);
    pthread_mutex_unlock(&lock);
    /* only this thread ends (and so frees) its connections: c stays valid */
    if (c && c->worker == w) finish(w, c, 0);
  }
  free(drops);
}

static void *run_worker(void *arg) {
  worker_t *w = arg;
  struct epoll_event events[EVENTS];
  for (;;) {
    int n = epoll_wait(w->epfd, events, EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("sail splice pump: epoll_wait");
      abort();
    }
    for (int i = 0; i < n; i++) {
      side_t *s = events[i].data.ptr;
      if (!s) take_mail(w);
      else on_event(w, s->conn, s->k, events[i].events);
    }
    /* only now: JavaScript frees the connection, and this batch may still have named it */
    while (w->finished) {
      conn_t *c = w->finished;
      w->finished = c->qnext;
      napi_call_threadsafe_function(on_done, c, napi_tsfn_nonblocking);
    }
  }
  return NULL;
}

/* The pool, on the first pump. Under the lock. Returns 0 or an errno. */
static int start_workers_locked(void) {
  if (nworkers) return 0;
  long want = sysconf(_SC_NPROCESSORS_ONLN);
  if (want > DEFAULT_THREADS_MAX) want = DEFAULT_THREADS_MAX;
  const char *env = getenv("SAIL_PUMP_THREADS");
  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end == '\0' && n > 0) want = n > THREADS_MAX ? THREADS_MAX : n;
  }
  if (want < 1) want = 1;
  workers = calloc((size_t)want, sizeof(worker_t));
  if (!workers) return ENOMEM;

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, THREAD_STACK);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* signals are Node's business: the workers inherit a mask that blocks them all */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = 0;
  for (long i = 0; i < want; i++) {
    worker_t *w = &workers[nworkers];
    w->incoming_tail = &w->incoming;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (w->epfd < 0 || w->evfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0 ||
        (errno = pthread_create(&w->thread, &attr, run_worker, w)) != 0) {
      err = errno;
      if (w->epfd >= 0) close(w->epfd);
      if (w->evfd >= 0) close(w->evfd);
      break;
    }
    nworkers++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (nworkers == 0) {
    free(workers);
    workers = NULL;
    return err ? err : EAGAIN;
  }
  return 0; /* fewer threads than wanted still work */
}

/* The least loaded thread, ties going round-robin. Under the lock. */
static worker_t *pick_locked(void) {
  worker_t *best = NULL;
  for (unsigned i = 0; i < nworkers; i++) {
    worker_t *w = &workers[(next_worker + i) % nworkers];
    if (!best || w->load < best->load) best = w;
  }
  next_worker = (next_worker + 1) % nworkers;
  return best;
}

static void wake(worker_t *w) {
  uint64_t one = 1;
  while (write(w->evfd, &one, sizeof one) < 0 && errno == EINTR) {}
}

static void call_done(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)context;
  conn_t *c = data;
  if (env && js_cb) {
    napi_value argv[4], global;
    napi_create_uint32(env, c->id, &argv[0]);
    napi_create_double(env, (double)c->bytes[0], &argv[1]);
    napi_create_double(env, (double)c->bytes[1], &argv[2]);
    napi_create_int32(env, c->error, &argv[3]);
    napi_get_global(env, &global); /* make_callback needs an object as `this` */
    napi_make_callback(env, done_context, global, js_cb, 4, argv, NULL);
  }
  free(c);
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
  pthread_mutex_lock(&lock);
  int err = start_workers_locked();
  pthread_mutex_unlock(&lock);
  if (err) return throw_errno(env, "pump: threads", err);

  conn_t *c = calloc(1, sizeof(conn_t));
  if (!c) return throw_errno(env, "pump", ENOMEM);
  c->fd[0] = c->fd[1] = -1;
  for (int i = 0; i < 2; i++) {
    c->d[i].pipe[0] = c->d[i].pipe[1] = -1;
    c->side[i].conn = c;
    c->side[i].k = i;
  }
  if ((argc > 2 && copy_head(env, argv[2], &c->d[0].head, &c->d[0].head_len) < 0) ||
      (argc > 3 && copy_head(env, argv[3], &c->d[1].head, &c->d[1].head_len) < 0)) {
    free(c->d[0].head); free(c->d[1].head); free(c);
    napi_throw_type_error(env, NULL, "the heads must be Buffers");
    return NULL;
  }
  for (int i = 0; i < 2; i++) {
    c->fd[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
    /* the dup shares the file status flags with JavaScript's copy, which is closed right after */
    int flags = c->fd[i] < 0 ? -1 : fcntl(c->fd[i], F_GETFL);
    if (flags < 0 || fcntl(c->fd[i], F_SETFL, flags | O_NONBLOCK) < 0) {
      err = errno;
      if (c->fd[0] >= 0) close(c->fd[0]);
      if (c->fd[1] >= 0) close(c->fd[1]);
      free(c->d[0].head); free(c->d[1].head); free(c);
      return throw_errno(env, "pump: dup", err);
    }
  }

  pthread_mutex_lock(&lock);
  do {
    c->id = next_id++;
    if (next_id == 0) next_id = 1;
  } while (find_locked(c->id));
  c->hnext = registry[c->id % BUCKETS];
  registry[c->id % BUCKETS] = c;
  connections++;
  worker_t *w = pick_locked();
  c->worker = w;
  w->load++;
  *w->incoming_tail = c;
  w->incoming_tail = &c->qnext;
  uint32_t id = c->id;
  pthread_mutex_unlock(&lock);
  wake(w);

  napi_value result;
  napi_create_uint32(env, id, &result);
  return result;
}

/* drop(id): shut both sockets down now; the connection's thread ends it and onDone follows. */
static napi_value js_drop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint32_t id;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return NULL;
  worker_t *w = NULL;
  pthread_mutex_lock(&lock);
  conn_t *c = find_locked(id);
  if (c && !c->closed && !c->dropped) {
    __atomic_store_n(&c->dropped, 1, __ATOMIC_RELAXED);
    shutdown(c->fd[0], SHUT_RDWR);
    shutdown(c->fd[1], SHUT_RDWR);
    w = c->worker;
    if (w->ndrops == w->drops_cap) {
      size_t cap = w->drops_cap ? w->drops_cap * 2 : 16;
      uint32_t *grown = realloc(w->drops, cap * sizeof *grown);
      /* without room the shutdown alone still ends it (EOF, EPIPE or HUP) */
      if (grown) {
        w->drops = grown;
        w->drops_cap = cap;
      }
    }
    if (w->ndrops < w->drops_cap) w->drops[w->ndrops++] = id;
  }
  pthread_mutex_unlock(&lock);
  if (w) wake(w);
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
  conn_t *c = find_locked(id);
  if (c) {
    napi_value a, b;
    napi_create_array_with_length(env, 2, &result);
    napi_create_double(env, (double)__atomic_load_n(&c->bytes[0], __ATOMIC_RELAXED), &a);
    napi_create_double(env, (double)__atomic_load_n(&c->bytes[1], __ATOMIC_RELAXED), &b);
    napi_set_element(env, result, 0, a);
    napi_set_element(env, result, 1, b);
  }
  pthread_mutex_unlock(&lock);
  return result;
}

/* stats() -> { threads, connections, pipes }: threads started, connections being pumped,
 * pipes open (lent or spare). */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, threads, conns, open;
  pthread_mutex_lock(&lock);
  napi_create_uint32(env, nworkers, &threads);
  napi_create_uint32(env, connections, &conns);
  pthread_mutex_unlock(&lock);
  napi_create_double(env, (double)__atomic_load_n(&pipes, __ATOMIC_RELAXED), &open);
  napi_create_object(env, &result);
  napi_set_named_property(env, result, "threads", threads);
  napi_set_named_property(env, result, "connections", conns);
  napi_set_named_property(env, result, "pipes", open);
  return result;
}

static napi_value init_module(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"init", NULL, js_init, NULL, NULL, NULL, napi_enumerable, NULL},
    {"pump", NULL, js_pump, NULL, NULL, NULL, napi_enumerable, NULL},
    {"drop", NULL, js_drop, NULL, NULL, NULL, napi_enumerable, NULL},
    {"bytes", NULL, js_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
