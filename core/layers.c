/* Layer kernels. Rows are samples. The loops are simple on purpose so the
 * compiler vectorises them; the matrix products go through oneDNN (dnn.c).
 * nn_antirect_forward/backward and nn_softmax_xent are the public reference
 * versions; the training step runs the fused nn_k_* kernels below. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#endif

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

int nn_argmax(const float *probs) { return nn_argmax_n(probs, NN_CLASSES); }

int nn_argmax_n(const float *probs, uint32_t k) {
  uint32_t best = 0;
  for (uint32_t i = 1; i < k; i++)
    if (probs[i] > probs[best]) best = i;
  return (int)best;
}

NN_HOT void nn_k_colsum(float *restrict db, const float *restrict g, uint32_t rows,
                        uint32_t d) {
  memset(db, 0, d * sizeof(float));
  for (uint32_t r = 0; r < rows; r++) {
    const float *gr = g + (size_t)r * d;
    for (uint32_t k = 0; k < d; k++) db[k] += gr[k];
  }
}

NN_HOT void nn_k_u8_to_f32(float *restrict x, const uint8_t *restrict px, size_t n) {
  for (size_t k = 0; k < n; k++) x[k] = (float)px[k] * (1.0f / 255.0f);
}

NN_HOT void nn_k_u8_or_rows(uint8_t *restrict used, const uint8_t *restrict px,
                            const uint32_t *restrict idx, uint32_t n, uint32_t d) {
  memset(used, 0, d);
  for (uint32_t r = 0; r < n; r++) {
    const uint8_t *restrict p = px + (size_t)(idx ? idx[r] : r) * d;
#pragma omp simd
    for (uint32_t c = 0; c < d; c++) used[c] |= p[c];
  }
}

uint32_t nn_input_runs(uint8_t *used, uint32_t d, nn_cols *cl) {
  uint32_t K = 0, nr = 0;
  for (uint32_t c = 0; c < d; c++) K += !!used[c];
  /* Fewer kernel shapes, and rows of whole cache lines: a multiple of 16
   * inputs, topped up with unused ones (their products add zeros). */
  for (uint32_t c = 0; c < d && K % 16; c++)
    if (!used[c]) used[c] = 1, K++;
  cl->nr = cl->k = 0;
  /* Below this the copies cost about what the left-out products save. */
  if (K >= d * 9 / 10) return 0;
  for (uint32_t c = 0; c < d;) {
    if (!used[c]) {
      c++;
      continue;
    }
    uint32_t c0 = c;
    while (c < d && used[c]) c++;
    cl->runs[2 * nr] = c0, cl->runs[2 * nr + 1] = c - c0, nr++;
  }
  memset(cl->mask, 0, sizeof cl->mask);
  memset(cl->xi, 0, sizeof cl->xi);
  memset(cl->ci, 0, sizeof cl->ci);
  for (uint32_t b = 0; b < d / 16; b++)
    for (uint32_t j = 0, n = 0; j < 16; j++)
      if (used[16 * b + j]) {
        cl->mask[b] |= (uint16_t)(1u << j);
        cl->xi[b][j] = (uint8_t)n;
        cl->ci[b][n++] = (uint8_t)j;
      }
  cl->k = K;
  return cl->nr = nr;
}

/* Packing by runs: a memcpy per run (~20-30 floats for MNIST). */
void nn_k_pack_runs_ref(float *restrict dst, const float *restrict src, uint32_t rows,
                        uint32_t d, const nn_cols *cl) {
  for (uint32_t o = 0; o < rows; o++) {
    float *out = dst + (size_t)o * cl->k;
    const float *row = src + (size_t)o * d;
    for (uint32_t q = 0; q < cl->nr; q++) {
      memcpy(out, row + cl->runs[2 * q], cl->runs[2 * q + 1] * sizeof(float));
      out += cl->runs[2 * q + 1];
    }
  }
}

