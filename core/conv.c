/* Convolution and pooling on NHWC feature maps. A convolution is im2col +
 * one matrix product through oneDNN (dnn.c): with the patch matrix
 * col[n*oh*ow][k*k*c] and weights W[filters][k*k*c], the forward pass is
 * exactly a dense layer over n*oh*ow rows, and so are its two gradients.
 * The copies here are the only loops; no hand-rolled products. */
#include "nn_internal.h"

#include <float.h>
#include <string.h>

void nn_im2col(const float *restrict x, uint32_t n, const nn_layer *l, float *restrict col) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  const size_t K = (size_t)k * k * C, run = (size_t)C * sizeof(float);
  for (uint32_t b = 0; b < n; b++) {
    const float *xb = x + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        float *row = col + (((size_t)b * OH + oy) * OW + ox) * K;
        for (uint32_t ky = 0; ky < k; ky++) {
          int64_t iy = (int64_t)oy * s + ky - l->pad_t;
          float *dst = row + (size_t)ky * k * C;
          if (iy < 0 || iy >= H) {
            memset(dst, 0, (size_t)k * run);
            continue;
          }
          int64_t ix0 = (int64_t)ox * s - l->pad_l;
          if (ix0 >= 0 && ix0 + k <= W) {
            /* The whole kernel row is inside: one contiguous copy. */
            memcpy(dst, xb + ((size_t)iy * W + ix0) * C, (size_t)k * run);
            continue;
          }
          for (uint32_t kx = 0; kx < k; kx++) {
            int64_t ix = ix0 + kx;
            if (ix < 0 || ix >= W)
              memset(dst + (size_t)kx * C, 0, run);
            else
              memcpy(dst + (size_t)kx * C, xb + ((size_t)iy * W + ix) * C, run);
          }
        }
      }
  }
}

NN_HOT void nn_col2im(const float *restrict col, uint32_t n, const nn_layer *l,
                      float *restrict dx) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  const size_t K = (size_t)k * k * C;
  memset(dx, 0, (size_t)n * H * W * C * sizeof(float));
  for (uint32_t b = 0; b < n; b++) {
    float *xb = dx + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        const float *row = col + (((size_t)b * OH + oy) * OW + ox) * K;
        for (uint32_t ky = 0; ky < k; ky++) {
          int64_t iy = (int64_t)oy * s + ky - l->pad_t;
          if (iy < 0 || iy >= H) continue;
          for (uint32_t kx = 0; kx < k; kx++) {
            int64_t ix = (int64_t)ox * s + kx - l->pad_l;
            if (ix < 0 || ix >= W) continue;
            const float *src = row + ((size_t)ky * k + kx) * C;
            float *dst = xb + ((size_t)iy * W + ix) * C;
#pragma omp simd
            for (uint32_t c = 0; c < C; c++) dst[c] += src[c];
          }
        }
      }
  }
}

NN_HOT void nn_maxpool_fwd(const float *restrict x, uint32_t n, const nn_layer *l,
                           float *restrict y, uint32_t *restrict idx) {
  const uint32_t H = l->ishape.h, W = l->ishape.w, C = l->ishape.c;
  const uint32_t OH = l->oshape.h, OW = l->oshape.w, k = l->kernel, s = l->stride;
  for (uint32_t b = 0; b < n; b++) {
    const float *xb = x + (size_t)b * H * W * C;
    for (uint32_t oy = 0; oy < OH; oy++)
      for (uint32_t ox = 0; ox < OW; ox++) {
        size_t o = (((size_t)b * OH + oy) * OW + ox) * C;
        float *yo = y + o;
        uint32_t *io = idx + o;
        for (uint32_t c = 0; c < C; c++) {
          yo[c] = -FLT_MAX;
          io[c] = 0;
        }
        /* The first maximum in window order wins ties (strict >). */
        for (uint32_t ky = 0; ky < k; ky++)
          for (uint32_t kx = 0; kx < k; kx++) {
            uint32_t p = ((oy * s + ky) * W + ox * s + kx) * C;
            const float *xp = xb + p;
#pragma omp simd
            for (uint32_t c = 0; c < C; c++) {
              int gt = xp[c] > yo[c];
              yo[c] = gt ? xp[c] : yo[c];
              io[c] = gt ? p + c : io[c];
            }
          }
      }
  }
}

void nn_maxpool_bwd(const float *restrict g, const uint32_t *restrict idx, uint32_t n,
                    const nn_layer *l, float *restrict dx) {
  memset(dx, 0, (size_t)n * l->in * sizeof(float));
  for (uint32_t b = 0; b < n; b++) {
    const float *gb = g + (size_t)b * l->out;
    const uint32_t *ib = idx + (size_t)b * l->out;
    float *db = dx + (size_t)b * l->in;
    for (uint32_t o = 0; o < l->out; o++) db[ib[o]] += gb[o];
  }
}
