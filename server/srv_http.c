/* HTTP plumbing: the only code that builds libmicrohttpd responses. It
 * matches a request against the route table (srv_routes.c), runs the
 * checks of its head (srv_auth.c), collects the body, calls the handler,
 * and turns the srv_resp it filled into the response (respond); it also
 * logs and counts every request. Handlers live in srv_routes.c,
 * srv_predict.c, srv_metrics.c, srv_dataset_routes.c and srv_static.c;
 * srv_route.h is what they see; srv_conns.c guards connections. */
#include "srv_route.h"

#include <cJSON.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "srv_conns.h"
#include "srv_events.h"
#include "srv_follow.h"
#include "srv_util.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- responses */

/* The one place a response is built: from what the handler filled in. */

/* An event stream: libmicrohttpd pulls from the subscription (a job's or
 * the daemon's) and the connection is suspended while there is nothing
 * new (woken by the jobs or the registry). */
struct srv_stream {
  struct MHD_Connection *conn;
  srv_sub *job;           /* one of the two */
  srv_events_sub *daemon;
};

static void stream_suspend(void *ctx) { MHD_suspend_connection(((srv_stream *)ctx)->conn); }
static void stream_wake(void *ctx) { MHD_resume_connection(((srv_stream *)ctx)->conn); }

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  srv_stream *s = cls;
  ssize_t n = s->job ? srv_sub_read(s->job, buf, max, stream_suspend)
                     : srv_events_sub_read(s->daemon, buf, max, stream_suspend);
  return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

void srv_stream_free(srv_stream *s) {
  if (!s) return;
  if (s->job) srv_sub_close(s->job);
  if (s->daemon) srv_events_sub_close(s->daemon);
  free(s);
}

static void stream_free_cb(void *cls) { srv_stream_free(cls); }

static int resp_stream(srv_resp *res, srv_stream *s, const char *type) {
  res->status = 200;
  res->kind = SRV_RESP_STREAM;
  res->stream = s;
  res->type = type;
  res->cache = "no-cache";
  srv_resp_header(res, "X-Accel-Buffering", "no");
  return 200;
}

int srv_resp_events(srv_resp *res, req *r, int64_t job, uint64_t last, int ndjson) {
  srv_stream *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->conn = r->conn;
  int rc = srv_sub_open(r->S->jobs, job, last, ndjson, stream_wake, s, &s->job);
  if (rc) {
    free(s);
    return rc;
  }
  return resp_stream(res, s, ndjson ? "application/x-ndjson" : "text/event-stream");
}

int srv_resp_daemon_events(srv_resp *res, req *r, uint64_t last, const char *hello) {
  srv_stream *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->conn = r->conn;
  int rc = srv_events_sub_open(r->S->events, last, hello, stream_wake, s, &s->daemon);
  if (rc) {
    free(s);
    return rc;
  }
  return resp_stream(res, s, "text/event-stream");
}

static const char OOM_BODY[] = "{\"error\":{\"code\":500,\"message\":\"out of memory\"}}";

/* The body of a JSON or error answer, printed (malloc'd), or NULL. */
static char *json_text(srv_resp *res) {
  if (res->kind == SRV_RESP_ERROR) {
    cJSON *doc = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(doc, "error");
    cJSON_AddNumberToObject(e, "code", res->err.code);
    cJSON_AddStringToObject(e, "message", res->err.message);
    res->json = doc;
  }
  srv_json_exact_ints(res->json);
  char *s = res->json ? cJSON_PrintUnformatted(res->json) : NULL;
  cJSON_Delete(res->json);
  res->json = NULL;
  return s;
}

/* Builds the libmicrohttpd response of res, taking over what it holds;
 * NULL when out of memory (res released). */
