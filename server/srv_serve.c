/* `mnistd serve`: configuration, start-up, signals and orderly shutdown;
 * `mnistd healthcheck`: a tiny HTTP client for container health checks. */
#include "srv.h"

#include <limits.h>

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "srv_events.h"
#include "srv_follow.h"
#include "srv_util.h"

static const char SERVE_HELP[] =
    "usage: mnistd serve [options]      (also the default command)\n"
    "Runs the daemon: REST API, event streams, predictions and the web page.\n"
    "Every option can also be set as MNISTD_<OPTION> in the environment\n"
    "(e.g. MNISTD_LISTEN=0.0.0.0:8080); flags win over the environment.\n"
    "  --listen HOST:PORT        address to serve on (default 127.0.0.1:8080)\n"
    "  --state-dir DIR           database, models, checkpoints (default ./state)\n"
    "  --data-dir DIR            holds mnist/ and fashion-mnist/ (default ./data)\n"
    "  --web-dir DIR             serve the page from DIR instead of the built-in copy\n"
    "  --api-token TOKEN         require 'Authorization: Bearer TOKEN' on POST and DELETE\n"
    "  --api-token-file FILE     the same, read from a file (first line)\n"
    "                            (tokens: up to 4096 visible ASCII characters)\n"
    "  --max-body BYTES          largest request body (default 8388608 = 8 MiB)\n"
    "  --threads N               HTTP worker threads (default 2)\n"
    "  --train-threads N         threads per training job (default: cores, up to 8)\n"
    "  --max-running-jobs N      jobs training at once (default 1; the rest queue)\n"
    "  --conn-limit N            open connections at most (default 4096)\n"
    "  --conn-timeout SECONDS    idle connections are closed after this (default 30)\n"
    "  --per-ip-conn-limit N     open connections per client address (default 128, at\n"
    "                            most a quarter of --conn-limit; 0 = no limit)\n"
    "  --head-timeout SECONDS    a new connection's request head must arrive within\n"
    "                            this (default 10)\n"
    "  --allow-origin ORIGIN     also accept changes from this web origin, e.g.\n"
    "                            https://dash.example (repeatable, comma-separated; * = any)\n"
    "  --allow-host NAME         on loopback, also answer Host NAME (repeatable; * = any)\n"
    "  --log-format text|json    one line per request on stderr (default text)\n"
    "  --no-bootstrap            do not train a first model when there is none\n"
    "  --follow URL              run as a read-only replica of the mnistd at URL\n"
    "                            (http://HOST:PORT): serve its active model, train\n"
    "                            nothing, keep no state (docs/replicas.md)\n"
    "  --follow-token-file FILE  the primary's API token, sent by the replica\n"
    "Uploaded data sets (POST /v1/datasets):\n"
    "  --max-dataset-upload BYTES   largest upload (default 536870912 = 512 MiB)\n"
    "  --max-dataset-images N       images per data set (default 1000000)\n"
    "  --max-dataset-classes N      classes per data set, 2..256 (default 256)\n"
    "  --max-archive-bytes BYTES    bytes an archive may unpack to (default 2 GiB)\n"
    "  --max-archive-entries N      entries in an archive (default 2000000)\n"
    "  --max-image-file-bytes BYTES one image file in an archive (default 16 MiB)\n"
    "  --max-datasets-bytes BYTES   disk for all uploaded data sets (default 4 GiB)\n";

enum {
  O_LISTEN = 1, O_STATE, O_DATA, O_WEB, O_TOKEN, O_TOKEN_FILE, O_MAX_BODY, O_THREADS,
  O_TRAIN_THREADS, O_MAX_JOBS, O_CONN_LIMIT, O_CONN_TIMEOUT, O_LOG, O_NO_BOOT, O_HELP,
  O_PER_IP, O_HEAD_TIMEOUT, O_ALLOW_ORIGIN, O_ALLOW_HOST, O_FOLLOW, O_FOLLOW_TOKEN_FILE,
  O_DS_UPLOAD, O_DS_IMAGES, O_DS_CLASSES, O_DS_ARCH_BYTES, O_DS_ENTRIES, O_DS_IMG_BYTES, O_DS_QUOTA
};

