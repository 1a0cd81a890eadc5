/* Open connections and the request-head deadline (srv_conns.h). */
#include "srv_conns.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/* Open connections and since when each has been waiting for a complete
 * request head (0: a request is being handled; on a kept-alive connection
 * the clock starts later, see srv_conns_answered). A watchdog thread shuts
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

void srv_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
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

void srv_conns_free(struct srv_conns *C) {
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

int srv_conns_create(srv *S) {
  struct srv_conns *C = calloc(1, sizeof *C);
  if (!C) return -ENOMEM;
  pthread_mutex_init(&C->mu, NULL);
  pthread_cond_init(&C->cv, NULL);
  C->head.next = C->head.prev = &C->head;
  C->timeout_ms = (int64_t)S->cfg.head_timeout * 1000;
  S->conns = C;
  return 0;
}


int srv_conns_start(struct srv_conns *C) {
  int rc = pthread_create(&C->watchdog, NULL, watchdog, C);
  if (rc) return -rc;
  C->running = 1;
  return 0;
}

void srv_conns_head_done(struct MHD_Connection *conn) {
  conn_state *cs = conn_of(conn);
  if (cs) atomic_store(&cs->head_since_ms, 0);
}

void srv_conns_answered(struct MHD_Connection *conn, int64_t grace_ms) {
  conn_state *cs = conn_of(conn);
  if (cs) atomic_store(&cs->head_since_ms, mono_ms() + grace_ms);
}
