/* A replica's follower: a small HTTP/1.0 client on its own thread that
 * keeps the primary's active model installed (see srv_follow.h). */
#include "srv_follow.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <nettle/sha2.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "nn.h"

#define HEAD_MAX (16 * 1024)
#define JSON_MAX ((size_t)1 << 20)
#define FILE_MAX ((size_t)256 << 20)
#define CONNECT_MS 3000
#define REQUEST_IDLE_S 10
#define STREAM_IDLE_S 45
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define POLL_MS 1000

struct srv_follow {
  char url[256], host[256], port[8], hostport[300];
  char *auth;                 /* "Authorization: Bearer ...\r\n" or "" */
  srv_models *models;
  void (*log)(const char *level, const char *msg);
  pthread_t thread;
  int started;
  pthread_mutex_t mu;         /* fd, note, etag and the stop flag */
  pthread_cond_t cv;
  int fds[2];                 /* sockets in use (the stream, a request), -1 */
  int stop;
  char etag[80];              /* of the model installed */
  char note[300];             /* why the primary is down / has no model */
  atomic_int up;              /* -1 unknown yet, 0 down, 1 up */
  atomic_llong model_id;
  atomic_llong last_sync_ms;  /* monotonic ms of the last confirmation */
  atomic_ulong syncs, failures;
};

/* ---------------------------------------------------------------- sha-256 */

/* nettle's SHA-256 (linked for the data set files already). */
static void sha_final_hex(struct sha256_ctx *c, char hex[65]) {
  uint8_t d[SHA256_DIGEST_SIZE];
  sha256_digest(c, sizeof d, d);
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

void srv_sha256_hex(const void *buf, size_t len, char hex[65]) {
  struct sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, len, buf);
  sha_final_hex(&c, hex);
}

int srv_sha256_fd_hex(int fd, char hex[65]) {
  struct sha256_ctx c;
  sha256_init(&c);
  uint8_t buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;
    sha256_update(&c, (size_t)n, buf);
    off += n;
  }
  sha_final_hex(&c, hex);
  return 0;
}