static const struct option OPTS[] = {
    {"listen", required_argument, 0, O_LISTEN},
    {"state-dir", required_argument, 0, O_STATE},
    {"data-dir", required_argument, 0, O_DATA},
    {"web-dir", required_argument, 0, O_WEB},
    {"api-token", required_argument, 0, O_TOKEN},
    {"api-token-file", required_argument, 0, O_TOKEN_FILE},
    {"max-body", required_argument, 0, O_MAX_BODY},
    {"max-dataset-upload", required_argument, 0, O_DS_UPLOAD},
    {"max-dataset-images", required_argument, 0, O_DS_IMAGES},
    {"max-dataset-classes", required_argument, 0, O_DS_CLASSES},
    {"max-archive-bytes", required_argument, 0, O_DS_ARCH_BYTES},
    {"max-archive-entries", required_argument, 0, O_DS_ENTRIES},
    {"max-image-file-bytes", required_argument, 0, O_DS_IMG_BYTES},
    {"max-datasets-bytes", required_argument, 0, O_DS_QUOTA},
    {"threads", required_argument, 0, O_THREADS},
    {"train-threads", required_argument, 0, O_TRAIN_THREADS},
    {"max-running-jobs", required_argument, 0, O_MAX_JOBS},
    {"conn-limit", required_argument, 0, O_CONN_LIMIT},
    {"conn-timeout", required_argument, 0, O_CONN_TIMEOUT},
    {"per-ip-conn-limit", required_argument, 0, O_PER_IP},
    {"head-timeout", required_argument, 0, O_HEAD_TIMEOUT},
    {"allow-origin", required_argument, 0, O_ALLOW_ORIGIN},
    {"allow-host", required_argument, 0, O_ALLOW_HOST},
    {"log-format", required_argument, 0, O_LOG},
    {"no-bootstrap", no_argument, 0, O_NO_BOOT},
    {"follow", required_argument, 0, O_FOLLOW},
    {"follow-token-file", required_argument, 0, O_FOLLOW_TOKEN_FILE},
    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0}};

static int usage(srv_err *err, const char *fmt, const char *a) {
  srv_err_printf(err, fmt, a);
  return SRV_EUSAGE;
}

/* A token is stored whole or refused: never cut short (a cut token would
 * silently refuse every client holding the real one). */
static int set_token_to(srv_err *err, char *dst, const char *v, size_t n, const char *what) {
  char why[128];
  if (n == 0) return usage(err, "%s is empty", what);
  if (n > SRV_MAX_TOKEN) {
    snprintf(why, sizeof why, "%%s is %zu bytes long; at most %d are supported", n,
             SRV_MAX_TOKEN);
    return usage(err, why, what);
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f) {
      snprintf(why, sizeof why, "%%s has a space, control or non-ASCII byte at %zu; "
               "a header cannot carry it", i);
      return usage(err, why, what);
    }
  memcpy(dst, v, n);
  dst[n] = 0;
  return 0;
}

static int set_token(srv_err *err, srv_config *c, const char *v, size_t n, const char *what) {
  return set_token_to(err, c->api_token, v, n, what);
}