static struct MHD_Response *build(srv_resp *res) {
  struct MHD_Response *resp = NULL;
  switch (res->kind) {
  case SRV_RESP_JSON:
  case SRV_RESP_ERROR: {
    char *s = json_text(res);
    res->type = "application/json";
    if (!s) { /* out of memory: a fixed 500 */
      res->status = 500;
      res->cache = NULL;
      res->n_hdr = 0;
      return MHD_create_response_from_buffer(sizeof OOM_BODY - 1, (void *)OOM_BODY,
                                             MHD_RESPMEM_PERSISTENT);
    }
    resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(s);
    return resp;
  }
  case SRV_RESP_BUF:
    resp = MHD_create_response_from_buffer(res->len, res->data, res->owned ? MHD_RESPMEM_MUST_FREE
                                                                          : MHD_RESPMEM_PERSISTENT);
    if (resp) res->owned = 0;
    return resp;
  case SRV_RESP_FILE: {
    /* Replicas check what they download against the checksum
     * (srv_follow.h). */
    char sum[65];
    if (srv_sha256_fd_hex(res->fd, sum) == 0) srv_resp_header(res, "X-Checksum-Sha256", sum);
    resp = MHD_create_response_from_fd((uint64_t)res->len, res->fd);
    if (resp) res->fd = -1;
    return resp;
  }
  case SRV_RESP_EMPTY:
    return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  case SRV_RESP_STREAM:
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, res->stream,
                                             stream_free_cb);
    if (resp) res->stream = NULL;
    return resp;
  case SRV_RESP_NONE:
    break;
  }
  return NULL;
}

/* Queues res (status st from the handler) on r's connection and releases
 * it; records the status for the log and metrics. MHD_NO (the connection
 * is dropped) when the handler returned an error or nothing. */
static enum MHD_Result respond(req *r, int st, srv_resp *res) {
  struct MHD_Response *resp = st < 0 ? NULL : build(res);
  if (!resp) {
    srv_resp_free(res);
    return MHD_NO;
  }
  if (res->type) MHD_add_response_header(resp, "Content-Type", res->type);
  if (res->cache) MHD_add_response_header(resp, "Cache-Control", res->cache);
  for (size_t i = 0; i < res->n_hdr; i++)
    MHD_add_response_header(resp, res->hdr[i].name, res->hdr[i].value);
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  r->status = res->status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)res->status, resp);
  MHD_destroy_response(resp);
  srv_resp_free(res);
  return ret;
}

