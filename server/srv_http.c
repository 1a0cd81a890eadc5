/* HTTP plumbing: the only code that talks to libmicrohttpd. It matches a
 * request against the route table (srv_routes.c), checks host, origin and
 * token, collects the body, calls the handler, and turns what the handler
 * asks for (srv_send_*: JSON, error, buffer, download, event stream) into
 * the response; it also serves the static files, logs every request, and
 * guards connections (head timeout, per-address limit). Handlers live in
 * srv_routes.c, srv_predict.c and srv_metrics.c; srv_route.h is what they
 * see. */
#include "srv_route.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "srv_assets.h"
#include "srv_events.h"
#include "srv_follow.h"
#include "srv_util.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- responses */

static void common_headers(struct MHD_Response *resp) {
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
}

enum MHD_Result srv_send_buf(req *r, int status, const char *type, const void *data,
                                size_t len, enum MHD_ResponseMemoryMode mode) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, mode);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, "Content-Type", type);
  common_headers(resp);
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Sends a cJSON document and frees it; allow, if not NULL, is the Allow
 * header of a 405. */
static enum MHD_Result send_json_allow(req *r, int status, cJSON *doc, const char *allow) {
  srv_json_exact_ints(doc);
  char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (!s) return srv_send_buf(r, 500, "application/json",
                          "{\"error\":{\"code\":500,\"message\":\"out of memory\"}}", 49,
                          MHD_RESPMEM_PERSISTENT);
  size_t n = strlen(s);
  s[n] = 0;
  struct MHD_Response *resp = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", "application/json");
  MHD_add_response_header(resp, "Cache-Control", "no-store");
  if (allow) MHD_add_response_header(resp, "Allow", allow);
  common_headers(resp);
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

enum MHD_Result srv_send_json(req *r, int status, cJSON *doc) {
  return send_json_allow(r, status, doc, NULL);
}

enum MHD_Result srv_send_json_hdrs(req *r, int status, cJSON *doc, ...) {
  srv_json_exact_ints(doc);
  char *s = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (!s) return srv_send_error(r, 500, "out of memory");
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", "application/json");
  va_list ap;
  va_start(ap, doc);
  for (const char *k; (k = va_arg(ap, const char *));) {
    const char *v = va_arg(ap, const char *);
    MHD_add_response_header(resp, k, v);
  }
  va_end(ap);
  return srv_send_response(r, status, resp);
}

enum MHD_Result srv_send_response(req *r, int status, struct MHD_Response *resp) {
  common_headers(resp);
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* A job's event stream: libmicrohttpd pulls from the subscription and the
 * connection is suspended while there is nothing new (woken by the jobs). */

typedef struct stream {
  struct MHD_Connection *conn;
  srv_sub *sub;
} stream;

static void stream_suspend(void *ctx) { MHD_suspend_connection(((stream *)ctx)->conn); }
static void stream_wake(void *ctx) { MHD_resume_connection(((stream *)ctx)->conn); }

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  stream *s = cls;
  ssize_t n = srv_sub_read(s->sub, buf, max, stream_suspend);
  return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void stream_free(void *cls) {
  stream *s = cls;
  srv_sub_close(s->sub);
  free(s);
}

int srv_send_events(req *r, int64_t job, uint64_t last, int ndjson, enum MHD_Result *ret) {
  stream *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->conn = r->conn;
  int rc = srv_sub_open(r->S->jobs, job, last, ndjson, stream_wake, s, &s->sub);
  if (rc) {
    free(s);
    return rc;
  }
  struct MHD_Response *resp =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
  if (!resp) {
    stream_free(s);
    *ret = MHD_NO;
    return 0;
  }
  MHD_add_response_header(resp, "Content-Type",
                          ndjson ? "application/x-ndjson" : "text/event-stream");
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  MHD_add_response_header(resp, "X-Accel-Buffering", "no");
  *ret = srv_send_response(r, 200, resp);
  return 0;
}

/* The daemon-wide stream (GET /v1/events): the same suspend/wake dance. */
typedef struct estream {
  struct MHD_Connection *conn; /* first: stream_suspend/stream_wake read it */
  srv_events_sub *sub;
} estream;

static ssize_t estream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  estream *s = cls;
  ssize_t n = srv_events_sub_read(s->sub, buf, max, stream_suspend);
  return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void estream_free(void *cls) {
  estream *s = cls;
  srv_events_sub_close(s->sub);
  free(s);
}

int srv_send_daemon_events(req *r, uint64_t last, const char *hello, enum MHD_Result *ret) {
  estream *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->conn = r->conn;
  int rc = srv_events_sub_open(r->S->events, last, hello, stream_wake, s, &s->sub);
  if (rc) {
    free(s);
    return rc;
  }
  struct MHD_Response *resp =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, estream_read, s, estream_free);
  if (!resp) {
    estream_free(s);
    *ret = MHD_NO;
    return 0;
  }
  MHD_add_response_header(resp, "Content-Type", "text/event-stream");
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  MHD_add_response_header(resp, "X-Accel-Buffering", "no");
  *ret = srv_send_response(r, 200, resp);
  return 0;
}

enum MHD_Result srv_send_not_modified(req *r, const char *etag) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, "ETag", etag);
  return srv_send_response(r, 304, resp);
}

