/* What the daemon's jobs (srv_jobs.c) and `mnistd train` (srv_cli.c) share
 * about training, so the two cannot drift: the trainer configuration made
 * from the user's choices, and the epoch record both print. */
#ifndef MNISTD_SRV_TRAIN_H
#define MNISTD_SRV_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

/* Fills *tc: core defaults, then the optimizer's defaults, then the given
 * choices. lr <= 0 or momentum < 0 keep the optimizer's default. Cannot
 * fail. */
void srv_train_config(nn_train_config *tc, nn_opt_kind opt, float lr, float momentum,
                      uint32_t batch_size, uint64_t seed, uint32_t threads);

/* Writes the epoch's JSON record (one line, no newline) into buf:
 * {"epoch","loss","accuracy","val_loss","val_accuracy","seconds",
 * "samples_per_second"} with fixed decimals. This exact text is the job's
 * stored epoch row, its "epoch" event and `mnistd train --json`'s line.
 * Returns the length, or -ENOSPC when buf is too small (256 bytes always
 * suffice). */
int srv_epoch_json(const nn_epoch_metrics *m, char *buf, size_t len);

#endif
