/*
 * Sail's HTTPS data path: TLS termination and HTTP/1.1 proxying for the common case, in C,
 * so a request costs what it costs nginx (one read, one write each way, no JavaScript).
 *
 * One engine per gateway worker process, one thread with an epoll loop. JavaScript accepts
 * connections and hands their descriptors over (adopt); the engine does the TLS handshake
 * with the OpenSSL that Node itself links (the symbols resolve against the node binary),
 * reads request heads, routes by Host through a table JavaScript keeps current (setRoutes),
 * and forwards requests and responses over pooled keep-alive upstream sockets.
 *
 * It only serves what it fully understands: an HTTP/1.1 request whose head arrived whole,
 * with one Host naming a running box, no Transfer-Encoding or Expect, and a Connection of
 * keep-alive/close/upgrade only; an Upgrade answered 101 (WebSocket) becomes a byte tunnel.
 * Anything else - a partial or odd head, an unknown, sleeping or paused box, a guest that
 * cannot be dialled - is handed to JavaScript (the `onHandover` callback) with the bytes
 * not yet consumed, over one end of a socketpair; the engine then only relays TLS <-> plaintext for that connection and the
 * JavaScript proxy answers exactly as before (errors, wakes, tunnels, timeouts). A response
 * the engine cannot forward before it has sent any of it is handed over the same way with
 * the error to answer. A fresh upstream connection reset before it answered an idempotent
 * request without a body is tried again after 100, 200 and 300 ms.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <node_api.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#define MAX_HEAD 16384            /* as MAX_HEAD_BYTES in http1.ts: larger heads go to JavaScript (431) */
#define IO_CHUNK 65536
#define IN_LIMIT (64 * 1024)       /* client bytes read ahead of the exchange before reading pauses */
#define OUT_LIMIT (1024 * 1024)    /* bytes queued to a slow peer before the other side pauses */
#define HANDSHAKE_MS 10000         /* as handshakeTimeout in http-gateway.ts */
#define IDLE_MS 30000              /* keep-alive connection with no request (proxy-connection.ts) */
#define POOL_IDLE_MS 4000          /* idle upstream socket (upstream-pool.ts) */
#define DIAL_MS 5000
#define MAX_POOLED 1024
#define ID_LEN 64
#define KEY_LEN 128

/* ---------- byte buffers ---------- */

typedef struct {
  char *p;
  size_t off, len, cap;
} buf_t;

static size_t buf_size(const buf_t *b) { return b->len - b->off; }
static char *buf_data(const buf_t *b) { return b->p + b->off; }
static void buf_clear(buf_t *b) { b->off = b->len = 0; }
static void buf_free(buf_t *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}
static void buf_drop(buf_t *b, size_t n) {
  b->off += n;
  if (b->off >= b->len) b->off = b->len = 0;
}
static int buf_add(buf_t *b, const void *data, size_t n) {
  if (n == 0) return 0;
  if (b->len + n > b->cap && b->off) {
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}
static int buf_str(buf_t *b, const char *s) { return buf_add(b, s, strlen(s)); }

/* ---------- engine state ---------- */

enum { T_CLIENT = 1, T_UPSTREAM, T_PAIR, T_WAKE };
enum { S_HANDSHAKE, S_HEAD, S_EXCHANGE, S_TUNNEL, S_RELAY, S_CLOSING, S_CLOSED };
enum { F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE };

typedef struct {
  int type;
  void *obj;
} tag_t;

typedef struct {
  int state;
  uint64_t size, remaining;
  int digits, line;
} chunk_t;

struct conn;

typedef struct upstream {
  tag_t tag;
  int fd;
  uint32_t mask;
  struct conn *owner;      /* NULL while pooled */
  char box[ID_LEN];
  char key[KEY_LEN];       /* generation:port: a socket from before a restart or wake is never reused */
  int connecting, closed, pooled;
  int64_t since;
  buf_t out;
  struct upstream *prev, *next; /* the pool, or the graveyard */
} upstream_t;

typedef struct conn {
  tag_t tag, pair_tag;
  int fd;
  SSL *ssl;
  char peer[64];
  int state;
  uint32_t mask;
  int64_t since;
  int client_eof;
  buf_t in;                /* decrypted client bytes not yet consumed */
  buf_t out;               /* plaintext waiting for SSL_write */
  /* the exchange */
  upstream_t *up;
  char box[ID_LEN];
  char key[KEY_LEN];
  struct sockaddr_in addr;
  int port;
  buf_t orig;              /* the request head as received (handed to JavaScript if needed) */
  buf_t uphead;            /* the request head for the guest */
  uint64_t req_remaining;
  int req_done, has_body, client_close, head_method, reused, retried, counted;
  int read_wants_write;    /* SSL_read needs the socket writable first */
  int upgrade, websocket;  /* an Upgrade request (a 101 turns the exchange into a tunnel) */
  int idempotent, attempts;
  int64_t retry_at;        /* a fresh dial is due then (0: none) */
  int resp_phase;          /* 0: reading the head, 1: forwarding the body */
  buf_t resph;
  int resp_kind;
  uint64_t resp_remaining;
  chunk_t chunk;
  int close_after, upstream_closes, resp_started;
  /* relay (after a hand-over) */
  int pair_fd;
  uint32_t pair_mask;
  buf_t pair_out;
  int pair_shut;
  struct conn *prev, *next;
} conn_t;

typedef struct {
  char label[ID_LEN];
  char box[ID_LEN];
  char key[KEY_LEN];
  struct sockaddr_in addr;
  int port;
} route_t;

typedef struct {
  char box[ID_LEN];
  int64_t open;
  int64_t last_ms;
} activity_t;

typedef struct cmd {
  int type;                /* 1 adopt, 2 drop box, 3 stop */
  int fd;
  char text[ID_LEN];
  struct cmd *next;
} cmd_t;

typedef struct {
  int fd;
  char peer[64];
  char *bytes;
  size_t len;
  int status, port;
  char code[48], box[ID_LEN];
  char message[512];
} handover_t;

static struct {
  int started, stopping;
  pthread_t thread;
  int ep, wake_fd;
  tag_t wake_tag;
  SSL_CTX *ctx;
  char suffix[256];
  size_t suffix_len;
  pthread_mutex_t lock;    /* routes, commands, activity */
  route_t *routes;
  size_t nroutes;
  cmd_t *cmds, *cmds_tail;
  uint64_t connections, requests, tunnels, bytes_in, bytes_out;
  activity_t *activity;
  size_t nactivity, cap_activity;
  napi_threadsafe_function on_handover;
  napi_async_context context;
  /* engine thread only */
  conn_t *conns;
  conn_t *dead_conns;
  upstream_t *pool, *dead_ups;
  size_t npooled;
  int pending_retries;
  int64_t last_sweep;
} E = {.lock = PTHREAD_MUTEX_INITIALIZER};

static char scratch[IO_CHUNK];

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_mask(int fd, tag_t *tag, uint32_t *current, uint32_t mask) {
  if (*current == mask) return;
  struct epoll_event ev = {.events = mask, .data.ptr = tag};
  epoll_ctl(E.ep, EPOLL_CTL_MOD, fd, &ev);
  *current = mask;
}

/* Counters are atomics: the hot path adds without the lock, take() swaps them for zero. */
static void count(uint64_t *counter, uint64_t n) {
  __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* An exchange of `box` opened (+1) or ended (-1), or bytes moved (0): idle auto-sleep reads this. */
static void activity(const char *box, int delta) {
  pthread_mutex_lock(&E.lock);
  activity_t *a = NULL;
  for (size_t i = 0; i < E.nactivity; i++) {
    if (strcmp(E.activity[i].box, box) == 0) {
      a = &E.activity[i];
      break;
    }
  }
  if (!a && E.nactivity == E.cap_activity) {
    size_t cap = E.cap_activity ? E.cap_activity * 2 : 16;
    activity_t *grown = realloc(E.activity, cap * sizeof *grown);
    if (grown) {
      E.activity = grown;
      E.cap_activity = cap;
    }
  }
  if (!a && E.nactivity < E.cap_activity) {
    a = &E.activity[E.nactivity++];
    memset(a, 0, sizeof *a);
    snprintf(a->box, sizeof a->box, "%s", box);
  }
  if (a) {
    a->open += delta;
    if (a->open < 0) a->open = 0;
    a->last_ms = wall_ms();
  }
  pthread_mutex_unlock(&E.lock);
}

/* ---------- closing ---------- */

static void up_close(upstream_t *u) {
  if (u->closed) return;
  u->closed = 1;
  if (u->pooled) {
    if (u->prev) u->prev->next = u->next;
    else E.pool = u->next;
    if (u->next) u->next->prev = u->prev;
    u->pooled = 0;
    E.npooled--;
  }
  epoll_ctl(E.ep, EPOLL_CTL_DEL, u->fd, NULL);
  close(u->fd);
  if (u->owner && u->owner->up == u) u->owner->up = NULL;
  u->owner = NULL;
  u->prev = NULL;
  u->next = E.dead_ups;
  E.dead_ups = u;
}

static void end_exchange_activity(conn_t *c) {
  if (!c->counted) return;
  c->counted = 0;
  activity(c->box, -1);
}

static void conn_close(conn_t *c) {
  if (c->state == S_CLOSED) return;
  c->state = S_CLOSED;
  if (c->retry_at) {
    c->retry_at = 0;
    E.pending_retries--;
  }
  end_exchange_activity(c);
  if (c->up) up_close(c->up);
  epoll_ctl(E.ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->pair_fd >= 0) {
    epoll_ctl(E.ep, EPOLL_CTL_DEL, c->pair_fd, NULL);
    close(c->pair_fd);
    c->pair_fd = -1;
  }
  if (c->prev) c->prev->next = c->next;
  else E.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = NULL;
  c->next = E.dead_conns;
  E.dead_conns = c;
}

static void free_dead(void) {
  while (E.dead_conns) {
    conn_t *c = E.dead_conns;
    E.dead_conns = c->next;
    SSL_free(c->ssl);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->orig);
    buf_free(&c->uphead);
    buf_free(&c->resph);
    buf_free(&c->pair_out);
    free(c);
  }
  while (E.dead_ups) {
    upstream_t *u = E.dead_ups;
    E.dead_ups = u->next;
    buf_free(&u->out);
    free(u);
  }
}

/* Flushed everything to the client and then close: close_notify, FIN. */
static void conn_finish(conn_t *c) {
  if (c->state == S_CLOSED) return;
  if (buf_size(&c->out)) {
    c->state = S_CLOSING;
    c->since = now_ms();
    return;
  }
  SSL_shutdown(c->ssl);
  conn_close(c);
}

/* ---------- writing ---------- */

static void update_masks(conn_t *c);
static void client_read(conn_t *c);

/* Queue `n` plaintext bytes to the client; returns -1 when the connection closed. */
static int client_send(conn_t *c, const char *p, size_t n) {
  if (c->state == S_CLOSED) return -1;
  if (buf_size(&c->out)) return buf_add(&c->out, p, n) < 0 ? (conn_close(c), -1) : 0;
  while (n) {
    int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    int err = SSL_get_error(c->ssl, w);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
      if (buf_add(&c->out, p, n) < 0) break;
      return 0;
    }
    break;
  }
  if (n) {
    ERR_clear_error();
    conn_close(c);
    return -1;
  }
  return 0;
}