/* ---------------------------------------------------------------- helpers */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void logf_(srv_follow *F, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(srv_follow *F, const char *level, const char *fmt, ...) {
  char buf[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (F->log) F->log(level, buf);
}

/* Up/down transitions are logged; the same state again is not. */
static void set_up(srv_follow *F, int up, const char *why) {
  int was = atomic_exchange(&F->up, up);
  pthread_mutex_lock(&F->mu);
  snprintf(F->note, sizeof F->note, "%.290s", up ? "" : why);
  pthread_mutex_unlock(&F->mu);
  if (was != up) {
    if (up) logf_(F, "info", "primary %s is up", F->url);
    else if (atomic_load(&F->model_id))
      logf_(F, "warn", "primary %s is unreachable (%s); serving model %lld meanwhile, "
                       "retrying with backoff", F->url, why, (long long)atomic_load(&F->model_id));
    else
      logf_(F, "warn", "primary %s is unreachable (%s); no model to serve yet, retrying with "
                       "backoff", F->url, why);
  }
  if (!up) atomic_fetch_add(&F->failures, 1);
}

static void synced(srv_follow *F) { atomic_store(&F->last_sync_ms, mono_ms()); }

/* Sleeps ms unless stopped; returns nonzero when stopped. */
static int nap(srv_follow *F, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  pthread_mutex_lock(&F->mu);
  while (!F->stop && pthread_cond_timedwait(&F->cv, &F->mu, &ts) != ETIMEDOUT) {
  }
  int stop = F->stop;
  pthread_mutex_unlock(&F->mu);
  return stop;
}

/* ---------------------------------------------------------------- http */

typedef struct resp {
  int fd;
  int status;
  char head[HEAD_MAX + 1];
  size_t head_len;
  char *extra;                /* bytes read past the head */
  size_t extra_len;
  long long content_length;   /* -1 if absent */
} resp;

static void conn_close(srv_follow *F, resp *r) {
  pthread_mutex_lock(&F->mu);
  for (int i = 0; i < 2; i++)
    if (F->fds[i] == r->fd) F->fds[i] = -1;
  pthread_mutex_unlock(&F->mu);
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
}

static int dial(srv_follow *F, char *why, size_t wl) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL, *a;
  int g = getaddrinfo(F->host, F->port, &hints, &ai);
  if (g) {
    snprintf(why, wl, "cannot resolve %s: %s", F->host, gai_strerror(g));
    return -EHOSTUNREACH;
  }
  int fd = -1, err = ECONNREFUSED;
  for (a = ai; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
      err = errno;
    } else {
      struct pollfd p = {fd, POLLOUT, 0};
      socklen_t sl = sizeof err;
      err = 0;
      if (poll(&p, 1, CONNECT_MS) != 1) err = ETIMEDOUT;
      else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) err = errno;
    }
    if (err) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  if (fd < 0) {
    snprintf(why, wl, "connect to %s: %s", F->hostport, strerror(err));
    return -err;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  pthread_mutex_lock(&F->mu);
  if (F->stop) {
    pthread_mutex_unlock(&F->mu);
    close(fd);
    snprintf(why, wl, "stopping");
    return -ECANCELED;
  }
  F->fds[F->fds[0] < 0 ? 0 : 1] = fd;
  pthread_mutex_unlock(&F->mu);
  return fd;
}

static void set_idle(int fd, int secs) {
  struct timeval tv = {secs, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static ssize_t read_some(int fd, void *buf, size_t n) {
  for (;;) {
    ssize_t k = read(fd, buf, n);
    if (k < 0 && errno == EINTR) continue;
    return k;
  }
}

/* Finds a header's value in the head (case-insensitive name), copied into
 * out without surrounding spaces; -1 if absent. */
static int head_value(const resp *r, const char *name, char *out, size_t len) {
  size_t nl = strlen(name);
  for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
    const char *l = p + 2;
    if (!strncasecmp(l, name, nl) && l[nl] == ':') {
      const char *v = l + nl + 1, *e = strstr(v, "\r\n");
      while (*v == ' ' || *v == '\t') v++;
      size_t n = e ? (size_t)(e - v) : strlen(v);
      while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
      if (n >= len) return -1;
      memcpy(out, v, n);
      out[n] = 0;
      return 0;
    }
  }
  return -1;
}

/* Sends GET path and reads the answer's head. r->fd stays open for the
 * body. Returns 0, or a negative errno with a reason in why. */
static int request(srv_follow *F, const char *path, const char *extra_headers, int idle_s,
                   resp *r, char *why, size_t wl) {
  memset(r, 0, sizeof *r);
  r->fd = -1;
  r->content_length = -1;
  int fd = dial(F, why, wl);
  if (fd < 0) return fd;
  r->fd = fd;
  set_idle(fd, idle_s);
  char req[8192];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: mnistd-replica/%s\r\n%s%s\r\n",
                   path, F->hostport, NN_VERSION, F->auth, extra_headers ? extra_headers : "");
  if (n < 0 || (size_t)n >= sizeof req) {
    snprintf(why, wl, "request too long");
    conn_close(F, r);
    return -EINVAL;
  }
  for (size_t off = 0; off < (size_t)n;) {
    ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      snprintf(why, wl, "send to %s: %s", F->hostport, strerror(errno));
      conn_close(F, r);
      return -EIO;
    }
    off += (size_t)w;
  }
  char *end = NULL;
  while (!end) {
    if (r->head_len >= HEAD_MAX) {
      snprintf(why, wl, "%s sent an answer head over %d bytes", F->hostport, HEAD_MAX);
      conn_close(F, r);
      return -EPROTO;
    }
    ssize_t k = read_some(fd, r->head + r->head_len, HEAD_MAX - r->head_len);
    if (k <= 0) {
      snprintf(why, wl, "%s: %s", F->hostport,
               k == 0 ? "connection closed before an answer" : strerror(errno));
      conn_close(F, r);
      return -EIO;
    }
    r->head_len += (size_t)k;
    r->head[r->head_len] = 0;
    end = strstr(r->head, "\r\n\r\n");
  }
  size_t hl = (size_t)(end - r->head) + 4;
  r->extra = r->head + hl;
  r->extra_len = r->head_len - hl;
  end[2] = 0; /* the head ends with its last header line's CRLF */
  if (strncmp(r->head, "HTTP/1.", 7) || r->head[8] != ' ' || r->head[9] < '1' ||
      r->head[9] > '5') {
    snprintf(why, wl, "%s did not answer HTTP", F->hostport);
    conn_close(F, r);
    return -EPROTO;
  }
  r->status = atoi(r->head + 9);
  char cl[32];
  if (!head_value(r, "Content-Length", cl, sizeof cl)) {
    char *e;
    errno = 0;
    long long v = strtoll(cl, &e, 10);
    if (errno || *e || v < 0) {
      snprintf(why, wl, "%s sent a bad Content-Length", F->hostport);
      conn_close(F, r);
      return -EPROTO;
    }
    r->content_length = v;
  }
  return 0;
}