void nn_k_unpack_runs_ref(float *restrict dst, const float *restrict src, uint32_t rows,
                          uint32_t d, const nn_cols *cl) {
  for (uint32_t o = 0; o < rows; o++) {
    float *row = dst + (size_t)o * d;
    const float *in = src + (size_t)o * cl->k;
    uint32_t c = 0;
    for (uint32_t q = 0; q < cl->nr; q++) {
      const uint32_t c0 = cl->runs[2 * q], len = cl->runs[2 * q + 1];
      memset(row + c, 0, (c0 - c) * sizeof(float));
      memcpy(row + c0, in, len * sizeof(float));
      in += len;
      c = c0 + len;
    }
    memset(row + c, 0, (d - c) * sizeof(float));
  }
}

void nn_k_u8_gather_runs_ref(float *restrict x, const uint8_t *restrict px, uint32_t n,
                             uint32_t d, const nn_cols *cl) {
  /* Each row converted whole into L1, then its runs copied: faster than
   * converting run by run (runs of ~20-30 pixels vectorise badly). */
  float row[NN_IMAGE_SIZE];
  for (uint32_t r = 0; r < n; r++) {
    const uint8_t *restrict p = px + (size_t)r * d;
    float *restrict o = x + (size_t)r * cl->k;
#pragma omp simd
    for (uint32_t j = 0; j < d; j++) row[j] = (float)p[j] * (1.0f / 255.0f);
    nn_k_pack_runs_ref(o, row, 1, d, cl);
  }
}

#if defined(__x86_64__)
/* With AVX-512 a block of 16 inputs is packed (and unpacked) by one
 * permutation under its mask: measured 1.3-1.7x faster than a memcpy per
 * run, which the short runs of an MNIST batch make call-bound. Not by
 * vcompressps/vexpandps, which do the same in one instruction: on a Zen 4
 * they are slow enough to double the time of RMSprop on the packed
 * gradient (0.59 against 0.24 ns per weight in a microbenchmark).
 * A block's store is whole while 16 floats of the packed row remain, else
 * masked, so nothing past a row is written: the rows of one matrix are
 * packed by different threads. */
#define NN_AVX512 __attribute__((target("avx512f,avx512bw,popcnt")))

/* nn_cols' permutation of block b as a vector of 16 lane indices. */
NN_AVX512 static inline __m512i lanes(const uint8_t idx[16]) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)idx));
}

/* Block b of an unpacked row, v, packed to out (below end, the packed
 * row's end); returns where the next block's floats go. */
NN_AVX512 static inline float *put_block(float *out, const float *end, __m512 v,
                                         const nn_cols *cl, uint32_t b) {
  v = _mm512_permutexvar_ps(lanes(cl->ci[b]), v);
  const uint32_t pc = (uint32_t)__builtin_popcount(cl->mask[b]);
  if (end - out >= 16) _mm512_storeu_ps(out, v);
  else _mm512_mask_storeu_ps(out, (__mmask16)((1u << pc) - 1), v);
  return out + pc;
}

/* Block b of a packed row whose floats start at in, unpacked (zeros where
 * inputs were left out). A masked load reads only this block's floats. */
NN_AVX512 static inline __m512 get_block(const float *in, const nn_cols *cl, uint32_t b) {
  const uint32_t pc = (uint32_t)__builtin_popcount(cl->mask[b]);
  return _mm512_maskz_permutexvar_ps(cl->mask[b], lanes(cl->xi[b]),
                                     _mm512_maskz_loadu_ps((__mmask16)((1u << pc) - 1), in));
}

NN_AVX512 static void pack_avx512(float *dst, const float *src, uint32_t rows, uint32_t d,
                                  const nn_cols *cl) {
  const uint32_t nb = d / 16;
  for (uint32_t o = 0; o < rows; o++) {
    float *out = dst + (size_t)o * cl->k;
    const float *row = src + (size_t)o * d;
    const float *const end = out + cl->k;
    for (uint32_t b = 0; b < nb && out < end; b++)
      out = put_block(out, end, _mm512_loadu_ps(row + 16 * b), cl, b);
  }
}

