/* What a route handler sees (private to the HTTP front end: srv_http.c,
 * srv_routes.c, srv_predict.c, srv_metrics.c). A handler turns one request
 * into calls on the jobs, registry and core, and answers exactly once with
 * one of the srv_send_* functions; srv_http.c does everything else
 * (routing, auth, bodies, logging, metrics, connections). */
#ifndef SRV_ROUTE_H
#define SRV_ROUTE_H

#include <cJSON.h>
#include <microhttpd.h>
#include <stdarg.h>

#include "srv.h"

typedef struct req req;
/* A handler answers exactly once through the srv_send_* functions below
 * (or returns MHD_NO to drop the connection). */
typedef enum MHD_Result (*handler)(req *r);

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
  int status;             /* sent status, for the log and metrics */
  double t0;
  int is_predict;
  size_t peak;            /* largest body buffer, to give memory back after */
};

#define ROUTE_STATIC SRV_MAX_ROUTES
#define ROUTE_NONE (SRV_MAX_ROUTES + 1)

/* Untrusted text quoted in messages is clipped to this many bytes. */
#define QUOTE "%.80s"

/* The route table (srv_routes.c): adding an endpoint is one handler and
 * one row there. */
extern const route srv_route_table[];
extern const size_t srv_route_count;

/* ---- answering (srv_http.c). Each queues the response on r's connection,
 * records the status for the log and metrics, and returns what
 * MHD_queue_response returned (MHD_NO: the connection is dropped). */

/* Sends len bytes of data as type. mode says who owns data:
 * MHD_RESPMEM_MUST_FREE hands it to libmicrohttpd (which frees it once
 * sent), MHD_RESPMEM_PERSISTENT means it outlives the response. */
enum MHD_Result srv_send_buf(req *r, int status, const char *type, const void *data, size_t len,
                             enum MHD_ResponseMemoryMode mode);
/* Sends doc as application/json and frees it (doc may be NULL: a 500). */
enum MHD_Result srv_send_json(req *r, int status, cJSON *doc);
/* Like srv_send_json, with extra headers: NULL-terminated name/value
 * pairs (e.g. "Location", "/v1/jobs/3", NULL). */
enum MHD_Result srv_send_json_hdrs(req *r, int status, cJSON *doc, ...);
/* The error body {"error":{"code":status,"message":...}}: the message is
 * formatted, made valid UTF-8, clipped and JSON-escaped. */
enum MHD_Result srv_send_error(req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A 405 with its Allow header. */
enum MHD_Result srv_send_405(req *r, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Takes ownership of resp (destroyed here), adds the common headers and
 * queues it. Only srv_http.c builds MHD responses: handlers use the
 * srv_send_* above. */
enum MHD_Result srv_send_response(req *r, int status, struct MHD_Response *resp);
/* Answers 200 with job's event stream (SSE, or NDJSON if ndjson) from
 * after event id last; *ret gets what a srv_send_* would return. Returns
 * 0, or -ENOENT (no such job) / -ENOMEM with nothing sent: the caller
 * answers then. */
int srv_send_events(req *r, int64_t job, uint64_t last, int ndjson, enum MHD_Result *ret);
/* Answers 200 with the daemon-wide event stream (srv_events.h) from after
 * id last, starting with a "hello" event whose data is hello (JSON). 0, or
 * -ENOMEM with nothing sent. */
int srv_send_daemon_events(req *r, uint64_t last, const char *hello, enum MHD_Result *ret);
/* A 304 Not Modified with its ETag. */
enum MHD_Result srv_send_not_modified(req *r, const char *etag);
/* Answers 200 with an application/octet-stream attachment: len bytes of
 * buf (malloc'd, handed over) or, when fd >= 0, of the file fd (handed
 * over, buf unused; the answer then carries X-Checksum-Sha256, the hex
 * SHA-256 of the file). Both are freed/closed on every path. */
enum MHD_Result srv_send_download(req *r, void *buf, size_t len, int fd, const char *disposition);
/* The 415 answer for a body that is not application/json. */
enum MHD_Result srv_need_json(req *r);

/* ---- reading the request (srv_http.c) */

/* A query parameter or header of r, or NULL; valid until r is answered. */
const char *srv_query(req *r, const char *key);
const char *srv_header(req *r, const char *key);
/* r's media type without parameters, lower case, into buf ("" if none). */
const char *srv_media_type(req *r, char *buf, size_t len);
/* True when r's body may be read as JSON (see srv_http.c for why). */
int srv_json_body_ok(req *r);

/* ---- handlers that live outside srv_routes.c */
enum MHD_Result h_predict(req *r);     /* srv_predict.c */
enum MHD_Result h_tfs_predict(req *r); /* srv_predict.c */
enum MHD_Result h_evaluation(req *r);  /* srv_predict.c */
enum MHD_Result h_metrics(req *r);     /* srv_metrics.c */
enum MHD_Result h_static(req *r);      /* srv_http.c: the fallback for every GET no route takes */
/* srv_dataset_routes.c (issue 13): uploaded data sets */
enum MHD_Result h_datasets(req *r);
enum MHD_Result h_dataset_create(req *r);
enum MHD_Result h_dataset(req *r);
enum MHD_Result h_dataset_delete(req *r);
enum MHD_Result h_dataset_sample(req *r);
enum MHD_Result h_sample(req *r);
/* The checks of an upload that need no body (name, type, size), run when
 * its head arrives; opens r->upload. MHD_YES with r->status still 0 means
 * "go on, stream the body". */
enum MHD_Result srv_dataset_upload_head(req *r);

/* The 784 pixels of one image as a JSON array of numbers (srv_predict.c);
 * NULL when out of memory. */
cJSON *srv_pixels_json(const uint8_t *px);

/* Counts one answered POST /v1/predict of secs seconds in the latency
 * histogram (srv_metrics.c). */
void srv_metrics_observe_latency(srv *S, double secs);

#endif
