/* The daemon-wide event stream: a ring of recent events and the open
 * streams reading it (see srv_events.h). */
#include "srv_events.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEARTBEAT_MS 15000

typedef struct ev {
  uint64_t id;
  char type[32];
  char *data;
} ev;

struct srv_events_sub {
  srv_events *E;
  srv_events_sub *next;
  uint64_t last;
  char *pending;
  size_t pending_len, pending_off;
  int waiting, heartbeat;
  void (*wake)(void *);
  void *ctx;
};

struct srv_events {
  pthread_mutex_t mu;
  uint64_t base, seq;
  ev ring[SRV_EVENTS_KEEP];   /* ring[seq % KEEP] holds event seq (1-based) */
  srv_events_sub *subs;
  int n_subs, closing;
  uv_timer_t timer;
  int timer_on;
};

int srv_events_create(srv_events **out, int64_t started_ms) {
  srv_events *E = calloc(1, sizeof *E);
  if (!E) return -ENOMEM;
  pthread_mutex_init(&E->mu, NULL);
  E->base = (uint64_t)(started_ms > 0 ? started_ms : 1) * 1000;
  *out = E;
  return 0;
}

static void wake_all_locked(srv_events *E, int heartbeat) {
  for (srv_events_sub *s = E->subs; s; s = s->next) {
    if (heartbeat) s->heartbeat = 1;
    if (s->waiting) {
      s->waiting = 0;
      s->wake(s->ctx);
    }
  }
}

static void on_timer(uv_timer_t *t) {
  srv_events *E = t->data;
  pthread_mutex_lock(&E->mu);
  wake_all_locked(E, 1);
  pthread_mutex_unlock(&E->mu);
}

int srv_events_start(srv_events *E, uv_loop_t *loop) {
  int rc = uv_timer_init(loop, &E->timer);
  if (rc) return rc;
  E->timer.data = E;
  E->timer_on = 1;
  uv_timer_start(&E->timer, on_timer, HEARTBEAT_MS, HEARTBEAT_MS);
  uv_unref((uv_handle_t *)&E->timer);
  return 0;
}

static void close_noop(uv_handle_t *h) { (void)h; }

void srv_events_close_handles(srv_events *E) {
  if (!E || !E->timer_on) return;
  E->timer_on = 0;
  uv_close((uv_handle_t *)&E->timer, close_noop);
}

void srv_events_free(srv_events *E) {
  if (!E) return;
  for (size_t i = 0; i < SRV_EVENTS_KEEP; i++) free(E->ring[i].data);
  pthread_mutex_destroy(&E->mu);
  free(E);
}

void srv_events_publish(srv_events *E, const char *type, const char *data) {
  if (!E) return;
  char *d = strdup(data);
  if (!d) return;
  pthread_mutex_lock(&E->mu);
  uint64_t seq = ++E->seq;
  ev *e = &E->ring[seq % SRV_EVENTS_KEEP];
  free(e->data);
  e->id = E->base + seq;
  snprintf(e->type, sizeof e->type, "%s", type);
  e->data = d;
  wake_all_locked(E, 0);
  pthread_mutex_unlock(&E->mu);
}

void srv_events_model_activated(void *E, int64_t model_id) {
  char d[64];
  snprintf(d, sizeof d, "{\"model\":%lld}", (long long)model_id);
  srv_events_publish(E, "model.activated", d);
}

void srv_events_job_state(void *E, int64_t job_id, const char *state) {
  char d[128];
  snprintf(d, sizeof d, "{\"job\":%lld,\"state\":\"%.32s\"}", (long long)job_id, state);
  srv_events_publish(E, "job.state", d);
}

void srv_events_shutdown(srv_events *E) {
  if (!E) return;
  pthread_mutex_lock(&E->mu);
  E->closing = 1;
  wake_all_locked(E, 0);
  pthread_mutex_unlock(&E->mu);
}