/* Reads the whole body (to Content-Length, else to the end), at most max
 * bytes. *out is malloc'd and NUL-terminated. */
static int read_body(srv_follow *F, resp *r, size_t max, char **out, size_t *len, char *why,
                     size_t wl) {
  if (r->content_length > (long long)max) {
    snprintf(why, wl, "%s sent %lld bytes; at most %zu are taken", F->hostport,
             r->content_length, max);
    return -E2BIG;
  }
  size_t cap = r->content_length >= 0 ? (size_t)r->content_length + 1 : 65536;
  char *b = malloc(cap);
  if (!b) return -ENOMEM;
  size_t n = r->extra_len < cap - 1 ? r->extra_len : cap - 1;
  memcpy(b, r->extra, n);
  for (;;) {
    if (r->content_length >= 0 && n >= (size_t)r->content_length) break;
    if (n + 1 >= cap) {
      if (cap > max) {
        free(b);
        snprintf(why, wl, "%s sent more than %zu bytes", F->hostport, max);
        return -E2BIG;
      }
      char *nb = realloc(b, cap * 2);
      if (!nb) {
        free(b);
        return -ENOMEM;
      }
      b = nb;
      cap *= 2;
    }
    ssize_t k = read_some(r->fd, b + n, cap - 1 - n);
    if (k == 0 && r->content_length < 0) break;
    if (k <= 0) {
      free(b);
      snprintf(why, wl, "%s: %s", F->hostport, k == 0 ? "body cut short" : strerror(errno));
      return -EIO;
    }
    n += (size_t)k;
  }
  b[n] = 0;
  *out = b;
  *len = n;
  return 0;
}

/* ---------------------------------------------------------------- sync */

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int64_t parse_iso_ms(const char *s) {
  struct tm tm = {0};
  if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) return 0;
  return (int64_t)timegm(&tm) * 1000;
}

/* Downloads model id, checks it, installs it. */
static int fetch_model(srv_follow *F, const cJSON *meta, int64_t id, const char *etag, char *why,
                       size_t wl) {
  char path[64];
  snprintf(path, sizeof path, "/v1/models/%lld/file", (long long)id);
  resp r;
  int rc = request(F, path, NULL, REQUEST_IDLE_S, &r, why, wl);
  if (rc) return rc;
  char want[80] = "";
  char *body = NULL;
  size_t len = 0;
  if (r.status != 200) {
    snprintf(why, wl, "GET %s answered %d", path, r.status);
    rc = -EPROTO;
  } else if (head_value(&r, "X-Checksum-Sha256", want, sizeof want) || strlen(want) != 64) {
    snprintf(why, wl, "GET %s came without an X-Checksum-Sha256 header", path);
    rc = -EPROTO;
  } else {
    rc = read_body(F, &r, FILE_MAX, &body, &len, why, wl);
  }
  conn_close(F, &r);
  if (rc) return rc;
  char got[65];
  srv_sha256_hex(body, len, got);
  nn_model *nm = NULL;
  nn_err err = {0};
  if (strcasecmp(got, want)) {
    snprintf(why, wl, "model %lld: SHA-256 %.16s... of %zu bytes, the primary said %.16s...",
             (long long)id, got, len, want);
    rc = -EBADMSG;
  } else if (nn_model_load_mem(&nm, body, len, &err)) {
    snprintf(why, wl, "model %lld does not load: %.200s", (long long)id, err.msg);
    rc = -EBADMSG;
  }
  free(body);
  if (rc) return rc;
  srv_model_info info = {0};
  info.id = id;
  const cJSON *ds = cJSON_GetObjectItemCaseSensitive(meta, "dataset");
  snprintf(info.dataset, sizeof info.dataset, "%s", cJSON_IsString(ds) ? ds->valuestring : "mnist");
  info.test_accuracy = num(meta, "test_accuracy");
  info.test_loss = num(meta, "test_loss");
  double job = num(meta, "job_id");
  info.job_id = isfinite(job) ? (int64_t)job : 0;
  const cJSON *ca = cJSON_GetObjectItemCaseSensitive(meta, "created_at");
  info.created_ms = parse_iso_ms(cJSON_IsString(ca) ? ca->valuestring : NULL);
  info.file_bytes = len;
  /* The class names (an uploaded set's: a replica has no data sets). */
  char *names[NN_MAX_CLASSES];
  const cJSON *cl = cJSON_GetObjectItemCaseSensitive(meta, "classes"), *e;
  cJSON_ArrayForEach(e, cl) {
    if (!cJSON_IsString(e) || info.n_classes == NN_MAX_CLASSES) break;
    names[info.n_classes++] = e->valuestring;
  }
  if (info.n_classes == (uint32_t)cJSON_GetArraySize(cl)) info.classes = names;
  char bad[160];
  if (srv_model_usable(nm, bad, sizeof bad)) {
    nn_model_free(nm);
    snprintf(why, wl, "model %lld refused: %s", (long long)id, bad);
    return -EINVAL;
  }
  if ((rc = srv_models_install(F->models, &info, nm))) {
    nn_model_free(nm);
    snprintf(why, wl, "model %lld: out of memory", (long long)id);
    return rc;
  }
  atomic_store(&F->model_id, id);
  pthread_mutex_lock(&F->mu);
  snprintf(F->etag, sizeof F->etag, "%s", etag);
  pthread_mutex_unlock(&F->mu);
  logf_(F, "info", "model %lld from %s installed (%zu bytes, sha256 %.16s...)", (long long)id,
        F->url, len, got);
  return 0;
}