static int read_token_file(srv_err *err, char *dst, const char *path, const char *flag) {
  FILE *f = fopen(path, "r");
  if (!f) {
    char what[PATH_MAX + 64];
    snprintf(what, sizeof what, "cannot read %s %%s", flag);
    return usage(err, what, path);
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n = getline(&line, &cap, f);
  fclose(f);
  size_t len = n > 0 ? (size_t)n : 0;
  const char *v = line ? line : "";
  /* The first line, without surrounding whitespace or its line end. */
  while (len && (v[len - 1] == '\n' || v[len - 1] == '\r' || v[len - 1] == ' ' ||
                 v[len - 1] == '\t'))
    len--;
  while (len && (*v == ' ' || *v == '\t')) v++, len--;
  char what[PATH_MAX + 32];
  snprintf(what, sizeof what, "%s %s", flag, path);
  int rc = set_token_to(err, dst, v, len, what);
  free(line);
  return rc;
}

/* Appends v to a comma-separated list; refuses rather than cuts. */
static int add_list(srv_err *err, char *list, size_t size, const char *v, const char *flag) {
  size_t have = strlen(list), n = strlen(v);
  if (!n) return usage(err, "%s must not be empty", flag);
  if (have + n + 2 > size) return usage(err, "%s: too many values", flag);
  if (have) list[have++] = ',';
  memcpy(list + have, v, n + 1);
  /* An origin never ends in '/': browsers send "https://dash.example". */
  for (size_t k = strlen(list); k && list[k - 1] == '/'; k--) list[k - 1] = 0;
  return 0;
}

/* The upload limits: each a positive number within a sane range. */
static int apply_ds(srv_err *err, srv_config *c, int o, const char *v) {
  static const struct {
    int o;
    const char *flag;
    long min, max;
  } R[] = {{O_DS_UPLOAD, "--max-dataset-upload", 1024, 1L << 40},
           {O_DS_IMAGES, "--max-dataset-images", 1, 16000000},
           {O_DS_CLASSES, "--max-dataset-classes", 2, NN_MAX_CLASSES},
           {O_DS_ARCH_BYTES, "--max-archive-bytes", 1024, 1L << 42},
           {O_DS_ENTRIES, "--max-archive-entries", 1, 100000000},
           {O_DS_IMG_BYTES, "--max-image-file-bytes", 64, 1L << 30},
           {O_DS_QUOTA, "--max-datasets-bytes", 0, 1L << 50}};
  long n;
  for (size_t i = 0; i < sizeof R / sizeof *R; i++) {
    if (R[i].o != o) continue;
    if (srv_parse_long(v, R[i].min, R[i].max, &n)) {
      char m[160];
      snprintf(m, sizeof m, "%s must be a number from %ld to %ld, not '%.40s'", R[i].flag,
               R[i].min, R[i].max, v);
      return usage(err, "%s", m);
    }
    srv_ds_config *d = &c->datasets;
    uint64_t u = (uint64_t)n;
    switch (o) {
    case O_DS_UPLOAD: d->max_body = u; break;
    case O_DS_IMAGES: d->lim.max_images = u; break;
    case O_DS_CLASSES: d->lim.max_classes = (uint32_t)u; break;
    case O_DS_ARCH_BYTES: d->lim.max_archive_bytes = u; break;
    case O_DS_ENTRIES: d->lim.max_entries = u; break;
    case O_DS_IMG_BYTES: d->lim.max_image_bytes = u; break;
    default: d->quota = u; break;
    }
  }
  return 0;
}

/* Applies one option (from the command line or its MNISTD_* variable):
 * 0, or SRV_EUSAGE with a message naming the option in err. */
static int apply(srv_err *err, srv_config *c, int opt, const char *v) {
  long n;
  switch (opt) {
  case O_LISTEN:
    if (!strchr(v, ':')) return usage(err, "--listen must be HOST:PORT, not '%s'", v);
    if (srv_parse_long(strrchr(v, ':') + 1, 0, 65535, &n))
      return usage(err, "--listen port must be 0..65535 in '%s'", v);
    snprintf(c->listen, sizeof c->listen, "%s", v);
    break;
  case O_STATE: snprintf(c->state_dir, sizeof c->state_dir, "%s", v); break;
  case O_DATA: snprintf(c->data_dir, sizeof c->data_dir, "%s", v); break;
  case O_WEB: snprintf(c->web_dir, sizeof c->web_dir, "%s", v); break;
  case O_TOKEN:
    return set_token(err, c, v, strlen(v), "--api-token");
  case O_TOKEN_FILE: return read_token_file(err, c->api_token, v, "--api-token-file");
  case O_FOLLOW_TOKEN_FILE:
    return read_token_file(err, c->follow_token, v, "--follow-token-file");
  case O_FOLLOW:
    if (strlen(v) >= sizeof c->follow) return usage(err, "--follow URL is too long: '%.200s'", v);
    snprintf(c->follow, sizeof c->follow, "%s", v);
    break;
  case O_MAX_BODY:
    if (srv_parse_long(v, 1024, 1L << 30, &n))
      return usage(err, "--max-body must be a number of bytes from 1024 to 1073741824, not '%s'", v);
    c->max_body = (size_t)n;
    break;
  case O_THREADS:
    if (srv_parse_long(v, 1, 64, &n)) return usage(err, "--threads must be 1..64, not '%s'", v);
    c->threads = (int)n;
    break;
  case O_TRAIN_THREADS:
    if (srv_parse_long(v, 1, NN_MAX_THREADS, &n))
      return usage(err, "--train-threads must be 1..64, not '%s'", v);
    c->train_threads = (int)n;
    break;
  case O_MAX_JOBS:
    if (srv_parse_long(v, 1, 16, &n)) return usage(err, "--max-running-jobs must be 1..16, not '%s'", v);
    c->max_running_jobs = (int)n;
    break;
  case O_CONN_LIMIT:
    if (srv_parse_long(v, 16, 1000000, &n))
      return usage(err, "--conn-limit must be 16..1000000, not '%s'", v);
    c->conn_limit = (int)n;
    break;
  case O_CONN_TIMEOUT:
    if (srv_parse_long(v, 1, 3600, &n)) return usage(err, "--conn-timeout must be 1..3600, not '%s'", v);
    c->conn_timeout = (int)n;
    break;
  case O_PER_IP:
    if (srv_parse_long(v, 0, 1000000, &n))
      return usage(err, "--per-ip-conn-limit must be 0..1000000 (0 = no limit), not '%s'", v);
    c->per_ip_limit = (int)n;
    break;
  case O_HEAD_TIMEOUT:
    if (srv_parse_long(v, 1, 3600, &n)) return usage(err, "--head-timeout must be 1..3600, not '%s'", v);
    c->head_timeout = (int)n;
    break;
  case O_DS_UPLOAD:
  case O_DS_IMAGES:
  case O_DS_CLASSES:
  case O_DS_ARCH_BYTES:
  case O_DS_ENTRIES:
  case O_DS_IMG_BYTES:
  case O_DS_QUOTA: return apply_ds(err, c, opt, v);
  case O_ALLOW_ORIGIN: return add_list(err, c->allow_origin, sizeof c->allow_origin, v, "--allow-origin");
  case O_ALLOW_HOST: return add_list(err, c->allow_host, sizeof c->allow_host, v, "--allow-host");
  case O_LOG:
    if (strcmp(v, "text") && strcmp(v, "json"))
      return usage(err, "--log-format must be text or json, not '%s'", v);
    c->log_json = !strcmp(v, "json");
    break;
  case O_NO_BOOT:
    c->bootstrap = !(v && (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")));
    break;
  }
  return 0;
}

int srv_config_parse(srv_config *c, int argc, char **argv, srv_err *err) {
  memset(c, 0, sizeof *c);
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:8080");
  snprintf(c->state_dir, sizeof c->state_dir, "state");
  snprintf(c->data_dir, sizeof c->data_dir, "data");
  c->max_body = 8u << 20;
  c->threads = 2;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  c->train_threads = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
  c->max_running_jobs = 1;
  c->bootstrap = 1;
  c->conn_limit = 4096;
  c->conn_timeout = 30;
  c->per_ip_limit = 128;
  c->head_timeout = 10;
  srv_ds_config_default(&c->datasets);
  /* Environment first: MNISTD_ + the flag in upper snake case. */
  for (const struct option *o = OPTS; o->name; o++) {
    if (o->val == O_HELP) continue;
    char env[64] = "MNISTD_";
    for (size_t i = 0; o->name[i] && i < 50; i++)
      env[7 + i] = o->name[i] == '-' ? '_' : (char)(o->name[i] & ~0x20);
    const char *v = getenv(env);
    if (!v || !*v) continue;
    int rc = apply(err, c, o->val, v);
    if (rc) {
      size_t n = strlen(err->message);
      snprintf(err->message + n, sizeof err->message - n, " (from %s)", env);
      return rc;
    }
  }
  int opt;
  opterr = 0;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "h", OPTS, NULL)) != -1) {
    if (opt == O_HELP || opt == 'h') {
      fputs(SERVE_HELP, stdout);
      return 1;
    }
    if (opt == '?' || opt == ':')
      return usage(err, opt == ':' ? "option '%s' needs a value" : "unknown option '%s'",
                   argv[optind - 1]);
    int rc = apply(err, c, opt, opt == O_NO_BOOT ? "1" : optarg);
    if (rc) return rc;
  }
  if (optind < argc) return usage(err, "unexpected argument '%s'", argv[optind]);
  return 0;
}