NN_AVX512 static void unpack_avx512(float *dst, const float *src, uint32_t rows, uint32_t d,
                                    const nn_cols *cl) {
  const uint32_t nb = d / 16;
  for (uint32_t o = 0; o < rows; o++) {
    float *row = dst + (size_t)o * d;
    const float *in = src + (size_t)o * cl->k;
    for (uint32_t b = 0; b < nb; b++) {
      _mm512_storeu_ps(row + 16 * b, get_block(in, cl, b));
      in += __builtin_popcount(cl->mask[b]);
    }
  }
}

NN_AVX512 static void gather_avx512(float *x, const uint8_t *px, uint32_t n, uint32_t d,
                                    const nn_cols *cl) {
  const uint32_t nb = d / 16;
  const __m512 scale = _mm512_set1_ps(1.0f / 255.0f);
  for (uint32_t r = 0; r < n; r++) {
    const uint8_t *p = px + (size_t)r * d;
    float *o = x + (size_t)r * cl->k;
    const float *const end = o + cl->k;
    for (uint32_t b = 0; b < nb && o < end; b++) {
      const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * b)));
      /* The same product as the reference ((float)p * (1/255)). */
      o = put_block(o, end, _mm512_mul_ps(_mm512_cvtepi32_ps(u), scale), cl, b);
    }
  }
}

static int use_avx512(uint32_t d) {
  return d % 16 == 0 && d <= NN_IMAGE_SIZE && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw");
}
#else
static int use_avx512(uint32_t d) { (void)d; return 0; }
#define pack_avx512 nn_k_pack_runs_ref
#define unpack_avx512 nn_k_unpack_runs_ref
#define gather_avx512 nn_k_u8_gather_runs_ref
#endif

void nn_k_pack_runs(float *dst, const float *src, uint32_t rows, uint32_t d, const nn_cols *c) {
  if (use_avx512(d)) pack_avx512(dst, src, rows, d, c);
  else nn_k_pack_runs_ref(dst, src, rows, d, c);
}

void nn_k_unpack_runs(float *dst, const float *src, uint32_t rows, uint32_t d,
                      const nn_cols *c) {
  if (use_avx512(d)) unpack_avx512(dst, src, rows, d, c);
  else nn_k_unpack_runs_ref(dst, src, rows, d, c);
}

void nn_k_u8_gather_runs(float *x, const uint8_t *px, uint32_t n, uint32_t d,
                         const nn_cols *c) {
  if (use_avx512(d)) gather_avx512(x, px, n, d, c);
  else nn_k_u8_gather_runs_ref(x, px, n, d, c);
}

NN_HOT void nn_k_add(float *restrict acc, const float *restrict x, size_t n) {
  for (size_t k = 0; k < n; k++) acc[k] += x[k];
}

/* ---------------------------------------------------------------- fused
 * The training step's element-wise work: each kernel makes one sweep over a
 * row (or a cache-sized chunk) and does everything that row needs, so the
 * data is read from L1 rather than from memory several times. The dropout
 * mask is a hash of the element's index: computed where it is used, in the
 * same vector lanes, and never stored. Hash indices are 32-bit: a pass holds
 * at most 2^20 rows of at most NN_MAX_WIDTH floats. */

NN_HOT void nn_k_dropout(float *restrict y, const float *restrict x, size_t n, nn_drop dr) {
  const uint32_t key = dr.key, thr = dr.thr;
  const float scale = dr.scale;
#pragma omp simd
  for (size_t k = 0; k < n; k++)
    y[k] = x[k] * (nn_drop_hash(key, (uint32_t)k) >= thr ? scale : 0.f);
}