/* One round of GET /v1/models/active. 0: in step (or the primary has no
 * model yet: *no_model set); < 0: the primary is unreachable or answered
 * nonsense (why says what). */
static int sync_active(srv_follow *F, int *no_model, char *why, size_t wl) {
  *no_model = 0;
  char inm[128] = "";
  pthread_mutex_lock(&F->mu);
  if (F->etag[0]) snprintf(inm, sizeof inm, "If-None-Match: %s\r\n", F->etag);
  pthread_mutex_unlock(&F->mu);
  resp r;
  int rc = request(F, "/v1/models/active", inm, REQUEST_IDLE_S, &r, why, wl);
  if (rc) return rc;
  atomic_fetch_add(&F->syncs, 1);
  if (r.status == 304) {
    conn_close(F, &r);
    synced(F);
    return 0;
  }
  if (r.status == 503 || r.status == 404) { /* up, but nothing to serve yet */
    conn_close(F, &r);
    *no_model = 1;
    synced(F);
    return 0;
  }
  if (r.status != 200) {
    conn_close(F, &r);
    snprintf(why, wl, "GET /v1/models/active answered %d", r.status);
    return -EPROTO;
  }
  char etag[80] = "", *body = NULL;
  size_t len;
  head_value(&r, "ETag", etag, sizeof etag);
  rc = read_body(F, &r, JSON_MAX, &body, &len, why, wl);
  conn_close(F, &r);
  if (rc) return rc;
  cJSON *doc = cJSON_ParseWithLength(body, len);
  free(body);
  double id = num(doc, "id");
  if (!doc || !isfinite(id) || id < 1 || id > 9007199254740991.0) {
    cJSON_Delete(doc);
    snprintf(why, wl, "GET /v1/models/active: no model id in the answer");
    return -EPROTO;
  }
  rc = 0;
  if ((int64_t)id != atomic_load(&F->model_id)) rc = fetch_model(F, doc, (int64_t)id, etag, why, wl);
  cJSON_Delete(doc);
  if (!rc) synced(F);
  return rc;
}

/* ---------------------------------------------------------------- events */

/* Follows GET /v1/events until it ends. Returns 1 when the stream is not
 * offered (the caller polls), 0 when it ended, < 0 on a sync error. */
