/* The static files: the embedded page (srv_assets.h) or, with --web-dir,
 * web/ from disk for development. The fallback for every GET no route
 * takes; a handler like the others (srv_route.h). */
#include "srv_route.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "srv_assets.h"

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

static int send_asset(req *r, srv_resp *res, const char *path, const void *data, size_t len,
                      const char *etag, int owned) {
  const char *inm = srv_header(r, "If-None-Match");
  const char *type = type_of(path);
  if (inm && etag && !strcmp(inm, etag)) {
    if (owned) free((void *)data);
    srv_resp_not_modified(res, etag);
    res->type = type;
  } else {
    srv_resp_buf(res, 200, type, data, len, owned);
    if (etag) srv_resp_header(res, "ETag", etag);
  }
  /* Revalidate every time: the ETag makes that a cheap 304, and a new
   * binary never serves stale scripts. */
  srv_resp_header(res, "Cache-Control", "no-cache");
  if (!strncmp(type, "text/html", 9)) {
    srv_resp_header(res, "Content-Security-Policy", CSP);
    srv_resp_header(res, "X-Frame-Options", "DENY");
    srv_resp_header(res, "Referrer-Policy", "no-referrer");
  }
  return res->status;
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

int h_static(req *r, srv_resp *res) {
  const char *path = !strcmp(r->url, "/") ? "/index.html" : r->url;
  if (!safe_path(path)) return srv_resp_error(res, 404, "not found: " QUOTE, r->url);
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
      return srv_resp_error(res, 404, "not found: " QUOTE, r->url);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t got = buf ? read(fd, buf, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
      free(buf);
      return srv_resp_error(res, 500, "could not read %s", path);
    }
    char etag[48];
    snprintf(etag, sizeof etag, "\"%lx-%lx\"", (unsigned long)st.st_mtime,
             (unsigned long)st.st_size);
    return send_asset(r, res, path, buf, (size_t)st.st_size, etag, 1);
  }
  const srv_asset *a = srv_asset_find(path);
  if (!a) return srv_resp_error(res, 404, "not found: " QUOTE, r->url);
  return send_asset(r, res, path, a->data, a->len, a->etag, 0);
}