NN_HOT void nn_k_antirect_fwd(const float *restrict x, uint32_t n, uint32_t d,
                              float *restrict y, float *restrict inv, float *restrict out,
                              nn_drop dr) {
  const uint32_t key = dr.key, thr = dr.thr;
  const float scale = dr.scale;
  for (uint32_t r = 0; r < n; r++) {
    const float *restrict xr = x + (size_t)r * d;
    float *restrict yr = y + (size_t)r * d, *restrict o = out + (size_t)r * 2 * d;
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
    float s = 1.0f / sqrtf(ss > ANTIRECT_EPS ? ss : ANTIRECT_EPS);
    inv[r] = ss > ANTIRECT_EPS ? s : -s; /* sign marks the clamped case */
    float *restrict o2 = o + d; /* the relu(-y) half */
    if (thr == 0) {
#pragma omp simd
      for (size_t i = 0; i < d; i++) {
        float v = yr[i] * s;
        yr[i] = v;
        o[i] = v > 0.f ? v : 0.f;
        o2[i] = v < 0.f ? -v : 0.f;
      }
    } else {
      /* Branch-free: the mask becomes a factor of 0 or scale. */
      const uint32_t b0 = r * 2 * d, b1 = b0 + d;
#pragma omp simd
      for (size_t i = 0; i < d; i++) {
        float v = yr[i] * s;
        yr[i] = v;
        float m0 = nn_drop_hash(key, b0 + (uint32_t)i) >= thr ? scale : 0.f;
        float m1 = nn_drop_hash(key, b1 + (uint32_t)i) >= thr ? scale : 0.f;
        o[i] = (v > 0.f ? v : 0.f) * m0;
        o2[i] = (v < 0.f ? -v : 0.f) * m1;
      }
    }
  }
}

/* nn_k_antirect_fwd for a prediction: nothing is kept for a backward pass,
 * so y and inv are never written (a third of the kernel's stores) and the
 * centred row is recomputed from x, in L1. Same operations in the same
 * order as nn_k_antirect_fwd without dropout, so the same bits. */
NN_HOT void nn_k_antirect_infer(const float *restrict x, uint32_t n, uint32_t d,
                                float *restrict out) {
  for (uint32_t r = 0; r < n; r++) {
    const float *restrict xr = x + (size_t)r * d;
    float *restrict o = out + (size_t)r * 2 * d, *restrict o2 = o + d;
    float mean = 0.f;
#pragma omp simd reduction(+ : mean)
    for (uint32_t i = 0; i < d; i++) mean += xr[i];
    mean /= (float)d;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (uint32_t i = 0; i < d; i++) {
      float c = xr[i] - mean;
      ss += c * c;
    }
    float s = 1.0f / sqrtf(ss > ANTIRECT_EPS ? ss : ANTIRECT_EPS);
#pragma omp simd
    for (size_t i = 0; i < d; i++) {
      float v = (xr[i] - mean) * s;
      o[i] = v > 0.f ? v : 0.f;
      o2[i] = v < 0.f ? -v : 0.f;
    }
  }
}

