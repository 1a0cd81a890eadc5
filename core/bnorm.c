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

/* The passes over the activations are what costs (a 26x26x32 map of 64
 * images is 5.5 MB, out of cache): each sum is one pass, 4 rows at a time
 * (independent adds), in float over runs of FLUSH rows and in double from
 * there, so precision does not depend on the batch size. */
#define FLUSH 64u

/* s1[k] += sum of (x - sh[k]), s2[k] += sum of (x - sh[k])^2 over rows. */
NN_HOT static void sums_fwd(const float *restrict x, size_t rows, uint32_t c, const float *restrict sh,
                     float *restrict f1, float *restrict f2, double *restrict s1,
                     double *restrict s2) {
  for (size_t r0 = 0; r0 < rows; r0 += FLUSH) {
    size_t r1 = r0 + FLUSH < rows ? r0 + FLUSH : rows, r = r0;
    memset(f1, 0, c * sizeof *f1);
    memset(f2, 0, c * sizeof *f2);
    for (; r + 4 <= r1; r += 4) {
      const float *a = x + r * c, *b = a + c, *d = b + c, *e = d + c;
      for (uint32_t k = 0; k < c; k++) {
        float va = a[k] - sh[k], vb = b[k] - sh[k], vd = d[k] - sh[k], ve = e[k] - sh[k];
        f1[k] += (va + vb) + (vd + ve);
        f2[k] += (va * va + vb * vb) + (vd * vd + ve * ve);
      }
    }
    for (; r < r1; r++)
      for (uint32_t k = 0; k < c; k++) {
        float v = x[r * c + k] - sh[k];
        f1[k] += v;
        f2[k] += v * v;
      }
    for (uint32_t k = 0; k < c; k++) {
      s1[k] += f1[k];
      s2[k] += f2[k];
    }
  }
}

/* s1[k] += sum of dy, s2[k] += sum of dy * (x - mean[k]) over rows. */
NN_HOT static void sums_bwd(const float *restrict x, const float *restrict dy, size_t rows, uint32_t c,
                     const float *restrict mean, float *restrict f1, float *restrict f2,
                     double *restrict s1, double *restrict s2) {
  for (size_t r0 = 0; r0 < rows; r0 += FLUSH) {
    size_t r1 = r0 + FLUSH < rows ? r0 + FLUSH : rows, r = r0;
    memset(f1, 0, c * sizeof *f1);
    memset(f2, 0, c * sizeof *f2);
    for (; r + 4 <= r1; r += 4) {
      const float *a = x + r * c, *b = a + c, *d = b + c, *e = d + c;
      const float *ga = dy + r * c, *gb = ga + c, *gd = gb + c, *ge = gd + c;
      for (uint32_t k = 0; k < c; k++) {
        f1[k] += (ga[k] + gb[k]) + (gd[k] + ge[k]);
        f2[k] += (ga[k] * (a[k] - mean[k]) + gb[k] * (b[k] - mean[k])) +
                 (gd[k] * (d[k] - mean[k]) + ge[k] * (e[k] - mean[k]));
      }
    }
    for (; r < r1; r++)
      for (uint32_t k = 0; k < c; k++) {
        f1[k] += dy[r * c + k];
        f2[k] += dy[r * c + k] * (x[r * c + k] - mean[k]);
      }
    for (uint32_t k = 0; k < c; k++) {
      s1[k] += f1[k];
      s2[k] += f2[k];
    }
  }
}

/* out = x * a[k] + b[k] (+ dy * g[k] when dy): the forward normalisation
 * and the input gradient are both affine per channel. */
NN_HOT static void affine(float *restrict out, const float *restrict x, const float *restrict dy,
                   size_t rows, uint32_t c, const float *restrict a, const float *restrict b,
                   const float *restrict g) {
  for (size_t r = 0; r < rows; r++) {
    float *o = out + r * c;
    const float *xr = x + r * c;
    if (dy) {
      const float *gr = dy + r * c;
      for (uint32_t k = 0; k < c; k++) o[k] = gr[k] * g[k] + (xr[k] * a[k] + b[k]);
    } else {
      for (uint32_t k = 0; k < c; k++) o[k] = xr[k] * a[k] + b[k];
    }
  }
}

size_t nn_bn_scratch_bytes(uint32_t c) { return (5 * (size_t)c + 2) * sizeof(double); }

/* The activations as groups of rows: NHWC is one group of n*h*w rows of c
 * channels; oneDNN's channel blocks of B ([n][c/B][h][w][B], between a
 * convolution and its pooling) are n*c/B groups of h*w rows of B channels,
 * group g starting at channel (g % (c/B)) * B. */
typedef struct bn_view {
  size_t groups, rows; /* rows per group */
  uint32_t cc, nb;     /* channels per row, blocks per sample */
} bn_view;

static bn_view view(const nn_layer *l, uint32_t n, uint32_t blk) {
  const uint32_t c = l->ishape.c;
  const size_t hw = (size_t)l->ishape.h * l->ishape.w;
  if (!blk || c % blk) return (bn_view){1, n * hw, c, 1};
  return (bn_view){(size_t)n * (c / blk), hw, blk, c / blk};
}
#define GROUP_OFF(v, g) (((g) % (v).nb) * (v).cc)
#define GROUP_DATA(v, g) ((g) * (v).rows * (v).cc)