static void client_flush(conn_t *c) {
  while (buf_size(&c->out)) {
    size_t n = buf_size(&c->out);
    int w = SSL_write(c->ssl, buf_data(&c->out), n > INT32_MAX ? INT32_MAX : (int)n);
    if (w > 0) {
      buf_drop(&c->out, (size_t)w);
      continue;
    }
    int err = SSL_get_error(c->ssl, w);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) return;
    ERR_clear_error();
    conn_close(c);
    return;
  }
  if (c->state == S_CLOSING) conn_finish(c);
}

/* Write what a plain socket takes now (if nothing is queued before it), queue the rest; -1 when broken. */
static int send_or_queue(int fd, buf_t *out, const char *p, size_t n, int may_write) {
  if (may_write && buf_size(out) == 0) {
    while (n) {
      ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        p += w;
        n -= (size_t)w;
      } else if (w < 0 && errno == EINTR) {
        continue;
      } else if (w < 0 && errno == EAGAIN) {
        break;
      } else {
        return -1;
      }
    }
  }
  return buf_add(out, p, n);
}

/* Write queued bytes until the socket is full or the queue empty; -1 when broken. */
static int flush_queue(int fd, buf_t *out) {
  while (buf_size(out)) {
    ssize_t w = send(fd, buf_data(out), buf_size(out), MSG_NOSIGNAL);
    if (w > 0) buf_drop(out, (size_t)w);
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && errno == EAGAIN) return 0;
    else return -1;
  }
  return 0;
}

static int up_send(upstream_t *u, const char *p, size_t n) {
  return send_or_queue(u->fd, &u->out, p, n, !u->connecting);
}

/* ---------- routes ---------- */