static int follow_stream(srv_follow *F, char *why, size_t wl) {
  resp r;
  int rc = request(F, "/v1/events", "Accept: text/event-stream\r\n", STREAM_IDLE_S, &r, why, wl);
  if (rc) return rc;
  if (r.status != 200) {
    conn_close(F, &r);
    return 1;
  }
  char line[4096], event[64] = "";
  size_t ll = 0;
  char buf[4096];
  const char *p = r.extra;
  size_t avail = r.extra_len;
  rc = 0;
  for (;;) {
    if (!avail) {
      ssize_t k = read_some(r.fd, buf, sizeof buf);
      if (k <= 0) break;
      synced(F); /* data or a heartbeat: the stream is alive */
      p = buf;
      avail = (size_t)k;
    }
    char c = *p++;
    avail--;
    if (c == '\r') continue;
    if (c != '\n') {
      if (ll + 1 < sizeof line) line[ll++] = c;
      continue;
    }
    line[ll] = 0;
    if (ll == 0) { /* end of one event */
      if (!strcmp(event, "hello") || !strcmp(event, "sync") || !strcmp(event, "model.activated")) {
        int no_model;
        if ((rc = sync_active(F, &no_model, why, wl)) < 0) break;
      }
      event[0] = 0;
    } else if (!strncmp(line, "event:", 6)) {
      const char *v = line + 6;
      while (*v == ' ') v++;
      snprintf(event, sizeof event, "%.60s", v);
    }
    ll = 0;
  }
  conn_close(F, &r);
  return rc < 0 ? rc : 0;
}

static void *run(void *arg) {
  srv_follow *F = arg;
  int backoff = BACKOFF_MIN_MS, said_no_model = 0;
  char why[400], said[400] = "";
  for (;;) {
    pthread_mutex_lock(&F->mu);
    int stop = F->stop;
    pthread_mutex_unlock(&F->mu);
    if (stop) break;
    int no_model = 0;
    int rc = sync_active(F, &no_model, why, sizeof why);
    if (rc < 0) {
      /* A refused download is logged once per distinct reason. */
      if ((rc == -EBADMSG || rc == -E2BIG) && strcmp(said, why)) {
        logf_(F, "error", "%s", why);
        snprintf(said, sizeof said, "%s", why);
      }
      set_up(F, 0, why);
      if (nap(F, backoff)) break;
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      continue;
    }
    set_up(F, 1, "");
    backoff = BACKOFF_MIN_MS;
    said[0] = 0;
    if (no_model && !said_no_model)
      logf_(F, "info", "primary %s has no active model yet; waiting for one", F->url);
    said_no_model = no_model;
    if (no_model) {
      pthread_mutex_lock(&F->mu);
      snprintf(F->note, sizeof F->note, "the primary %.200s has no active model yet", F->url);
      pthread_mutex_unlock(&F->mu);
    }
    rc = follow_stream(F, why, sizeof why);
    if (rc == 1 || no_model) {
      /* No stream (an older primary or a proxy in between), or a primary
       * with nothing to serve: poll. */
      if (nap(F, POLL_MS)) break;
    }
  }
  return NULL;
}

/* ---------------------------------------------------------------- public */

int srv_follow_create(srv_follow **out, const char *url, const char *token, srv_models *models,
                      void (*log)(const char *, const char *), char *msg, size_t msglen) {
  *out = NULL;
  if (strncasecmp(url, "http://", 7)) {
    snprintf(msg, msglen, "--follow must be an http:// URL such as http://mnistd-trainer:8080, "
                          "not '%.200s'", url);
    return -EINVAL;
  }
  const char *h = url + 7;
  size_t n = strcspn(h, "/?#");
  if (h[n] && strcmp(h + n, "/")) {
    snprintf(msg, msglen, "--follow takes the primary's base URL (http://HOST:PORT), without "
                          "a path: '%.200s'", url);
    return -EINVAL;
  }
  srv_follow *F = calloc(1, sizeof *F);
  if (!F) return -ENOMEM;
  if (7 + n >= sizeof F->url) {
    free(F);
    snprintf(msg, msglen, "--follow URL is too long");
    return -EINVAL;
  }
  snprintf(F->url, sizeof F->url, "%.*s", (int)(7 + n), url);
  char hp[300];
  if (n == 0 || n >= sizeof hp) goto bad;
  memcpy(hp, h, n);
  hp[n] = 0;
  snprintf(F->hostport, sizeof F->hostport, "%s", hp);
  char *colon = strrchr(hp, ':');
  char *close_b = strrchr(hp, ']');
  if (colon && (!close_b || colon > close_b)) {
    *colon = 0;
    char *e;
    long port = strtol(colon + 1, &e, 10);
    if (*e || port < 1 || port > 65535) goto bad;
    snprintf(F->port, sizeof F->port, "%ld", port);
  } else {
    snprintf(F->port, sizeof F->port, "80");
  }
  char *host = hp;
  if (host[0] == '[') {
    host++;
    char *cb = strchr(host, ']');
    if (!cb) goto bad;
    *cb = 0;
  }
  if (!host[0] || strlen(host) >= sizeof F->host) goto bad;
  for (const char *c = host; *c; c++)
    if ((unsigned char)*c <= 0x20 || *c == '@') goto bad;
  memcpy(F->host, host, strlen(host) + 1); /* fits: checked above */
  size_t tl = token ? strlen(token) : 0;
  F->auth = malloc(tl + 40);
  if (!F->auth) {
    free(F);
    return -ENOMEM;
  }
  if (tl) snprintf(F->auth, tl + 40, "Authorization: Bearer %s\r\n", token);
  else F->auth[0] = 0;
  F->models = models;
  F->log = log;
  F->fds[0] = F->fds[1] = -1;
  atomic_init(&F->up, -1);
  pthread_mutex_init(&F->mu, NULL);
  pthread_cond_init(&F->cv, NULL);
  snprintf(F->note, sizeof F->note, "not yet in touch with the primary %.200s", F->url);
  *out = F;
  return 0;
bad:
  snprintf(msg, msglen, "--follow: cannot read host and port from '%.200s'", url);
  free(F);
  return -EINVAL;
}

