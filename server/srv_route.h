/* What a route handler sees (private to the HTTP front end: srv_http.c,
 * srv_resp.c, srv_auth.c, srv_static.c, srv_routes.c, srv_predict.c,
 * srv_metrics.c, srv_dataset_routes.c). A
 * handler turns one request into calls on the jobs, registry and core and
 * returns a status plus a filled srv_resp (lwan's shape); srv_http.c does
 * everything else (routing, auth, bodies, building and queueing the
 * libmicrohttpd response, logging, metrics, connections). */
#ifndef SRV_ROUTE_H
#define SRV_ROUTE_H

#include <cJSON.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "srv.h"
#include "srv_util.h" /* srv_err */

struct MHD_Connection; /* only srv_http.c looks inside */
typedef struct req req;
typedef struct srv_resp srv_resp;
/* A handler fills res (srv_resp_* below) and returns the HTTP status. */
typedef int (*handler)(req *r, srv_resp *res);

typedef struct route {
  const char *method, *pattern;
  handler h;
  int mutating;
} route;

struct req {
  srv *S;
  struct MHD_Connection *conn;
  const char *method, *url;
  char *raw;              /* the request target as sent (clipped), for the log */
  int started;            /* the access handler has seen this request */
  int bad_target;         /* 400 (%00 in it) or 414 (too many query parameters) */
  int route;              /* index into srv_route_table, or STATIC/NOT_FOUND */
  int64_t id;             /* the :id of the path */
  char name[72];          /* the :name of the path (a data set) */
  srv_ds_upload *upload;  /* POST /v1/datasets: the body, streamed to a file */
  int upload_err;         /* first error writing it (-E2BIG, -ENOSPC, -EIO) */
  char *body;
  size_t len, cap;
  int too_big;
  int status;             /* queued status, for the log and metrics */
  double t0;
  int is_predict;
  size_t peak;            /* largest body buffer, to give memory back after */
  struct srv_deferred *deferred; /* answered from libuv's pool (srv_defer) */
};

#define ROUTE_STATIC SRV_MAX_ROUTES
#define ROUTE_NONE (SRV_MAX_ROUTES + 1)

/* Untrusted text quoted in messages is clipped to this many bytes. */
#define QUOTE "%.80s"

/* The route table (srv_routes.c): adding an endpoint is one handler and
 * one row there. */
extern const route srv_route_table[];
extern const size_t srv_route_count;

/* ---- answering (srv_resp.c; srv_http.c for the streams). A handler
 * fills one srv_resp with the srv_resp_* functions below and returns the
 * HTTP status they return; the dispatcher in srv_http.c alone turns it
 * into a libmicrohttpd response, adds the common headers and queues it.
 * A handler returning a negative errno (or leaving res empty) drops the
 * connection without an answer. */

/* Fills res with doc (taken over; NULL means out of memory: the answer is
 * then a 500) as application/json, Cache-Control: no-store unless an ETag
 * is added. Returns status. */
int srv_resp_json(srv_resp *res, int status, cJSON *doc);
/* The error body {"error":{"code":status,"message":...}}: the message is
 * formatted into a bounded buffer, made valid UTF-8, clipped and later
 * JSON-escaped. Returns status. */
