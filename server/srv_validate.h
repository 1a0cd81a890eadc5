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
  char arch[16];          /* antirectifier | relu */
  char dataset[16];       /* mnist | fashion-mnist */
  uint32_t epochs;        /* 1..1000, default 4 */
  uint32_t batch_size;    /* 1..4096, default 128 */
  nn_opt_kind optimizer;  /* default rmsprop */
  float learning_rate;    /* (0, 10], default per optimizer */
  float momentum;         /* sgd only, [0, 1), default 0 */
  uint64_t seed;          /* default 1 */
  srv_activate activate;  /* default if_better */
  uint32_t train_limit;   /* 0 = all training images */
  uint32_t test_limit;    /* 0 = all test images */
} srv_job_config;

#define SRV_MAX_EPOCHS 1000
#define SRV_MAX_BATCH 4096
#define SRV_MAX_PREDICT_IMAGES 1024

void srv_job_config_defaults(srv_job_config *c);

/* Parses a POST /v1/jobs body (may be empty: all defaults). Unknown
 * fields, wrong types and out-of-range values are errors naming the field,
 * e.g. "epochs must be an integer from 1 to 1000". */
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

#endif