NN_HOT void nn_k_antirect_bwd(const float *restrict y, const float *restrict inv,
                              const float *restrict dout, uint32_t n, uint32_t d,
                              float *restrict dx, float *restrict db, nn_drop dr) {
  const uint32_t key = dr.key, thr = dr.thr;
  const float scale = dr.scale;
  if (db) memset(db, 0, d * sizeof(float));
  for (uint32_t r = 0; r < n; r++) {
    const float *restrict yr = y + (size_t)r * d, *restrict g = dout + (size_t)r * 2 * d;
    float *restrict dr_ = dx + (size_t)r * d;
    const float *restrict g2 = g + d;
    float dot = 0.f;
    if (thr == 0) {
#pragma omp simd reduction(+ : dot)
      for (size_t i = 0; i < d; i++) {
        /* Selections as products with 0/1: if-converts on every ISA. */
        float gy = g[i] * (float)(yr[i] > 0.f) - g2[i] * (float)(yr[i] < 0.f);
        dr_[i] = gy;
        dot += gy * yr[i];
      }
    } else {
      const uint32_t b0 = r * 2 * d, b1 = b0 + d;
#pragma omp simd reduction(+ : dot)
      for (size_t i = 0; i < d; i++) {
        float m0 = nn_drop_hash(key, b0 + (uint32_t)i) >= thr ? scale : 0.f;
        float m1 = nn_drop_hash(key, b1 + (uint32_t)i) >= thr ? scale : 0.f;
        float gy = g[i] * m0 * (float)(yr[i] > 0.f) - g2[i] * m1 * (float)(yr[i] < 0.f);
        dr_[i] = gy;
        dot += gy * yr[i];
      }
    }
    /* As nn_antirect_backward: project out y, scale by 1/|c|, centre. */
    float s = inv[r] > 0.f ? inv[r] : -inv[r];
    if (inv[r] < 0.f) dot = 0.f;
    float mean = 0.f;
#pragma omp simd reduction(+ : mean)
    for (uint32_t i = 0; i < d; i++) {
      float v = (dr_[i] - yr[i] * dot) * s;
      dr_[i] = v;
      mean += v;
    }
    mean /= (float)d;
    if (db) {
#pragma omp simd
      for (uint32_t i = 0; i < d; i++) {
        float v = dr_[i] - mean;
        dr_[i] = v;
        db[i] += v;
      }
    } else {
#pragma omp simd
      for (uint32_t i = 0; i < d; i++) dr_[i] -= mean;
    }
  }
}

NN_HOT void nn_k_relu_drop_fwd(float *restrict out, const float *restrict x, uint32_t n,
                               uint32_t d, nn_drop dr) {
  const uint32_t key = dr.key, thr = dr.thr;
  const float scale = dr.scale;
  size_t cnt = (size_t)n * d;
  if (thr == 0) {
#pragma omp simd
    for (size_t k = 0; k < cnt; k++) out[k] = x[k] > 0.f ? x[k] : 0.f;
  } else {
#pragma omp simd
    for (size_t k = 0; k < cnt; k++)
      out[k] = (x[k] > 0.f ? x[k] : 0.f) * (nn_drop_hash(key, (uint32_t)k) >= thr ? scale : 0.f);
  }
}

NN_HOT void nn_k_relu_drop_bwd(float *restrict dx, const float *restrict x,
                               const float *restrict g, uint32_t n, uint32_t d,
                               float *restrict db, nn_drop dr) {
  const uint32_t key = dr.key, thr = dr.thr;
  const float scale = thr ? dr.scale : 1.0f;
  if (db) memset(db, 0, d * sizeof(float));
  for (uint32_t r = 0; r < n; r++) {
    const float *restrict xr = x + (size_t)r * d, *restrict gr = g + (size_t)r * d;
    float *restrict o = dx + (size_t)r * d;
    const uint32_t base = r * d;
    if (thr == 0) {
      /* No dropout: skip the hash (wide feature maps make it show). */
#pragma omp simd
      for (size_t i = 0; i < d; i++) o[i] = xr[i] > 0.f ? gr[i] : 0.f;
    } else {
#pragma omp simd
      for (size_t i = 0; i < d; i++) {
        float v = gr[i] * (nn_drop_hash(key, base + (uint32_t)i) >= thr ? scale : 0.f);
        o[i] = xr[i] > 0.f ? v : 0.f;
      }
    }
    if (db) {
#pragma omp simd
      for (uint32_t i = 0; i < d; i++) db[i] += o[i];
    }
  }
}

/* The sparse row product works on a block of SR_OUT outputs at a time, kept
 * in registers while every non-zero input adds its weight row to it: the
 * weights are read once, the outputs never round-trip through memory per
 * input. Each output still sums its terms in input order, so the result is
 * the same as one pass over the rows. */
#define SR_OUT 64
#define SR_IN 512
/* A GCC vector of 16 floats: each target clone lowers it to what it has
 * (one zmm, two ymm, four xmm), so the four accumulators stay in registers
 * on every ISA, which plain loops over a local array did not. */
typedef float sr_vec __attribute__((vector_size(64)));