void nn_bn_fwd(const nn_layer *l, const float *p, const float *x, uint32_t n, uint32_t blk,
               int batch_stats, nn_sync *sync, double *acc, float *stat, float *y) {
  const uint32_t c = l->ishape.c;
  const size_t rows = (size_t)n * l->ishape.h * l->ishape.w;
  const bn_view v = view(l, n, blk);
  const float *gamma = p, *beta = p + c, *mmean = p + 2 * c;
  float *mean = stat, *inv = stat + c, *var = stat + 2 * c;
  double *part = acc, *tot = acc + 2 * (size_t)c + 1;
  float *f = (float *)(tot + 2 * (size_t)c + 1);
  if (batch_stats) {
    /* Two passes: the mean, then the squared deviations from it (the
     * second pass's sum of deviations, zero but for rounding, corrects
     * the mean's rounding). */
    memset(part, 0, (2 * (size_t)c + 1) * sizeof *part);
    for (size_t g = 0; rows && g < v.groups; g++) {
      size_t o = GROUP_OFF(v, g);
      sums_fwd(x + GROUP_DATA(v, g), v.rows, v.cc, mmean + o, f, f + c, part + o, part + c + o);
    }
    part[c] = (double)rows;
    shard_sum(sync, part, tot, c + 1);
    const double count = tot[c];
    for (uint32_t k = 0; k < c; k++) mean[k] = (float)(mmean[k] + tot[k] / count);
    memset(part, 0, 2 * (size_t)c * sizeof *part);
    for (size_t g = 0; rows && g < v.groups; g++) {
      size_t o = GROUP_OFF(v, g);
      sums_fwd(x + GROUP_DATA(v, g), v.rows, v.cc, mean + o, f, f + c, part + o, part + c + o);
    }
    shard_sum(sync, part, tot, 2 * (size_t)c);
    for (uint32_t k = 0; k < c; k++) {
      double d = tot[k] / count, v = tot[c + k] / count - d * d;
      var[k] = v > 0 ? (float)v : 0.f;
    }
  } else {
    memcpy(mean, mmean, c * sizeof *mean);
    memcpy(var, p + 3 * c, c * sizeof *var);
  }
  for (uint32_t k = 0; k < c; k++) inv[k] = 1.0f / sqrtf(var[k] + l->epsilon);
  if (!rows) return;
  /* y = gamma * (x - mean) * inv + beta = x * a + b. */
  float *a = f, *b = f + c;
  for (uint32_t k = 0; k < c; k++) {
    a[k] = gamma[k] * inv[k];
    b[k] = beta[k] - mean[k] * a[k];
  }
  for (size_t g = 0; g < v.groups; g++) {
    size_t o = GROUP_OFF(v, g);
    affine(y + GROUP_DATA(v, g), x + GROUP_DATA(v, g), NULL, v.rows, v.cc, a + o, b + o, NULL);
  }
}

void nn_bn_bwd(const nn_layer *l, const float *p, const float *x, const float *dy, uint32_t n,
               uint32_t blk, int batch_stats, nn_sync *sync, double *acc, const float *stat,
               float *grad, float *dx) {
  const uint32_t c = l->ishape.c;
  const size_t rows = (size_t)n * l->ishape.h * l->ishape.w;
  const bn_view v = view(l, n, blk);
  const float *gamma = p, *mean = stat, *inv = stat + c;
  double *part = acc, *tot = acc + 2 * (size_t)c + 1;
  float *f = (float *)(tot + 2 * (size_t)c + 1);
  /* part: sum dy [c], sum dy * (x - mean) [c], rows. */
  memset(part, 0, (2 * (size_t)c + 1) * sizeof *part);
  for (size_t g = 0; rows && g < v.groups; g++) {
    size_t o = GROUP_OFF(v, g), d = GROUP_DATA(v, g);
    sums_bwd(x + d, dy + d, v.rows, v.cc, mean + o, f, f + c, part + o, part + c + o);
  }
  part[2 * c] = (double)rows;
  shard_sum(sync, part, tot, 2 * (size_t)c + 1);
  float *dgamma = grad + l->w_off, *dbeta = grad + l->b_off;
  for (uint32_t k = 0; k < c; k++) {
    dbeta[k] = (float)tot[k];
    dgamma[k] = (float)(tot[c + k] * inv[k]); /* sum dy * xhat */
  }
  /* The moving statistics are no parameters of the loss: a zero gradient,
   * so even an update over the whole block leaves them as they are. */
  memset(grad + l->b_off + c, 0, 2 * (size_t)c * sizeof *grad);
  if (!dx || !rows) return;
  /* dx = gamma * inv * (dy - mean(dy) - xhat * mean(dy * xhat)), the means
   * over the whole batch (constant statistics: the first term only), as
   * dy * g + x * a + b per channel. */
  const double count = tot[2 * c];
  float *g = f, *a = f + c, *b = (float *)part; /* part is free again */
  for (uint32_t k = 0; k < c; k++) {
    double gi = (double)gamma[k] * inv[k];
    double mdy = batch_stats ? tot[k] / count : 0.0;
    double mdx = batch_stats ? tot[c + k] * inv[k] / count : 0.0; /* mean(dy * xhat) */
    g[k] = (float)gi;
    a[k] = (float)(-gi * inv[k] * mdx);
    b[k] = (float)(-gi * mdy + gi * inv[k] * mdx * mean[k]);
  }
  for (size_t k = 0; k < v.groups; k++) {
    size_t o = GROUP_OFF(v, k), d = GROUP_DATA(v, k);
    affine(dx + d, x + d, dy + d, v.rows, v.cc, a + o, b + o, g + o);
  }
}

void nn_bn_idle(const nn_model *m, nn_workspace *ws, int training, float *grad) {
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM)
      nn_bn_fwd(l, m->params + l->w_off, NULL, 0, 0, training != 0, ws->sync, ws->bn_acc,
                ws->bn_stat[i], NULL);
  }
  for (uint32_t i = m->n_layers; i-- > 0;) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM)
      nn_bn_bwd(l, m->params + l->w_off, NULL, NULL, 0, 0, training != 0, ws->sync, ws->bn_acc,
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