/* ---------------------------------------------------------------- serve */

static srv *g_log_srv; /* read-only after start: for the jobs' log callback */
static int S_lock_fd = -1; /* flock on STATE/mnistd.lock for the daemon's life */

static void jobs_log(const char *msg) { srv_log(g_log_srv, "info", msg); }

typedef struct shutdown_ctx {
  srv *S;
  uv_signal_t sigterm, sigint;
  uv_timer_t poll;
  double t0;
} shutdown_ctx;

static void close_cb(uv_handle_t *h) { (void)h; }

static void poll_idle(uv_timer_t *t) {
  shutdown_ctx *c = t->data;
  if (c->S->jobs && !srv_jobs_idle(c->S->jobs)) return;
  /* Conversions under way finish and are answered before the loop ends
   * (new ones run on their HTTP thread from here on). */
  if (!srv_defer_close(c->S, 1)) return;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)&c->poll, close_cb);
  uv_close((uv_handle_t *)&c->sigterm, close_cb);
  uv_close((uv_handle_t *)&c->sigint, close_cb);
  if (c->S->jobs) srv_jobs_close_handles(c->S->jobs);
}

static void on_signal(uv_signal_t *h, int sig) {
  shutdown_ctx *c = h->data;
  srv *S = c->S;
  if (atomic_exchange(&S->stopping, 1)) return;
  srv_log(S, "info", sig == SIGTERM ? "SIGTERM: shutting down" : "SIGINT: shutting down");
  sd_notify(0, "STOPPING=1");
  srv_http_quiesce(S);
  srv_events_shutdown(S->events);
  if (S->jobs) srv_jobs_shutdown(S->jobs);
  uv_timer_start(&c->poll, poll_idle, 0, 20);
}