NN_HOT void nn_k_sparse_row(float *restrict y, const float *restrict x,
                            const float *restrict wt, const float *restrict b, uint32_t in,
                            uint32_t out) {
  memcpy(y, b, out * sizeof(float));
  uint32_t nz[SR_IN];
  for (uint32_t k0 = 0; k0 < in; k0 += SR_IN) {
    uint32_t kn = in - k0 < SR_IN ? in - k0 : SR_IN, c = 0;
    for (uint32_t k = 0; k < kn; k++) { /* branch-free compaction */
      nz[c] = k0 + k;
      c += x[k0 + k] != 0.f;
    }
    uint32_t o0 = 0;
    for (; o0 + SR_OUT <= out; o0 += SR_OUT) {
      sr_vec a0, a1, a2, a3;
      memcpy(&a0, y + o0, sizeof a0);
      memcpy(&a1, y + o0 + 16, sizeof a1);
      memcpy(&a2, y + o0 + 32, sizeof a2);
      memcpy(&a3, y + o0 + 48, sizeof a3);
      for (uint32_t j = 0; j < c; j++) {
        const float xk = x[nz[j]];
        const float *row = wt + (size_t)nz[j] * out + o0;
        sr_vec r0, r1, r2, r3;
        memcpy(&r0, row, sizeof r0);
        memcpy(&r1, row + 16, sizeof r1);
        memcpy(&r2, row + 32, sizeof r2);
        memcpy(&r3, row + 48, sizeof r3);
        a0 += xk * r0;
        a1 += xk * r1;
        a2 += xk * r2;
        a3 += xk * r3;
      }
      memcpy(y + o0, &a0, sizeof a0);
      memcpy(y + o0 + 16, &a1, sizeof a1);
      memcpy(y + o0 + 32, &a2, sizeof a2);
      memcpy(y + o0 + 48, &a3, sizeof a3);
    }
    for (uint32_t j = 0; o0 < out && j < c; j++) {
      const float xk = x[nz[j]];
      const float *restrict row = wt + (size_t)nz[j] * out;
#pragma omp simd
      for (uint32_t o = o0; o < out; o++) y[o] += xk * row[o];
    }
  }
}

/* The per-chunk sum stays in L1 between the reduction and the update. */
#define RMS_CHUNK 512

#if defined(__x86_64__)
typedef struct rms512 {
  __m512 rho, one_m, lr, eps;
} rms512;

NN_AVX512 static inline rms512 rms512_of(float lr, float rho, float eps) {
  return (rms512){_mm512_set1_ps(rho), _mm512_set1_ps(1.0f - rho), _mm512_set1_ps(lr),
                  _mm512_set1_ps(eps)};
}

/* One block of nn_k_rmsprop_sum's update in its order: stores the new
 * accumulator at a, returns the new weights. */
NN_AVX512 static inline __m512 rms512_step(const rms512 *k, __m512 w, float *a, __m512 g) {
  const __m512 av = _mm512_add_ps(_mm512_mul_ps(k->rho, _mm512_loadu_ps(a)),
                                  _mm512_mul_ps(_mm512_mul_ps(k->one_m, g), g));
  _mm512_storeu_ps(a, av);
  return _mm512_sub_ps(w, _mm512_div_ps(_mm512_mul_ps(k->lr, g),
                                        _mm512_sqrt_ps(_mm512_add_ps(av, k->eps))));
}

/* nn_k_rmsprop_runs' row with AVX-512: each block's gradient unpacked from
 * the packed row by the block's permutation, in registers. The operations
 * and their order are nn_k_rmsprop_sum's (no fused multiply-add there: ISO
 * C mode), so the bits are the same. */
