/* Data augmentation: a random affine map per training image (shift,
 * rotation, scale about the centre), sampled bilinearly from the uint8
 * image. The draw for an image depends only on the trainer's seed, the
 * epoch and the image's place in the epoch, never on the thread count. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

#define SIDE NN_IMAGE_SIDE
#define CENTRE ((SIDE - 1) * 0.5f)

void nn_augment_apply(const uint8_t *src, uint8_t *dst, float dx, float dy, float degrees,
                      float scale) {
  /* Inverse map: output pixel p comes from R(-a) (p - c - t) / s + c. */
  float a = degrees * (float)(M_PI / 180.0), c = cosf(a), s = sinf(a);
  float inv = scale > 0.f ? 1.0f / scale : 1.0f;
  for (int y = 0; y < SIDE; y++)
    for (int x = 0; x < SIDE; x++) {
      float px = ((float)x - CENTRE - dx) * inv, py = ((float)y - CENTRE - dy) * inv;
      float sx = c * px + s * py + CENTRE, sy = -s * px + c * py + CENTRE;
      float fx = floorf(sx), fy = floorf(sy);
      int x0 = (int)fx, y0 = (int)fy;
      float wx = sx - fx, wy = sy - fy, v = 0.f;
      /* Outside the image is background (0). */
      for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
          int xi = x0 + i, yj = y0 + j;
          if (xi < 0 || xi >= SIDE || yj < 0 || yj >= SIDE) continue;
          v += (i ? wx : 1.f - wx) * (j ? wy : 1.f - wy) * (float)src[yj * SIDE + xi];
        }
      v = v + 0.5f;
      dst[y * SIDE + x] = (uint8_t)(v < 0.f ? 0 : v > 255.f ? 255 : (int)v);
    }
}

void nn_augment_random(const nn_augment *a, uint64_t key, const uint8_t *src, uint8_t *dst) {
  nn_rng r;
  nn_rng_seed(&r, key);
  float dx = (2.f * nn_rng_uniform(&r) - 1.f) * a->shift;
  float dy = (2.f * nn_rng_uniform(&r) - 1.f) * a->shift;
  float deg = (2.f * nn_rng_uniform(&r) - 1.f) * a->rotate;
  float sc = 1.f + (2.f * nn_rng_uniform(&r) - 1.f) * a->scale;
  nn_augment_apply(src, dst, dx, dy, deg, sc);
}

int nn_augment_valid(const nn_augment *a) {
  /* NaN fails every comparison. */
  return a->shift >= 0.f && a->shift <= 8.f && a->rotate >= 0.f && a->rotate <= 180.f &&
         a->scale >= 0.f && a->scale <= 0.5f;
}