enum MHD_Result srv_send_download(req *r, void *buf, size_t len, int fd, const char *disposition) {
  /* A file (the native model) carries its SHA-256: replicas check what
   * they download against it (srv_follow.h). */
  char sum[65];
  int have_sum = fd >= 0 && srv_sha256_fd_hex(fd, sum) == 0;
  struct MHD_Response *resp =
      fd >= 0 ? MHD_create_response_from_fd((uint64_t)len, fd)
              : MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    if (fd >= 0) close(fd);
    else free(buf);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
  MHD_add_response_header(resp, "Content-Disposition", disposition);
  if (have_sum) MHD_add_response_header(resp, "X-Checksum-Sha256", sum);
  return srv_send_response(r, 200, resp);
}

/* Every error answer goes through here: the message is formatted into a
 * bounded buffer (vsnprintf's return value is never used as a length),
 * made valid UTF-8 and clipped (it may quote the method, path or a header),
 * and cJSON escapes it into the body. */
static enum MHD_Result verror(req *r, int status, const char *allow, const char *fmt,
                              va_list ap) {
  char raw[1024], msg[600];
  vsnprintf(raw, sizeof raw, fmt, ap);
  srv_text_clean(msg, sizeof msg, raw, sizeof raw, SRV_CLEAN_JSON);
  cJSON *doc = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(doc, "error");
  cJSON_AddNumberToObject(e, "code", status);
  cJSON_AddStringToObject(e, "message", msg);
  return send_json_allow(r, status, doc, allow);
}

enum MHD_Result srv_send_error(req *r, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  enum MHD_Result ret = verror(r, status, NULL, fmt, ap);
  va_end(ap);
  return ret;
}