static int lookup_route(const char *label, conn_t *c) {
  int found = 0;
  pthread_mutex_lock(&E.lock);
  for (size_t i = 0; i < E.nroutes; i++) {
    if (strcmp(E.routes[i].label, label) == 0) {
      memcpy(c->box, E.routes[i].box, sizeof c->box);
      memcpy(c->key, E.routes[i].key, sizeof c->key);
      c->addr = E.routes[i].addr;
      c->port = E.routes[i].port;
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&E.lock);
  return found;
}

/* ---------- HTTP/1.1 heads (the same rules as http1.ts; anything doubtful is not ours) ---------- */

static int is_tchar(unsigned char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int name_is(const char *name, size_t len, const char *want) {
  return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

static const char *HOP_BY_HOP[] = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate", NULL};
static const char *SPOOFABLE[] = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded", "x-real-ip", NULL};

static int name_in(const char *name, size_t len, const char **list) {
  for (int i = 0; list[i]; i++) {
    if (name_is(name, len, list[i])) return 1;
  }
  return 0;
}

typedef struct {
  const char *name, *value;
  size_t name_len, value_len;
} field_t;

/* Split "name: value" at `line` (no CRLF); 0 on success. */
static int parse_field(const char *line, size_t len, field_t *f) {
  if (len == 0 || line[0] == ' ' || line[0] == '\t') return -1; /* obs-fold */
  size_t i = 0;
  while (i < len && is_tchar((unsigned char)line[i])) i++;
  if (i == 0 || i >= len || line[i] != ':') return -1;
  f->name = line;
  f->name_len = i;
  size_t v = i + 1, e = len;
  while (v < e && (line[v] == ' ' || line[v] == '\t')) v++;
  while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t')) e--;
  for (size_t k = v; k < e; k++) {
    if (line[k] == '\0' || line[k] == '\r' || line[k] == '\n') return -1;
  }
  f->value = line + v;
  f->value_len = e - v;
  return 0;
}

/* Walk the comma-separated tokens of a value; calls back with each (trimmed). */
typedef int (*token_fn)(const char *t, size_t n, void *arg);
static int each_token(const char *v, size_t len, token_fn fn, void *arg) {
  size_t i = 0;
  while (i < len) {
    size_t s = i;
    while (i < len && v[i] != ',') i++;
    size_t e = i;
    while (s < e && (v[s] == ' ' || v[s] == '\t')) s++;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e > s && fn(v + s, e - s, arg)) return 1;
    i++;
  }
  return 0;
}

typedef struct {
  int close, upgrade, websocket, upgrade_tokens;
} request_info_t;

static int request_connection_token(const char *t, size_t n, void *arg) {
  request_info_t *info = arg;
  if (name_is(t, n, "close")) info->close = 1;
  else if (name_is(t, n, "upgrade")) info->upgrade = 1;
  else if (!name_is(t, n, "keep-alive")) return 1; /* anything else (field names to drop) is JavaScript's */
  return 0;
}

static int request_upgrade_token(const char *t, size_t n, void *arg) {
  request_info_t *info = arg;
  info->upgrade_tokens++;
  if (name_is(t, n, "websocket")) info->websocket = 1;
  return 0;
}

static int parse_length(const char *v, size_t n, uint64_t *out) {
  if (n == 0 || n > 15) return -1;
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (uint64_t)(v[i] - '0');
  }
  *out = x;
  return 0;
}

static upstream_t *acquire(conn_t *c);
static void handover(conn_t *c, int status, const char *code, const char *message);

/*
 * Take the request head d[0..hlen) if it is ours: route it, rewrite it, open the exchange.
 * Returns 0 when taken, -1 when JavaScript should have the connection.
 */
static int start_exchange(conn_t *c, const char *d, size_t hlen) {
  if (hlen > MAX_HEAD) return -1;
  const char *end = d + hlen - 4; /* the blank line */
  const char *eol = memmem(d, (size_t)(end - d) + 2, "\r\n", 2);
  if (!eol) return -1;
  /* request line: METHOD SP target SP HTTP/1.1 */
  const char *sp1 = memchr(d, ' ', (size_t)(eol - d));
  if (!sp1 || sp1 == d) return -1;
  for (const char *p = d; p < sp1; p++) {
    if (!is_tchar((unsigned char)*p)) return -1;
  }
  const char *target = sp1 + 1;
  const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
  if (!sp2 || sp2 == target) return -1;
  for (const char *p = target; p < sp2; p++) {
    if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) return -1;
  }
  if ((size_t)(eol - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.1", 8) != 0) return -1;

  int hosts = 0, lengths = 0;
  request_info_t info = {0};
  const char *upgrade_line = NULL;
  size_t upgrade_line_len = 0;
  field_t host = {0};
  uint64_t length = 0;
  buf_t *up = &c->uphead;
  buf_clear(up);
  buf_add(up, d, (size_t)(eol - d) + 2);
  for (const char *line = eol + 2; line < end + 2;) {
    const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
    if (!next) return -1;
    field_t f;
    if (parse_field(line, (size_t)(next - line), &f) < 0) return -1;
    if (name_is(f.name, f.name_len, "host")) {
      hosts++;
      host = f;
    } else if (name_is(f.name, f.name_len, "content-length")) {
      if (++lengths > 1 || parse_length(f.value, f.value_len, &length) < 0) return -1;
    } else if (name_is(f.name, f.name_len, "transfer-encoding") || name_is(f.name, f.name_len, "expect")) {
      return -1;
    } else if (name_is(f.name, f.name_len, "connection")) {
      if (each_token(f.value, f.value_len, request_connection_token, &info)) return -1;
    } else if (name_is(f.name, f.name_len, "upgrade")) {
      if (upgrade_line) return -1;
      each_token(f.value, f.value_len, request_upgrade_token, &info);
      upgrade_line = line;
      upgrade_line_len = (size_t)(next - line) + 2;
    }
    if (!name_in(f.name, f.name_len, HOP_BY_HOP) && !name_in(f.name, f.name_len, SPOOFABLE)) buf_add(up, line, (size_t)(next - line) + 2);
    line = next + 2;
  }
  if (hosts != 1 || host.value_len == 0 || host.value_len >= 256) return -1;

  /* <label>.<domain>[:port] -> a running box */
  char name[256];
  size_t n = host.value_len;
  for (size_t i = 0; i < n; i++) name[i] = (char)((host.value[i] >= 'A' && host.value[i] <= 'Z') ? host.value[i] + 32 : host.value[i]);
  name[n] = '\0';
  char *colon = strrchr(name, ':');
  if (colon && colon[1]) {
    char *p = colon + 1;
    while (*p >= '0' && *p <= '9') p++;
    if (*p == '\0') {
      *colon = '\0';
      n = (size_t)(colon - name);
    }
  }
  if (n <= E.suffix_len || strcmp(name + n - E.suffix_len, E.suffix) != 0) return -1;
  name[n - E.suffix_len] = '\0';
  if (strchr(name, '.') || strlen(name) >= ID_LEN) return -1;
  if (!lookup_route(name, c)) return -1;

  /* an upgrade keeps its Upgrade field and says so in Connection (as upstreamHead in proxy-connection.ts) */
  int upgrade = info.upgrade && info.upgrade_tokens > 0;
  if (upgrade) {
    buf_add(up, upgrade_line, upgrade_line_len);
    buf_str(up, "connection: upgrade\r\n");
  }
  char forwarded[512];
  snprintf(forwarded, sizeof forwarded, "x-forwarded-for: %s\r\nx-forwarded-proto: https\r\nx-forwarded-host: %.*s\r\n\r\n", c->peer, (int)host.value_len, host.value);
  buf_str(up, forwarded);

  buf_clear(&c->orig);
  buf_add(&c->orig, d, hlen);
  buf_drop(&c->in, hlen);
  c->head_method = (sp1 - d == 4 && memcmp(d, "HEAD", 4) == 0);
  size_t mlen = (size_t)(sp1 - d);
  c->idempotent = name_is(d, mlen, "GET") || name_is(d, mlen, "HEAD") || name_is(d, mlen, "OPTIONS") || name_is(d, mlen, "PUT") || name_is(d, mlen, "DELETE");
  c->attempts = 0;
  c->req_remaining = length;
  c->req_done = length == 0;
  c->has_body = length > 0;
  c->client_close = info.close;
  c->upgrade = upgrade;
  c->websocket = upgrade && info.websocket;
  c->reused = c->retried = 0;
  c->resp_phase = 0;
  c->resp_started = 0;
  buf_clear(&c->resph);
  c->state = S_EXCHANGE;
  c->counted = 1;
  activity(c->box, +1);
  count(&E.requests, 1);
  c->up = acquire(c);
  if (!c->up) handover(c, 0, NULL, NULL); /* could not even start a dial: JavaScript retries it */
  return 0;
}

/* ---------- upstream sockets ---------- */

static upstream_t *dial(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return NULL;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&c->addr, sizeof c->addr) < 0 && errno != EINPROGRESS) {
    close(fd);
    return NULL;
  }
  upstream_t *u = calloc(1, sizeof *u);
  if (!u) {
    close(fd);
    return NULL;
  }
  u->tag.type = T_UPSTREAM;
  u->tag.obj = u;
  u->fd = fd;
  u->connecting = 1;
  u->since = now_ms();
  u->owner = c;
  memcpy(u->box, c->box, sizeof u->box);
  memcpy(u->key, c->key, sizeof u->key);
  u->mask = EPOLLOUT;
  struct epoll_event ev = {.events = u->mask, .data.ptr = &u->tag};
  if (epoll_ctl(E.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    close(fd);
    free(u);
    return NULL;
  }
  if (up_send(u, buf_data(&c->uphead), buf_size(&c->uphead)) < 0) {
    u->owner = NULL;
    up_close(u);
    return NULL;
  }
  return u;
}

/* A pooled socket for this box's lifecycle and port, or a new dial (the head is queued on it). */
static upstream_t *acquire(conn_t *c) {
  for (upstream_t *u = E.pool; u; u = u->next) {
    if (strcmp(u->key, c->key) != 0) continue;
    if (u->prev) u->prev->next = u->next;
    else E.pool = u->next;
    if (u->next) u->next->prev = u->prev;
    u->prev = u->next = NULL;
    u->pooled = 0;
    E.npooled--;
    u->owner = c;
    c->reused = 1;
    if (up_send(u, buf_data(&c->uphead), buf_size(&c->uphead)) < 0) {
      up_close(u);
      c->reused = 0;
      break;
    }
    return u;
  }
  return dial(c);
}

static void pool(upstream_t *u) {
  if (E.npooled >= MAX_POOLED || buf_size(&u->out)) {
    up_close(u);
    return;
  }
  u->owner = NULL;
  u->pooled = 1;
  u->since = now_ms();
  u->prev = NULL;
  u->next = E.pool;
  if (E.pool) E.pool->prev = u;
  E.pool = u;
  E.npooled++;
  /* a guest must not speak unasked: readable while pooled means closed or broken */
  set_mask(u->fd, &u->tag, &u->mask, EPOLLIN | EPOLLRDHUP);
}

/* ---------- the exchange ---------- */

static void process(conn_t *c);

static void forward_body(conn_t *c) {
  upstream_t *u = c->up;
  if (!u || u->connecting || c->req_done) return;
  size_t take = buf_size(&c->in);
  if (take > c->req_remaining) take = (size_t)c->req_remaining;
  if (!take) return;
  if (up_send(u, buf_data(&c->in), take) < 0) return; /* the upstream's read side reports it */
  buf_drop(&c->in, take);
  c->req_remaining -= take;
  if (c->req_remaining == 0) c->req_done = 1;
}

/* The response is whole: pool or close the upstream, then the next request, or close. */
static void finish_exchange(conn_t *c, size_t extra) {
  upstream_t *u = c->up;
  c->up = NULL;
  if (u) {
    u->owner = NULL;
    if (c->req_done && !c->upstream_closes && extra == 0 && !u->closed) pool(u);
    else up_close(u);
  }
  end_exchange_activity(c);
  buf_clear(&c->orig);
  buf_clear(&c->resph);
  if (c->close_after) {
    conn_finish(c);
    return;
  }
  c->state = S_HEAD;
  c->since = now_ms();
  process(c);
}

/* Failed before the client saw a byte of the response: JavaScript answers `status` (or closes). */
static void fail_exchange(conn_t *c, int status, const char *code, const char *message) {
  if (c->resp_started) {
    conn_close(c);
    return;
  }
  handover(c, status, code, message);
}

/* Bytes of the response body: forward what belongs to this response (head first, in one TLS record). */
static int scan_chunked(chunk_t *s, const unsigned char *p, size_t n, size_t *used);

static void forward_response(conn_t *c, const char *data, size_t len, const buf_t *head) {
  size_t take = len;
  int done = 0;
  if (c->resp_kind == F_LENGTH) {
    if (take > c->resp_remaining) take = (size_t)c->resp_remaining;
    c->resp_remaining -= take;
    done = c->resp_remaining == 0;
  } else if (c->resp_kind == F_CHUNKED) {
    size_t used;
    int r = scan_chunked(&c->chunk, (const unsigned char *)data, len, &used);
    if (r < 0) {
      conn_close(c); /* a malformed body after the head went out: cut, never a truncated "whole" */
      return;
    }
    if (r == 1) {
      take = used;
      done = 1;
    }
  }
  if (head) {
    buf_t joined = {0};
    if (buf_add(&joined, buf_data(head), buf_size(head)) < 0 || buf_add(&joined, data, take) < 0) {
      buf_free(&joined);
      conn_close(c);
      return;
    }
    int r = client_send(c, buf_data(&joined), buf_size(&joined));
    buf_free(&joined);
    if (r < 0) return;
  } else if (take && client_send(c, data, take) < 0) {
    return;
  }
  if (done) finish_exchange(c, len - take);
}

typedef struct {
  int has_length, chunked, other_te, upstream_closes, keep_alive;
  uint64_t length;
  const char *listed[32];
  size_t listed_len[32];
  int nlisted;
} response_info_t;

static int response_connection_token(const char *t, size_t n, void *arg) {
  response_info_t *info = arg;
  if (name_is(t, n, "close")) info->upstream_closes = 1;
  if (name_is(t, n, "keep-alive")) info->keep_alive = 1;
  if (info->nlisted < 32) {
    info->listed[info->nlisted] = t;
    info->listed_len[info->nlisted++] = n;
  }
  return 0;
}

static int response_te_token(const char *t, size_t n, void *arg) {
  response_info_t *info = arg;
  if (name_is(t, n, "chunked") && !info->chunked) info->chunked = 1;
  else info->other_te = 1;
  return 0;
}

/* The response head is in c->resph up to hlen: its status (framing and Connection tokens in
 * `info_out`), or -1 on an invalid response (message in `why`). */
static int take_response_head(conn_t *c, size_t hlen, response_info_t *info_out, const char **why) {
  const char *d = buf_data(&c->resph);
  const char *end = d + hlen - 4;
  const char *eol = memmem(d, (size_t)(end - d) + 2, "\r\n", 2);
  /* HTTP/1.x SSS[ reason] */
  if (!eol || eol - d < 12 || memcmp(d, "HTTP/1.", 7) != 0 || (d[7] != '0' && d[7] != '1') || d[8] != ' ' ||
      d[9] < '0' || d[9] > '9' || d[10] < '0' || d[10] > '9' || d[11] < '0' || d[11] > '9' || (eol - d > 12 && d[12] != ' ')) {
    *why = "malformed status line from the guest";
    return -1;
  }
  for (const char *p = d; p < eol; p++) {
    if (*p == '\0' || *p == '\n' || *p == '\r') {
      *why = "malformed status line from the guest";
      return -1;
    }
  }
  int status = (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
  int http10 = d[7] == '0';
  response_info_t info = {0};
  for (const char *line = eol + 2; line < end + 2;) {
    const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
    field_t f;
    if (!next || parse_field(line, (size_t)(next - line), &f) < 0) {
      *why = "invalid header field in the response";
      return -1;
    }
    if (name_is(f.name, f.name_len, "content-length")) {
      uint64_t length;
      if (parse_length(f.value, f.value_len, &length) < 0 || (info.has_length && length != info.length)) {
        *why = "invalid or conflicting Content-Length";
        return -1;
      }
      info.has_length = 1;
      info.length = length;
    } else if (name_is(f.name, f.name_len, "transfer-encoding")) {
      each_token(f.value, f.value_len, response_te_token, &info);
    } else if (name_is(f.name, f.name_len, "connection")) {
      each_token(f.value, f.value_len, response_connection_token, &info);
    }
    line = next + 2;
  }
  if (info.chunked || info.other_te) {
    if (info.has_length) {
      *why = "Content-Length together with Transfer-Encoding is refused (request smuggling)";
      return -1;
    }
    if (info.other_te) {
      *why = "unsupported Transfer-Encoding";
      return -1;
    }
  }
  *info_out = info;
  if (status >= 100 && status < 200) return status;

  if (c->head_method || status == 204 || status == 304) c->resp_kind = F_NONE;
  else if (info.chunked) c->resp_kind = F_CHUNKED;
  else if (info.has_length) c->resp_kind = info.length ? F_LENGTH : F_NONE;
  else c->resp_kind = F_CLOSE;
  c->resp_remaining = info.length;
  memset(&c->chunk, 0, sizeof c->chunk);
  c->upstream_closes = info.upstream_closes || (http10 && !info.keep_alive);
  c->close_after = c->client_close || c->resp_kind == F_CLOSE || !c->req_done;
  return status;
}

/* The head for the client: hop-by-hop fields and those its Connection lists (`info`) dropped,
 * `connection: close` when we close after. */
static int client_head(conn_t *c, size_t hlen, const response_info_t *info, buf_t *out) {
  const char *d = buf_data(&c->resph);
  const char *end = d + hlen - 4;
  const char *eol = memmem(d, (size_t)(end - d) + 2, "\r\n", 2);
  if (buf_add(out, "HTTP/1.1", 8) < 0 || buf_add(out, d + 8, (size_t)(eol - d) - 8 + 2) < 0) return -1;
  for (const char *line = eol + 2; line < end + 2;) {
    const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
    field_t f;
    parse_field(line, (size_t)(next - line), &f);
    int drop = name_in(f.name, f.name_len, HOP_BY_HOP);
    for (int i = 0; i < info->nlisted && !drop; i++) drop = info->listed_len[i] == f.name_len && strncasecmp(info->listed[i], f.name, f.name_len) == 0;
    if (!drop && buf_add(out, line, (size_t)(next - line) + 2) < 0) return -1;
    line = next + 2;
  }
  if (c->close_after && buf_str(out, "connection: close\r\n") < 0) return -1;
  return buf_str(out, "\r\n");
}

/* 101 Switching Protocols: pass the head on as is; from here bytes go both ways untouched. */
static void start_tunnel(conn_t *c) {
  upstream_t *u = c->up;
  c->state = S_TUNNEL;
  c->resp_started = 1;
  count(&E.tunnels, 1);
  buf_clear(&c->orig);
  if (client_send(c, buf_data(&c->resph), buf_size(&c->resph)) < 0) return; /* head and what followed it */
  buf_clear(&c->resph);
  if (buf_size(&c->in) && up_send(u, buf_data(&c->in), buf_size(&c->in)) < 0) {
    conn_close(c);
    return;
  }
  buf_clear(&c->in);
}

static void upstream_bytes(conn_t *c, const char *p, size_t n) {
  if (c->state == S_TUNNEL) {
    activity(c->box, 0);
    client_send(c, p, n);
    return;
  }
  if (c->resp_phase == 1) {
    forward_response(c, p, n, NULL);
    return;
  }
  if (buf_add(&c->resph, p, n) < 0) {
    conn_close(c);
    return;
  }
  for (;;) {
    const char *d = buf_data(&c->resph);
    size_t len = buf_size(&c->resph);
    const char *end = memmem(d, len, "\r\n\r\n", 4);
    char message[512];
    if (!end) {
      if (len > MAX_HEAD) {
        snprintf(message, sizeof message, "The process on port %d in sailbox %s sent an invalid response: response head from the guest too large", c->port, c->box);
        fail_exchange(c, 502, "SAIL_UPSTREAM_FAILED", message);
      }
      return;
    }
    size_t hlen = (size_t)(end - d) + 4;
    const char *why = NULL;
    response_info_t info;
    int status = take_response_head(c, hlen, &info, &why);
    if (status < 0) {
      snprintf(message, sizeof message, "The process on port %d in sailbox %s sent an invalid response: %s", c->port, c->box, why);
      fail_exchange(c, 502, "SAIL_UPSTREAM_FAILED", message);
      return;
    }
    if (status == 101 && c->upgrade) {
      start_tunnel(c);
      return;
    }
    if (status < 200) {
      /* interim (100 Continue, 103 Early Hints): pass on as is, read on */
      c->resp_started = 1;
      if (client_send(c, d, hlen) < 0) return;
      buf_drop(&c->resph, hlen);
      continue;
    }
    buf_t head = {0};
    if (client_head(c, hlen, &info, &head) < 0) {
      buf_free(&head);
      conn_close(c);
      return;
    }
    c->resp_phase = 1;
    c->resp_started = 1;
    /* the body bytes that came with the head: copy out, resph is reused by the next exchange */
    buf_t rest = {0};
    buf_add(&rest, d + hlen, len - hlen);
    buf_clear(&c->resph);
    if (c->resp_kind == F_NONE) {
      if (client_send(c, buf_data(&head), buf_size(&head)) == 0) finish_exchange(c, buf_size(&rest));
    } else if (buf_size(&rest) == 0) {
      client_send(c, buf_data(&head), buf_size(&head));
    } else {
      forward_response(c, buf_data(&rest), buf_size(&rest), &head);
    }
    buf_free(&head);
    buf_free(&rest);
    return;
  }
}

/* The upstream closed (or failed) during the exchange. */
static void upstream_gone(conn_t *c) {
  upstream_t *u = c->up;
  if (u) up_close(u);
  c->up = NULL;
  if (c->state == S_TUNNEL) {
    conn_finish(c);
    return;
  }
  if (c->resp_phase == 1) {
    if (c->resp_kind == F_CLOSE) finish_exchange(c, 0);
    else conn_close(c); /* cut mid-body: the client must not take a truncated body as whole */
    return;
  }
  /* a pooled socket the guest had already closed: once more on a fresh one (no body was sent) */
  if (c->reused && !c->retried && !c->has_body && buf_size(&c->orig) && !buf_size(&c->resph) && !c->resp_started) {
    c->retried = 1;
    c->reused = 0;
    c->up = dial(c);
    if (!c->up) handover(c, 0, NULL, NULL);
    return;
  }
  /* a fresh connection reset or closed before answering: a server whose accept queue overflowed
   * (Python's http.server listens with a backlog of 5) resets what it never saw. An idempotent
   * request without a body is sent again after a pause (RFC 9110 §9.2.2), as a dial is retried. */
  static const int RETRY_DELAYS_MS[] = {100, 200, 300};
  if (c->idempotent && !c->has_body && !c->upgrade && !c->resp_started && !buf_size(&c->resph) && c->attempts < 3) {
    c->retry_at = now_ms() + RETRY_DELAYS_MS[c->attempts++];
    E.pending_retries++;
    return;
  }
  char message[512];
  snprintf(message, sizeof message, "The process on port %d in sailbox %s closed the connection without a valid answer", c->port, c->box);
  fail_exchange(c, 502, "SAIL_UPSTREAM_FAILED", message);
}

static void run_retries(int64_t now) {
  for (conn_t *c = E.conns; c && E.pending_retries; c = c->next) {
    if (!c->retry_at || now < c->retry_at) continue;
    c->retry_at = 0;
    E.pending_retries--;
    c->up = dial(c);
    if (!c->up) handover(c, 0, NULL, NULL);
    else update_masks(c);
  }
}

static void up_read(upstream_t *u) {
  for (;;) {
    conn_t *c = u->owner;
    if (!c || u->closed) return;
    if (buf_size(&c->out) > OUT_LIMIT) {
      update_masks(c); /* reading it resumes once the client has taken its bytes */
      return;
    }
    ssize_t n = recv(u->fd, scratch, sizeof scratch, 0);
    if (n > 0) {
      count(&E.bytes_out, (uint64_t)n);
      upstream_bytes(c, scratch, (size_t)n);
      if (c->state == S_CLOSED || u->owner != c) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    upstream_gone(c);
    return;
  }
}

static void up_event(upstream_t *u, uint32_t events) {
  if (u->closed) return;
  if (u->pooled) {
    up_close(u);
    return;
  }
  conn_t *c = u->owner;
  if (!c) {
    up_close(u);
    return;
  }
  if (u->connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err || (events & (EPOLLERR | EPOLLHUP))) {
      /* nothing reached the guest: JavaScript retries the dial and answers 502 if it must */
      up_close(u);
      handover(c, 0, NULL, NULL);
      return;
    }
    if (!(events & EPOLLOUT)) return;
    u->connecting = 0;
    events |= EPOLLOUT;
  }
  if (events & EPOLLOUT) {
    if (flush_queue(u->fd, &u->out) < 0) {
      upstream_gone(c);
      return;
    }
    forward_body(c);
    if (c->state == S_CLOSED) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) up_read(u);
  if (c->state == S_CLOSED) return;
  update_masks(c);
  /* reading may have paused for the upstream; bytes OpenSSL already read wait for no epoll event */
  if ((c->mask & EPOLLIN) && SSL_has_pending(c->ssl)) client_read(c);
}

/* ---------- hand-over to JavaScript ---------- */

static void relay_to_pair(conn_t *c, const char *p, size_t n);

static void handover(conn_t *c, int status, const char *code, const char *message) {
  if (c->up) up_close(c->up);
  c->up = NULL;
  end_exchange_activity(c);
  int sv[2];
  handover_t *h = calloc(1, sizeof *h);
  if (!h || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    free(h);
    conn_close(c);
    return;
  }
  int flags = fcntl(sv[0], F_GETFL);
  fcntl(sv[0], F_SETFL, flags | O_NONBLOCK);
  buf_t bytes = {0};
  if (c->state == S_EXCHANGE) buf_add(&bytes, buf_data(&c->orig), buf_size(&c->orig));
  buf_add(&bytes, buf_data(&c->in), buf_size(&c->in));
  buf_clear(&c->in);
  buf_clear(&c->orig);
  h->fd = sv[1];
  snprintf(h->peer, sizeof h->peer, "%s", c->peer);
  h->bytes = bytes.p ? bytes.p + bytes.off : NULL;
  h->len = buf_size(&bytes);
  if (bytes.off && bytes.p) {
    memmove(bytes.p, bytes.p + bytes.off, h->len);
    h->bytes = bytes.p;
  }
  h->status = status;
  if (code) snprintf(h->code, sizeof h->code, "%s", code);
  if (message) snprintf(h->message, sizeof h->message, "%s", message);
  snprintf(h->box, sizeof h->box, "%s", c->box);
  h->port = c->port;
  c->state = S_RELAY;
  c->pair_fd = sv[0];
  c->pair_tag.type = T_PAIR;
  c->pair_tag.obj = c;
  c->pair_mask = EPOLLIN;
  struct epoll_event ev = {.events = c->pair_mask, .data.ptr = &c->pair_tag};
  epoll_ctl(E.ep, EPOLL_CTL_ADD, sv[0], &ev);
  if (napi_call_threadsafe_function(E.on_handover, h, napi_tsfn_nonblocking) != napi_ok) {
    close(sv[1]);
    free(h->bytes);
    free(h);
    conn_close(c);
    return;
  }
  if (c->client_eof) {
    shutdown(c->pair_fd, SHUT_WR);
    c->pair_shut = 1;
  }
}

static void relay_to_pair(conn_t *c, const char *p, size_t n) {
  if (send_or_queue(c->pair_fd, &c->pair_out, p, n, 1) < 0) conn_close(c);
}

static void pair_event(conn_t *c, uint32_t events) {
  if (events & EPOLLOUT) {
    if (flush_queue(c->pair_fd, &c->pair_out) < 0) {
      conn_close(c);
      return;
    }
    if (!buf_size(&c->pair_out) && c->client_eof && !c->pair_shut) {
      shutdown(c->pair_fd, SHUT_WR);
      c->pair_shut = 1;
    }
    if (!buf_size(&c->pair_out)) client_read(c); /* it may have paused for us; SSL may hold bytes */
    if (c->state == S_CLOSED) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
    for (;;) {
      if (buf_size(&c->out) > OUT_LIMIT) break;
      ssize_t n = recv(c->pair_fd, scratch, sizeof scratch, 0);
      if (n > 0) {
        if (client_send(c, scratch, (size_t)n) < 0) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      /* JavaScript ended the connection: flush, close_notify, close */
      epoll_ctl(E.ep, EPOLL_CTL_DEL, c->pair_fd, NULL);
      close(c->pair_fd);
      c->pair_fd = -1;
      conn_finish(c);
      if (c->state != S_CLOSED) update_masks(c);
      return;
    }
  }
  update_masks(c);
}

/* ---------- the client side ---------- */

/* Whether to read the client now: not after its EOF or while closing, nor while what it sent waits. */
static int client_readable(const conn_t *c) {
  if (c->client_eof || c->state == S_CLOSING || c->state == S_CLOSED) return 0;
  if (c->state == S_EXCHANGE) return buf_size(&c->in) <= IN_LIMIT && !(c->up && buf_size(&c->up->out) > OUT_LIMIT);
  if (c->state == S_TUNNEL) return !(c->up && buf_size(&c->up->out) > OUT_LIMIT);
  if (c->state == S_RELAY) return buf_size(&c->pair_out) <= OUT_LIMIT;
  return 1;
}

static void update_masks(conn_t *c) {
  if (c->state == S_CLOSED) return;
  int reading = client_readable(c);
  uint32_t mask = (reading ? EPOLLIN | EPOLLRDHUP : 0) | (buf_size(&c->out) || c->read_wants_write ? EPOLLOUT : 0);
  set_mask(c->fd, &c->tag, &c->mask, mask);
  upstream_t *u = c->up;
  if (u && !u->closed) {
    int up_reading = buf_size(&c->out) <= OUT_LIMIT;
    uint32_t m = (u->connecting ? EPOLLOUT : ((up_reading ? EPOLLIN | EPOLLRDHUP : 0) | (buf_size(&u->out) ? EPOLLOUT : 0)));
    set_mask(u->fd, &u->tag, &u->mask, m);
  }
  if (c->state == S_RELAY && c->pair_fd >= 0) {
    uint32_t m = (buf_size(&c->out) <= OUT_LIMIT ? EPOLLIN | EPOLLRDHUP : 0) | (buf_size(&c->pair_out) ? EPOLLOUT : 0);
    set_mask(c->pair_fd, &c->pair_tag, &c->pair_mask, m);
  }
}

static void process(conn_t *c) {
  for (;;) {
    if (c->state == S_HEAD) {
      size_t len = buf_size(&c->in);
      if (len == 0) {
        if (c->client_eof) conn_finish(c);
        return;
      }
      const char *d = buf_data(&c->in);
      const char *end = memmem(d, len, "\r\n\r\n", 4);
      /* a head that is not whole yet (slowloris, huge heads): JavaScript times it out or refuses it */
      if (!end || start_exchange(c, d, (size_t)(end - d) + 4) < 0) {
        handover(c, 0, NULL, NULL);
        return;
      }
      continue;
    }
    if (c->state == S_EXCHANGE) forward_body(c);
    return;
  }
}

static void client_read(conn_t *c) {
  int got = 0;
  while (client_readable(c)) {
    int n = SSL_read(c->ssl, scratch, sizeof scratch);
    if (n > 0) {
      c->since = now_ms();
      if (c->state == S_RELAY) {
        relay_to_pair(c, scratch, (size_t)n);
      } else if (c->state == S_TUNNEL) {
        count(&E.bytes_in, (uint64_t)n);
        activity(c->box, 0);
        if (!c->up || up_send(c->up, scratch, (size_t)n) < 0) {
          conn_close(c);
          return;
        }
      } else {
        count(&E.bytes_in, (uint64_t)n);
        if (buf_add(&c->in, scratch, (size_t)n) < 0) {
          conn_close(c);
          return;
        }
        got = 1;
      }
      continue;
    }
    int err = SSL_get_error(c->ssl, n);
    c->read_wants_write = err == SSL_ERROR_WANT_WRITE;
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) break;
    ERR_clear_error();
    if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL) {
      c->client_eof = 1;
      if (c->state == S_TUNNEL) {
        conn_close(c); /* the client left: so does the tunnel */
        return;
      }
      if (c->state == S_RELAY) {
        if (!buf_size(&c->pair_out) && !c->pair_shut) {
          shutdown(c->pair_fd, SHUT_WR);
          c->pair_shut = 1;
        }
      } else if (c->state == S_HEAD && !buf_size(&c->in)) {
        conn_close(c);
        return;
      } else if (c->state == S_EXCHANGE && c->resp_phase == 0 && !c->req_done) {
        conn_close(c); /* gone mid-request */
        return;
      }
      break;
    }
    conn_close(c);
    return;
  }
  if (c->state == S_CLOSED) return;
  if (got || c->state == S_HEAD) process(c);
  if (c->state != S_CLOSED) update_masks(c);
}

static void handshake(conn_t *c) {
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    c->state = S_HEAD;
    c->since = now_ms();
    client_read(c);
    return;
  }
  int err = SSL_get_error(c->ssl, r);
  if (err == SSL_ERROR_WANT_READ) set_mask(c->fd, &c->tag, &c->mask, EPOLLIN);
  else if (err == SSL_ERROR_WANT_WRITE) set_mask(c->fd, &c->tag, &c->mask, EPOLLOUT);
  else {
    ERR_clear_error();
    conn_close(c); /* not TLS, or a failed handshake */
  }
}

