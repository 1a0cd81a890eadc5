/*
 * fuzz_model.c — libFuzzer target for model files and checkpoints
 * (core/modelfile.c): nn_model_load_mem on the input, and nn_checkpoint_load
 * on it as a file.
 *
 * Model files end in a CRC32 over everything before it, which random
 * mutation almost never gets right. So besides the bytes as they are, the
 * harness also loads a copy whose last four bytes hold the correct CRC:
 * that copy reaches the code after the checksum (weights, checkpoint
 * section, trainer creation) as an attacker who writes a file would.
 *
 * Invariants checked besides "no crash / no sanitizer report":
 *   - success: the layer list is well formed (ends Dense(10), Softmax), the
 *     file length is exactly what the header implies, every weight is
 *     finite; the model can be cloned and, for 784 inputs, run on an image;
 *     a checkpoint yields a trainer on that model that can take one step;
 *   - failure: a negative code, *out reset to NULL, err filled with the same
 *     code and a non-empty message.
 */
#include "fuzz_common.h"

#include <math.h>
#include <zlib.h>

#include "nn.h"

#define MODEL_FUZZ_HDR 56u   /* format version 1: fixed header, 12-byte layer records */
#define MODEL_FUZZ_LAYER 12u
#define MODEL_FUZZ_HDR2 64u  /* version 2: fixed header, 32-byte spec records */
#define MODEL_FUZZ_SPEC 32u
#define MODEL_FUZZ_CKPT (4u + 6u * 4u + 4u + 8u + 4u + 8u)
/* A file this small must never need so much memory that loading it fails:
 * allocations are to be bounded by the file's size, not by its claims.
 * (libFuzzer stops such inputs at -malloc_limit_mb; the regression test caps
 * its address space so that they end here.) */
#define MODEL_FUZZ_SMALL ((size_t)16 << 20)

static uint32_t model_fuzz_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void model_fuzz_check_model(const nn_model *m, size_t size, uint32_t version, int ckpt_flag) {
  FUZZ_CHECK(m->n_layers >= 2 && m->n_layers <= NN_MAX_LAYERS, "n_layers %u", m->n_layers);
  FUZZ_CHECK(memchr(m->arch, '\0', sizeof m->arch) != NULL, "arch not terminated");
  const nn_layer *last = &m->layers[m->n_layers - 1], *logits = &m->layers[m->n_layers - 2];
  FUZZ_CHECK(last->type == NN_LAYER_SOFTMAX && logits->type == NN_LAYER_DENSE &&
                 logits->out == NN_CLASSES,
             "model does not end with Dense(10), Softmax");
  uint32_t width = m->n_inputs;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    /* Convolutions' feature maps may be wider than NN_MAX_WIDTH (a dense
     * limit); every activation must fit the workspaces sized by max_width. */
    FUZZ_CHECK(l->in == width && l->out >= 1 && l->out <= m->max_width, "layer %u shape", i);
    if (l->type == NN_LAYER_DENSE)
      FUZZ_CHECK(l->b_off == l->w_off + (size_t)l->in * l->out && l->b_off + l->out <= m->n_params,
                 "layer %u parameter slice outside the block", i);
    width = l->out;
  }
  FUZZ_CHECK(m->max_width >= m->n_inputs, "max_width %u", m->max_width);
  size_t want = version == 1
                    ? MODEL_FUZZ_HDR + (size_t)m->n_layers * MODEL_FUZZ_LAYER
                    : MODEL_FUZZ_HDR2 + (size_t)m->n_specs * MODEL_FUZZ_SPEC;
  want += 8 + m->n_params * 4 + 4;
  if (!ckpt_flag)
    FUZZ_CHECK(size == want, "file is %zu bytes, header implies %zu", size, want);
  else
    FUZZ_CHECK(size >= want + MODEL_FUZZ_CKPT, "checkpoint of %zu bytes accepted", size);
  for (size_t i = 0; i < m->n_params; i++)
    FUZZ_CHECK(isfinite(m->params[i]), "weight %zu is not finite", i);
}

/* Exercise an accepted model the way the daemon would. */
static void model_fuzz_use(const nn_model *m) {
  nn_model *c = NULL;
  if (nn_model_clone(&c, m) == 0) {
    FUZZ_CHECK(c->n_params == m->n_params &&
                   memcmp(c->params, m->params, m->n_params * sizeof(float)) == 0,
               "clone differs");
    nn_model_free(c);
  }
  if (m->n_inputs != NN_IMAGE_SIZE || m->n_params > (1u << 22)) return;
  nn_workspace *ws = NULL;
  if (nn_workspace_create(&ws, m, 1) != 0) return;
  uint8_t img[NN_IMAGE_SIZE];
  for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)(i * 7);
  float probs[NN_CLASSES];
  FUZZ_CHECK(nn_predict_u8(m, ws, img, 1, probs) == 0, "predict refused a loaded model");
  (void)nn_argmax(probs);
  nn_workspace_free(ws);
}

