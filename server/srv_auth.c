/* Who may ask: the API token, the Host check against DNS rebinding and
 * the Origin check against cross-site writes (srv_route.h). */
#include "srv_route.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "srv_util.h"

/* Authorization: Bearer <token>. The scheme is case-insensitive and
 * whitespace around the parts is allowed (RFC 9110 11.1, 11.6.2). */
int srv_token_ok(req *r) {
  const char *want = r->S->cfg.api_token;
  if (!want[0]) return 1;
  const char *h = srv_header(r, "Authorization");
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
int srv_host_ok(req *r) {
  if (!r->S->loopback) return 1;
  const char *h = srv_header(r, "Host");
  if (!h) return 1; /* HTTP/1.0 without Host: not a browser */
  if (srv_host_is_loopback(h)) return 1;
  size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":");
  return r->S->cfg.allow_host[0] && in_list(r->S->cfg.allow_host, h, n);
}

/* Browsers send Origin on every cross-site POST/DELETE. A request is
 * same-origin when Origin is http(s)://<the Host it was sent to>. No
 * Origin: not a browser (curl, scripts), allowed. */
int srv_origin_ok(req *r) {
  const char *o = srv_header(r, "Origin");
  if (!o) return 1;
  if (r->S->cfg.allow_origin[0] && in_list(r->S->cfg.allow_origin, o, strlen(o))) return 1;
  const char *h = srv_header(r, "Host");
  if (!h || !*h) return 0;
  const char *rest = !strncasecmp(o, "http://", 7) ? o + 7 : !strncasecmp(o, "https://", 8) ? o + 8 : NULL;
  return rest && !strcasecmp(rest, h);
}