const char *srv_query(req *r, const char *key) {
  return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *srv_header(req *r, const char *key) {
  return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

/* Media type without parameters, lower case, into buf ("" if none; a
 * type too long for buf comes out cut and so never matches). */
const char *srv_media_type(req *r, char *buf, size_t len) {
  const char *ct = srv_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
  size_t i = 0;
  while (ct && (*ct == ' ' || *ct == '\t')) ct++;
  for (; ct && ct[i] && ct[i] != ';' && ct[i] != ' ' && ct[i] != '\t' && i + 1 < len; i++)
    buf[i] = (char)(ct[i] >= 'A' && ct[i] <= 'Z' ? ct[i] + 32 : ct[i]);
  buf[i] = 0;
  return buf;
}

/* JSON is taken only as application/json. A browser page on another site
 * can POST text/plain, a form type or no type at all without asking
 * (a "simple" request): accepting those would let any web page start jobs.
 * A body-less request may leave the type out (curl -X POST). */
int srv_json_body_ok(req *r) {
  char ct[96];
  srv_media_type(r, ct, sizeof ct);
  return !strcmp(ct, "application/json") || (!ct[0] && r->len == 0);
}


/* ---------------------------------------------------------------- deferred answers */

/* A request answered from libuv's thread pool (srv_defer). Its connection
 * is suspended from the handler until the work is done; the loop thread
 * resumes it and libmicrohttpd calls the access handler again, which
 * queues the answer. Owned by the request: freed when it completes. */
typedef struct srv_deferred {
  struct MHD_Connection *conn;
  int (*work)(void *ctx, srv_resp *res);
  void *ctx;
  uv_work_t w;
  srv_resp res;
  int st;
  atomic_int done;          /* work returned: res and st are final */
  struct srv_deferred *next;
} srv_deferred;

/* uv_queue_work may only be called on the loop thread: HTTP threads hand
 * their work over through this queue and an async wake-up. */
struct srv_defer {
  pthread_mutex_t mu;
  uv_loop_t *loop;
  uv_async_t async;
  srv_deferred *queue, *tail; /* handed over, not yet on the pool */
  int pending;                /* deferred answers not yet sent */
  int closed;                 /* no more hand-overs (shutdown) */
};

static void defer_work(uv_work_t *w) {
  srv_deferred *d = w->data;
  d->st = d->work(d->ctx, &d->res);
  d->ctx = NULL; /* the work released it */
}

static void defer_after(uv_work_t *w, int status) {
  (void)status;
  srv_deferred *d = w->data;
  atomic_store(&d->done, 1);
  MHD_resume_connection(d->conn);
}

static void on_defer_async(uv_async_t *a) {
  struct srv_defer *D = a->data;
  pthread_mutex_lock(&D->mu);
  srv_deferred *q = D->queue;
  D->queue = D->tail = NULL;
  pthread_mutex_unlock(&D->mu);
  for (srv_deferred *d = q, *n; d; d = n) {
    n = d->next;
    d->w.data = d;
    if (uv_queue_work(D->loop, &d->w, defer_work, defer_after)) { /* cannot fail: be safe */
      defer_work(&d->w);
      defer_after(&d->w, 0);
    }
  }
}

int srv_defer(req *r, srv_resp *res, int (*work)(void *ctx, srv_resp *res), void *ctx) {
  struct srv_defer *D = r->S->defer;
  srv_deferred *d = D ? calloc(1, sizeof *d) : NULL;
  if (d) {
    pthread_mutex_lock(&D->mu);
    /* Counted before the hand-over: the pool is not closed while it is
     * under way (srv_defer_close only closes an idle one, or after
     * libmicrohttpd has stopped). */
    if (D->closed) {
      free(d);
      d = NULL;
    } else {
      D->pending++;
    }
    pthread_mutex_unlock(&D->mu);
  }
  if (!d) return work(ctx, res); /* out of memory, or stopping: here */
  d->conn = r->conn;
  d->work = work;
  d->ctx = ctx;
  srv_resp_init(&d->res);
  r->deferred = d;
  /* From the handler, before the work can finish: a resume always follows
   * its suspend. No lock of ours is held across libmicrohttpd's calls. */
  MHD_suspend_connection(r->conn);
  pthread_mutex_lock(&D->mu);
  if (D->tail) D->tail->next = d;
  else D->queue = d;
  D->tail = d;
  uv_async_send(&D->async);
  pthread_mutex_unlock(&D->mu);
  return SRV_DEFERRED;
}

/* The request's deferred answer is sent or abandoned (on_completed). */
static void deferred_free(srv *S, srv_deferred *d) {
  if (!d) return;
  srv_resp_free(&d->res);
  free(d);
  pthread_mutex_lock(&S->defer->mu);
  S->defer->pending--;
  pthread_mutex_unlock(&S->defer->mu);
}

int srv_defer_start(srv *S, uv_loop_t *loop) {
  struct srv_defer *D = calloc(1, sizeof *D);
  if (!D) return -ENOMEM;
  pthread_mutex_init(&D->mu, NULL);
  D->loop = loop;
  int rc = uv_async_init(loop, &D->async, on_defer_async);
  if (rc) {
    pthread_mutex_destroy(&D->mu);
    free(D);
    return rc;
  }
  D->async.data = D;
  S->defer = D;
  return 0;
}

static void defer_closed(uv_handle_t *h) { (void)h; }

int srv_defer_close(srv *S, int only_if_idle) {
  struct srv_defer *D = S->defer;
  if (!D) return 1;
  pthread_mutex_lock(&D->mu);
  int was = D->closed, ok = !only_if_idle || D->pending == 0;
  if (ok) D->closed = 1;
  pthread_mutex_unlock(&D->mu);
  if (ok && !was) uv_close((uv_handle_t *)&D->async, defer_closed);
  return ok;
}

void srv_defer_free(srv *S) {
  if (!S->defer) return;
  pthread_mutex_destroy(&S->defer->mu);
  free(S->defer);
  S->defer = NULL;
}

/* ---------------------------------------------------------------- routing */

/* Matches a path against a pattern; ":id" takes a positive number. */
static int match(const char *pat, const char *path, int64_t *id, char *name, size_t name_len) {
  while (*pat && *path) {
    if (!strncmp(pat, ":name", 5)) {
      /* A data set name: checked by the handler (a bad one is a 400 that
       * says the rule, not a 404). */
      size_t n = strcspn(path, "/");
      if (n == 0 || n >= name_len) return 0;
      memcpy(name, path, n);
      name[n] = 0;
      path += n;
      pat += 5;
      continue;
    }
    if (!strncmp(pat, ":id", 3)) {
      /* Digits up to the next '/', at most INT64_MAX: an id that does not
       * fit is no id (strtoll would clamp it to another number). */
      char num[24];
      size_t n = strcspn(path, "/");
      uint64_t v;
      if (n == 0 || n >= sizeof num) return 0;
      memcpy(num, path, n);
      num[n] = 0;
      if (srv_parse_dec(num, INT64_MAX, &v) || v == 0) return 0;
      *id = (int64_t)v;
      path += n;
      pat += 3;
      continue;
    }
    if (*pat++ != *path++) return 0;
  }
  return !*pat && !*path;
}

/* Finds r's route (r->route, r->id, r->name). 0, or the status of the
 * 404/405 answer filled in res. */
static int route_of(req *r, srv_resp *res) {
  const char *path = r->url;
  int path_known = 0;
  char allow[64] = "";
  for (size_t i = 0; i < srv_route_count; i++) {
    int64_t id = 0;
    if (!match(srv_route_table[i].pattern, path, &id, r->name, sizeof r->name)) continue;
    path_known = 1;
    const char *m = srv_route_table[i].method;
    if (!strstr(allow, m) && strlen(allow) + strlen(m) + 8 < sizeof allow) {
      if (allow[0]) strcat(allow, ", ");
      strcat(allow, m);
      if (!strcmp(m, "GET")) strcat(allow, ", HEAD");
    }
    if (!strcmp(m, r->method) || (!strcmp(r->method, "HEAD") && !strcmp(m, "GET"))) {
      r->route = (int)i;
      r->id = id;
      return 0;
    }
  }
  r->route = ROUTE_NONE;
  if (path_known)
    return srv_resp_405(res, allow, QUOTE " is not allowed here; use %s", r->method, allow);
  if (!strncmp(path, "/v1/", 4) || !strcmp(path, "/v1"))
    return srv_resp_error(res, 404, "no such endpoint: " QUOTE " " QUOTE " (see docs/api.md)",
                      r->method, path);
  if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD"))
    return srv_resp_405(res, "GET, HEAD", QUOTE " is not allowed on static files; use GET or HEAD",
                    r->method);
  r->route = ROUTE_STATIC;
  return 0;
}

/* The request target as sent, before libmicrohttpd decodes it: "%00"
 * would become a NUL that cuts the path ("/v1/jobs%00/1/cancel" routes as
 * /v1/jobs), and each query parameter takes a record from the
 * connection's fixed memory pool (a thousand of them exhaust it and the
 * connection hangs without an answer), so both are refused here. Returns
 * the request's context (libmicrohttpd passes it to the access handler). */
#define SRV_MAX_QUERY_PARAMS 64
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
  req *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (!uri) uri = "";
  r->S = cls;
  r->conn = conn;
  r->t0 = now_s();
  r->route = ROUTE_NONE;
  r->raw = strndup(uri, 1024);
  for (const char *p = uri; (p = strchr(p, '%')); p++)
    if (p[1] == '0' && p[2] == '0') r->bad_target = 400;
  char *q = strchr(uri, '?');
  if (q) {
    size_t params = 1;
    for (const char *p = q; *p; p++) params += *p == '&' || *p == ';';
    if (params > SRV_MAX_QUERY_PARAMS) {
      /* The buffer is libmicrohttpd's own writable read buffer (it cuts
       * the query off itself right after this call): an empty query
       * leaves it nothing to parse, and the handler answers 414. */
      q[1] = 0;
      r->bad_target = 414;
    }
  }
  return r;
}

/* The checks a mutating route makes before its body: origin, token, type.
 * 0, or the status of the answer filled in res. */
static int on_mutating_head(req *r, srv_resp *res) {
  if (!srv_origin_ok(r))
    return srv_resp_error(res, 403,
                          "cross-origin request from " QUOTE " refused; pages on other origins "
                          "may not change this server (start it with --allow-origin ORIGIN to "
                          "allow one)",
                          srv_header(r, "Origin"));
  if (!srv_token_ok(r)) {
    srv_resp_error(res, 401, "this server needs an API token: send Authorization: Bearer <token>");
    srv_resp_header(res, "WWW-Authenticate", "Bearer realm=\"mnistd\"");
    res->cache = NULL; /* as it always was */
    return 401;
  }
  /* A data set upload has its own types, and its body goes to a file. */
  if (srv_route_table[r->route].h == h_dataset_create) return srv_dataset_upload_head(r, res);
  /* A form or text/plain type is refused before the body: even an empty
   * form POST from another site must not start a job. */
  char ct[96];
  if (srv_media_type(r, ct, sizeof ct)[0] && strcmp(ct, "application/json"))
    return srv_need_json(r, res);
  return 0;
}

/* The first call for a request: everything decided from the head. 0 to
 * go on (collect the body, then call the handler), or the status of the
 * answer filled in res. */
static int on_head(srv *S, req *r, srv_resp *res) {
  if (atomic_load(&S->stopping)) return srv_resp_error(res, 503, "the server is shutting down");
  if (r->bad_target == 400)
    return srv_resp_error(res, 400, "the request target contains %%00 (a NUL byte): " QUOTE,
                          r->raw ? r->raw : "");
  if (r->bad_target == 414)
    return srv_resp_error(res, 414, "more than %d query parameters", SRV_MAX_QUERY_PARAMS);
  if (!srv_host_ok(r))
    return srv_resp_error(res, 403,
                          "Host " QUOTE " is not a loopback name; this server listens on loopback "
                          "and refuses other names (DNS rebinding). Use http://127.0.0.1 or "
                          "localhost, or start it with --allow-host NAME",
                          srv_header(r, "Host"));
  int st = route_of(r, res);
  if (st) return st;
  const route *rt = r->route < (int)srv_route_count ? &srv_route_table[r->route] : NULL;
  if (S->follow && rt && srv_follow_refuses(r->method, rt->pattern, rt->mutating))
    return srv_resp_error(res, 403,
                          "this server is a read-only replica of %s: send %s %s to the primary",
                          srv_follow_url(S->follow), rt->method, rt->pattern);
  if (rt && rt->mutating && (st = on_mutating_head(r, res))) return st;
  if (rt && rt->h == h_dataset_create) return 0; /* its own size limit */
  const char *cl = srv_header(r, "Content-Length");
  uint64_t clv;
  if (cl && !srv_parse_dec(cl, UINT64_MAX, &clv) && clv > S->cfg.max_body)
    return srv_resp_error(res, 413, "the body is %llu bytes; this server accepts at most %zu",
                          (unsigned long long)clv, S->cfg.max_body);
  r->is_predict = rt && rt->h == h_predict;
  return 0;
}

/* Appends n bytes of the body: a data set's to its file, any other to
 * r->body up to --max-body (beyond, the body is dropped and r->too_big
 * set: a 413 once it has all arrived). MHD_NO when out of memory. */
static enum MHD_Result take_body(srv *S, req *r, const char *data, size_t n) {
  if (r->upload) { /* a data set: to its file, never all in memory */
    int rc = r->upload_err ? r->upload_err : srv_ds_upload_write(r->upload, data, n);
    if (rc && !r->upload_err) r->upload_err = rc;
    return MHD_YES;
  }
  if (r->too_big || r->len + n > S->cfg.max_body) {
    r->too_big = 1;
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
    return MHD_YES;
  }
  if (r->len + n + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + n + 1) cap *= 2;
    if (cap > S->cfg.max_body + 1) cap = S->cfg.max_body + 1;
    char *b = realloc(r->body, cap);
    if (!b) return MHD_NO;
    r->body = b;
    r->cap = cap;
    if (cap > r->peak) r->peak = cap;
  }
  memcpy(r->body + r->len, data, n);
  r->len += n;
  r->body[r->len] = 0;
  return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
  (void)version;
  srv *S = cls;
  req *r = *con_cls;
  if (!r) { /* on_uri could not allocate */
    if (!(r = on_uri(S, url, conn))) return MHD_NO;
    *con_cls = r;
  }
  srv_resp res;
  srv_resp_init(&res);
  if (!r->started) {
    r->started = 1;
    r->url = url;
    r->method = method;
    srv_conns_head_done(conn);
    int st = on_head(S, r, &res);
    return st ? respond(r, st, &res) : MHD_YES;
  }
  if (r->deferred) { /* resumed: the work is done (srv_defer) */
    srv_deferred *d = r->deferred;
    if (r->status || !atomic_load(&d->done)) return MHD_YES;
    int st = d->st;
    res = d->res;
    srv_resp_init(&d->res);
    return respond(r, st, &res);
  }
  if (*upload_size) {
    size_t n = *upload_size;
    *upload_size = 0;
    /* Already answered (401, 413...): the body is dropped. */
    return r->status ? MHD_YES : take_body(S, r, upload_data, n);
  }
  if (r->status) return MHD_YES;
  if (r->too_big)
    return respond(r, srv_resp_error(&res, 413, "the body is larger than %zu bytes, this server's limit",
                                     S->cfg.max_body), &res);
  if (!r->body) {
    r->body = calloc(1, 1);
    if (!r->body) return MHD_NO;
  }
  handler h = r->route == ROUTE_STATIC ? h_static : srv_route_table[r->route].h;
  int st = h(r, &res);
  if (st == SRV_DEFERRED) return MHD_YES; /* answered when its work is done */
  return respond(r, st, &res);
}

