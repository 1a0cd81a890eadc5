/* Batch normalisation (Keras BatchNormalization, axis -1): per channel over
 * every sample and position of the batch. The trainer splits a batch into
 * shards, so the statistics are sums over all shards (nn_sync); sums are in
 * double and the variance takes a second pass over the centred values, so
 * neither a large mean nor a large batch costs precision. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* Sums len doubles over the shards, or copies them when there is one. */
static void shard_sum(nn_sync *sync, const double *part, double *total, size_t len) {
  if (sync) sync->sum(sync, part, total, len);
  else memcpy(total, part, len * sizeof *total);
}

void nn_bn_fwd(const nn_layer *l, const float *p, const float *x, uint32_t n, int batch_stats,
               nn_sync *sync, double *acc, float *stat, float *y) {
  const uint32_t c = l->ishape.c;
  const size_t rows = (size_t)n * l->ishape.h * l->ishape.w;
  const float *gamma = p, *beta = p + c;
  float *mean = stat, *inv = stat + c, *var = stat + 2 * c;
  double *part = acc, *tot = acc + 2 * (size_t)c + 1;
  if (batch_stats) {
    memset(part, 0, (c + 1) * sizeof *part);
    for (size_t r = 0; r < rows; r++)
      for (uint32_t k = 0; k < c; k++) part[k] += x[r * c + k];
    part[c] = (double)rows;
    shard_sum(sync, part, tot, c + 1);
    const double count = tot[c];
    for (uint32_t k = 0; k < c; k++) mean[k] = (float)(tot[k] / count);
    memset(part, 0, c * sizeof *part);
    for (size_t r = 0; r < rows; r++)
      for (uint32_t k = 0; k < c; k++) {
        double d = (double)x[r * c + k] - mean[k];
        part[k] += d * d;
      }
    shard_sum(sync, part, tot, c);
    for (uint32_t k = 0; k < c; k++) var[k] = (float)(tot[k] / count);
  } else {
    memcpy(mean, p + 2 * c, c * sizeof *mean);
    memcpy(var, p + 3 * c, c * sizeof *var);
  }
  for (uint32_t k = 0; k < c; k++) inv[k] = 1.0f / sqrtf(var[k] + l->epsilon);
  for (size_t r = 0; r < rows; r++)
    for (uint32_t k = 0; k < c; k++)
      y[r * c + k] = gamma[k] * ((x[r * c + k] - mean[k]) * inv[k]) + beta[k];
}

void nn_bn_bwd(const nn_layer *l, const float *p, const float *x, const float *dy, uint32_t n,
               int batch_stats, nn_sync *sync, double *acc, const float *stat, float *grad,
               float *dx) {
  const uint32_t c = l->ishape.c;
  const size_t rows = (size_t)n * l->ishape.h * l->ishape.w;
  const float *gamma = p, *mean = stat, *inv = stat + c;
  double *part = acc, *tot = acc + 2 * (size_t)c + 1;
  /* part: sum dy [c], sum dy * xhat [c], rows. */
  memset(part, 0, (2 * (size_t)c + 1) * sizeof *part);
  for (size_t r = 0; r < rows; r++)
    for (uint32_t k = 0; k < c; k++) {
      double g = dy[r * c + k];
      part[k] += g;
      part[c + k] += g * (double)((x[r * c + k] - mean[k]) * inv[k]);
    }
  part[2 * c] = (double)rows;
  shard_sum(sync, part, tot, 2 * (size_t)c + 1);
  float *dgamma = grad + l->w_off, *dbeta = grad + l->b_off;
  for (uint32_t k = 0; k < c; k++) {
    dbeta[k] = (float)tot[k];
    dgamma[k] = (float)tot[c + k];
  }
  /* The moving statistics are no parameters of the loss: a zero gradient,
   * so even an update over the whole block leaves them as they are. */
  memset(grad + l->b_off + c, 0, 2 * (size_t)c * sizeof *grad);
  if (!dx) return;
  if (!batch_stats) {
    /* Constant statistics: y is affine in x. */
    for (size_t r = 0; r < rows; r++)
      for (uint32_t k = 0; k < c; k++) dx[r * c + k] = dy[r * c + k] * gamma[k] * inv[k];
    return;
  }
  /* dx = gamma * inv * (dy - mean(dy) - xhat * mean(dy * xhat)), the means
   * over the whole batch. */
  const double count = tot[2 * c];
  for (uint32_t k = 0; k < c; k++) {
    part[k] = tot[k] / count;
    part[c + k] = tot[c + k] / count;
  }
  for (size_t r = 0; r < rows; r++)
    for (uint32_t k = 0; k < c; k++) {
      float xh = (x[r * c + k] - mean[k]) * inv[k];
      dx[r * c + k] =
          gamma[k] * inv[k] * (dy[r * c + k] - (float)part[k] - xh * (float)part[c + k]);
    }
}

void nn_bn_idle(const nn_model *m, nn_workspace *ws, int training, float *grad) {
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM)
      nn_bn_fwd(l, m->params + l->w_off, NULL, 0, training != 0, ws->sync, ws->bn_acc,
                ws->bn_stat[i], NULL);
  }
  for (uint32_t i = m->n_layers; i-- > 0;) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM)
      nn_bn_bwd(l, m->params + l->w_off, NULL, NULL, 0, training != 0, ws->sync, ws->bn_acc,
                ws->bn_stat[i], grad, NULL);
  }
}

void nn_bn_update_moving(const nn_layer *l, float *p, const float *stat) {
  const uint32_t c = l->ishape.c;
  const float mo = l->momentum;
  float *mm = p + 2 * c, *mv = p + 3 * c;
  for (uint32_t k = 0; k < c; k++) {
    mm[k] = mm[k] * mo + stat[k] * (1.0f - mo);
    mv[k] = mv[k] * mo + stat[2 * c + k] * (1.0f - mo);
  }
}