static void client_event(conn_t *c, uint32_t events) {
  if (c->state == S_CLOSED) return;
  if (c->state == S_HANDSHAKE) {
    handshake(c);
    return;
  }
  if ((events & EPOLLERR) || ((events & EPOLLHUP) && c->client_eof)) {
    conn_close(c); /* reset, or gone both ways: nothing more can be written */
    return;
  }
  if (c->read_wants_write && (events & EPOLLOUT)) events |= EPOLLIN;
  if (events & EPOLLOUT) {
    client_flush(c);
    if (c->state == S_CLOSED) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) client_read(c);
  else update_masks(c);
}

/* ---------- commands from JavaScript ---------- */

static void adopt(int fd, const char *peer) {
  conn_t *c = calloc(1, sizeof *c);
  SSL *ssl = c ? SSL_new(E.ctx) : NULL;
  if (!ssl || !SSL_set_fd(ssl, fd)) {
    if (ssl) SSL_free(ssl);
    free(c);
    close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  SSL_set_accept_state(ssl);
  c->ssl = ssl;
  c->fd = fd;
  c->pair_fd = -1;
  c->tag.type = T_CLIENT;
  c->tag.obj = c;
  c->state = S_HANDSHAKE;
  c->since = now_ms();
  snprintf(c->peer, sizeof c->peer, "%s", peer);
  c->mask = EPOLLIN;
  struct epoll_event ev = {.events = c->mask, .data.ptr = &c->tag};
  if (epoll_ctl(E.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    SSL_free(ssl);
    free(c);
    close(fd);
    return;
  }
  c->next = E.conns;
  if (E.conns) E.conns->prev = c;
  E.conns = c;
  count(&E.connections, 1);
  handshake(c);
}

/* RFC 6455 close frame, server to client (unmasked), code 1001 "going away". */
static const char WS_CLOSE_GOING_AWAY[] = {(char)0x88, 0x02, 0x03, (char)0xe9};

static void drop_box(const char *box) {
  for (conn_t *c = E.conns, *next; c; c = next) {
    next = c->next;
    if (strcmp(c->box, box) != 0) continue;
    if (c->state == S_EXCHANGE || (c->state == S_TUNNEL && !c->websocket)) {
      conn_close(c);
    } else if (c->state == S_TUNNEL) {
      /* a WebSocket hears why (1001 "going away", RFC 6455 §7.4.1) before the connection closes */
      up_close(c->up);
      end_exchange_activity(c);
      if (client_send(c, WS_CLOSE_GOING_AWAY, sizeof WS_CLOSE_GOING_AWAY) == 0) conn_finish(c);
      if (c->state != S_CLOSED) update_masks(c);
    }
  }
  for (upstream_t *u = E.pool, *next; u; u = next) {
    next = u->next;
    if (strcmp(u->box, box) == 0) up_close(u);
  }
}

static void run_commands(void) {
  uint64_t ignored;
  if (read(E.wake_fd, &ignored, sizeof ignored) < 0 && errno != EAGAIN) return;
  pthread_mutex_lock(&E.lock);
  cmd_t *cmds = E.cmds;
  E.cmds = E.cmds_tail = NULL;
  pthread_mutex_unlock(&E.lock);
  while (cmds) {
    cmd_t *cmd = cmds;
    cmds = cmd->next;
    if (cmd->type == 1) adopt(cmd->fd, cmd->text);
    else if (cmd->type == 2) drop_box(cmd->text);
    else if (cmd->type == 3) E.stopping = 1;
    free(cmd);
  }
}

static void sweep(int64_t now) {
  for (conn_t *c = E.conns, *next; c; c = next) {
    next = c->next;
    if (c->state == S_HANDSHAKE && now - c->since > HANDSHAKE_MS) conn_close(c);
    else if ((c->state == S_HEAD || c->state == S_CLOSING) && !buf_size(&c->in) && now - c->since > IDLE_MS) conn_close(c);
    else if (c->state == S_EXCHANGE && c->up && c->up->connecting && now - c->up->since > DIAL_MS) {
      up_close(c->up);
      handover(c, 0, NULL, NULL);
    }
  }
  for (upstream_t *u = E.pool, *next; u; u = next) {
    next = u->next;
    if (now - u->since > POOL_IDLE_MS) up_close(u);
  }
}

static void *run(void *arg) {
  (void)arg;
  struct epoll_event events[256];
  while (!E.stopping) {
    int n = epoll_wait(E.ep, events, 256, E.pending_retries ? 10 : 1000);
    for (int i = 0; i < n; i++) {
      tag_t *tag = events[i].data.ptr;
      uint32_t ev = events[i].events;
      if (tag->type == T_WAKE) run_commands();
      else if (tag->type == T_CLIENT) client_event(tag->obj, ev);
      else if (tag->type == T_UPSTREAM) up_event(tag->obj, ev);
      else if (tag->type == T_PAIR) {
        conn_t *c = tag->obj;
        if (c->state != S_CLOSED) pair_event(c, ev);
      }
    }
    int64_t now = now_ms();
    if (E.pending_retries) run_retries(now);
    if (now - E.last_sweep >= 1000) {
      E.last_sweep = now;
      sweep(now);
    }
    free_dead();
  }
  for (conn_t *c = E.conns; c; c = E.conns) conn_close(c);
  while (E.pool) up_close(E.pool);
  free_dead();
  return NULL;
}

/* ---------- the chunked body scanner (as ChunkedScanner in http1.ts) ---------- */

enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LF, C_DONE };

static int hex(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* 1: the body ends at *used; 0: it goes on; -1: malformed. */
static int scan_chunked(chunk_t *s, const unsigned char *p, size_t n, size_t *used) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = p[i];
    switch (s->state) {
      case C_SIZE: {
        int h = hex(ch);
        if (h >= 0) {
          if (++s->digits > 12) return -1;
          s->size = s->size * 16 + (uint64_t)h;
        } else if (ch == ';' && s->digits) s->state = C_EXT;
        else if (ch == '\r' && s->digits) s->state = C_SIZE_LF;
        else return -1;
        break;
      }
      case C_EXT:
        if (ch == '\r') s->state = C_SIZE_LF;
        else if (ch == '\n' || ++s->line > 1024) return -1;
        break;
      case C_SIZE_LF:
        if (ch != '\n') return -1;
        s->line = 0;
        if (s->size == 0) s->state = C_TRAILER;
        else {
          s->remaining = s->size;
          s->state = C_DATA;
        }
        s->size = 0;
        s->digits = 0;
        break;
      case C_DATA: {
        size_t take = n - i;
        if (take > s->remaining) take = (size_t)s->remaining;
        s->remaining -= take;
        i += take - 1;
        if (s->remaining == 0) s->state = C_DATA_CR;
        break;
      }
      case C_DATA_CR:
        if (ch != '\r') return -1;
        s->state = C_DATA_LF;
        break;
      case C_DATA_LF:
        if (ch != '\n') return -1;
        s->state = C_SIZE;
        break;
      case C_TRAILER:
        if (ch == '\r') s->state = C_TRAILER_LF;
        else if (++s->line > MAX_HEAD) return -1;
        break;
      case C_TRAILER_LF:
        if (ch != '\n') return -1;
        if (s->line == 0) {
          s->state = C_DONE;
          *used = i + 1;
          return 1;
        }
        s->line = 0;
        s->state = C_TRAILER;
        break;
      case C_DONE:
        *used = i;
        return 1;
    }
  }
  return 0;
}