enum MHD_Result srv_send_405(req *r, const char *allow, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  enum MHD_Result ret = verror(r, 405, allow, fmt, ap);
  va_end(ap);
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

enum MHD_Result srv_need_json(req *r) {
  char ct[96];
  return srv_send_error(r, 415,
                    "send the body as application/json (Content-Type: application/json; got "
                    QUOTE ")", srv_media_type(r, ct, sizeof ct)[0] ? ct : "no Content-Type");
}

/* ---------------------------------------------------------------- static files */

static const char CSP[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'";

static const char *type_of(const char *path) {
  const char *dot = strrchr(path, '.');
  static const struct { const char *ext, *type; } T[] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"}, {".png", "image/png"}, {".ico", "image/x-icon"},
      {".json", "application/json"}, {".txt", "text/plain; charset=utf-8"},
      {".webmanifest", "application/manifest+json"}};
  for (size_t i = 0; dot && i < sizeof T / sizeof *T; i++)
    if (!strcmp(dot, T[i].ext)) return T[i].type;
  return "application/octet-stream";
}

static enum MHD_Result send_asset(req *r, const char *path, const void *data, size_t len,
                                  const char *etag, enum MHD_ResponseMemoryMode mode) {
  const char *inm = srv_header(r, "If-None-Match");
  int not_modified = inm && etag && !strcmp(inm, etag);
  struct MHD_Response *resp = not_modified
                                  ? MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT)
                                  : MHD_create_response_from_buffer(len, (void *)data, mode);
  if (not_modified && mode == MHD_RESPMEM_MUST_FREE) free((void *)data);
  if (!resp) return MHD_NO;
  const char *type = type_of(path);
  MHD_add_response_header(resp, "Content-Type", type);
  if (etag) MHD_add_response_header(resp, "ETag", etag);
  /* Revalidate every time: the ETag makes that a cheap 304, and a new
   * binary never serves stale scripts. */
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  if (!strncmp(type, "text/html", 9)) {
    MHD_add_response_header(resp, "Content-Security-Policy", CSP);
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
  }
  common_headers(resp);
  int status = not_modified ? 304 : 200;
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Paths are checked segment by segment: no "..", no ".", no empty or
 * hidden segment, no backslash or NUL — nothing can leave the web root. */
static int safe_path(const char *p) {
  if (p[0] != '/' || strlen(p) > 200) return 0;
  for (const char *s = p + 1; *s;) {
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n == 0 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
      if (s[i] == '\\' || (unsigned char)s[i] < 0x20) return 0;
    s += n + (e ? 1 : 0);
    if (e && !*s) return 0;
  }
  return 1;
}

enum MHD_Result h_static(req *r) {
  const char *path = !strcmp(r->url, "/") ? "/index.html" : r->url;
  if (!safe_path(path)) return srv_send_error(r, 404, "not found: " QUOTE, r->url);
  if (r->S->cfg.web_dir[0]) {
    /* From disk (development): web/ plus the vendored chart library. */
    char file[PATH_MAX + 256];
    if (!strncmp(path, "/vendor/", 8))
      snprintf(file, sizeof file, "%s/../node_modules/uplot/dist/%s", r->S->cfg.web_dir, path + 8);
    else
      snprintf(file, sizeof file, "%s%s", r->S->cfg.web_dir, path);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (16 << 20)) {
      if (fd >= 0) close(fd);
      return srv_send_error(r, 404, "not found: " QUOTE, r->url);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
      free(buf);
      return srv_send_error(r, 500, "could not read %s", path);
    }
    char etag[48];
    snprintf(etag, sizeof etag, "\"%lx-%lx\"", (unsigned long)st.st_mtime,
             (unsigned long)st.st_size);
    return send_asset(r, path, buf, (size_t)st.st_size, etag, MHD_RESPMEM_MUST_FREE);
  }
  const srv_asset *a = srv_asset_find(path);
  if (!a) return srv_send_error(r, 404, "not found: " QUOTE, r->url);
  return send_asset(r, path, a->data, a->len, a->etag, MHD_RESPMEM_PERSISTENT);
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

/* Authorization: Bearer <token>. The scheme is case-insensitive and
 * whitespace around the parts is allowed (RFC 9110 11.1, 11.6.2). */
static int token_ok(req *r) {
  const char *want = r->S->cfg.api_token;
  if (!want[0]) return 1;
  const char *h = srv_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
  if (!h) return 0;
  while (*h == ' ' || *h == '\t') h++;
  if (strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t')) return 0;
  h += 6;
  while (*h == ' ' || *h == '\t') h++;
  size_t a = strlen(h), b = strlen(want);
  while (a && (h[a - 1] == ' ' || h[a - 1] == '\t')) a--;
  /* Constant time in the token's length: no early exit on a mismatch. */
  unsigned char diff = (unsigned char)(a != b);
  for (size_t i = 0; i < b; i++) diff |= (unsigned char)(want[i] ^ (i < a ? h[i] : 0));
  return diff == 0;
}

/* True when name (no port) is in a comma-separated list, ignoring case;
 * "*" in the list matches anything. */
static int in_list(const char *list, const char *name, size_t n) {
  for (const char *p = list; *p;) {
    const char *e = strchr(p, ',');
    size_t k = e ? (size_t)(e - p) : strlen(p);
    if ((k == 1 && *p == '*') || (k == n && !strncasecmp(p, name, n))) return 1;
    p += k + (e ? 1 : 0);
  }
  return 0;
}

int srv_host_is_loopback(const char *host) {
  char name[256];
  size_t n = strlen(host);
  if (n == 0 || n >= sizeof name) return 0;
  memcpy(name, host, n + 1);
  char *port = NULL;
  if (name[0] == '[') {
    char *close = strchr(name, ']');
    if (!close) return 0;
    *close = 0;
    port = close[1] == ':' ? close + 2 : close[1] ? (char *)"x" : NULL;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, name + 1, &a6) != 1) return 0;
    int lo = IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    if (!lo) return 0;
  } else {
    char *colon = strrchr(name, ':');
    if (colon) {
      *colon = 0;
      port = colon + 1;
    }
    size_t k = strlen(name);
    struct in_addr a4;
    int lo = !strcasecmp(name, "localhost") || !strcasecmp(name, "localhost.") ||
             (k > 10 && !strcasecmp(name + k - 10, ".localhost")) ||
             (k > 11 && !strcasecmp(name + k - 11, ".localhost.")) ||
             (inet_pton(AF_INET, name, &a4) == 1 && ((const uint8_t *)&a4)[0] == 127);
    if (!lo) return 0;
  }
  if (port) {
    uint64_t v;
    if (srv_parse_dec(port, 65535, &v)) return 0;
  }
  return 1;
}

