/* Open connections and the request-head deadline, against slowloris
 * (private to the HTTP front end, srv_http.c). Every connection is listed
 * with since when it has waited for a complete request head; a watchdog
 * thread shuts down the socket of any that waits longer than
 * --head-timeout. */
#ifndef SRV_CONNS_H
#define SRV_CONNS_H

#include <microhttpd.h>
#include <stdint.h>

#include "srv.h"

struct srv_conns;

/* Creates S->conns (deadline: S->cfg.head_timeout). 0 or -ENOMEM. */
int srv_conns_create(srv *S);
/* Starts the watchdog thread. 0 or a negative errno (the list still
 * works, without the deadline). */
int srv_conns_start(struct srv_conns *C);
/* Stops the watchdog and frees C (NULL is a no-op). Call after
 * libmicrohttpd has stopped. */
void srv_conns_free(struct srv_conns *C);
/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls: the srv):
 * lists a new connection with its clock running, unlists a closed one. */
void srv_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* A request head is complete on conn: its clock stops. */
void srv_conns_head_done(struct MHD_Connection *conn);
/* A request on conn was answered: the next head on this kept-alive
 * connection is due grace_ms after the head timeout. */
void srv_conns_answered(struct MHD_Connection *conn, int64_t grace_ms);

#endif