/* ---------- Node-API ---------- */

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static void call_handover(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  handover_t *h = data;
  if (env && callback) {
    napi_value argv[4], global, result, error = NULL;
    napi_create_int32(env, h->fd, &argv[0]);
    napi_create_string_utf8(env, h->peer, NAPI_AUTO_LENGTH, &argv[1]);
    void *copy;
    napi_create_buffer_copy(env, h->len, h->bytes ? h->bytes : "", &copy, &argv[2]);
    if (h->status) {
      napi_value v;
      napi_create_object(env, &error);
      napi_create_int32(env, h->status, &v);
      napi_set_named_property(env, error, "status", v);
      napi_create_string_utf8(env, h->code, NAPI_AUTO_LENGTH, &v);
      napi_set_named_property(env, error, "code", v);
      napi_create_string_utf8(env, h->message, NAPI_AUTO_LENGTH, &v);
      napi_set_named_property(env, error, "message", v);
      napi_create_string_utf8(env, h->box, NAPI_AUTO_LENGTH, &v);
      napi_set_named_property(env, error, "sailboxId", v);
      napi_create_int32(env, h->port, &v);
      napi_set_named_property(env, error, "port", v);
    } else {
      napi_get_null(env, &error);
    }
    argv[3] = error;
    napi_get_global(env, &global);
    napi_make_callback(env, E.context, global, callback, 4, argv, &result);
  } else {
    close(h->fd);
  }
  free(h->bytes);
  free(h);
}