int srv_follow_start(srv_follow *F) {
  int rc = pthread_create(&F->thread, NULL, run, F);
  if (rc) return -rc;
  F->started = 1;
  return 0;
}

void srv_follow_free(srv_follow *F) {
  if (!F) return;
  if (F->started) {
    pthread_mutex_lock(&F->mu);
    F->stop = 1;
    for (int i = 0; i < 2; i++) /* the thread closes them */
      if (F->fds[i] >= 0) shutdown(F->fds[i], SHUT_RDWR);
    pthread_cond_broadcast(&F->cv);
    pthread_mutex_unlock(&F->mu);
    pthread_join(F->thread, NULL);
  }
  pthread_cond_destroy(&F->cv);
  pthread_mutex_destroy(&F->mu);
  free(F->auth);
  free(F);
}

const char *srv_follow_url(const srv_follow *F) { return F->url; }

void srv_follow_metrics(srv_follow *F, char *buf, size_t len) {
  int64_t last = atomic_load(&F->last_sync_ms);
  double since = last ? (double)(mono_ms() - last) / 1e3 : -1;
  int up = atomic_load(&F->up);
  char ago[48];
  if (since < 0) snprintf(ago, sizeof ago, "NaN");
  else snprintf(ago, sizeof ago, "%.3f", since);
  snprintf(buf, len,
           "# HELP mnistd_primary_up 1 if this replica reached its primary on the last try.\n"
           "# TYPE mnistd_primary_up gauge\nmnistd_primary_up{primary=\"%s\"} %d\n"
           "# HELP mnistd_follow_model The primary's model id this replica serves (0: none).\n"
           "# TYPE mnistd_follow_model gauge\nmnistd_follow_model{primary=\"%s\"} %lld\n"
           "# HELP mnistd_follow_last_sync_seconds Seconds since the replica last confirmed it "
           "serves the primary's active model (NaN: never).\n"
           "# TYPE mnistd_follow_last_sync_seconds gauge\nmnistd_follow_last_sync_seconds %s\n"
           "# HELP mnistd_follow_syncs_total Checks of the primary's active model.\n"
           "# TYPE mnistd_follow_syncs_total counter\nmnistd_follow_syncs_total %lu\n"
           "# HELP mnistd_follow_failures_total Failed attempts to reach the primary.\n"
           "# TYPE mnistd_follow_failures_total counter\nmnistd_follow_failures_total %lu\n",
           F->url, up == 1, F->url, (long long)atomic_load(&F->model_id), ago,
           atomic_load(&F->syncs), atomic_load(&F->failures));
}

void srv_follow_note(srv_follow *F, char *buf, size_t len) {
  pthread_mutex_lock(&F->mu);
  snprintf(buf, len, "this replica of %s has no model yet (%s)", F->url,
           F->note[0] ? F->note : "fetching the primary's model");
  pthread_mutex_unlock(&F->mu);
}

int srv_follow_refuses(const char *method, const char *pattern, int mutating) {
  (void)method;
  return mutating || !strncmp(pattern, "/v1/jobs", 8) || strstr(pattern, "/file") != NULL;
}
