/* Filling a handler's answer (srv_route.h). Nothing here talks to
 * libmicrohttpd: the dispatcher in srv_http.c reads the filled srv_resp. */
#include "srv_route.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "srv_util.h"

void srv_resp_init(srv_resp *res) {
  memset(res, 0, sizeof *res);
  res->fd = -1;
}

void srv_resp_free(srv_resp *res) {
  cJSON_Delete(res->json);
  if (res->owned) free(res->data);
  if (res->fd >= 0) close(res->fd);
  if (res->stream) srv_stream_free(res->stream);
  srv_resp_init(res);
}

int srv_resp_json(srv_resp *res, int status, cJSON *doc) {
  res->status = status;
  res->kind = SRV_RESP_JSON;
  res->json = doc;
  res->cache = "no-store";
  return status;
}

/* The message is formatted into a bounded buffer (vsnprintf's return
 * value is never used as a length), made valid UTF-8 and clipped: it may
 * quote the method, path or a header. */
static int verror(srv_resp *res, int status, const char *fmt, va_list ap) {
  char raw[1024];
  vsnprintf(raw, sizeof raw, fmt, ap);
  res->status = status;
  res->kind = SRV_RESP_ERROR;
  res->err.code = status;
  srv_text_clean(res->err.message, sizeof res->err.message, raw, sizeof raw, SRV_CLEAN_JSON);
  res->cache = "no-store";
  return status;
}

int srv_resp_error(srv_resp *res, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(res, status, fmt, ap);
  va_end(ap);
  return status;
}

int srv_resp_405(srv_resp *res, const char *allow, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  verror(res, 405, fmt, ap);
  va_end(ap);
  srv_resp_header(res, "Allow", allow);
  return 405;
}

int srv_resp_buf(srv_resp *res, int status, const char *type, const void *data, size_t len,
                 int owned) {
  res->status = status;
  res->kind = SRV_RESP_BUF;
  res->type = type;
  res->data = (void *)data;
  res->len = len;
  res->owned = owned;
  return status;
}

int srv_resp_download(srv_resp *res, void *buf, size_t len, int fd, const char *disposition) {
  srv_resp_buf(res, 200, "application/octet-stream", fd >= 0 ? NULL : buf, len, fd < 0);
  if (fd >= 0) {
    res->kind = SRV_RESP_FILE;
    res->fd = fd;
  }
  srv_resp_header(res, "Content-Disposition", disposition);
  return 200;
}

int srv_resp_not_modified(srv_resp *res, const char *etag) {
  res->status = 304;
  res->kind = SRV_RESP_EMPTY;
  srv_resp_header(res, "ETag", etag);
  return 304;
}

int srv_resp_header(srv_resp *res, const char *name, const char *value) {
  if (res->n_hdr == SRV_RESP_MAX_HEADERS) return -ENOSPC;
  res->hdr[res->n_hdr].name = name;
  snprintf(res->hdr[res->n_hdr].value, sizeof res->hdr[0].value, "%s", value);
  res->n_hdr++;
  /* A JSON answer with an ETag may be kept and revalidated. One with a
   * Location (201, 202) has never said no-store either: kept as it was
   * (a refactor is no place to change what clients see). */
  if ((!strcmp(name, "ETag") || !strcmp(name, "Location")) && res->kind == SRV_RESP_JSON)
    res->cache = NULL;
  return 0;
}

int srv_need_json(req *r, srv_resp *res) {
  char ct[96];
  return srv_resp_error(res, 415,
                        "send the body as application/json (Content-Type: application/json; got "
                        QUOTE ")", srv_media_type(r, ct, sizeof ct)[0] ? ct : "no Content-Type");
}
