/* srv_events: the daemon-wide event stream (GET /v1/events).
 *
 * One hub per daemon. Publishers (the model registry when the active model
 * changes, the jobs when a job changes state) append an event; every open
 * stream gets the events with ids above its cursor, in order. The last
 * SRV_EVENTS_KEEP events are kept in memory for reconnecting clients
 * (Last-Event-ID); events are not stored.
 *
 * Event ids are never reused, across restarts too, without a database:
 * id = (start time of the daemon in ms) * 1000 + sequence number. A later
 * start has a larger base as long as the wall clock does not step back
 * and a run stays under 1000 events per millisecond of its life. A client
 * whose Last-Event-ID is older than what is kept (or from another run)
 * first gets a "sync" event: it missed something and should re-read the
 * state (GET /v1/models/active). Every stream starts with a "hello" event
 * naming the active model, so a follower never needs a second request.
 *
 * Functions may be called from any thread. */
#ifndef MNISTD_SRV_EVENTS_H
#define MNISTD_SRV_EVENTS_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define SRV_EVENTS_KEEP 256

typedef struct srv_events srv_events;
typedef struct srv_events_sub srv_events_sub;

/* Creates the hub; started_ms is the daemon's start time (the id base).
 * Returns 0 or -ENOMEM. Free with srv_events_free (NULL is a no-op). */
int srv_events_create(srv_events **out, int64_t started_ms);
/* Starts the 15 s heartbeat timer on loop (loop thread). The timer does not
 * keep the loop alive; srv_events_close_handles closes it. */
int srv_events_start(srv_events *E, uv_loop_t *loop);
void srv_events_close_handles(srv_events *E);
void srv_events_free(srv_events *E);

/* Appends an event; data is a JSON object text (copied). Wakes streams.
 * Silently drops the event when memory is short (streams then miss it;
 * the next "hello"/"sync" carries the state). */
void srv_events_publish(srv_events *E, const char *type, const char *data);
/* Publishing helpers with the daemon's event shapes:
 * model.activated {"model":ID}, job.state {"job":ID,"state":"..."}. The
 * signatures fit the registry's and the jobs' notification hooks. */
void srv_events_model_activated(void *E, int64_t model_id);
void srv_events_job_state(void *E, int64_t job_id, const char *state);
/* Tells every stream to end (shutdown); new streams end at once. */
void srv_events_shutdown(srv_events *E);

/* Opens a stream with events after last_id (0: none before; only new
 * events). hello is the JSON text of the first event (copied). wake(ctx)
 * is called from any thread when a stream that read 0 has data again.
 * Returns 0 or -ENOMEM. */
int srv_events_sub_open(srv_events *E, uint64_t last_id, const char *hello,
                        void (*wake)(void *ctx), void *ctx, srv_events_sub **out);
/* Like srv_sub_read (srv_jobs.h): > 0 bytes copied, 0 when nothing is
 * ready (suspend(ctx) was called under the hub's lock; wake follows), -1
 * at the end of the stream. */
ssize_t srv_events_sub_read(srv_events_sub *s, char *buf, size_t max,
                            void (*suspend)(void *ctx));
void srv_events_sub_close(srv_events_sub *s);
/* Open streams. */
int srv_events_subscribers(srv_events *E);

#endif
