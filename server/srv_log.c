/* The log: one line per message, text or JSON (--log-format). */
#include "srv.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_util.h"

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

void srv_log_request(const srv *S, const char *method, const char *target, int st, double ms,
                     int aborted) {
  if (S->cfg.log_json) {
    char m[64], path[1100];
    srv_text_clean(m, sizeof m, method, strlen(method), SRV_CLEAN_JSON);
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
    snprintf(line, sizeof line, "%.64s %.300s %s %.2fms%s", method, target, status, ms,
             aborted ? " (aborted)" : "");
    srv_log(S, "info", line);
  }
}
