/* The daemon: configuration, shared state and the HTTP front end.
 *
 * Threads: libmicrohttpd's pool (--threads) serves requests and runs
 * predictions inline; the main thread runs the libuv loop (job scheduling,
 * stream wake-ups, signals); training and data set conversions
 * (srv_defer) run on libuv's thread pool. The configuration is read-only
 * once serving starts. */
#ifndef MNISTD_SRV_H
#define MNISTD_SRV_H

#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "srv_datasets.h"
#include "srv_jobs.h"
#include "srv_registry.h"
#include "srv_store.h"
#include "srv_util.h" /* srv_err, SRV_EUSAGE */

/* Longer tokens are refused at start, never cut short. */
#define SRV_MAX_TOKEN 4096

typedef struct srv_config {
  char listen[128];          /* host:port, default 127.0.0.1:8080 */
  char state_dir[PATH_MAX];  /* default ./state */
  char data_dir[PATH_MAX];   /* default ./data */
  char web_dir[PATH_MAX];    /* empty: assets built into the binary */
  char api_token[SRV_MAX_TOKEN + 1]; /* empty: no token needed */
  char allow_origin[2048];   /* --allow-origin, comma-separated; "*" = any */
  char allow_host[1024];     /* --allow-host, comma-separated; "*" = any */
  size_t max_body;           /* bytes, default 8 MiB */
  int threads;               /* HTTP threads, default 2 */
  int train_threads;         /* per job, default: cores (max 8) */
  int max_running_jobs;      /* default 1 */
  int log_json;              /* --log-format json */
  int bootstrap;             /* default on */
  int conn_limit;            /* default 4096 (bounded by RLIMIT_NOFILE) */
  int conn_timeout;          /* seconds, default 30 */
  int per_ip_limit;          /* connections per client address, default 128; 0 = no limit */
  int head_timeout;          /* seconds to deliver a request head, default 10 */
  srv_ds_config datasets;    /* uploads: --max-dataset-* flags, --max-datasets-bytes */
  char follow[512];          /* --follow URL: a read-only replica of that primary */
  char follow_token[SRV_MAX_TOKEN + 1]; /* --follow-token-file: sent to the primary */
} srv_config;

/* Fills defaults, then MNISTD_* variables, then flags (argv after the
 * subcommand). Returns 0, SRV_EUSAGE (srv_util.h) with the one-line
 * reason in err, or 1 when --help was printed. */
int srv_config_parse(srv_config *c, int argc, char **argv, srv_err *err);

#define SRV_MAX_ROUTES 32
#define SRV_LAT_BUCKETS 12

typedef struct srv_metrics {
  /* route (table index; then static files, then unmatched) x status code */
  atomic_ulong requests[SRV_MAX_ROUTES + 2][600];
  atomic_ulong lat_buckets[SRV_LAT_BUCKETS];
  atomic_ulong lat_count, lat_sum_ns;
  atomic_ulong predictions;
  atomic_ulong aborted[SRV_MAX_ROUTES + 2]; /* client went away before an answer */
} srv_metrics;

typedef struct srv {
  srv_config cfg;
  srv_store *store;
  srv_models *models;
  srv_data *data;
  srv_datasets *datasets;    /* NULL in a replica */
  srv_jobs *jobs;             /* NULL in a replica */
  struct srv_events *events;  /* GET /v1/events */
  struct srv_follow *follow;  /* set in a replica (--follow) */
  uv_loop_t *loop;
  struct MHD_Daemon *mhd;
  struct srv_conns *conns;   /* open connections, for the request-head deadline */
  struct srv_defer *defer;   /* answers worked out on libuv's pool (srv_defer) */
  int loopback;              /* listening on 127.0.0.0/8: Host must be a loopback name */
  srv_metrics metrics;
  int64_t started_ms;
  atomic_int stopping;
} srv;

/* Starts libmicrohttpd on cfg.listen. */
int srv_http_start(srv *S, char *msg, size_t msglen);
/* Stops accepting new connections (existing ones finish). */
void srv_http_quiesce(srv *S);
void srv_http_stop(srv *S);

/* Answers handed to libuv's thread pool (srv_defer, srv_route.h). start
 * (loop thread, before serving): 0 or a negative errno. close (loop
 * thread): stops taking new ones (they run on the HTTP thread from then
 * on) and closes the loop handle, returning 1; with only_if_idle it does
 * so only when no deferred answer is in progress (its work queued or
 * running, or its answer not yet sent) and else returns 0. free releases
 * what start made, after the loop has run the close; NULL-safe. */
int srv_defer_start(srv *S, uv_loop_t *loop);
int srv_defer_close(srv *S, int only_if_idle);
void srv_defer_free(srv *S);

/* True for a Host header value naming the loopback interface: localhost,
 * localhost., *.localhost, 127.0.0.0/8, [::1] or [::ffff:127.x.y.z], each
 * with an optional :port. Used against DNS rebinding. */
int srv_host_is_loopback(const char *host);

/* Writes one log line (text or JSON per configuration) to stderr. */
void srv_log(const srv *S, const char *level, const char *msg);
/* One access log line for a request: method, target as sent, status (0:
 * none was sent), milliseconds, and whether the client left early. */
void srv_log_request(const srv *S, const char *method, const char *target, int st, double ms,
                     int aborted);

/* `mnistd serve` and `mnistd healthcheck`: 0, SRV_EUSAGE for a command
 * line they do not take, or a negative errno (healthcheck: -ECONNREFUSED
 * no answer, -EPROTO an answer other than 200); on failure err->message
 * says why in one line. main.c prints it and maps the return to the exit
 * status. */
int srv_serve_main(int argc, char **argv, srv_err *err);
int srv_healthcheck_main(int argc, char **argv, srv_err *err);

/* The route table, for tests that walk it (every mutating route must ask
 * for the token). */
typedef struct srv_route_info {
  const char *method;
  const char *pattern;   /* ":id" stands for a number */
  int mutating;
} srv_route_info;
/* Sets *out to the table (static storage, never freed) and returns its
 * length. */
size_t srv_routes(const srv_route_info **out);

#endif
