/* Training shared by the daemon's jobs and `mnistd train`. */
#include "srv_train.h"

#include <errno.h>
#include <stdio.h>

void srv_train_config(nn_train_config *tc, nn_opt_kind opt, float lr, float momentum,
                      uint32_t batch_size, uint64_t seed, uint32_t threads) {
  nn_train_defaults(tc);
  nn_opt_defaults(&tc->opt, opt);
  if (lr > 0) tc->opt.lr = lr;
  if (momentum >= 0) tc->opt.momentum = momentum;
  tc->batch_size = batch_size;
  tc->seed = seed;
  tc->threads = threads;
}

int srv_epoch_json(const nn_epoch_metrics *m, char *buf, size_t len) {
  int n = snprintf(buf, len,
                   "{\"epoch\":%u,\"loss\":%.6f,\"accuracy\":%.6f,\"val_loss\":%.6f,"
                   "\"val_accuracy\":%.6f,\"seconds\":%.4f,\"samples_per_second\":%.1f}",
                   m->epoch, (double)m->loss, (double)m->accuracy, (double)m->val_loss,
                   (double)m->val_accuracy, m->seconds, m->samples_per_second);
  return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}