static char *frame(uint64_t id, const char *type, const char *data, size_t *len) {
  size_t n = strlen(type) + strlen(data) + 64;
  char *b = malloc(n);
  if (!b) return NULL;
  int w = snprintf(b, n, "id: %llu\nevent: %s\ndata: %s\n\n", (unsigned long long)id, type, data);
  *len = w < 0 ? 0 : (size_t)w < n ? (size_t)w : n - 1;
  return b;
}

int srv_events_sub_open(srv_events *E, uint64_t last_id, const char *hello,
                        void (*wake)(void *), void *ctx, srv_events_sub **out) {
  srv_events_sub *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->E = E;
  s->wake = wake;
  s->ctx = ctx;
  pthread_mutex_lock(&E->mu);
  uint64_t newest = E->base + E->seq, oldest_kept = E->base + 1;
  if (E->seq > SRV_EVENTS_KEEP) oldest_kept = newest - SRV_EVENTS_KEEP + 1;
  /* A cursor we can serve from the ring, or else only what comes next
   * (after a "sync" telling the client it missed events). */
  int resume = last_id && last_id + 1 >= oldest_kept && last_id <= newest;
  s->last = resume ? last_id : newest;
  /* The first frame: hello (and sync when the client asked for events we
   * cannot give), with the newest id so a client can resume from it. */
  size_t n1 = 0, n2 = 0;
  char *a = frame(newest, "hello", hello, &n1);
  char *b = last_id && !resume ? frame(newest, "sync", "{}", &n2) : NULL;
  if (!a || (last_id && !resume && !b)) {
    pthread_mutex_unlock(&E->mu);
    free(a);
    free(b);
    free(s);
    return -ENOMEM;
  }
  if (b) {
    char *c = realloc(a, n1 + n2 + 1);
    if (!c) {
      pthread_mutex_unlock(&E->mu);
      free(a);
      free(b);
      free(s);
      return -ENOMEM;
    }
    memcpy(c + n1, b, n2 + 1);
    a = c;
    n1 += n2;
    free(b);
  }
  s->pending = a;
  s->pending_len = n1;
  s->next = E->subs;
  E->subs = s;
  E->n_subs++;
  pthread_mutex_unlock(&E->mu);
  *out = s;
  return 0;
}

ssize_t srv_events_sub_read(srv_events_sub *s, char *buf, size_t max, void (*suspend)(void *)) {
  srv_events *E = s->E;
  ssize_t out = 0;
  pthread_mutex_lock(&E->mu);
  if (!s->pending || s->pending_off == s->pending_len) {
    free(s->pending);
    s->pending = NULL;
    s->pending_len = s->pending_off = 0;
    uint64_t newest = E->base + E->seq;
    if (s->last < newest) {
      uint64_t seq = s->last - E->base + 1;
      if (E->seq - seq >= SRV_EVENTS_KEEP) seq = E->seq - SRV_EVENTS_KEEP + 1; /* fell behind */
      const ev *e = &E->ring[seq % SRV_EVENTS_KEEP];
      s->pending = frame(e->id, e->type, e->data, &s->pending_len);
      s->last = e->id;
      if (!s->pending) out = -1;
    } else if (E->closing) {
      out = -1;
    } else if (s->heartbeat) {
      s->heartbeat = 0;
      s->pending = strdup(": heartbeat\n\n");
      s->pending_len = s->pending ? strlen(s->pending) : 0;
    } else {
      s->waiting = 1;
      suspend(s->ctx);
    }
  }
  if (out == 0 && s->pending) {
    size_t n = s->pending_len - s->pending_off;
    if (n > max) n = max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    out = (ssize_t)n;
  }
  pthread_mutex_unlock(&E->mu);
  return out;
}

void srv_events_sub_close(srv_events_sub *s) {
  if (!s) return;
  srv_events *E = s->E;
  pthread_mutex_lock(&E->mu);
  for (srv_events_sub **pp = &E->subs; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  E->n_subs--;
  pthread_mutex_unlock(&E->mu);
  free(s->pending);
  free(s);
}

int srv_events_subscribers(srv_events *E) {
  if (!E) return 0;
  pthread_mutex_lock(&E->mu);
  int n = E->n_subs;
  pthread_mutex_unlock(&E->mu);
  return n;
}