/* One daemon per state directory: a second one (a restart loop racing the
 * old process, a mistake) must never touch the files of the first, least
 * of all move its database aside. Creates the directory if needed and
 * holds STATE/mnistd.lock (S_lock_fd) until exit. 0, or -1 after a
 * message on stderr. */
static int lock_state_dir(srv_err *err, const char *dir) {
  char path[PATH_MAX + 32];
  int mk = srv_mkdir_durable(dir, 0750);
  if (!mk) {
    snprintf(path, sizeof path, "%s/mnistd.lock", dir);
    S_lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (S_lock_fd < 0) mk = -errno;
  }
  if (mk) {
    srv_err_printf(err, "cannot use state directory %s: %s", dir, strerror(-mk));
    return mk;
  }
  if (flock(S_lock_fd, LOCK_EX | LOCK_NB) < 0) {
    srv_err_printf(err, "state directory %s is in use by another mnistd", dir);
    close(S_lock_fd);
    S_lock_fd = -1;
    return -EBUSY;
  }
  return 0;
}

/* The primary's state: the lock on the state directory, the database and
 * the model records. Returns 0, or a negative errno after a message on
 * stderr. */
static int open_state(srv_err *err, srv *S, char *msg, size_t msgsize) {
  int rc;
  if ((rc = lock_state_dir(err, S->cfg.state_dir))) return rc;
  if ((rc = srv_store_open_flags(&S->store, S->cfg.state_dir, SRV_STORE_RECOVER, msg, msgsize))) {
    srv_err_printf(err, "%s", msg);
    return rc;
  }
  char aside[PATH_MAX];
  if (srv_store_recovered(S->store, aside, sizeof aside)) {
    char line[3 * PATH_MAX + 1024];
    snprintf(line, sizeof line,
             "DATABASE RECOVERY: the database was damaged (%s); it was moved aside to %s "
             "(kept for inspection) and a fresh one was created; model files on disk are "
             "registered again, job records are in the old file",
             msg, aside);
    srv_log(S, "error", line);
  }
  if ((rc = srv_models_open(&S->models, S->store, S->cfg.state_dir, jobs_log))) {
    srv_err_printf(err, "cannot read the model records: %s", strerror(-rc));
    return rc;
  }
  return 0;
}

