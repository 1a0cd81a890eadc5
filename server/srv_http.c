/* HTTP front end: one table of routes, each a small handler that turns the
 * request into calls on the jobs, registry and core, and the result into
 * JSON. Everything about bodies, errors, auth, logging and metrics lives
 * here once, not in the handlers. */
#include "srv.h"

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
#include "srv_image.h"
#include "srv_onnx.h"
#include "srv_validate.h"

typedef struct req req;
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
  int route;              /* index into ROUTES, or STATIC/NOT_FOUND */
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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- responses */

static void common_headers(struct MHD_Response *resp) {
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
}

static enum MHD_Result send_buf(req *r, int status, const char *type, const void *data,
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
  if (!s) return send_buf(r, 500, "application/json",
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

static enum MHD_Result send_json(req *r, int status, cJSON *doc) {
  return send_json_allow(r, status, doc, NULL);
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

static enum MHD_Result send_error(req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(req *r, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  enum MHD_Result ret = verror(r, status, NULL, fmt, ap);
  va_end(ap);
  return ret;
}

static enum MHD_Result send_405(req *r, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_405(req *r, const char *allow, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  enum MHD_Result ret = verror(r, 405, allow, fmt, ap);
  va_end(ap);
  return ret;
}

/* Untrusted text quoted in messages is clipped to this many bytes. */
#define QUOTE "%.80s"

/* A plain decimal number: digits only (no sign, space or leading zero),
 * at most max, checked in 64 bits before anything narrows it. */
static int parse_dec(const char *s, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  if (!s || !*s || (s[0] == '0' && s[1])) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (max - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static const char *query(req *r, const char *key) {
  return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

static const char *header(req *r, const char *key) {
  return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

/* Media type without parameters, lower case, into buf ("" if none; a
 * type too long for buf comes out cut and so never matches). */
static const char *media_type(req *r, char *buf, size_t len) {
  const char *ct = header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
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
static int json_body_ok(req *r) {
  char ct[96];
  media_type(r, ct, sizeof ct);
  return !strcmp(ct, "application/json") || (!ct[0] && r->len == 0);
}

static enum MHD_Result need_json(req *r) {
  char ct[96];
  return send_error(r, 415,
                    "send the body as application/json (Content-Type: application/json; got "
                    QUOTE ")", media_type(r, ct, sizeof ct)[0] ? ct : "no Content-Type");
}

/* ---------------------------------------------------------------- handlers */

static enum MHD_Result h_healthz(req *r) {
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "status", "ok");
  return send_json(r, 200, d);
}

static enum MHD_Result h_readyz(req *r) {
  srv_model *m = srv_models_active(r->S->models);
  if (!m) {
    char note[256];
    srv_jobs_pending_note(r->S->jobs, note, sizeof note);
    return send_error(r, 503, "no model loaded yet%s%s", note[0] ? ": " : "",
                      note[0] ? note : " (start a training job: POST /v1/jobs)");
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "status", "ready");
  cJSON_AddNumberToObject(d, "model", (double)m->id);
  srv_model_unref(m);
  return send_json(r, 200, d);
}

/* ---- data sets (issue 13): the store and conversion live in
 * srv_datasets.c; these only translate HTTP. */

static const char *const DS_TYPES[] = {"application/zip", "application/x-zip-compressed",
                                       "application/x-tar", "application/gzip",
                                       "application/x-gzip", "application/x-gtar", "text/csv"};

static cJSON *builtin_json(srv *S, const char *name) {
  uint32_t tr, te;
  if (srv_data_count(S->data, name, &tr, &te)) return NULL;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", name);
  cJSON *c = cJSON_AddArrayToObject(o, "classes");
  const char *const *names = srv_dataset_builtin_classes(name);
  for (int i = 0; i < NN_CLASSES; i++) cJSON_AddItemToArray(c, cJSON_CreateString(names[i]));
  cJSON_AddNumberToObject(o, "train", tr);
  cJSON_AddNumberToObject(o, "test", te);
  cJSON_AddNullToObject(o, "bytes");
  cJSON_AddNullToObject(o, "sha256");
  cJSON_AddStringToObject(o, "source_format", "idx");
  cJSON_AddNullToObject(o, "created_at");
  cJSON_AddBoolToObject(o, "builtin", 1);
  return o;
}

static enum MHD_Result h_datasets(req *r) {
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "datasets");
  static const char *names[] = {"mnist", "fashion-mnist"};
  for (size_t i = 0; i < 2; i++) {
    cJSON *o = builtin_json(r->S, names[i]);
    if (o) cJSON_AddItemToArray(a, o);
  }
  srv_datasets_list(r->S->datasets, a);
  return send_json(r, 200, d);
}

/* Everything that can be refused before the body is: the name, the type,
 * the size. Then the body goes to a temporary file as it arrives. */
static enum MHD_Result dataset_upload_head(req *r) {
  const char *name = query(r, "name");
  if (!name || !srv_dataset_name_ok(name))
    return send_error(r, 400, "give the data set a name: ?name=NAME with NAME matching "
                      "[a-z0-9][a-z0-9._-]{0,63} (got " QUOTE ")", name ? name : "none");
  cJSON *have = srv_datasets_json(r->S->datasets, name);
  if (have || srv_dataset_is_builtin(name)) {
    cJSON_Delete(have);
    return send_error(r, 409, "a data set named %s exists already (DELETE /v1/datasets/%s "
                      "first, or pick another name)", name, name);
  }
  char ct[96];
  media_type(r, ct, sizeof ct);
  int known = 0;
  for (size_t i = 0; i < sizeof DS_TYPES / sizeof *DS_TYPES; i++) known |= !strcmp(ct, DS_TYPES[i]);
  if (!known)
    return send_error(r, 415, "Content-Type " QUOTE " is not a data set format; send "
                      "application/zip, application/x-tar, application/gzip (a .tar.gz) or "
                      "text/csv", ct[0] ? ct : "(none)");
  const srv_ds_config *dc = srv_datasets_config(r->S->datasets);
  const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
  uint64_t clv;
  if (cl && !parse_dec(cl, UINT64_MAX, &clv) && clv > dc->max_body)
    return send_error(r, 413, "the upload is %llu bytes; this server accepts data sets up to "
                      "%llu bytes (--max-dataset-upload)", (unsigned long long)clv,
                      (unsigned long long)dc->max_body);
  int rc = srv_ds_upload_open(r->S->datasets, &r->upload);
  if (rc) return send_error(r, rc == -ENOSPC ? 507 : 500, "cannot store the upload: %s",
                            strerror(-rc));
  return MHD_YES;
}

static int ds_status(int rc) {
  switch (rc) {
  case -EEXIST: return 409;
  case -EINVAL: return 400;
  case -E2BIG: return 413;
  case -ENOTSUP: return 415;
  case -EDQUOT: case -ENOSPC: return 507;
  default: return 500;
  }
}

static enum MHD_Result h_dataset_create(req *r) {
  if (r->upload_err)
    return r->upload_err == -E2BIG
               ? send_error(r, 413, "the upload is larger than %llu bytes, this server's limit "
                            "(--max-dataset-upload)",
                            (unsigned long long)srv_datasets_config(r->S->datasets)->max_body)
               : send_error(r, ds_status(r->upload_err), "cannot store the upload: %s",
                            strerror(-r->upload_err));
  if (!r->upload || srv_ds_upload_size(r->upload) == 0)
    return send_error(r, 400, "the body is empty: send the archive or CSV as the body");
  char ct[96], msg[700];
  const char *pp = query(r, "preprocess"), *tf = query(r, "test_fraction");
  srv_ds_create c = {query(r, "name"), media_type(r, ct, sizeof ct), 1, 1.0 / 6};
  if (pp && strcmp(pp, "none") && strcmp(pp, "mnist"))
    return send_error(r, 400, "preprocess must be none or mnist, not " QUOTE, pp);
  c.preprocess = !pp || strcmp(pp, "none");
  if (tf) {
    char *end;
    c.test_fraction = strtod(tf, &end);
    if (*end || !(c.test_fraction >= 0.01 && c.test_fraction <= 0.5))
      return send_error(r, 400, "test_fraction must be a number from 0.01 to 0.5, not " QUOTE,
                        tf);
  }
  cJSON *out = NULL;
  int rc = srv_datasets_create(r->S->datasets, r->upload, &c, &out, msg, sizeof msg);
  if (rc) return send_error(r, ds_status(rc), "%s", msg[0] ? msg : strerror(-rc));
  char loc[160];
  snprintf(loc, sizeof loc, "/v1/datasets/%s", c.name);
  srv_json_exact_ints(out);
  char *s = cJSON_PrintUnformatted(out);
  cJSON_Delete(out);
  if (!s) return send_error(r, 500, "out of memory");
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", "application/json");
  MHD_add_response_header(resp, "Location", loc);
  common_headers(resp);
  r->status = 201;
  enum MHD_Result ret = MHD_queue_response(r->conn, 201, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result h_dataset(req *r) {
  cJSON *o = srv_dataset_is_builtin(r->name) ? builtin_json(r->S, r->name)
                                             : srv_datasets_json(r->S->datasets, r->name);
  if (!o) return send_error(r, 404, "data set " QUOTE " not found (see GET /v1/datasets)", r->name);
  return send_json(r, 200, o);
}

/* 1 if a queued or running job trains on the data set. */
static int dataset_in_use(srv *S, const char *name, int64_t *job) {
  int states[2] = {SRV_JOB_QUEUED, SRV_JOB_RUNNING}, used = 0;
  for (int s = 0; s < 2 && !used; s++) {
    cJSON *a = srv_jobs_list_json(S->jobs, states[s], 1 << 20), *j;
    cJSON_ArrayForEach(j, a) {
      const char *d = cJSON_GetStringValue(
          cJSON_GetObjectItem(cJSON_GetObjectItem(j, "config"), "dataset"));
      if (d && !strcmp(d, name)) {
        *job = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "id"));
        used = 1;
        break;
      }
    }
    cJSON_Delete(a);
  }
  return used;
}

static enum MHD_Result h_dataset_delete(req *r) {
  if (srv_dataset_is_builtin(r->name))
    return send_error(r, 409, "%s is built in (installed beside the binary) and cannot be "
                      "deleted", r->name);
  int64_t job = 0;
  if (dataset_in_use(r->S, r->name, &job))
    return send_error(r, 409, "data set %s is in use by job %lld (queued or running); cancel "
                      "it or wait for it to finish", r->name, (long long)job);
  int rc = srv_datasets_delete(r->S->datasets, r->name);
  if (rc == -ENOENT) return send_error(r, 404, "data set " QUOTE " not found", r->name);
  if (rc) return send_error(r, 500, "could not delete: %s", srv_store_errmsg(r->S->store));
  srv_data_forget(r->S->data, r->name);
  return send_buf(r, 204, "application/json", "", 0, MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result sample_of(req *r, const char *name);

static enum MHD_Result h_dataset_sample(req *r) { return sample_of(r, r->name); }

static enum MHD_Result h_job_create(req *r) {
  if (!json_body_ok(r)) return need_json(r);
  srv_job_config c;
  char msg[512];
  if (srv_job_config_parse(r->body, r->len, &c, msg, sizeof msg))
    return send_error(r, 400, "%s", msg);
  uint32_t tr, te;
  if (srv_data_count(r->S->data, c.dataset, &tr, &te))
    return send_error(r, 400, "dataset %s is not installed on this server (see GET /v1/datasets)",
                      c.dataset);
  int64_t id;
  int rc = srv_jobs_submit(r->S->jobs, &c, &id);
  if (rc) return send_error(r, rc == -ENOSPC ? 507 : 500, "could not record the job: %s",
                            rc == -ENOSPC ? "the disk is full" : srv_store_errmsg(r->S->store));
  cJSON *job = srv_jobs_json(r->S->jobs, id);
  char loc[64];
  snprintf(loc, sizeof loc, "/v1/jobs/%lld", (long long)id);
  srv_json_exact_ints(job);
  char *s = cJSON_PrintUnformatted(job);
  cJSON_Delete(job);
  if (!s) return send_error(r, 500, "out of memory");
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(s);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", "application/json");
  MHD_add_response_header(resp, "Location", loc);
  common_headers(resp);
  r->status = 202;
  enum MHD_Result ret = MHD_queue_response(r->conn, 202, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result h_jobs(req *r) {
  int state = -1;
  long limit = 100;
  const char *q = query(r, "state");
  if (q && (state = srv_job_state_parse(q)) < 0)
    return send_error(r, 400,
                      "state must be one of queued, running, succeeded, failed, cancelled");
  q = query(r, "limit");
  if (q) {
    uint64_t v;
    if (parse_dec(q, 1000, &v) || v < 1)
      return send_error(r, 400, "limit must be an integer from 1 to 1000");
    limit = (long)v;
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddItemToObject(d, "jobs", srv_jobs_list_json(r->S->jobs, state, (int)limit));
  return send_json(r, 200, d);
}

static enum MHD_Result h_job(req *r) {
  cJSON *j = srv_jobs_json(r->S->jobs, r->id);
  if (!j) return send_error(r, 404, "job %lld not found", (long long)r->id);
  return send_json(r, 200, j);
}

static enum MHD_Result h_job_cancel(req *r) {
  int rc = srv_jobs_cancel(r->S->jobs, r->id);
  if (rc == -ENOENT) return send_error(r, 404, "job %lld not found", (long long)r->id);
  if (rc == -EALREADY) return send_error(r, 409, "job %lld has already finished", (long long)r->id);
  return send_json(r, 202, srv_jobs_json(r->S->jobs, r->id));
}

/* ---- event streams */

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

static enum MHD_Result h_job_events(req *r) {
  const char *fmt = query(r, "format");
  int ndjson = fmt && !strcmp(fmt, "ndjson");
  if (fmt && !ndjson && strcmp(fmt, "sse"))
    return send_error(r, 400, "format must be sse (default) or ndjson");
  uint64_t last = 0;
  const char *lei = header(r, "Last-Event-ID");
  if (!lei) lei = query(r, "last_event_id");
  if (lei && srv_parse_event_id(lei, &last))
    return send_error(r, 400,
                      "Last-Event-ID must be an event id: decimal digits, 0 to 9007199254740991");
  stream *s = calloc(1, sizeof *s);
  if (!s) return send_error(r, 500, "out of memory");
  s->conn = r->conn;
  int rc = srv_sub_open(r->S->jobs, r->id, last, ndjson, stream_wake, s, &s->sub);
  if (rc) {
    free(s);
    return rc == -ENOENT ? send_error(r, 404, "job %lld not found", (long long)r->id)
                         : send_error(r, 500, "out of memory");
  }
  struct MHD_Response *resp =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
  if (!resp) {
    stream_free(s);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type",
                          ndjson ? "application/x-ndjson" : "text/event-stream");
  MHD_add_response_header(resp, "Cache-Control", "no-cache");
  MHD_add_response_header(resp, "X-Accel-Buffering", "no");
  common_headers(resp);
  r->status = 200;
  enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* ---- models */

/* A model's name for output k (its data set's class; "?" never happens
 * for a loaded model, but a failed allocation must not crash). */
static const char *model_class(const srv_model *m, int k) {
  return m->classes && k >= 0 && (uint32_t)k < m->n_classes ? m->classes[k] : "?";
}

static cJSON *model_json(const srv_model *m, int active) {
  cJSON *o = cJSON_CreateObject();
  char t[32];
  cJSON_AddNumberToObject(o, "id", (double)m->id);
  cJSON_AddStringToObject(o, "arch", m->arch);
  cJSON_AddNumberToObject(o, "parameters", (double)m->m->n_params);
  cJSON_AddStringToObject(o, "dataset", m->dataset);
  cJSON_AddNumberToObject(o, "test_accuracy", round(m->test_accuracy * 1e6) / 1e6);
  cJSON_AddNumberToObject(o, "test_loss", round(m->test_loss * 1e6) / 1e6);
  if (m->job_id) cJSON_AddNumberToObject(o, "job_id", (double)m->job_id);
  else cJSON_AddNullToObject(o, "job_id");
  cJSON_AddStringToObject(o, "created_at", srv_iso8601(m->created_ms, t, sizeof t));
  cJSON_AddNumberToObject(o, "file_bytes", (double)m->file_bytes);
  cJSON_AddBoolToObject(o, "active", active);
  cJSON *c = cJSON_AddArrayToObject(o, "classes");
  for (uint32_t k = 0; k < m->n_classes; k++) cJSON_AddItemToArray(c, cJSON_CreateString(m->classes[k]));
  return o;
}

static void add_model(const srv_model *m, int active, void *u) {
  cJSON_AddItemToArray((cJSON *)u, model_json(m, active));
}

static enum MHD_Result h_models(req *r) {
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "models");
  srv_models_each(r->S->models, add_model, a);
  /* Newest first, like the job list. */
  cJSON *rev = cJSON_CreateArray();
  int n = cJSON_GetArraySize(a);
  for (int i = n - 1; i >= 0; i--) cJSON_AddItemToArray(rev, cJSON_DetachItemFromArray(a, i));
  cJSON_ReplaceItemInObject(d, "models", rev);
  return send_json(r, 200, d);
}

static enum MHD_Result h_model(req *r) {
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return send_error(r, 404, "model %lld not found", (long long)r->id);
  cJSON *o = model_json(m, srv_models_active_id(r->S->models) == m->id);
  srv_model_unref(m);
  return send_json(r, 200, o);
}

/* ?format=onnx: the model as ONNX (srv_onnx.h), with the daemon's records
 * of it (data set, test accuracy, the training job's configuration). */
static enum MHD_Result model_file_onnx(req *r, srv_model *m) {
  srv_onnx_info info;
  int rc = srv_onnx_info_load(&info, r->S->store, m->id);
  if (rc) {
    srv_model_unref(m);
    return send_error(r, rc == -ENOENT ? 404 : 500, "records of model %lld: %s", (long long)r->id,
                      rc == -ENOENT ? "not found" : srv_store_errmsg(r->S->store));
  }
  uint8_t *buf;
  size_t len;
  char msg[512];
  rc = srv_onnx_export(m->m, &info, &buf, &len, msg, sizeof msg);
  srv_onnx_info_clear(&info);
  srv_model_unref(m);
  if (rc == -EINVAL) return send_error(r, 422, "model %lld cannot be exported to ONNX: %s",
                                       (long long)r->id, msg);
  if (rc) return send_error(r, 500, "ONNX export of model %lld failed: %s", (long long)r->id, msg);
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
  if (!resp) {
    free(buf);
    return MHD_NO;
  }
  char disp[96];
  snprintf(disp, sizeof disp, "attachment; filename=\"mnistd-model-%lld.onnx\"", (long long)r->id);
  MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
  MHD_add_response_header(resp, "Content-Disposition", disp);
  common_headers(resp);
  r->status = 200;
  enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result h_model_file(req *r) {
  const char *fmt = query(r, "format");
  if (fmt && strcmp(fmt, "onnx") && strcmp(fmt, "mnistd"))
    return send_error(r, 400, "format must be mnistd (the native file, default) or onnx");
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return send_error(r, 404, "model %lld not found", (long long)r->id);
  if (fmt && !strcmp(fmt, "onnx")) return model_file_onnx(r, m);
  srv_model_unref(m);
  char path[PATH_MAX + 64];
  srv_models_path(r->S->models, r->id, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    if (fd >= 0) close(fd);
    return send_error(r, 500, "model file of %lld is unreadable", (long long)r->id);
  }
  struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
  if (!resp) {
    close(fd);
    return MHD_NO;
  }
  char disp[96];
  snprintf(disp, sizeof disp, "attachment; filename=\"mnistd-model-%lld.model\"",
           (long long)r->id);
  MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
  MHD_add_response_header(resp, "Content-Disposition", disp);
  common_headers(resp);
  r->status = 200;
  enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result h_model_activate(req *r) {
  int rc = srv_models_activate(r->S->models, r->id);
  if (rc == -ENOENT) return send_error(r, 404, "model %lld not found", (long long)r->id);
  if (rc) return send_error(r, 500, "could not record the active model: %s",
                            srv_store_errmsg(r->S->store));
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return send_error(r, 404, "model %lld not found", (long long)r->id);
  cJSON *o = model_json(m, 1);
  srv_model_unref(m);
  return send_json(r, 200, o);
}

static enum MHD_Result h_model_delete(req *r) {
  int rc = srv_models_delete(r->S->models, r->id);
  if (rc == -ENOENT) return send_error(r, 404, "model %lld not found", (long long)r->id);
  if (rc == -EBUSY)
    return send_error(r, 409, "model %lld is the active model; activate another one first",
                      (long long)r->id);
  if (rc) return send_error(r, 500, "could not delete: %s", srv_store_errmsg(r->S->store));
  r->status = 204;
  return send_buf(r, 204, "application/json", "", 0, MHD_RESPMEM_PERSISTENT);
}

/* ---- prediction */

/* One workspace per HTTP thread, rebuilt when the model changes. The
 * thread holds a reference to the model its workspace was built for, so a
 * freed model's address reused later cannot fool the check; a thread-key
 * destructor gives both back when libmicrohttpd's threads end. */
#define PREDICT_CHUNK 64
typedef struct tl_ws {
  srv_model *m;
  nn_workspace *ws;
} tl_ws;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_free(void *p) {
  tl_ws *t = p;
  nn_workspace_free(t->ws);
  srv_model_unref(t->m);
  free(t);
}

static void tl_init(void) { pthread_key_create(&tl_key, tl_free); }

static nn_workspace *workspace_for(srv_model *m) {
  pthread_once(&tl_once, tl_init);
  tl_ws *t = pthread_getspecific(tl_key);
  if (!t) {
    if (!(t = calloc(1, sizeof *t))) return NULL;
    pthread_setspecific(tl_key, t);
  }
  if (t->m != m) {
    nn_workspace_free(t->ws);
    srv_model_unref(t->m);
    t->m = NULL;
    t->ws = NULL;
    if (nn_workspace_create(&t->ws, m->m, PREDICT_CHUNK)) return NULL;
    /* Registry models never change: single images may take the sparse path
     * (on failure the workspace just keeps the dense one). */
    (void)nn_workspace_pin(t->ws, m->m);
    atomic_fetch_add(&m->refs, 1);
    t->m = m;
  }
  return t->ws;
}

static srv_model *predict_model(req *r, int *status, char *msg, size_t len) {
  const char *q = query(r, "model");
  srv_model *m;
  if (q) {
    uint64_t v;
    if (parse_dec(q, INT64_MAX, &v) || v == 0) {
      *status = 400;
      snprintf(msg, len, "model must be a model id (a positive number)");
      return NULL;
    }
    long long id = (long long)v;
    if (!(m = srv_models_get(r->S->models, id))) {
      *status = 404;
      snprintf(msg, len, "model %lld not found", id);
    }
    return m;
  }
  if (!(m = srv_models_active(r->S->models))) {
    char note[200];
    srv_jobs_pending_note(r->S->jobs, note, sizeof note);
    *status = 503;
    snprintf(msg, len, "no model loaded yet%s%s", note[0] ? ": " : "",
             note[0] ? note : " (start a training job: POST /v1/jobs)");
  }
  return m;
}

static void observe_latency(srv *S, double secs) {
  static const double edges[SRV_LAT_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
  for (int i = 0; i < SRV_LAT_BUCKETS; i++)
    if (secs <= edges[i]) atomic_fetch_add(&S->metrics.lat_buckets[i], 1);
  atomic_fetch_add(&S->metrics.lat_count, 1);
  atomic_fetch_add(&S->metrics.lat_sum_ns, (unsigned long)(secs * 1e9));
}

static enum MHD_Result h_predict(req *r) {
  char ct[96], msg[512];
  media_type(r, ct, sizeof ct);
  uint8_t *px = NULL, one[NN_IMAGE_SIZE];
  uint32_t n = 0;
  int empty = 0, rc, explain = 0;
  const char *ex = query(r, "explain");
  if (ex) explain = !strcmp(ex, "1") || !strcmp(ex, "true");
  if (!strcmp(ct, "application/json")) {
    rc = srv_predict_json_parse(r->body, r->len, &px, &n, msg, sizeof msg);
    if (rc) return send_error(r, rc == -E2BIG ? 413 : rc == -ENOMEM ? 500 : 400, "%s", msg);
  } else {
    srv_image_format f = srv_image_sniff(ct, (const uint8_t *)r->body, r->len);
    int known = !ct[0] || !strcmp(ct, "application/octet-stream") || !strcmp(ct, "image/png") ||
                !strcmp(ct, "image/x-portable-graymap") || !strcmp(ct, "image/x-pgm") ||
                !strcmp(ct, "application/x-www-form-urlencoded");
    if (!known || f == SRV_IMAGE_UNKNOWN)
      return send_error(r, 415,
                        "unsupported body (" QUOTE "): send JSON {\"image\":[784 numbers]} "
                        "with Content-Type: application/json, image/png, "
                        "image/x-portable-graymap (PGM) or application/octet-stream "
                        "(N x 784 bytes)",
                        ct[0] ? ct : "no Content-Type");
    if (f == SRV_IMAGE_RAW) {
      size_t cnt = 0;
      if (srv_image_raw_count(r->len, &cnt, msg, sizeof msg) < 0)
        return send_error(r, 400, "%s", msg);
      if (cnt > SRV_MAX_PREDICT_IMAGES)
        return send_error(r, 413, "%zu images in one request; at most %d", cnt,
                          SRV_MAX_PREDICT_IMAGES);
      px = malloc(r->len);
      if (!px) return send_error(r, 500, "out of memory");
      memcpy(px, r->body, r->len);
      n = (uint32_t)cnt;
    } else {
      rc = srv_image_from_bytes(ct, (const uint8_t *)r->body, r->len, one, &empty, msg,
                                sizeof msg);
      if (rc == -E2BIG) return send_error(r, 413, "%s", msg);
      if (rc == -ENOTSUP) return send_error(r, 415, "%s", msg);
      if (rc == -ENOMEM) return send_error(r, 500, "out of memory");
      if (rc) return send_error(r, 400, "%s", msg);
      n = 1;
    }
  }
  int status = 500;
  srv_model *m = predict_model(r, &status, msg, sizeof msg);
  if (!m) {
    free(px);
    return send_error(r, status, "%s", msg);
  }
  const uint8_t *images = px ? px : one;
  const uint32_t K = nn_model_classes(m->m);
  float *probs = malloc((size_t)n * K * sizeof(float));
  nn_workspace *ws = workspace_for(m);
  if (!probs || !ws) {
    free(px);
    free(probs);
    srv_model_unref(m);
    return send_error(r, 500, "out of memory");
  }
  for (uint32_t off = 0; off < n; off += PREDICT_CHUNK) {
    uint32_t k = n - off < PREDICT_CHUNK ? n - off : PREDICT_CHUNK;
    nn_predict_u8(m->m, ws, images + (size_t)off * NN_IMAGE_SIZE, k,
                  probs + (size_t)off * K);
  }
  atomic_fetch_add(&r->S->metrics.predictions, n);
  cJSON *d = cJSON_CreateObject();
  cJSON_AddNumberToObject(d, "model", (double)m->id);
  cJSON *preds = cJSON_AddArrayToObject(d, "predictions");
  for (uint32_t i = 0; i < n; i++) {
    const float *p = probs + (size_t)i * K;
    int label = nn_argmax_n(p, K);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "label", label);
    cJSON_AddStringToObject(o, "class", model_class(m, label));
    cJSON_AddNumberToObject(o, "confidence", round(p[label] * 1e6) / 1e6);
    double pr[NN_MAX_CLASSES];
    for (uint32_t k = 0; k < K; k++) pr[k] = round(p[k] * 1e6) / 1e6;
    cJSON_AddItemToObject(o, "probabilities", cJSON_CreateDoubleArray(pr, (int)K));
    cJSON_AddBoolToObject(o, "empty",
                          px ? srv_image_is_empty(images + (size_t)i * NN_IMAGE_SIZE) : empty);
    if (explain) {
      int v[NN_IMAGE_SIZE];
      for (int k = 0; k < NN_IMAGE_SIZE; k++) v[k] = images[(size_t)i * NN_IMAGE_SIZE + k];
      cJSON_AddItemToObject(o, "pixels", cJSON_CreateIntArray(v, NN_IMAGE_SIZE));
    }
    cJSON_AddItemToArray(preds, o);
  }
  srv_model_unref(m);
  free(probs);
  free(px);
  return send_json(r, 200, d);
}

static enum MHD_Result h_tfs_predict(req *r) {
  if (!json_body_ok(r)) return need_json(r);
  char msg[512];
  float *x = NULL;
  uint32_t n = 0;
  int rc = srv_tfs_parse(r->body, r->len, &x, &n, msg, sizeof msg);
  if (rc) return send_error(r, rc == -E2BIG ? 413 : rc == -ENOMEM ? 500 : 400, "%s", msg);
  int status = 500;
  srv_model *m = predict_model(r, &status, msg, sizeof msg);
  if (!m) {
    free(x);
    return send_error(r, status, "%s", msg);
  }
  nn_workspace *ws = workspace_for(m);
  const uint32_t K = nn_model_classes(m->m);
  float *probs = malloc((size_t)n * K * sizeof(float));
  if (!ws || !probs) {
    free(x);
    free(probs);
    srv_model_unref(m);
    return send_error(r, 500, "out of memory");
  }
  for (uint32_t off = 0; off < n; off += PREDICT_CHUNK) {
    uint32_t k = n - off < PREDICT_CHUNK ? n - off : PREDICT_CHUNK;
    nn_predict_f32(m->m, ws, x + (size_t)off * NN_IMAGE_SIZE, k,
                   probs + (size_t)off * K);
  }
  atomic_fetch_add(&r->S->metrics.predictions, n);
  srv_model_unref(m);
  cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "predictions");
  for (uint32_t i = 0; i < n; i++) {
    double pr[NN_MAX_CLASSES];
    for (uint32_t k = 0; k < K; k++) pr[k] = round(probs[(size_t)i * K + k] * 1e6) / 1e6;
    cJSON_AddItemToArray(a, cJSON_CreateDoubleArray(pr, (int)K));
  }
  free(probs);
  free(x);
  return send_json(r, 200, d);
}

/* ---- samples and evaluation */

static cJSON *pixels_json(const uint8_t *px) {
  int v[NN_IMAGE_SIZE];
  for (int k = 0; k < NN_IMAGE_SIZE; k++) v[k] = px[k];
  return cJSON_CreateIntArray(v, NN_IMAGE_SIZE);
}

static enum MHD_Result h_sample(req *r) {
  const char *name = query(r, "dataset");
  if (!name) name = "mnist";
  if (!srv_dataset_name_ok(name))
    return send_error(r, 400, "dataset must be mnist, fashion-mnist or an uploaded data set");
  return sample_of(r, name);
}

static enum MHD_Result sample_of(req *r, const char *name) {
  if (!srv_dataset_name_ok(name))
    return send_error(r, 404, "data set " QUOTE " not found", name);
  char **classes = NULL;
  uint32_t n_classes = 0;
  if (srv_data_classes(r->S->data, name, &classes, &n_classes))
    return send_error(r, 404, "data set %s not found (see GET /v1/datasets)", name);
  const nn_dataset *ds;
  char msg[512];
  if (srv_data_get(r->S->data, name, NN_SPLIT_TEST, &ds, msg, sizeof msg)) {
    free(classes);
    return send_error(r, 404, "%s", msg);
  }
  static _Thread_local unsigned seed;
  if (!seed) seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
  uint32_t idx = (uint32_t)rand_r(&seed) % ds->n;
  const char *q = query(r, "index");
  if (q) {
    uint64_t v;
    if (parse_dec(q, (uint64_t)ds->n - 1, &v)) {
      srv_data_put(r->S->data, name, NN_SPLIT_TEST);
      free(classes);
      return send_error(r, 400, "index must be from 0 to %u", ds->n - 1);
    }
    idx = (uint32_t)v;
  }
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "dataset", name);
  cJSON_AddNumberToObject(d, "index", idx);
  cJSON_AddNumberToObject(d, "label", ds->labels[idx]);
  cJSON_AddStringToObject(d, "class", ds->labels[idx] < n_classes ? classes[ds->labels[idx]] : "");
  cJSON_AddItemToObject(d, "pixels", pixels_json(ds->images + (size_t)idx * NN_IMAGE_SIZE));
  srv_data_put(r->S->data, name, NN_SPLIT_TEST);
  free(classes);
  return send_json(r, 200, d);
}

#define EVAL_MISSES 60

static enum MHD_Result h_evaluation(req *r) {
  srv_model *m = srv_models_get(r->S->models, r->id);
  if (!m) return send_error(r, 404, "model %lld not found", (long long)r->id);
  char *cached = srv_models_eval_get(r->S->models, m);
  if (cached) {
    srv_model_unref(m);
    return send_buf(r, 200, "application/json", cached, strlen(cached), MHD_RESPMEM_MUST_FREE);
  }
  const nn_dataset *ds;
  char msg[512];
  if (srv_data_get(r->S->data, m->dataset, NN_SPLIT_TEST, &ds, msg, sizeof msg)) {
    srv_model_unref(m);
    return send_error(r, 404, "%s", msg);
  }
  uint8_t *pred = malloc(ds->n);
  const uint32_t K = nn_model_classes(m->m);
  float *probs = malloc(PREDICT_CHUNK * K * sizeof(float));
  int *conf = calloc((size_t)K * K, sizeof *conf);
  nn_workspace *ws = workspace_for(m);
  cJSON *d = NULL;
  if (pred && probs && ws && conf) {
    uint32_t correct = 0, misses = 0;
    d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "model", (double)m->id);
    cJSON_AddStringToObject(d, "dataset", m->dataset);
    cJSON *mis = cJSON_CreateArray();
    for (uint32_t off = 0; off < ds->n; off += PREDICT_CHUNK) {
      uint32_t k = ds->n - off < PREDICT_CHUNK ? ds->n - off : PREDICT_CHUNK;
      nn_predict_u8(m->m, ws, ds->images + (size_t)off * NN_IMAGE_SIZE, k, probs);
      for (uint32_t i = 0; i < k; i++) {
        const float *p = probs + (size_t)i * K;
        int y = ds->labels[off + i] < K ? ds->labels[off + i] : 0, yh = nn_argmax_n(p, K);
        conf[(size_t)y * K + yh]++;
        correct += y == yh;
        if (y != yh && misses < EVAL_MISSES) {
          misses++;
          cJSON *o = cJSON_CreateObject();
          cJSON_AddNumberToObject(o, "index", off + i);
          cJSON_AddNumberToObject(o, "label", y);
          cJSON_AddNumberToObject(o, "predicted", yh);
          cJSON_AddStringToObject(o, "label_class", model_class(m, y));
          cJSON_AddStringToObject(o, "predicted_class", model_class(m, yh));
          cJSON_AddNumberToObject(o, "confidence", round(p[yh] * 1e4) / 1e4);
          cJSON_AddItemToObject(o, "pixels",
                                pixels_json(ds->images + (size_t)(off + i) * NN_IMAGE_SIZE));
          cJSON_AddItemToArray(mis, o);
        }
      }
    }
    cJSON_AddNumberToObject(d, "accuracy", round(1e6 * correct / ds->n) / 1e6);
    cJSON_AddNumberToObject(d, "images", ds->n);
    cJSON *cm = cJSON_AddArrayToObject(d, "confusion");
    for (uint32_t y = 0; y < K; y++)
      cJSON_AddItemToArray(cm, cJSON_CreateIntArray(conf + (size_t)y * K, (int)K));
    cJSON *cn = cJSON_AddArrayToObject(d, "classes");
    for (uint32_t y = 0; y < K; y++) cJSON_AddItemToArray(cn, cJSON_CreateString(model_class(m, (int)y)));
    cJSON_AddItemToObject(d, "misclassified", mis);
  }
  free(pred);
  free(probs);
  free(conf);
  srv_data_put(r->S->data, m->dataset, NN_SPLIT_TEST);
  if (!d) {
    srv_model_unref(m);
    return send_error(r, 500, "out of memory");
  }
  char *s = cJSON_PrintUnformatted(d);
  cJSON_Delete(d);
  if (s) srv_models_eval_set(r->S->models, m, s);
  srv_model_unref(m);
  if (!s) return send_error(r, 500, "out of memory");
  return send_buf(r, 200, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE);
}

/* ---- metrics */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->p && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap ? b->cap * 2 : 8192) + (size_t)n;
    char *p = realloc(b->p, cap);
    if (!p) return;
    b->p = p;
    b->cap = cap;
  }
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
  const char *inm = header(r, "If-None-Match");
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

static enum MHD_Result h_static(req *r) {
  const char *path = !strcmp(r->url, "/") ? "/index.html" : r->url;
  if (!safe_path(path)) return send_error(r, 404, "not found: " QUOTE, r->url);
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
      return send_error(r, 404, "not found: " QUOTE, r->url);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
      free(buf);
      return send_error(r, 500, "could not read %s", path);
    }
    char etag[48];
    snprintf(etag, sizeof etag, "\"%lx-%lx\"", (unsigned long)st.st_mtime,
             (unsigned long)st.st_size);
    return send_asset(r, path, buf, (size_t)st.st_size, etag, MHD_RESPMEM_MUST_FREE);
  }
  const srv_asset *a = srv_asset_find(path);
  if (!a) return send_error(r, 404, "not found: " QUOTE, r->url);
  return send_asset(r, path, a->data, a->len, a->etag, MHD_RESPMEM_PERSISTENT);
}

/* ---------------------------------------------------------------- routing */

static enum MHD_Result h_metrics(req *r);

static const route ROUTES[] = {
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/readyz", h_readyz, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/v1/datasets", h_datasets, 0},
    {"POST", "/v1/datasets", h_dataset_create, 1},
    {"GET", "/v1/datasets/:name", h_dataset, 0},
    {"DELETE", "/v1/datasets/:name", h_dataset_delete, 1},
    {"GET", "/v1/datasets/:name/samples/random", h_dataset_sample, 0},
    {"POST", "/v1/jobs", h_job_create, 1},
    {"GET", "/v1/jobs", h_jobs, 0},
    {"GET", "/v1/jobs/:id", h_job, 0},
    {"GET", "/v1/jobs/:id/events", h_job_events, 0},
    {"POST", "/v1/jobs/:id/cancel", h_job_cancel, 1},
    {"POST", "/v1/models/mnist:predict", h_tfs_predict, 0},
    {"GET", "/v1/models", h_models, 0},
    {"GET", "/v1/models/:id", h_model, 0},
    {"DELETE", "/v1/models/:id", h_model_delete, 1},
    {"GET", "/v1/models/:id/file", h_model_file, 0},
    {"GET", "/v1/models/:id/evaluation", h_evaluation, 0},
    {"POST", "/v1/models/:id/activate", h_model_activate, 1},
    {"POST", "/v1/predict", h_predict, 0},
    {"GET", "/v1/samples/random", h_sample, 0},
};
static const size_t N_ROUTES = sizeof ROUTES / sizeof *ROUTES;


static enum MHD_Result h_metrics(req *r) {
  srv *S = r->S;
  sbuf b = {0};
  sb_printf(&b, "# HELP mnistd_http_requests_total HTTP requests by route and status.\n"
                "# TYPE mnistd_http_requests_total counter\n");
  for (size_t i = 0; i < SRV_MAX_ROUTES + 2; i++) {
    char name[96];
    if (i < N_ROUTES) snprintf(name, sizeof name, "%s %s", ROUTES[i].method, ROUTES[i].pattern);
    else snprintf(name, sizeof name, "%s", i == ROUTE_STATIC ? "GET static" : "unmatched");
    for (int st = 100; st < 600; st++) {
      unsigned long v = atomic_load(&S->metrics.requests[i][st]);
      if (v) sb_printf(&b, "mnistd_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n", name,
                       st, v);
    }
  }
  sb_printf(&b, "# HELP mnistd_http_requests_aborted_total Requests whose client left before "
                "an answer.\n# TYPE mnistd_http_requests_aborted_total counter\n");
  for (size_t i = 0; i < SRV_MAX_ROUTES + 2; i++) {
    unsigned long v = atomic_load(&S->metrics.aborted[i]);
    if (!v) continue;
    char name[96];
    if (i < N_ROUTES) snprintf(name, sizeof name, "%s %s", ROUTES[i].method, ROUTES[i].pattern);
    else snprintf(name, sizeof name, "%s", i == ROUTE_STATIC ? "GET static" : "unmatched");
    sb_printf(&b, "mnistd_http_requests_aborted_total{route=\"%s\"} %lu\n", name, v);
  }
  static const char *edges[SRV_LAT_BUCKETS] = {"0.0001", "0.00025", "0.0005", "0.001",
                                               "0.0025", "0.005",   "0.01",   "0.025",
                                               "0.05",   "0.1",     "0.25",   "1"};
  sb_printf(&b, "# HELP mnistd_predict_duration_seconds Time to answer POST /v1/predict.\n"
                "# TYPE mnistd_predict_duration_seconds histogram\n");
  for (int i = 0; i < SRV_LAT_BUCKETS; i++)
    sb_printf(&b, "mnistd_predict_duration_seconds_bucket{le=\"%s\"} %lu\n", edges[i],
              atomic_load(&S->metrics.lat_buckets[i]));
  unsigned long cnt = atomic_load(&S->metrics.lat_count);
  sb_printf(&b, "mnistd_predict_duration_seconds_bucket{le=\"+Inf\"} %lu\n", cnt);
  sb_printf(&b, "mnistd_predict_duration_seconds_sum %.9f\n",
            atomic_load(&S->metrics.lat_sum_ns) * 1e-9);
  sb_printf(&b, "mnistd_predict_duration_seconds_count %lu\n", cnt);
  sb_printf(&b, "# HELP mnistd_predictions_total Images classified.\n"
                "# TYPE mnistd_predictions_total counter\nmnistd_predictions_total %lu\n",
            atomic_load(&S->metrics.predictions));
  int counts[SRV_JOB_NSTATES];
  double sps;
  uint64_t total;
  srv_jobs_counts(S->jobs, counts, &sps, &total);
  sb_printf(&b, "# HELP mnistd_jobs Training jobs by state.\n# TYPE mnistd_jobs gauge\n");
  for (int i = 0; i < SRV_JOB_NSTATES; i++)
    sb_printf(&b, "mnistd_jobs{state=\"%s\"} %d\n", srv_job_state_name((srv_job_state)i),
              counts[i]);
  sb_printf(&b,
            "# HELP mnistd_training_samples_per_second Training speed of the running jobs.\n"
            "# TYPE mnistd_training_samples_per_second gauge\n"
            "mnistd_training_samples_per_second %.1f\n"
            "# HELP mnistd_training_samples_total Images trained on since start.\n"
            "# TYPE mnistd_training_samples_total counter\n"
            "mnistd_training_samples_total %llu\n",
            sps, (unsigned long long)total);
  sb_printf(&b, "# HELP mnistd_sse_subscribers Open event streams.\n"
                "# TYPE mnistd_sse_subscribers gauge\nmnistd_sse_subscribers %d\n",
            srv_jobs_subscribers(S->jobs));
  sb_printf(&b, "# HELP mnistd_db_recovered 1 if a damaged database was moved aside at start"
                " (the log names the file).\n# TYPE mnistd_db_recovered gauge\n"
                "mnistd_db_recovered %d\n"
                "# HELP mnistd_models_recovered Model files registered again from disk at start.\n"
                "# TYPE mnistd_models_recovered gauge\nmnistd_models_recovered %d\n",
            srv_store_recovered(S->store, NULL, 0), srv_models_recovered(S->models));
  srv_model *m = srv_models_active(S->models);
  sb_printf(&b, "# HELP mnistd_active_model_info The model answering predictions.\n"
                "# TYPE mnistd_active_model_info gauge\n");
  if (m) {
    sb_printf(&b, "mnistd_active_model_info{id=\"%lld\",arch=\"%s\",dataset=\"%s\"} 1\n",
              (long long)m->id, m->arch, m->dataset);
    /* A model registered again from disk may have no known accuracy: then
     * no sample (never NaN). */
    if (isfinite(m->test_accuracy))
      sb_printf(&b,
                "# HELP mnistd_active_model_test_accuracy Test accuracy of the active model.\n"
                "# TYPE mnistd_active_model_test_accuracy gauge\n"
                "mnistd_active_model_test_accuracy %.6f\n",
                m->test_accuracy);
    srv_model_unref(m);
  }
  nn_backend_info bi;
  nn_backend_info_get(&bi);
  sb_printf(&b, "# HELP mnistd_build_info Version and the matrix-product kernels in use.\n"
                "# TYPE mnistd_build_info gauge\n"
                "mnistd_build_info{version=\"%s\",onednn=\"%s\",isa=\"%s\",kernel=\"%s\"} 1\n",
            NN_VERSION, bi.library, bi.isa, bi.kernel);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  sb_printf(&b, "# HELP mnistd_start_time_seconds Unix time the daemon started.\n"
                "# TYPE mnistd_start_time_seconds gauge\nmnistd_start_time_seconds %.3f\n",
            S->started_ms / 1000.0);
  if (!b.p) return send_error(r, 500, "out of memory");
  return send_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len,
                  MHD_RESPMEM_MUST_FREE);
}

size_t srv_routes(const srv_route_info **out) {
  static srv_route_info info[sizeof ROUTES / sizeof *ROUTES];
  for (size_t i = 0; i < N_ROUTES; i++)
    info[i] = (srv_route_info){ROUTES[i].method, ROUTES[i].pattern, ROUTES[i].mutating};
  *out = info;
  return N_ROUTES;
}

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
      if (parse_dec(num, INT64_MAX, &v) || v == 0) return 0;
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
  const char *h = header(r, MHD_HTTP_HEADER_AUTHORIZATION);
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
    if (parse_dec(port, 65535, &v)) return 0;
  }
  return 1;
}

/* DNS rebinding: a page on evil.example can make its own name resolve to
 * 127.0.0.1; the browser then sends Host: evil.example. On loopback only
 * loopback names are served, unless --allow-host lists more. */
static int host_ok(req *r) {
  if (!r->S->loopback) return 1;
  const char *h = header(r, MHD_HTTP_HEADER_HOST);
  if (!h) return 1; /* HTTP/1.0 without Host: not a browser */
  if (srv_host_is_loopback(h)) return 1;
  size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":");
  return r->S->cfg.allow_host[0] && in_list(r->S->cfg.allow_host, h, n);
}

/* Browsers send Origin on every cross-site POST/DELETE. A request is
 * same-origin when Origin is http(s)://<the Host it was sent to>. No
 * Origin: not a browser (curl, scripts), allowed. */
static int origin_ok(req *r) {
  const char *o = header(r, "Origin");
  if (!o) return 1;
  if (r->S->cfg.allow_origin[0] && in_list(r->S->cfg.allow_origin, o, strlen(o))) return 1;
  const char *h = header(r, MHD_HTTP_HEADER_HOST);
  if (!h || !*h) return 0;
  const char *rest = !strncasecmp(o, "http://", 7) ? o + 7 : !strncasecmp(o, "https://", 8) ? o + 8 : NULL;
  return rest && !strcasecmp(rest, h);
}

static enum MHD_Result dispatch_first(req *r) {
  const char *path = r->url;
  int path_known = 0;
  char allow[64] = "";
  for (size_t i = 0; i < N_ROUTES; i++) {
    int64_t id = 0;
    if (!match(ROUTES[i].pattern, path, &id, r->name, sizeof r->name)) continue;
    path_known = 1;
    const char *m = ROUTES[i].method;
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
    return send_405(r, allow, QUOTE " is not allowed here; use %s", r->method, allow);
  if (!strncmp(path, "/v1/", 4) || !strcmp(path, "/v1"))
    return send_error(r, 404, "no such endpoint: " QUOTE " " QUOTE " (see the README's API reference)",
                      r->method, path);
  if (strcmp(r->method, "GET") && strcmp(r->method, "HEAD"))
    return send_405(r, "GET, HEAD", QUOTE " is not allowed on static files; use GET or HEAD",
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
  if (atomic_load(&S->stopping)) return send_error(r, 503, "the server is shutting down");
  if (r->bad_target == 400)
    return send_error(r, 400, "the request target contains %%00 (a NUL byte): " QUOTE,
                      r->raw ? r->raw : "");
  if (r->bad_target == 414)
    return send_error(r, 414, "more than %d query parameters", SRV_MAX_QUERY_PARAMS);
  if (!host_ok(r))
    return send_error(r, 403,
                      "Host " QUOTE " is not a loopback name; this server listens on loopback "
                      "and refuses other names (DNS rebinding). Use http://127.0.0.1 or "
                      "localhost, or start it with --allow-host NAME",
                      header(r, MHD_HTTP_HEADER_HOST));
  if (dispatch_first(r) != MHD_YES || r->status) return r->status ? MHD_YES : MHD_NO;
  if (r->route < (int)N_ROUTES && ROUTES[r->route].mutating) {
    if (!origin_ok(r))
      return send_error(r, 403,
                        "cross-origin request from " QUOTE " refused; pages on other origins "
                        "may not change this server (start it with --allow-origin ORIGIN to "
                        "allow one)",
                        header(r, "Origin"));
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
    if (ROUTES[r->route].h == h_dataset_create) return dataset_upload_head(r);
    if (media_type(r, ct, sizeof ct)[0] && strcmp(ct, "application/json")) return need_json(r);
  }
  const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
  uint64_t clv;
  if (cl && !parse_dec(cl, UINT64_MAX, &clv) && clv > S->cfg.max_body)
    return send_error(r, 413, "the body is %llu bytes; this server accepts at most %zu",
                      (unsigned long long)clv, S->cfg.max_body);
  r->is_predict = r->route < (int)N_ROUTES && ROUTES[r->route].h == h_predict;
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
    return send_error(r, 413, "the body is larger than %zu bytes, this server's limit",
                      S->cfg.max_body);
  if (!r->body) {
    r->body = calloc(1, 1);
    if (!r->body) return MHD_NO;
  }
  if (r->route == ROUTE_STATIC) return h_static(r);
  return ROUTES[r->route].h(r);
}

void srv_log(const srv *S, const char *level, const char *msg) {
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
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s) fprintf(stderr, "%s\n", s);
    free(s);
  } else {
    fprintf(stderr, "%s.%03ldZ %s %s\n", t, ts.tv_nsec / 1000000, level, clean);
  }
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
  if (r->is_predict && st == 200) observe_latency(S, ms / 1e3);
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
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s) srv_log(S, "info", s);
    free(s);
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