/* DNS rebinding: a page on evil.example can make its own name resolve to
 * 127.0.0.1; the browser then sends Host: evil.example. On loopback only
 * loopback names are served, unless --allow-host lists more. */
static int host_ok(req *r) {
  if (!r->S->loopback) return 1;
  const char *h = srv_header(r, MHD_HTTP_HEADER_HOST);
  if (!h) return 1; /* HTTP/1.0 without Host: not a browser */
  if (srv_host_is_loopback(h)) return 1;
  size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":");
  return r->S->cfg.allow_host[0] && in_list(r->S->cfg.allow_host, h, n);
}

/* Browsers send Origin on every cross-site POST/DELETE. A request is
 * same-origin when Origin is http(s)://<the Host it was sent to>. No
 * Origin: not a browser (curl, scripts), allowed. */
static int origin_ok(req *r) {
  const char *o = srv_header(r, "Origin");
  if (!o) return 1;
  if (r->S->cfg.allow_origin[0] && in_list(r->S->cfg.allow_origin, o, strlen(o))) return 1;
  const char *h = srv_header(r, MHD_HTTP_HEADER_HOST);
  if (!h || !*h) return 0;
  const char *rest = !strncasecmp(o, "http://", 7) ? o + 7 : !strncasecmp(o, "https://", 8) ? o + 8 : NULL;
  return rest && !strcasecmp(rest, h);
}

static enum MHD_Result dispatch_first(req *r) {
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
      return MHD_YES;
    }
  }
  r->route = ROUTE_NONE;
  if (path_known)
    return srv_send_405(r, allow, QUOTE " is not allowed here; use %s", r->method, allow);
  if (!strncmp(path, "/v1/", 4) || !strcmp(path, "/v1"))
    return srv_send_error(r, 404, "no such endpoint: " QUOTE " " QUOTE " (see docs/api.md)",
                      r->method, path);
  if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD"))
    return srv_send_405(r, "GET, HEAD", QUOTE " is not allowed on static files; use GET or HEAD",
                    r->method);
  r->route = ROUTE_STATIC;
  return MHD_YES;
}