int srv_resp_error(srv_resp *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A 405 error with its Allow header. Returns 405. */
int srv_resp_405(srv_resp *res, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* len bytes of data as type. owned: 1 hands data (malloc'd) over, freed
 * once sent or on any failure; 0 means data outlives the response.
 * Returns status. */
int srv_resp_buf(srv_resp *res, int status, const char *type, const void *data, size_t len,
                 int owned);
/* A 200 application/octet-stream attachment: len bytes of buf (malloc'd,
 * handed over) or, when fd >= 0, of the file fd (handed over, buf unused;
 * the answer then carries X-Checksum-Sha256, the hex SHA-256 of the file,
 * which replicas check). Freed/closed on every path. Returns 200. */
int srv_resp_download(srv_resp *res, void *buf, size_t len, int fd, const char *disposition);
/* A 304 Not Modified with its ETag. Returns 304. */
int srv_resp_not_modified(srv_resp *res, const char *etag);
/* Adds a header (value copied, clipped to 320 bytes); "ETag" and
 * "Location" also drop a JSON answer's no-store. 0, or -ENOSPC when res
 * holds 6 already. */
int srv_resp_header(srv_resp *res, const char *name, const char *value);
/* Fills res with job's event stream (SSE, or NDJSON if ndjson) from after
 * event id last. Returns 200, or -ENOENT (no such job) / -ENOMEM with res
 * untouched: the caller answers then. */
int srv_resp_events(srv_resp *res, req *r, int64_t job, uint64_t last, int ndjson);
/* Fills res with the daemon-wide event stream (srv_events.h) from after
 * id last, starting with a "hello" event whose data is hello (JSON).
 * Returns 200, or -ENOMEM with res untouched. */
int srv_resp_daemon_events(srv_resp *res, req *r, uint64_t last, const char *hello);
/* The 415 answer for a body that is not application/json. */
int srv_need_json(req *r, srv_resp *res);

/* What a handler returns when srv_defer took the request over. */
#define SRV_DEFERRED 1000
/* Work too long for an HTTP thread (each serves many connections: while
 * one handler runs, the others wait): r's connection is suspended, ctx is
 * handed over to work(ctx, res), which runs on libuv's thread pool, fills
 * res like a handler, returns the status and releases ctx; the answer is
 * queued when it is done. work must not use r (only what ctx holds; r and
 * its upload stay valid until the answer is sent). Returns SRV_DEFERRED,
 * for the handler to return; when the work cannot be handed over (out of
 * memory, or the daemon is stopping and the pool closed) it runs right
 * here and its status is returned instead. */
int srv_defer(req *r, srv_resp *res, int (*work)(void *ctx, srv_resp *res), void *ctx);

typedef enum srv_resp_kind {
  SRV_RESP_NONE,   /* nothing filled: the connection is dropped */
  SRV_RESP_JSON,   /* json */
  SRV_RESP_ERROR,  /* err, as the JSON error body */
  SRV_RESP_BUF,    /* data/len as type */
  SRV_RESP_FILE,   /* fd/len, with its checksum */
  SRV_RESP_EMPTY,  /* no body (304) */
  SRV_RESP_STREAM  /* stream, pulled until it ends */
} srv_resp_kind;

#define SRV_RESP_MAX_HEADERS 6

typedef struct srv_stream srv_stream;
/* Ends a stream (its subscription) that was never queued (srv_http.c). */
void srv_stream_free(srv_stream *s);

/* What a handler answers. Fields are the srv_resp_* functions' to fill;
 * the dispatcher reads them, and srv_resp_free releases what is held. */
struct srv_resp {
  int status;
  srv_resp_kind kind;
  cJSON *json;
  srv_err err;
  const char *type;  /* BUF and STREAM: Content-Type (a literal) */
  const char *cache; /* Cache-Control (a literal) or NULL */
  void *data;
  size_t len;
  int owned, fd;
  srv_stream *stream;
  size_t n_hdr;
  struct {
    const char *name; /* a literal */
    char value[320];
  } hdr[SRV_RESP_MAX_HEADERS];
};

/* An empty response (kind NONE, fd -1). */
void srv_resp_init(srv_resp *res);
/* Releases what res holds (document, owned buffer, fd, stream); res is
 * empty after. */
void srv_resp_free(srv_resp *res);

/* ---- who may ask (srv_auth.c); each is true (1) or false (0) */

/* Authorization: Bearer <the --api-token>, compared in constant time
 * (true when the server has no token). */
int srv_token_ok(req *r);
/* On loopback, Host must be a loopback name or one of --allow-host (DNS
 * rebinding); true on other addresses and without Host. */
int srv_host_ok(req *r);
/* No Origin (not a browser), one of --allow-origin, or the origin of the
 * Host the request was sent to. */
int srv_origin_ok(req *r);

/* ---- reading the request (srv_http.c) */

/* A query parameter or header of r, or NULL; valid until r is answered. */
const char *srv_query(req *r, const char *key);
const char *srv_header(req *r, const char *key);
/* r's media type without parameters, lower case, into buf ("" if none). */
const char *srv_media_type(req *r, char *buf, size_t len);
/* True when r's body may be read as JSON (see srv_http.c for why). */
int srv_json_body_ok(req *r);

/* ---- handlers that live outside srv_routes.c */
int h_predict(req *r, srv_resp *res);     /* srv_predict.c */
int h_tfs_predict(req *r, srv_resp *res); /* srv_predict.c */
int h_evaluation(req *r, srv_resp *res);  /* srv_predict.c */
int h_metrics(req *r, srv_resp *res);     /* srv_metrics.c */
int h_static(req *r, srv_resp *res);      /* srv_http.c: the fallback for every GET no route takes */
/* srv_dataset_routes.c (issue 13): uploaded data sets */
int h_datasets(req *r, srv_resp *res);
int h_dataset_create(req *r, srv_resp *res);
int h_dataset(req *r, srv_resp *res);
int h_dataset_delete(req *r, srv_resp *res);
int h_dataset_sample(req *r, srv_resp *res);
int h_sample(req *r, srv_resp *res);
/* The checks of an upload that need no body (name, type, size), run when
 * its head arrives; opens r->upload. Returns 0 for "go on, stream the
 * body", else the status of the answer filled in res. */
int srv_dataset_upload_head(req *r, srv_resp *res);

/* The 784 pixels of one image as a JSON array of numbers (srv_predict.c);
 * NULL when out of memory. */
cJSON *srv_pixels_json(const uint8_t *px);

/* Counts one answered POST /v1/predict of secs seconds in the latency
 * histogram (srv_metrics.c). */
void srv_metrics_observe_latency(srv *S, double secs);

#endif
