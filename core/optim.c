/* Optimizers with Keras (TF2) semantics. One call updates the whole
 * parameter block: the loops are flat so they vectorise. */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

void nn_opt_defaults(nn_opt_config *c, nn_opt_kind kind) {
  memset(c, 0, sizeof *c);
  c->kind = kind;
  c->lr = kind == NN_OPT_SGD ? 0.01f : 0.001f;
  c->rho = 0.9f;
  c->momentum = 0.0f;
  c->beta1 = 0.9f;
  c->beta2 = 0.999f;
  c->epsilon = 1e-7f;
}

int nn_opt_parse(const char *name, nn_opt_kind *kind) {
  if (!name || !kind) return NN_EINVAL;
  if (!strcmp(name, "rmsprop")) *kind = NN_OPT_RMSPROP;
  else if (!strcmp(name, "sgd")) *kind = NN_OPT_SGD;
  else if (!strcmp(name, "adam")) *kind = NN_OPT_ADAM;
  else return NN_EINVAL;
  return 0;
}

const char *nn_opt_name(nn_opt_kind kind) {
  switch (kind) {
  case NN_OPT_RMSPROP: return "rmsprop";
  case NN_OPT_SGD: return "sgd";
  case NN_OPT_ADAM: return "adam";
  }
  return "unknown";
}

uint32_t nn_opt_slots(nn_opt_kind kind) { return kind == NN_OPT_ADAM ? 2 : 1; }

NN_HOT static void rmsprop(float *restrict w, const float *restrict g, float *restrict a,
                    size_t n, float lr, float rho, float eps) {
  float one_m = 1.0f - rho;
  for (size_t i = 0; i < n; i++) {
    float ai = rho * a[i] + one_m * g[i] * g[i];
    a[i] = ai;
    w[i] -= lr * g[i] / sqrtf(ai + eps);
  }
}

NN_HOT static void sgd(float *restrict w, const float *restrict g, float *restrict v,
                size_t n, float lr, float mom) {
  for (size_t i = 0; i < n; i++) {
    float vi = mom * v[i] - lr * g[i];
    v[i] = vi;
    w[i] += vi;
  }
}

NN_HOT static void adam(float *restrict w, const float *restrict g, float *restrict m,
                 float *restrict v, size_t n, float lr_t, float b1, float b2,
                 float eps_hat) {
  for (size_t i = 0; i < n; i++) {
    float mi = b1 * m[i] + (1.0f - b1) * g[i];
    float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    w[i] -= lr_t * mi / (sqrtf(vi) + eps_hat);
  }
}

void nn_opt_step(const nn_opt_config *c, float *w, const float *g, float *state,
                 size_t n, uint64_t t) {
  nn_opt_step_range(c, w, g, state, n, n, t);
}

void nn_opt_step_range(const nn_opt_config *c, float *w, const float *g, float *state,
                       size_t n, size_t stride, uint64_t t) {
  switch (c->kind) {
  case NN_OPT_RMSPROP:
    rmsprop(w, g, state, n, c->lr, c->rho, c->epsilon);
    break;
  case NN_OPT_SGD:
    sgd(w, g, state, n, c->lr, c->momentum);
    break;
  case NN_OPT_ADAM: {
    /* Keras folds the bias corrections into the step size and adds its
     * epsilon ("epsilon hat") unscaled. */
    double b1t = 1.0 - pow(c->beta1, (double)t), b2t = 1.0 - pow(c->beta2, (double)t);
    float lr_t = (float)(c->lr * sqrt(b2t) / b1t);
    adam(w, g, state, state + stride, n, lr_t, c->beta1, c->beta2, c->epsilon);
    break;
  }
  }
}