/* ---------------------------------------------------------------- connections */

/* Open connections and since when each has been waiting for a complete
 * request head (0: a request is being handled; on a kept-alive connection
 * the clock starts later, see on_completed). A watchdog thread shuts
 * down the socket of any that waits longer than --head-timeout: the idle
 * timeout alone never fires for a client that trickles one header line
 * every few seconds (slowloris). shutdown(2), not close: the descriptor
 * stays libmicrohttpd's, which sees end-of-file and cleans up; the list's
 * mutex orders this before its close (NOTIFY_CLOSED comes first). */
typedef struct conn_state {
  struct conn_state *prev, *next;
  int fd;
  _Atomic int64_t head_since_ms;
} conn_state;

struct srv_conns {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  conn_state head;
  pthread_t watchdog;
  int stop, running;
  int64_t timeout_ms;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  srv *S = cls;
  struct srv_conns *C = S->conns;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_state *cs = calloc(1, sizeof *cs);
    *socket_context = cs;
    if (!cs || !ci) return;
    cs->fd = ci->connect_fd;
    atomic_store(&cs->head_since_ms, mono_ms());
    pthread_mutex_lock(&C->mu);
    cs->next = C->head.next;
    cs->prev = &C->head;
    C->head.next->prev = cs;
    C->head.next = cs;
    pthread_mutex_unlock(&C->mu);
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    conn_state *cs = *socket_context;
    if (!cs) return;
    /* cs->next is rewritten by neighbours leaving the list: read it under
     * the lock too (ThreadSanitizer, make tsan). */
    pthread_mutex_lock(&C->mu);
    if (cs->next) {
      cs->prev->next = cs->next;
      cs->next->prev = cs->prev;
    }
    pthread_mutex_unlock(&C->mu);
    free(cs);
    *socket_context = NULL;
  }
}

static conn_state *conn_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

static void *watchdog(void *arg) {
  struct srv_conns *C = arg;
  pthread_mutex_lock(&C->mu);
  while (!C->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 250 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&C->cv, &C->mu, &ts);
    int64_t now = mono_ms();
    for (conn_state *cs = C->head.next; cs != &C->head; cs = cs->next) {
      int64_t since = atomic_load(&cs->head_since_ms);
      if (since > 0 && now - since > C->timeout_ms) {
        shutdown(cs->fd, SHUT_RDWR);
        atomic_store(&cs->head_since_ms, 0); /* once */
      }
    }
  }
  pthread_mutex_unlock(&C->mu);
  return NULL;
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