NN_AVX512 static void rmsprop_row_avx512(float *w, float *a, const float *g, uint32_t d,
                                         const nn_cols *c, float lr, float rho, float eps) {
  const rms512 k = rms512_of(lr, rho, eps);
  for (uint32_t b = 0; b < d / 16; b++) {
    const __mmask16 m = c->mask[b];
    if (!m) { /* no gradient: a = rho a (+ 0), w - 0 = w, so w is not touched */
      _mm512_storeu_ps(a + 16 * b, _mm512_mul_ps(k.rho, _mm512_loadu_ps(a + 16 * b)));
      continue;
    }
    const __m512 gv = get_block(g, c, b);
    g += __builtin_popcount(m);
    _mm512_storeu_ps(w + 16 * b, rms512_step(&k, _mm512_loadu_ps(w + 16 * b), a + 16 * b, gv));
  }
}

/* n floats (a multiple of 16) from src to the 64-byte aligned dst with
 * non-temporal stores; the caller fences. */
NN_AVX512 static void stream_avx512(float *dst, const float *src, uint32_t n) {
  for (uint32_t j = 0; j < n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
}
#endif

/* Short runs (an MNIST batch keeps ~20-30 pixels of each image row)
 * vectorise badly, so each row is updated whole by nn_k_rmsprop_sum (or
 * its AVX-512 twin above), with its gradient unpacked (measured: run by run, skipping the
 * weights between the runs, took twice as long as the whole row). */
NN_HOT void nn_k_rmsprop_runs(float *restrict w, float *restrict a, const float *restrict g,
                              uint32_t rows, uint32_t d, const nn_cols *c, float lr,
                              float rho, float eps, const nn_cols *next, float *pack,
                              int stream) {
  float row[NN_IMAGE_SIZE] __attribute__((aligned(64)));
  const float *rowp = row;
#if defined(__x86_64__)
  if (use_avx512(d)) {
    /* Streamed rows are packed in L1 first: a packed block's store is
     * unaligned, a non-temporal one must cover a whole line. */
    stream = stream && next && next->k % 16 == 0 && !((uintptr_t)pack & 63);
    for (uint32_t o = 0; o < rows; o++) {
      float *wr = w + (size_t)o * d;
      rmsprop_row_avx512(wr, a + (size_t)o * d, g + (size_t)o * c->k, d, c, lr, rho, eps);
      if (!next) continue;
      if (stream) {
        pack_avx512(row, wr, 1, d, next);
        stream_avx512(pack + (size_t)o * next->k, row, next->k);
      } else {
        pack_avx512(pack + (size_t)o * next->k, wr, 1, d, next);
      }
    }
    if (stream) _mm_sfence();
    return;
  }
#endif
  (void)stream;
  for (uint32_t o = 0; o < rows; o++) {
    float *wr = w + (size_t)o * d;
    nn_k_unpack_runs(row, g + (size_t)o * c->k, 1, d, c);
    nn_k_rmsprop_sum(wr, a + (size_t)o * d, &rowp, 1, d, lr, rho, eps);
    if (next) nn_k_pack_runs(pack + (size_t)o * next->k, wr, 1, d, next);
  }
}

NN_HOT void nn_k_rmsprop_sum(float *restrict w, float *restrict a, const float *const *g,
                             uint32_t n_g, size_t n, float lr, float rho, float eps) {
  const float one_m = 1.0f - rho;
  float buf[RMS_CHUNK] __attribute__((aligned(64)));
  for (size_t off = 0; off < n; off += RMS_CHUNK) {
    size_t m = n - off < RMS_CHUNK ? n - off : RMS_CHUNK;
    const float *restrict sum = g[0] + off; /* one block: read it in place */
    if (n_g > 1) {
      const float *restrict g0 = g[0] + off, *restrict g1 = g[1] + off;
#pragma omp simd
      for (size_t i = 0; i < m; i++) buf[i] = g0[i] + g1[i];
      for (uint32_t s = 2; s < n_g; s++) {
        const float *restrict gs = g[s] + off;
#pragma omp simd
        for (size_t i = 0; i < m; i++) buf[i] += gs[i];
      }
      sum = buf;
    }
    float *restrict wo = w + off, *restrict ao = a + off;
#pragma omp simd
    for (size_t i = 0; i < m; i++) {
      float ai = rho * ao[i] + one_m * sum[i] * sum[i];
      ao[i] = ai;
      wo[i] -= lr * sum[i] / sqrtf(ai + eps);
    }
  }
}

#if defined(__x86_64__)
/* nn_k_rmsprop_stream's whole lines, n a multiple of 16 and w on a line:
 * nn_k_rmsprop_sum's operations in its order (no fused multiply-add), so
 * its bits. */
NN_AVX512 static void rmsprop_stream_avx512(float *w, float *a, const float *g, size_t n,
                                            float lr, float rho, float eps) {
  const rms512 k = rms512_of(lr, rho, eps);
  for (size_t i = 0; i < n; i += 16)
    _mm512_stream_ps(w + i, rms512_step(&k, _mm512_load_ps(w + i), a + i, _mm512_loadu_ps(g + i)));
}

__attribute__((target("avx2"))) static void rmsprop_stream_avx2(float *w, float *a,
                                                                 const float *g, size_t n,
                                                                 float lr, float rho,
                                                                 float eps) {
  const __m256 vr = _mm256_set1_ps(rho), vo = _mm256_set1_ps(1.0f - rho),
               vl = _mm256_set1_ps(lr), ve = _mm256_set1_ps(eps);
  for (size_t i = 0; i < n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 av = _mm256_add_ps(_mm256_mul_ps(vr, _mm256_loadu_ps(a + i)),
                                    _mm256_mul_ps(_mm256_mul_ps(vo, gv), gv));
    _mm256_storeu_ps(a + i, av);
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(vl, gv),
                                      _mm256_sqrt_ps(_mm256_add_ps(av, ve)));
    _mm256_stream_ps(w + i, _mm256_sub_ps(_mm256_load_ps(w + i), step));
  }
}
#endif