static char *get_string(napi_env env, napi_value value) {
  size_t len;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, value, s, len + 1, &len);
  return s;
}

static int load_tls(const char *cert, const char *key, char *why, size_t why_len) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return snprintf(why, why_len, "SSL_CTX_new failed"), -1;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  BIO *bio = BIO_new_mem_buf(cert, -1);
  X509 *x509 = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  int ok = x509 && SSL_CTX_use_certificate(ctx, x509) == 1;
  X509_free(x509);
  /* the rest of the PEM is the chain */
  for (X509 *extra; ok && (extra = PEM_read_bio_X509(bio, NULL, NULL, NULL));) {
    if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      ok = 0;
    }
  }
  BIO_free(bio);
  ERR_clear_error();
  bio = ok ? BIO_new_mem_buf(key, -1) : NULL;
  EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  ok = pkey && SSL_CTX_use_PrivateKey(ctx, pkey) == 1 && SSL_CTX_check_private_key(ctx) == 1;
  EVP_PKEY_free(pkey);
  BIO_free(bio);
  if (!ok) {
    unsigned long e = ERR_get_error();
    char text[256];
    ERR_error_string_n(e, text, sizeof text);
    snprintf(why, why_len, "the TLS certificate or key is not usable: %s", e ? text : "no PEM found");
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return -1;
  }
  E.ctx = ctx;
  return 0;
}