/* Requests with bodies at least this large give their memory back to the
 * system when they end (glibc keeps freed heap otherwise). */
#define TRIM_AFTER_BYTES ((size_t)1 << 20)

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  srv *S = cls;
  req *r = *con_cls;
  /* Keep-alive: the next request head is due within the idle timeout of
   * this answer (a browser keeps idle connections open and may start a
   * request on one just before the idle timeout; cutting it earlier would
   * fail that request). New connections get --head-timeout. */
  if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
    srv_conns_answered(conn, (int64_t)(S->cfg.conn_timeout > S->cfg.head_timeout
                                           ? S->cfg.conn_timeout - S->cfg.head_timeout : 0) * 1000);
  if (!r) return;
  *con_cls = NULL;
  if (!r->started) { /* the head never completed (closed, timed out) */
    free(r->raw);
    free(r);
    return;
  }
  double ms = (now_s() - r->t0) * 1e3;
  int st = r->status;
  /* A client that leaves before any answer is counted apart, not as 500. */
  if (st >= 100 && st < 600) atomic_fetch_add(&S->metrics.requests[r->route][st], 1);
  else atomic_fetch_add(&S->metrics.aborted[r->route], 1);
  if (r->is_predict && st == 200) srv_metrics_observe_latency(S, ms / 1e3);
  const char *target = r->raw ? r->raw : r->url;
  /* Event streams log when they end; everything logs once. */
  srv_log_request(S, r->method, target, st, ms, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
  deferred_free(S, r->deferred);
  srv_ds_upload_free(r->upload);
  free(r->body);
  free(r->raw);
  size_t peak = r->peak;
  free(r);
  if (peak >= TRIM_AFTER_BYTES) malloc_trim(0);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  srv *S = cls;
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  size_t n = strlen(buf);
  while (n && buf[n - 1] == '\n') buf[--n] = 0;
  srv_log(S, "warn", buf);
}

