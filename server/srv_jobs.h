/* srv_jobs: training jobs — queue, runner, durable records, event streams.
 *
 * Jobs run on libuv's thread pool (uv_queue_work), at most max_running at
 * a time, the rest wait in id order. The training thread appends events
 * (state, progress at most 4/s, epoch, end) to the job's log, then signals
 * a uv_async; the loop thread wakes the streams waiting for them. Every
 * epoch ends with a checkpoint, so a job interrupted by a crash or a
 * shutdown resumes from its last finished epoch at the next start, and
 * replays exactly (same seed, same thread count); one interrupted after its
 * last epoch evaluates and finishes.
 *
 * Event ids increase strictly per job, across restarts too. state, epoch
 * and end events are durable: stored (the epoch event with its metrics row,
 * state and end with the job's final row, in one transaction) before they
 * are shown. progress events are not stored, but their ids are reserved in
 * the store ahead of use, so none is reused after a crash. Events of epochs
 * redone after a crash are dropped and come again under new ids.
 *
 * A cancel accepted for a running job wins over a shutdown that follows.
 * At open, checkpoints of finished jobs and temporary files of interrupted
 * saves are removed; the bootstrap job is not queued without MNIST data,
 * nor again after a bootstrap job failed or was cancelled.
 *
 * Functions may be called from any thread unless noted. */
#ifndef MNISTD_SRV_JOBS_H
#define MNISTD_SRV_JOBS_H

#include <cJSON.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "srv_registry.h"
#include "srv_store.h"
#include "srv_validate.h"

typedef enum {
  SRV_JOB_QUEUED = 0,
  SRV_JOB_RUNNING,
  SRV_JOB_SUCCEEDED,
  SRV_JOB_FAILED,
  SRV_JOB_CANCELLED,
  SRV_JOB_NSTATES
} srv_job_state;

/* "queued", "running", ...: a static string, never NULL. */
const char *srv_job_state_name(srv_job_state s);
/* -1 for an unknown name. */
int srv_job_state_parse(const char *name);

typedef struct srv_jobs srv_jobs;

typedef struct srv_jobs_options {
  const char *state_dir;
  int max_running;      /* >= 1 */
  int train_threads;    /* threads per job */
  int bootstrap;        /* queue the seed's job when there is no model */
  void (*log)(const char *msg);
} srv_jobs_options;

/* Loads the job records, marks interrupted jobs for resumption and queues
 * the bootstrap job if asked and needed. Call on the loop thread before
 * uv_run; scheduling starts when the loop runs. */
int srv_jobs_open(srv_jobs **out, uv_loop_t *loop, srv_store *st, srv_models *models,
                  srv_data *data, const srv_jobs_options *opt);
/* Optional: cb is told every job state change once it is shown on the
 * job's stream (called under the jobs lock: it must not call back into the
 * jobs). Set it before the loop runs. */
void srv_jobs_set_notify(srv_jobs *J, void (*cb)(void *u, int64_t job, const char *state),
                         void *u);
/* Closes the libuv handles (loop thread, once srv_jobs_idle) so uv_run
 * can return. */
void srv_jobs_close_handles(srv_jobs *J);
/* Frees everything; call after srv_jobs_close_handles and after the loop
 * has run their close callbacks (uv_run until it returns), also on a
 * start-up that failed before serving. */
void srv_jobs_close(srv_jobs *J);

/* Starts stopping (loop thread): running jobs stop at the next batch and
 * stay "running" in the store so they resume at the next start; streams
 * end. */
void srv_jobs_shutdown(srv_jobs *J);
/* 1 once no job runs (after srv_jobs_shutdown: time to close), else 0. */
int srv_jobs_idle(srv_jobs *J);

/* Queues a job; *id receives its id. -ENOENT when its uploaded data set
 * is unknown (or being deleted), -EIO/-ENOSPC from the store. */
int srv_jobs_submit(srv_jobs *J, const srv_job_config *cfg, int64_t *id);
/* Deletes an uploaded data set unless a queued or running job names it
 * (-EBUSY, *job = that job), decided under the jobs lock so that a job
 * submitted at the same moment either sees the set or is refused; else as
 * srv_data_delete (-ENOENT, -EIO). The disk work (record, file, fsync)
 * runs after the jobs lock is released; meanwhile the set is neither
 * listed nor found and its name stays taken. */
int srv_jobs_dataset_delete(srv_jobs *J, const char *name, int64_t *job);
/* Asks a queued or running job to stop: 0, -ENOENT, or -EALREADY when the
 * job has already finished. A queued job, or a running one whose runner
 * could not record its end (stranded), ends cancelled here; a running job
 * stops at its next batch. -ENOSPC/-EIO: the request (or that end) could not
 * be recorded; a running job stops all the same, but a restart before its
 * end is on record would resume it. */
int srv_jobs_cancel(srv_jobs *J, int64_t id);

/* JSON views (caller frees with cJSON_Delete). NULL if the job is unknown. */
cJSON *srv_jobs_json(srv_jobs *J, int64_t id);
/* Newest first; state < 0 means any; at most limit. */
cJSON *srv_jobs_list_json(srv_jobs *J, int state, int limit);

/* Numbers for /metrics and /readyz. */
void srv_jobs_counts(srv_jobs *J, int counts[SRV_JOB_NSTATES], double *samples_per_second,
                     uint64_t *samples_total);
/* A sentence about the job that will produce the first model, for /readyz
 * (empty when none runs or waits). */
void srv_jobs_pending_note(srv_jobs *J, char *buf, size_t len);

/* Formats a Unix time in milliseconds as "2026-11-27T03:00:00Z" into buf
 * (at least 21 bytes) and returns buf. */
char *srv_iso8601(int64_t ms, char *buf, size_t len);

/* ---- event streams */
typedef struct srv_sub srv_sub;

/* Parses a Last-Event-ID value: decimal digits only, surrounding spaces and
 * tabs ignored (RFC 9110 field-value whitespace), at most 2^53-1 (ids are
 * JSON numbers in ndjson). -EINVAL for anything else (a sign, "-1", an
 * overflow, an empty value). */
int srv_parse_event_id(const char *s, uint64_t *out);

/* Subscribes to a job's events with ids > last_id (0 = from the start).
 * wake(ctx) is called, from any thread, when a stream that reported "no
 * data now" has data again. -ENOENT for an unknown job. */
int srv_sub_open(srv_jobs *J, int64_t job, uint64_t last_id, int ndjson,
                 void (*wake)(void *ctx), void *ctx, srv_sub **out);
/* Copies the next bytes of the stream into buf. Returns > 0 bytes; 0 when
 * nothing is ready — then suspend(ctx) has been called under the jobs lock
 * and wake(ctx) will follow; -1 at the end of the stream. Comment lines
 * keep idle streams alive every 15 s. */
ssize_t srv_sub_read(srv_sub *s, char *buf, size_t max, void (*suspend)(void *ctx));
void srv_sub_close(srv_sub *s);
/* Number of open streams. */
int srv_jobs_subscribers(srv_jobs *J);

#endif