/* start(certPem, keyPem, domain, onHandover(fd, peer, bytes, error|null)) */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (E.started) return throw_error(env, "the HTTP engine is already started in this process");
  if (argc < 4) return throw_error(env, "start(certPem, keyPem, domain, onHandover)");
  char *cert = get_string(env, argv[0]), *key = get_string(env, argv[1]), *domain = get_string(env, argv[2]);
  char why[512] = "";
  int ok = cert && key && domain && strlen(domain) + 2 < sizeof E.suffix;
  if (!ok) snprintf(why, sizeof why, "start(certPem, keyPem, domain, onHandover): strings expected");
  if (ok) {
    snprintf(E.suffix, sizeof E.suffix, ".%s", domain);
    for (char *p = E.suffix; *p; p++) *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    E.suffix_len = strlen(E.suffix);
    ok = load_tls(cert, key, why, sizeof why) == 0;
  }
  free(cert);
  free(key);
  free(domain);
  if (!ok) return throw_error(env, why);
  napi_create_string_utf8(env, "sail-http-engine", NAPI_AUTO_LENGTH, &name);
  if (napi_async_init(env, NULL, name, &E.context) != napi_ok ||
      napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, NULL, NULL, NULL, call_handover, &E.on_handover) != napi_ok) {
    return throw_error(env, "could not create the engine's callback");
  }
  napi_unref_threadsafe_function(env, E.on_handover);
  E.ep = epoll_create1(EPOLL_CLOEXEC);
  E.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  E.wake_tag.type = T_WAKE;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &E.wake_tag};
  if (E.ep < 0 || E.wake_fd < 0 || epoll_ctl(E.ep, EPOLL_CTL_ADD, E.wake_fd, &ev) < 0) return throw_error(env, "epoll/eventfd failed");
  E.last_sweep = now_ms();
  if (pthread_create(&E.thread, NULL, run, NULL) != 0) return throw_error(env, "could not start the engine thread");
  E.started = 1;
  return NULL;
}

