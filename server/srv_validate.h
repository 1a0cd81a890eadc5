/* Request validation: JSON bodies to C structs, with messages that name the
 * offending field. Pure functions (no I/O, no globals), so they are unit
 * tested table by table and fuzzed. All return 0 or -EINVAL (bad input,
 * msg says why) / -E2BIG (too many images) / -ENOMEM. */
#ifndef MNISTD_SRV_VALIDATE_H
#define MNISTD_SRV_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

typedef enum { SRV_ACTIVATE_IF_BETTER = 0, SRV_ACTIVATE_ALWAYS, SRV_ACTIVATE_NEVER } srv_activate;

typedef struct srv_job_config {
  char arch[16];          /* antirectifier | relu | cnn | custom */
  char dataset[72];       /* mnist | fashion-mnist | an uploaded set's name */
  uint32_t epochs;        /* 1..1000, default 4 */
  uint32_t batch_size;    /* 1..4096, default 128 */
  nn_opt_kind optimizer;  /* default rmsprop */
  float learning_rate;    /* (0, 10], default per optimizer */
  float momentum;         /* sgd only, [0, 1), default 0 */
  uint64_t seed;          /* default 1 */
  srv_activate activate;  /* default if_better */
  uint32_t train_limit;   /* 0 = all training images */
  uint32_t test_limit;    /* 0 = all test images */
  uint32_t n_layers;      /* the network: the preset's spec or "layers" */
  nn_layer_spec layers[NN_MAX_SPECS];
  nn_augment augment;     /* all zero: off */
} srv_job_config;

#define SRV_MAX_EPOCHS 1000
#define SRV_MAX_BATCH 4096
#define SRV_MAX_PREDICT_IMAGES 1024
/* The most JSON values (nodes) a body may hold, checked before a tree is
 * built: a maximal request of each endpoint plus a little slack. An 8 MiB
 * body of "0," would otherwise become 4 million cJSON nodes (~300 MB). */
#define SRV_JOB_MAX_VALUES 1024
#define SRV_PREDICT_MAX_VALUES ((size_t)SRV_MAX_PREDICT_IMAGES * (NN_IMAGE_SIZE + 1) + 16)
#define SRV_TFS_MAX_VALUES                                                                   \
  ((size_t)SRV_MAX_PREDICT_IMAGES * (NN_IMAGE_SIZE + NN_IMAGE_SIDE + 1) + 16)

/* Fills *c with the defaults a POST /v1/jobs body leaves out (the seed
 * network: antirectifier on mnist, 4 epochs, RMSprop). Cannot fail. */
void srv_job_config_defaults(srv_job_config *c);

/* Parses a POST /v1/jobs body (may be empty: all defaults). Unknown
 * fields, wrong types and out-of-range values are errors naming the field,
 * e.g. "epochs must be an integer from 1 to 1000". The network is "arch" (a
 * preset) or "layers" (a spec, srv_spec.h; arch then reads "custom"); its
 * shapes and limits are checked for the batch size, and a bad spec's
 * message names the layer ("layers[2] conv2d: kernel 5 is larger than its
 * 4x4 input"). */
int srv_job_config_parse(const char *body, size_t len, srv_job_config *c, char *msg,
                         size_t msglen);

/* Canonical JSON of a config (every field explicit). Caller frees. */
char *srv_job_config_json(const srv_job_config *c);

/* Parses {"image":[784 numbers 0..255]} or {"images":[[784], ...]} (at
 * most SRV_MAX_PREDICT_IMAGES). Numbers are rounded to the nearest
 * integer. *pixels is malloc'd (n * 784 bytes); the caller frees it. */
int srv_predict_json_parse(const char *body, size_t len, uint8_t **pixels, uint32_t *n,
                           char *msg, size_t msglen);

/* TensorFlow-Serving style {"instances": [...]}: each instance is 784
 * numbers in [0, 1] or 28 rows of 28. *x is malloc'd n * 784 floats. */
int srv_tfs_parse(const char *body, size_t len, float **x, uint32_t *n, char *msg,
                  size_t msglen);

/* What cJSON lets through and JSON or this API does not, found without
 * building a tree: bytes that are not UTF-8, NUL in strings (a "\u0000"
 * would cut "fashion-mnist\u0000x" to a valid name), numbers with leading
 * zeros ("05"), and more than max_values values. Returns 0, -EINVAL or
 * -E2BIG (too many values), msg saying where. */
int srv_json_prescan(const char *body, size_t len, size_t max_values, char *msg,
                     size_t msglen);

/* Copies at most srclen bytes of src (stopping at a NUL) into dst as valid
 * UTF-8, clipped on a character boundary to dstlen - 1 bytes and
 * terminated. SRV_CLEAN_JSON replaces bytes that are not UTF-8 with U+FFFD
 * (cJSON escapes the rest); SRV_CLEAN_LOG writes them, control characters
 * and backslash as \xNN / \\, so one log line stays one line. Returns
 * the length written. */
enum { SRV_CLEAN_JSON = 0, SRV_CLEAN_LOG = 1 };
size_t srv_text_clean(char *dst, size_t dstlen, const char *src, size_t srclen, int mode);

/* Rewrites every integral number >= 1e15 of a cJSON tree (and its
 * siblings) as a raw literal, so cJSON prints it digit for digit. */
struct cJSON;
void srv_json_exact_ints(struct cJSON *node);

/* 1 if name is a valid data set name: [a-z0-9][a-z0-9._-]{0,63}. */
int srv_dataset_name_ok(const char *name);
/* 1 for "mnist" and "fashion-mnist" (installed beside the binary). */
int srv_dataset_is_builtin(const char *name);

#endif
