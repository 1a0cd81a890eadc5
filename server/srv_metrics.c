/* GET /metrics: Prometheus text built from the daemon's counters. */
#include "srv_route.h"
#include "srv_events.h"
#include "srv_follow.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* The one bucket table of the predict latency histogram: upper bounds in
 * seconds, printed with %g as the le labels. */
static const double lat_edges[SRV_LAT_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                  0.01,   0.025,   0.05,   0.1,   0.25,   1.0};

void srv_metrics_observe_latency(srv *S, double secs) {
  for (int i = 0; i < SRV_LAT_BUCKETS; i++)
    if (secs <= lat_edges[i]) atomic_fetch_add(&S->metrics.lat_buckets[i], 1);
  atomic_fetch_add(&S->metrics.lat_count, 1);
  atomic_fetch_add(&S->metrics.lat_sum_ns, (unsigned long)(secs * 1e9));
}

/* The metrics label of route slot i: a table row, static files, or none. */
static void route_label(size_t i, char *name, size_t len) {
  if (i < srv_route_count)
    snprintf(name, len, "%s %s", srv_route_table[i].method, srv_route_table[i].pattern);
  else snprintf(name, len, "%s", i == ROUTE_STATIC ? "GET static" : "unmatched");
}

int h_metrics(req *r, srv_resp *res) {
  srv *S = r->S;
  sbuf b = {0};
  sb_printf(&b, "# HELP mnistd_http_requests_total HTTP requests by route and status.\n"
                "# TYPE mnistd_http_requests_total counter\n");
  for (size_t i = 0; i < SRV_MAX_ROUTES + 2; i++) {
    char name[96];
    route_label(i, name, sizeof name);
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
    route_label(i, name, sizeof name);
    sb_printf(&b, "mnistd_http_requests_aborted_total{route=\"%s\"} %lu\n", name, v);
  }
  sb_printf(&b, "# HELP mnistd_predict_duration_seconds Time to answer POST /v1/predict.\n"
                "# TYPE mnistd_predict_duration_seconds histogram\n");
  for (int i = 0; i < SRV_LAT_BUCKETS; i++)
    sb_printf(&b, "mnistd_predict_duration_seconds_bucket{le=\"%g\"} %lu\n", lat_edges[i],
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
            srv_jobs_subscribers(S->jobs) + srv_events_subscribers(S->events));
  if (S->follow) {
    char fm[2048];
    srv_follow_metrics(S->follow, fm, sizeof fm);
    sb_printf(&b, "%s", fm);
  }
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
  sb_printf(&b, "# HELP mnistd_start_time_seconds Unix time the daemon started.\n"
                "# TYPE mnistd_start_time_seconds gauge\nmnistd_start_time_seconds %.3f\n",
            S->started_ms / 1000.0);
  if (!b.p) return srv_resp_error(res, 500, "out of memory");
  return srv_resp_buf(res, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len,
                  1);
}