void nn_k_rmsprop_stream(float *w, float *a, const float *g, size_t n, float lr, float rho,
                         float eps) {
#if defined(__x86_64__)
  const int wide = use_avx512(16);
  if (wide || __builtin_cpu_supports("avx2")) {
    /* Up to w's first line, and after its last whole one: plain stores. */
    size_t head = ((64 - ((uintptr_t)w & 63)) & 63) / sizeof(float);
    if (head > n) head = n;
    const size_t body = (n - head) & ~(size_t)15;
    const float *gh = g;
    if (head) nn_k_rmsprop_sum(w, a, &gh, 1, head, lr, rho, eps);
    if (body) {
      if (wide) rmsprop_stream_avx512(w + head, a + head, g + head, body, lr, rho, eps);
      else rmsprop_stream_avx2(w + head, a + head, g + head, body, lr, rho, eps);
      _mm_sfence();
    }
    const float *gt = g + head + body;
    if (n - head - body)
      nn_k_rmsprop_sum(w + head + body, a + head + body, &gt, 1, n - head - body, lr, rho, eps);
    return;
  }
#endif
  nn_k_rmsprop_sum(w, a, &g, 1, n, lr, rho, eps);
}

#if defined(__x86_64__)
__attribute__((target("clflushopt"))) static void flush_opt(const char *c, const char *end) {
  for (; c < end; c += 64) _mm_clflushopt((void *)c);
}

static void flush_plain(const char *c, const char *end) {
  for (; c < end; c += 64) _mm_clflush(c);
}

static int has_clflushopt(void) {
  static _Atomic int known; /* 0 unknown, 1 no, 2 yes: the same answer on every thread */
  int v = atomic_load_explicit(&known, memory_order_relaxed);
  if (!v) {
    unsigned a, b = 0, c, d;
    v = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_CLFLUSHOPT) ? 2 : 1;
    atomic_store_explicit(&known, v, memory_order_relaxed);
  }
  return v == 2;
}
#endif

void nn_k_flush(const void *p, size_t bytes) {
#if defined(__x86_64__)
  if (!p || !bytes) return;
  const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63), *end = (const char *)p + bytes;
  if (has_clflushopt()) flush_opt(c, end);
  else flush_plain(c, end);
#else
  (void)p, (void)bytes;
#endif
}