static void model_fuzz_mem(const uint8_t *data, size_t size) {
  nn_model *m = (nn_model *)1;
  nn_err err;
  memset(&err, 0, sizeof err);
  int rc = nn_model_load_mem(&m, data, size, &err);
  if (rc == 0) {
    FUZZ_CHECK(m != NULL, "success without a model");
    model_fuzz_check_model(m, size, model_fuzz_le32(data + 8),
                           size >= 16 && (model_fuzz_le32(data + 12) & 1));
    model_fuzz_use(m);
    nn_model_free(m);
  } else {
    FUZZ_CHECK(rc < 0, "rc = %d", rc);
    FUZZ_CHECK(m == NULL, "*out not reset on failure (rc %d)", rc);
    FUZZ_CHECK(err.code == rc && err.msg[0] != '\0', "err not filled: code %d, rc %d", err.code,
               rc);
    FUZZ_CHECK(rc != NN_ENOMEM || size > MODEL_FUZZ_SMALL,
               "a %zu-byte model file ran the loader out of memory: %s", size, err.msg);
  }
}

static void model_fuzz_checkpoint(const uint8_t *data, size_t size) {
  const char *path = fuzz_file_set(data, size);
  if (path == NULL) return;
  nn_model *m = (nn_model *)1;
  nn_trainer *t = (nn_trainer *)1;
  nn_err err;
  memset(&err, 0, sizeof err);
  int rc = nn_checkpoint_load(&m, &t, path, &err);
  if (rc != 0) {
    FUZZ_CHECK(rc < 0, "rc = %d", rc);
    FUZZ_CHECK(m == NULL && t == NULL, "outputs not reset on failure (rc %d)", rc);
    FUZZ_CHECK(err.code == rc && err.msg[0] != '\0', "err not filled: code %d, rc %d", err.code,
               rc);
    FUZZ_CHECK(rc != NN_ENOMEM || size > MODEL_FUZZ_SMALL,
               "a %zu-byte checkpoint ran the loader out of memory: %s", size, err.msg);
    return;
  }
  FUZZ_CHECK(m != NULL && t != NULL, "success without model and trainer");
  FUZZ_CHECK(nn_trainer_model(t) == m, "trainer is not bound to the loaded model");
  model_fuzz_check_model(m, size, size >= 12 ? model_fuzz_le32(data + 8) : 0, 1);
  const nn_train_config *cfg = nn_trainer_config(t);
  FUZZ_CHECK(cfg->batch_size >= 1 && (uint32_t)cfg->opt.kind <= NN_OPT_ADAM, "bad config");
  /* One optimizer step with the file's hyper-parameters and state (small
   * models only: this is about memory safety, not speed). */
  if (m->n_params <= (1u << 20)) {
    static float x[NN_IMAGE_SIZE];
    const uint8_t label = 3;
    float loss = 0;
    for (size_t i = 0; i < NN_IMAGE_SIZE; i++) x[i] = (float)(i % 17) / 16.0f;
    FUZZ_CHECK(nn_train_batch(t, x, &label, 1, &loss) == 0, "train_batch refused");
  }
  nn_trainer_free(t);
  nn_model_free(m);
}

int fuzz_model(const uint8_t *data, size_t size) {
  static int once;
  if (!once) {
    nn_set_threads(1);
    once = 1;
  }
  if (size > (8u << 20)) return 0;
  model_fuzz_mem(data, size);
  if (size < 12) {
    model_fuzz_checkpoint(data, size);
    return 0;
  }
  uint32_t crc = (uint32_t)crc32(0L, data, (uInt)(size - 4));
  if (crc == model_fuzz_le32(data + size - 4)) {
    model_fuzz_checkpoint(data, size);
    return 0;
  }
  uint8_t *fixed = malloc(size);
  if (fixed == NULL) return 0;
  memcpy(fixed, data, size - 4);
  for (int i = 0; i < 4; i++) fixed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
  model_fuzz_mem(fixed, size);
  model_fuzz_checkpoint(fixed, size);
  free(fixed);
  return 0;
}

#ifndef FUZZ_NO_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_model(data, size); }
#endif