static void follow_log(const char *level, const char *msg) { srv_log(g_log_srv, level, msg); }

/* The start-up lines: address, directories, token, kernels. */
static void log_started(srv *S) {
  char msg[2 * PATH_MAX + 512];
  if (S->follow)
    snprintf(msg, sizeof msg, "mnistd %s listening on http://%s: read-only replica of %s "
             "(no state; data %s)", NN_VERSION, S->cfg.listen, srv_follow_url(S->follow),
             S->cfg.data_dir);
  else
    snprintf(msg, sizeof msg, "mnistd %s listening on http://%s (state %s, data %s%s)",
             NN_VERSION, S->cfg.listen, S->cfg.state_dir, S->cfg.data_dir,
             S->cfg.api_token[0] ? ", API token required for changes" : "");
  srv_log(S, "info", msg);
  nn_backend_info bi;
  nn_backend_info_get(&bi);
  snprintf(msg, sizeof msg, "kernels: %s, isa %s, matmul %s", bi.library, bi.isa, bi.kernel);
  srv_log(S, "info", msg);
  if (!strcmp(bi.kernel, "unknown"))
    srv_log(S, "warn", "oneDNN cannot compile its kernels: training and predictions will fail "
                       "(is writable+executable memory denied, e.g. MemoryDenyWriteExecute=yes?)");
}

/* The registry, the data and, on a primary, the state directory and the
 * uploaded data sets; a replica keeps nothing (no state directory, no
 * database) and gets its follower. 0, or a negative errno after a message
 * on stderr. */
static int serve_open(srv_err *err, srv *S, char *msg, size_t msglen) {
  int rc, replica = S->cfg.follow[0] != 0;
  if (replica) {
    if ((rc = srv_models_open_replica(&S->models)) ||
        (rc = srv_follow_create(&S->follow, S->cfg.follow, S->cfg.follow_token, S->models,
                                follow_log, msg, msglen))) {
      srv_err_printf(err, "%s", rc == -EINVAL ? msg : strerror(-rc));
      return rc;
    }
  } else if ((rc = open_state(err, S, msg, msglen))) {
    return rc;
  }
  if ((rc = srv_data_open(&S->data, S->cfg.data_dir))) {
    srv_err_printf(err, "%s", strerror(-rc));
    return rc;
  }
  /* A replica keeps no state: no uploaded data sets either. */
  if (!replica && (rc = srv_datasets_open(&S->datasets, S->store, S->cfg.state_dir,
                                          &S->cfg.datasets, jobs_log))) {
    srv_err_printf(err, "cannot open the data sets under %s/datasets: %s",
            S->cfg.state_dir, strerror(-rc));
    return rc;
  }
  srv_data_attach(S->data, S->datasets);
  uint32_t tr, te;
  if (srv_data_count(S->data, "mnist", &tr, &te)) {
    snprintf(msg, msglen, "no MNIST under %s (run 'make data' or set --data-dir)",
             S->cfg.data_dir);
    srv_log(S, "warn", msg);
  }
  return 0;
}

/* Everything serve_open and srv_serve_main opened, in reverse (loop NULL:
 * it was never initialised). */