int srv_http_start(srv *S, char *msg, size_t msglen) {
  char host[128];
  snprintf(host, sizeof host, "%s", S->cfg.listen);
  char *colon = strrchr(host, ':');
  if (!colon) {
    snprintf(msg, msglen, "--listen must be HOST:PORT, not %s", S->cfg.listen);
    return -EINVAL;
  }
  *colon = 0;
  long port = strtol(colon + 1, NULL, 10);
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  const char *h = host[0] == '[' ? NULL : host;
  if (!h || inet_pton(AF_INET, !strcmp(h, "localhost") ? "127.0.0.1" : h, &sa.sin_addr) != 1) {
    snprintf(msg, msglen, "--listen host must be an IPv4 address such as 127.0.0.1 or 0.0.0.0, not %s",
             host);
    return -EINVAL;
  }
  /* Leave room under the descriptor limit for files and the database. */
  struct rlimit rl;
  unsigned limit = (unsigned)S->cfg.conn_limit;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
      getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < limit + 64)
      limit = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
  }
  /* One address may hold at most a quarter of all connections, whatever
   * --per-ip-conn-limit says (0 stays "no limit"): with --conn-limit 100 a
   * per-address limit of 128 would protect nobody. */
  unsigned per_ip = (unsigned)S->cfg.per_ip_limit, quarter = limit / 4 ? limit / 4 : 1;
  if (per_ip > quarter) per_ip = quarter;
  S->loopback = ((const uint8_t *)&sa.sin_addr)[0] == 127;
  /* Big request bodies are mmap'd and so returned on free, whatever
   * glibc's sliding threshold has learnt from earlier ones. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  if (srv_conns_create(S)) {
    snprintf(msg, msglen, "out of memory");
    return -ENOMEM;
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ERROR_LOG;
  /* The memory pool holds a connection's request head (line, headers,
   * query records) and the answer's headers. 64 KiB takes the largest head
   * we accept (SRV_MAX_QUERY_PARAMS parameters of 400 bytes beside a
   * 4 KiB token; ~800 headers) and leaves libmicrohttpd room for its own
   * 414/431. Not larger: libmicrohttpd 0.9.75 zeroes the whole pool before
   * every request on a kept-alive connection (128 KiB cost ~10% of
   * prediction throughput), and touches all of it. */
  S->mhd = MHD_start_daemon(
      flags, (uint16_t)port, NULL, NULL, on_request, S, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
      S, MHD_OPTION_SOCK_ADDR, &sa,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)S->cfg.threads, MHD_OPTION_CONNECTION_LIMIT, limit,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)S->cfg.conn_timeout,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, S, MHD_OPTION_NOTIFY_CONNECTION, srv_conns_notify,
      S, MHD_OPTION_URI_LOG_CALLBACK, on_uri, S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)64 * 1024, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
  if (!S->mhd) {
    srv_conns_free(S->conns);
    S->conns = NULL;
    snprintf(msg, msglen, "cannot listen on %s (address in use, or not allowed)", S->cfg.listen);
    return -EADDRINUSE;
  }
  srv_conns_start(S->conns);
  return 0;
}

void srv_http_quiesce(srv *S) {
  if (S->mhd) {
    MHD_socket s = MHD_quiesce_daemon(S->mhd);
    if (s != MHD_INVALID_SOCKET) close(s);
  }
}

void srv_http_stop(srv *S) {
  if (S->mhd) MHD_stop_daemon(S->mhd);
  S->mhd = NULL;
  srv_conns_free(S->conns);
  S->conns = NULL;
}