/* The first call for a request: everything decided from the head. */
static enum MHD_Result on_head(srv *S, req *r) {
  if (atomic_load(&S->stopping)) return srv_send_error(r, 503, "the server is shutting down");
  if (r->bad_target == 400)
    return srv_send_error(r, 400, "the request target contains %%00 (a NUL byte): " QUOTE,
                      r->raw ? r->raw : "");
  if (r->bad_target == 414)
    return srv_send_error(r, 414, "more than %d query parameters", SRV_MAX_QUERY_PARAMS);
  if (!host_ok(r))
    return srv_send_error(r, 403,
                      "Host " QUOTE " is not a loopback name; this server listens on loopback "
                      "and refuses other names (DNS rebinding). Use http://127.0.0.1 or "
                      "localhost, or start it with --allow-host NAME",
                      srv_header(r, MHD_HTTP_HEADER_HOST));
  if (dispatch_first(r) != MHD_YES || r->status) return r->status ? MHD_YES : MHD_NO;
  if (S->follow && r->route < (int)srv_route_count &&
      srv_follow_refuses(r->method, srv_route_table[r->route].pattern,
                         srv_route_table[r->route].mutating))
    return srv_send_error(r, 403,
                          "this server is a read-only replica of %s: send %s %s to the primary",
                          srv_follow_url(S->follow), srv_route_table[r->route].method,
                          srv_route_table[r->route].pattern);
  if (r->route < (int)srv_route_count && srv_route_table[r->route].mutating) {
    if (!origin_ok(r))
      return srv_send_error(r, 403,
                        "cross-origin request from " QUOTE " refused; pages on other origins "
                        "may not change this server (start it with --allow-origin ORIGIN to "
                        "allow one)",
                        srv_header(r, "Origin"));
    if (!token_ok(r)) {
      struct MHD_Response *resp = MHD_create_response_from_buffer(
          strlen("{\"error\":{\"code\":401,\"message\":\"this server needs an API token: send "
                 "Authorization: Bearer <token>\"}}"),
          (void *)"{\"error\":{\"code\":401,\"message\":\"this server needs an API token: send "
                  "Authorization: Bearer <token>\"}}",
          MHD_RESPMEM_PERSISTENT);
      if (!resp) return MHD_NO;
      MHD_add_response_header(resp, "Content-Type", "application/json");
      MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"mnistd\"");
      common_headers(resp);
      r->status = 401;
      enum MHD_Result ret = MHD_queue_response(r->conn, 401, resp);
      MHD_destroy_response(resp);
      return ret;
    }
    /* A form or text/plain type is refused before the body: even an empty
     * form POST from another site must not start a job. */
    char ct[96];
    if (srv_route_table[r->route].h == h_dataset_create) return srv_dataset_upload_head(r);
    if (srv_media_type(r, ct, sizeof ct)[0] && strcmp(ct, "application/json")) return srv_need_json(r);
  }
  const char *cl = srv_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
  uint64_t clv;
  if (cl && !srv_parse_dec(cl, UINT64_MAX, &clv) && clv > S->cfg.max_body)
    return srv_send_error(r, 413, "the body is %llu bytes; this server accepts at most %zu",
                      (unsigned long long)clv, S->cfg.max_body);
  r->is_predict = r->route < (int)srv_route_count && srv_route_table[r->route].h == h_predict;
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
  if (!r->started) {
    r->started = 1;
    r->url = url;
    r->method = method;
    conn_state *cs = conn_of(conn);
    if (cs) atomic_store(&cs->head_since_ms, 0);
    return on_head(S, r);
  }
  if (*upload_size) {
    if (r->status) { /* already answered (401, 413...): drop the body */
      *upload_size = 0;
      return MHD_YES;
    }
    size_t n = *upload_size;
    *upload_size = 0;
    if (r->upload) { /* a data set: to its file, never all in memory */
      int rc = r->upload_err ? r->upload_err : srv_ds_upload_write(r->upload, upload_data, n);
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
    memcpy(r->body + r->len, upload_data, n);
    r->len += n;
    r->body[r->len] = 0;
    return MHD_YES;
  }
  if (r->status) return MHD_YES;
  if (r->too_big)
    return srv_send_error(r, 413, "the body is larger than %zu bytes, this server's limit",
                      S->cfg.max_body);
  if (!r->body) {
    r->body = calloc(1, 1);
    if (!r->body) return MHD_NO;
  }
  if (r->route == ROUTE_STATIC) return h_static(r);
  return srv_route_table[r->route].h(r);
}

/* One log line; fields, if not NULL, are added to the JSON record (and
 * freed here); the text format has no fields (callers put them in msg). */
static void log_line(const srv *S, const char *level, const char *msg, cJSON *fields) {
  char t[40];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
  /* Messages quote clients (paths, methods): one message stays one line,
   * and valid UTF-8. */
  char clean[4096];
  srv_text_clean(clean, sizeof clean, msg, strlen(msg),
                 S->cfg.log_json ? SRV_CLEAN_JSON : SRV_CLEAN_LOG);
  if (S->cfg.log_json) {
    cJSON *o = cJSON_CreateObject();
    char tt[64];
    snprintf(tt, sizeof tt, "%s.%03ldZ", t, ts.tv_nsec / 1000000);
    cJSON_AddStringToObject(o, "time", tt);
    cJSON_AddStringToObject(o, "level", level);
    cJSON_AddStringToObject(o, "msg", clean);
    for (cJSON *f; fields && (f = fields->child);)
      cJSON_AddItemToObject(o, f->string, cJSON_DetachItemViaPointer(fields, f));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s) fprintf(stderr, "%s\n", s);
    free(s);
  } else {
    fprintf(stderr, "%s.%03ldZ %s %s\n", t, ts.tv_nsec / 1000000, level, clean);
  }
  cJSON_Delete(fields);
}