static void serve_close(srv *S, uv_loop_t *loop) {
  srv_follow_free(S->follow); /* first: it installs models into the registry */
  S->follow = NULL;
  srv_events_shutdown(S->events);
  srv_http_stop(S);
  srv_events_close_handles(S->events);
  /* Every handle is closed and its close callback has run before the jobs
   * are freed, also when start-up failed after srv_jobs_open (a busy port):
   * a wake-up queued by srv_jobs_open must never fire on freed memory. */
  if (S->jobs) srv_jobs_close_handles(S->jobs);
  srv_defer_close(S, 0);
  if (loop) {
    uv_run(loop, UV_RUN_DEFAULT);
    if (uv_loop_close(loop)) srv_log(S, "warn", "libuv loop closed with handles still open");
  }
  srv_defer_free(S);
  srv_jobs_close(S->jobs);
  S->jobs = NULL;
  srv_models_close(S->models);
  srv_data_close(S->data);
  srv_datasets_close(S->datasets);
  srv_store_close(S->store);
  srv_events_free(S->events);
  if (S_lock_fd >= 0) close(S_lock_fd);
  S_lock_fd = -1;
}

int srv_serve_main(int argc, char **argv, srv_err *err) {
  static srv S; /* large (metrics tables): not on the stack */
  int rc = srv_config_parse(&S.cfg, argc, argv, err);
  if (rc) return rc == 1 ? 0 : rc; /* 1: --help was printed */
  g_log_srv = &S;
  setvbuf(stderr, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  /* Training parallelises itself; predictions run one per HTTP thread. */
  nn_set_threads(1);
  /* libuv's pool runs the training jobs (each holds a thread for its whole
   * run) and the data set conversions (srv_defer): room for both, unless
   * the environment sets it. Read once, at the pool's first use. */
  if (!getenv("UV_THREADPOOL_SIZE")) {
    char n[16];
    snprintf(n, sizeof n, "%d", S.cfg.max_running_jobs + 4);
    setenv("UV_THREADPOOL_SIZE", n, 0);
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  S.started_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

  char msg[2 * PATH_MAX + 512];
  uv_loop_t loop;
  int loop_ok = 0;
  if ((rc = srv_events_create(&S.events, S.started_ms))) {
    srv_err_printf(err, "%s", strerror(-rc));
    return rc;
  }
  if ((rc = serve_open(err, &S, msg, sizeof msg))) goto out;
  if ((rc = uv_loop_init(&loop))) {
    srv_err_printf(err, "%s", uv_strerror(rc));
    goto out;
  }
  loop_ok = 1;
  S.loop = &loop;
  if ((rc = srv_defer_start(&S, &loop))) {
    srv_err_printf(err, "%s", uv_strerror(rc));
    goto out;
  }
  /* GET /v1/events hears of every activation (a replica's too) and job. */
  srv_models_set_notify(S.models, srv_events_model_activated, S.events);
  srv_jobs_options jo = {S.cfg.state_dir, S.cfg.max_running_jobs, S.cfg.train_threads,
                         S.cfg.bootstrap, jobs_log};
  if (!S.follow && (rc = srv_jobs_open(&S.jobs, &loop, S.store, S.models, S.data, &jo))) {
    srv_err_printf(err, "cannot read the job records: %s", strerror(-rc));
    goto out;
  }
  if (S.jobs) srv_jobs_set_notify(S.jobs, srv_events_job_state, S.events);
  if ((rc = srv_http_start(&S, msg, sizeof msg)) || (rc = srv_events_start(S.events, &loop))) {
    srv_err_printf(err, "%s", rc == -EADDRINUSE || rc == -EINVAL ? msg : uv_strerror(rc));
    goto out;
  }
  if (S.follow && (rc = srv_follow_start(S.follow))) {
    srv_err_printf(err, "cannot start the follower: %s", strerror(-rc));
    goto out;
  }
  shutdown_ctx sc = {.S = &S};
  uv_signal_init(&loop, &sc.sigterm);
  uv_signal_init(&loop, &sc.sigint);
  uv_timer_init(&loop, &sc.poll);
  sc.sigterm.data = sc.sigint.data = sc.poll.data = &sc;
  uv_signal_start(&sc.sigterm, on_signal, SIGTERM);
  uv_signal_start(&sc.sigint, on_signal, SIGINT);

  log_started(&S);
  sd_notify(0, "READY=1");
  uv_run(&loop, UV_RUN_DEFAULT);
  srv_http_stop(&S);
  srv_log(&S, "info", "stopped cleanly");
  rc = 0;
out:
  serve_close(&S, loop_ok ? &loop : NULL);
  return rc;
}

/* ---------------------------------------------------------------- healthcheck */

static const char HEALTHCHECK_USAGE[] =
    "usage: mnistd healthcheck [--listen HOST:PORT | --url http://HOST:PORT/PATH]\n"
    "exit 0 if the daemon answers GET /healthz (or PATH) with 200, 1 otherwise.\n"
    "  --listen HOST:PORT  the daemon's address (default $MNISTD_LISTEN, else 127.0.0.1:8080;\n"
    "                      0.0.0.0 is checked on 127.0.0.1)\n"
    "  --url URL           the full URL to check\n";

int srv_healthcheck_main(int argc, char **argv, srv_err *err) {
  const char *url = NULL, *listen = getenv("MNISTD_LISTEN");
  char host[128] = "127.0.0.1", port[16] = "8080", path[256] = "/healthz";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(HEALTHCHECK_USAGE, stdout);
      return 0;
    }
    const char *v = NULL;
    if (!strcmp(argv[i], "--url") || !strcmp(argv[i], "--listen")) {
      if (i + 1 >= argc) {
        srv_err_printf(err, "%s needs a value", argv[i]);
        return SRV_EUSAGE;
      }
      v = argv[i + 1];
    } else if (!strncmp(argv[i], "--url=", 6) || !strncmp(argv[i], "--listen=", 9)) {
      v = strchr(argv[i], '=') + 1;
    } else {
      srv_err_printf(err, "unknown argument '%s'", argv[i]);
      return SRV_EUSAGE;
    }
    if (!strncmp(argv[i], "--url", 5)) url = v;
    else listen = v;
    if (!strchr(argv[i], '=')) i++;
  }
  if (url) {
    if (sscanf(url, "http://%127[^:/]:%15[0-9]%255s", host, port, path) < 2) {
      srv_err_printf(err, "--url must look like http://127.0.0.1:8080/healthz");
      return SRV_EUSAGE;
    }
  } else if (listen) {
    const char *colon = strrchr(listen, ':');
    size_t hl = colon ? (size_t)(colon - listen) : 0;
    if (!colon || !colon[1] || strlen(colon + 1) >= sizeof port || hl >= sizeof host) {
      srv_err_printf(err, "--listen must be HOST:PORT, not '%s'", listen);
      return SRV_EUSAGE;
    }
    snprintf(port, sizeof port, "%s", colon + 1);
    if (hl) {
      memcpy(host, listen, hl);
      host[hl] = 0;
    }
    if (!strcmp(host, "0.0.0.0")) snprintf(host, sizeof host, "127.0.0.1");
  }
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
  if (getaddrinfo(host, port, &hints, &ai)) {
    srv_err_printf(err, "cannot resolve %s", host);
    return -EHOSTUNREACH;
  }
  int fd = socket(ai->ai_family, ai->ai_socktype, 0);
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
  freeaddrinfo(ai);
  char buf[512];
  if (ok) {
    int n = snprintf(buf, sizeof buf, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host);
    ok = n > 0 && (size_t)n < sizeof buf && write(fd, buf, (size_t)n) == n;
  }
  ssize_t got = ok ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) close(fd);
  if (got < 12) {
    srv_err_printf(err, "no answer from %s:%s", host, port);
    return -ECONNREFUSED;
  }
  buf[got] = 0;
  int code = atoi(buf + 9);
  if (code != 200) {
    srv_err_printf(err, "%s:%s%s answered %d", host, port, path, code);
    return -EPROTO;
  }
  return 0;
}
