/* Layer kernels. Rows are samples. The loops are simple on purpose so the
 * compiler vectorises them; the matrix products go through BLAS in model.c. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* Keras l2_normalize: x * rsqrt(max(sum(x^2), 1e-12)). */
#define ANTIRECT_EPS 1e-12f

NN_HOT void nn_antirect_forward(const float *x, uint32_t n, uint32_t d, float *y,
                         float *inv, float *out) {
  for (uint32_t r = 0; r < n; r++) {
    const float *xr = x + (size_t)r * d;
    float *yr = y + (size_t)r * d, *o = out + (size_t)r * 2 * d;
    float mean = 0.f;
#pragma omp simd reduction(+ : mean)
    for (uint32_t i = 0; i < d; i++) mean += xr[i];
    mean /= (float)d;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (uint32_t i = 0; i < d; i++) {
      float c = xr[i] - mean;
      yr[i] = c;
      ss += c * c;
    }
    /* An all-equal row centres to zero: the epsilon keeps it finite, and
     * the output is then an exact zero vector, as in Keras. */
    float s = 1.0f / sqrtf(ss > ANTIRECT_EPS ? ss : ANTIRECT_EPS);
    inv[r] = ss > ANTIRECT_EPS ? s : -s; /* sign marks the clamped case */
    for (uint32_t i = 0; i < d; i++) {
      float v = yr[i] * s;
      yr[i] = v;
      o[i] = v > 0.f ? v : 0.f;
      o[d + i] = v < 0.f ? -v : 0.f;
    }
  }
}

NN_HOT void nn_antirect_backward(const float *y, const float *inv, const float *dout,
                          uint32_t n, uint32_t d, float *dx) {
  for (uint32_t r = 0; r < n; r++) {
    const float *yr = y + (size_t)r * d, *g = dout + (size_t)r * 2 * d;
    float *dr = dx + (size_t)r * d;
    /* d/dy of [relu(y), relu(-y)]. */
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (uint32_t i = 0; i < d; i++) {
      float gy = (yr[i] > 0.f ? g[i] : 0.f) - (yr[i] < 0.f ? g[d + i] : 0.f);
      dr[i] = gy;
      dot += gy * yr[i];
    }
    /* y = c / |c|: dc = (dy - y (y.dy)) / |c|. When the norm was clamped to
     * the epsilon, y = c / sqrt(eps) is linear in c and the projection term
     * vanishes. */
    float s = inv[r] > 0.f ? inv[r] : -inv[r];
    if (inv[r] < 0.f) dot = 0.f;
    float mean = 0.f;
#pragma omp simd reduction(+ : mean)
    for (uint32_t i = 0; i < d; i++) {
      float v = (dr[i] - yr[i] * dot) * s;
      dr[i] = v;
      mean += v;
    }
    /* Centring: dx = dc - mean(dc). */
    mean /= (float)d;
    for (uint32_t i = 0; i < d; i++) dr[i] -= mean;
  }
}

#define XENT_CLIP 1e-7f

float nn_softmax_xent(const float *z, const uint8_t *labels, uint32_t n,
                      uint32_t k, float *p, float *dz, uint32_t *correct) {
  double loss = nn_xent_sum(z, labels, n, k, p, dz, n ? 1.0f / (float)n : 0.f, correct);
  return n ? (float)(loss / n) : 0.f;
}

double nn_xent_sum(const float *z, const uint8_t *labels, uint32_t n, uint32_t k,
                   float *p, float *dz, float scale, uint32_t *correct) {
  double loss = 0.0;
  uint32_t ok = 0;
  for (uint32_t r = 0; r < n; r++) {
    const float *zr = z + (size_t)r * k;
    float *pr = p + (size_t)r * k;
    float mx = zr[0];
    uint32_t arg = 0;
    for (uint32_t i = 1; i < k; i++)
      if (zr[i] > mx) { mx = zr[i]; arg = i; }
    float sum = 0.f;
    for (uint32_t i = 0; i < k; i++) { pr[i] = expf(zr[i] - mx); sum += pr[i]; }
    float is = 1.0f / sum;
    for (uint32_t i = 0; i < k; i++) pr[i] *= is;
    if (labels) {
      float pt = pr[labels[r]];
      if (pt < XENT_CLIP) pt = XENT_CLIP;
      if (pt > 1.0f - XENT_CLIP) pt = 1.0f - XENT_CLIP;
      loss -= log((double)pt);
      ok += arg == labels[r];
      if (dz) {
        float *dr = dz + (size_t)r * k;
        for (uint32_t i = 0; i < k; i++) dr[i] = pr[i] * scale;
        dr[labels[r]] -= scale;
      }
    }
  }
  if (correct) *correct = ok;
  return loss;
}

int nn_argmax(const float *probs) {
  int best = 0;
  for (int i = 1; i < NN_CLASSES; i++)
    if (probs[i] > probs[best]) best = i;
  return best;
}

NN_HOT void nn_k_rows_set(float *y, const float *b, uint32_t rows, uint32_t d) {
  for (uint32_t r = 0; r < rows; r++) memcpy(y + (size_t)r * d, b, d * sizeof(float));
}

NN_HOT void nn_k_colsum(float *restrict db, const float *restrict g, uint32_t rows,
                        uint32_t d) {
  memset(db, 0, d * sizeof(float));
  for (uint32_t r = 0; r < rows; r++) {
    const float *gr = g + (size_t)r * d;
    for (uint32_t k = 0; k < d; k++) db[k] += gr[k];
  }
}

NN_HOT void nn_k_relu_fwd(float *restrict y, const float *restrict x, size_t n) {
  for (size_t k = 0; k < n; k++) y[k] = x[k] > 0.f ? x[k] : 0.f;
}

NN_HOT void nn_k_relu_bwd(float *restrict dx, const float *restrict y,
                          const float *restrict g, size_t n) {
  for (size_t k = 0; k < n; k++) dx[k] = y[k] > 0.f ? g[k] : 0.f;
}

NN_HOT void nn_k_dropout_mask(uint8_t *restrict mask, size_t n, uint32_t key, uint32_t thr) {
  for (size_t k = 0; k < n; k++) {
    /* lowbias32 (Wellons): a strong 32-bit integer hash. */
    uint32_t h = (uint32_t)k * 0x9e3779b9u ^ key;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    mask[k] = h >= thr;
  }
}

NN_HOT void nn_k_dropout_apply(float *restrict y, const float *restrict x,
                               const uint8_t *restrict mask, float scale, size_t n) {
  for (size_t k = 0; k < n; k++) y[k] = mask[k] ? x[k] * scale : 0.f;
}

NN_HOT void nn_k_u8_to_f32(float *restrict x, const uint8_t *restrict px, size_t n) {
  for (size_t k = 0; k < n; k++) x[k] = (float)px[k] * (1.0f / 255.0f);
}

NN_HOT void nn_k_add(float *restrict acc, const float *restrict x, size_t n) {
  for (size_t k = 0; k < n; k++) acc[k] += x[k];
}
