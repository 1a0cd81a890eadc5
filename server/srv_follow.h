/* srv_follow: a read-only replica's follower (mnistd serve --follow URL).
 *
 * One thread keeps the replica's registry (srv_models_open_replica) holding
 * the primary's active model:
 *   1. GET URL/v1/models/active (If-None-Match: the ETag it has). A new
 *      model id: GET URL/v1/models/ID/file, check its length and the
 *      X-Checksum-Sha256 header (hex SHA-256 of the body, sent by every
 *      mnistd for the native file) before nn_model_load_mem (which checks
 *      the file's own CRC), then srv_models_install: the same pointer swap
 *      as an activation. Nothing is written to disk.
 *   2. GET URL/v1/events (SSE) and re-check on every "hello", "sync" and
 *      "model.activated" event, so a new model arrives within one round
 *      trip and one download of its activation.
 *   3. When the stream cannot be had (an older primary, a proxy) it polls
 *      step 1 every second; when the primary is unreachable it retries with
 *      exponential backoff from 250 ms up to 5 s, and keeps serving the
 *      model it has. The log gets one line per change of state (up/down,
 *      model installed, a download refused), never one per retry.
 *
 * The HTTP client is minimal and strict: http:// only, HTTP/1.0 requests
 * (no chunked bodies), heads up to 16 KiB, JSON bodies up to 1 MiB, model
 * files up to 256 MiB, 3 s to connect, 10 s of silence on a request and
 * 45 s on the event stream (the primary sends a comment every 15 s). */
#ifndef MNISTD_SRV_FOLLOW_H
#define MNISTD_SRV_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include "srv_registry.h"

typedef struct srv_follow srv_follow;

/* Parses url ("http://HOST[:PORT]", a trailing '/' allowed; default port
 * 80). token, if not NULL or empty, is sent as a Bearer token. log gets one
 * line per state change, from the follower's thread. Returns 0, -EINVAL
 * with a sentence in msg, or -ENOMEM. Nothing runs until srv_follow_start. */
int srv_follow_create(srv_follow **out, const char *url, const char *token, srv_models *models,
                      void (*log)(const char *level, const char *msg), char *msg, size_t msglen);
/* Starts the thread: 0 or a negative errno. */
int srv_follow_start(srv_follow *F);
/* Stops the thread (interrupts a download or the stream) and frees F;
 * NULL is a no-op. */
void srv_follow_free(srv_follow *F);

/* The primary's URL as given (for messages). */
const char *srv_follow_url(const srv_follow *F);
/* Prometheus lines (mnistd_primary_up, mnistd_follow_model,
 * mnistd_follow_last_sync_seconds, mnistd_follow_syncs_total,
 * mnistd_follow_failures_total) into buf, NUL-terminated, cut at len. */
void srv_follow_metrics(srv_follow *F, char *buf, size_t len);
/* Why there is no model yet, for /readyz and predictions (one sentence). */
void srv_follow_note(srv_follow *F, char *buf, size_t len);

/* True when a replica must refuse this route: every mutating route, and the
 * routes that read records only the primary keeps (jobs, model files). */
int srv_follow_refuses(const char *method, const char *pattern, int mutating);

/* SHA-256 of buf as 64 lower-case hex digits and a NUL into hex[65]. */
void srv_sha256_hex(const void *buf, size_t len, char hex[65]);
/* The same for a file descriptor, read from offset 0 (pread: the file
 * position is left alone). 0 or a negative errno. */
int srv_sha256_fd_hex(int fd, char hex[65]);

#endif