static void enqueue(int type, int fd, const char *text) {
  cmd_t *cmd = calloc(1, sizeof *cmd);
  if (!cmd) {
    if (fd >= 0) close(fd);
    return;
  }
  cmd->type = type;
  cmd->fd = fd;
  if (text) snprintf(cmd->text, sizeof cmd->text, "%s", text);
  pthread_mutex_lock(&E.lock);
  if (E.cmds_tail) E.cmds_tail->next = cmd;
  else E.cmds = cmd;
  E.cmds_tail = cmd;
  pthread_mutex_unlock(&E.lock);
  uint64_t one = 1;
  if (write(E.wake_fd, &one, sizeof one) < 0) { /* the counter saturates only if nobody reads: fine */ }
}

/* adopt(fd, peer): the engine dup()s the descriptor; JavaScript closes its copy. */
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  if (!E.started || E.stopping) return throw_error(env, "the HTTP engine is not running");
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) return throw_error(env, "adopt(fd, peer)");
  char *peer = get_string(env, argv[1]);
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    free(peer);
    return throw_error(env, "adopt: dup failed");
  }
  enqueue(1, copy, peer ? peer : "");
  free(peer);
  return NULL;
}

/* setRoutes([[label, sailboxId, generation, ipv4, port], ...]): running boxes only. */
static napi_value js_set_routes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t n = 0;
  if (argc < 1 || napi_get_array_length(env, argv[0], &n) != napi_ok) return throw_error(env, "setRoutes(routes)");
  route_t *routes = calloc(n ? n : 1, sizeof *routes);
  size_t count_ok = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value row, v;
    napi_get_element(env, argv[0], i, &row);
    char *text[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < 4; k++) {
      napi_get_element(env, row, (uint32_t)k, &v);
      text[k] = get_string(env, v);
    }
    int32_t port = 0;
    napi_get_element(env, row, 4, &v);
    napi_get_value_int32(env, v, &port);
    route_t *r = &routes[count_ok];
    if (text[0] && text[1] && text[2] && text[3] && strlen(text[0]) < ID_LEN && strlen(text[1]) < ID_LEN && port > 0 && port < 65536 &&
        inet_pton(AF_INET, text[3], &r->addr.sin_addr) == 1) {
      snprintf(r->label, sizeof r->label, "%s", text[0]);
      snprintf(r->box, sizeof r->box, "%s", text[1]);
      snprintf(r->key, sizeof r->key, "%.100s:%d", text[2], port);
      r->addr.sin_family = AF_INET;
      r->addr.sin_port = htons((uint16_t)port);
      r->port = port;
      count_ok++;
    }
    for (int k = 0; k < 4; k++) free(text[k]);
  }
  pthread_mutex_lock(&E.lock);
  route_t *old = E.routes;
  E.routes = routes;
  E.nroutes = count_ok;
  pthread_mutex_unlock(&E.lock);
  free(old);
  return NULL;
}

static napi_value js_drop_box(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!E.started || argc < 1) return NULL;
  char *box = get_string(env, argv[0]);
  if (box) enqueue(2, -1, box);
  free(box);
  return NULL;
}

static void set_number(napi_env env, napi_value obj, const char *name, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, obj, name, v);
}

/* take() -> {connections, requests, tunnels, bytesIn, bytesOut, activity: {box: {open, lastActiveMs}}}; counters reset. */
static napi_value js_take(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, boxes;
  napi_create_object(env, &result);
  napi_create_object(env, &boxes);
  set_number(env, result, "connections", (double)__atomic_exchange_n(&E.connections, 0, __ATOMIC_RELAXED));
  set_number(env, result, "requests", (double)__atomic_exchange_n(&E.requests, 0, __ATOMIC_RELAXED));
  set_number(env, result, "tunnels", (double)__atomic_exchange_n(&E.tunnels, 0, __ATOMIC_RELAXED));
  set_number(env, result, "bytesIn", (double)__atomic_exchange_n(&E.bytes_in, 0, __ATOMIC_RELAXED));
  set_number(env, result, "bytesOut", (double)__atomic_exchange_n(&E.bytes_out, 0, __ATOMIC_RELAXED));
  pthread_mutex_lock(&E.lock);
  int64_t forget_before = wall_ms() - 7LL * 86400000;
  size_t kept = 0;
  for (size_t i = 0; i < E.nactivity; i++) {
    activity_t *a = &E.activity[i];
    if (a->open == 0 && a->last_ms < forget_before) continue;
    napi_value entry;
    napi_create_object(env, &entry);
    set_number(env, entry, "open", (double)a->open);
    set_number(env, entry, "lastActiveMs", (double)a->last_ms);
    napi_set_named_property(env, boxes, a->box, entry);
    E.activity[kept++] = *a;
  }
  E.nactivity = kept;
  pthread_mutex_unlock(&E.lock);
  napi_set_named_property(env, result, "activity", boxes);
  return result;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  if (!E.started || E.stopping) return NULL;
  enqueue(3, -1, NULL);
  pthread_join(E.thread, NULL);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
      {"adopt", NULL, js_adopt, NULL, NULL, NULL, napi_default, NULL},
      {"setRoutes", NULL, js_set_routes, NULL, NULL, NULL, napi_default, NULL},
      {"dropBox", NULL, js_drop_box, NULL, NULL, NULL, napi_default, NULL},
      {"take", NULL, js_take, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