void srv_log(const srv *S, const char *level, const char *msg) {
  log_line(S, level, msg, NULL);
}

/* Requests with bodies at least this large give their memory back to the
 * system when they end (glibc keeps freed heap otherwise). */
#define TRIM_AFTER_BYTES ((size_t)1 << 20)

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  srv *S = cls;
  req *r = *con_cls;
  conn_state *cs = conn_of(conn);
  /* Keep-alive: the next request head is due within the idle timeout of
   * this answer (a browser keeps idle connections open and may start a
   * request on one just before the idle timeout; cutting it earlier would
   * fail that request). New connections get --head-timeout. */
  if (cs && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
    int64_t grace = (int64_t)(S->cfg.conn_timeout > S->cfg.head_timeout
                                  ? S->cfg.conn_timeout - S->cfg.head_timeout : 0) * 1000;
    atomic_store(&cs->head_since_ms, mono_ms() + grace);
  }
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
  int aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK;
  /* Event streams log when they end; everything logs once. */
  if (S->cfg.log_json) {
    char m[64], path[1100];
    srv_text_clean(m, sizeof m, r->method, strlen(r->method), SRV_CLEAN_JSON);
    srv_text_clean(path, sizeof path, target, strlen(target), SRV_CLEAN_JSON);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", m);
    cJSON_AddStringToObject(o, "path", path);
    if (st) cJSON_AddNumberToObject(o, "status", st);
    else cJSON_AddNullToObject(o, "status");
    cJSON_AddNumberToObject(o, "ms", round(ms * 100) / 100);
    if (aborted) cJSON_AddBoolToObject(o, "aborted", 1);
    /* The request's fields are the record's own, not a string in msg. */
    log_line(S, "info", "request", o);
  } else {
    char line[600], status[8] = "-";
    if (st) snprintf(status, sizeof status, "%d", st);
    snprintf(line, sizeof line, "%.64s %.300s %s %.2fms%s", r->method, target, status, ms,
             aborted ? " (aborted)" : "");
    srv_log(S, "info", line);
  }
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

static void conns_free(struct srv_conns *C) {
  if (!C) return;
  if (C->running) {
    pthread_mutex_lock(&C->mu);
    C->stop = 1;
    pthread_cond_signal(&C->cv);
    pthread_mutex_unlock(&C->mu);
    pthread_join(C->watchdog, NULL);
  }
  pthread_cond_destroy(&C->cv);
  pthread_mutex_destroy(&C->mu);
  free(C);
}

static int conns_create(srv *S) {
  struct srv_conns *C = calloc(1, sizeof *C);
  if (!C) return -ENOMEM;
  pthread_mutex_init(&C->mu, NULL);
  pthread_cond_init(&C->cv, NULL);
  C->head.next = C->head.prev = &C->head;
  C->timeout_ms = (int64_t)S->cfg.head_timeout * 1000;
  S->conns = C;
  return 0;
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
  if (conns_create(S)) {
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
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, S, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
      S, MHD_OPTION_URI_LOG_CALLBACK, on_uri, S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)64 * 1024, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
  if (!S->mhd) {
    conns_free(S->conns);
    S->conns = NULL;
    snprintf(msg, msglen, "cannot listen on %s (address in use, or not allowed)", S->cfg.listen);
    return -EADDRINUSE;
  }
  if (pthread_create(&S->conns->watchdog, NULL, watchdog, S->conns) == 0)
    S->conns->running = 1;
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
  conns_free(S->conns);
  S->conns = NULL;
}
