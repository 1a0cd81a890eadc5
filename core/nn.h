/*
 * nn.h — the mnistd core: data sets, a small sequential network, training,
 * inference and model files. This header is the manual.
 *
 * Example: train the seed's network for an epoch, measure it, classify an
 * image and save the model (tests/test_nn_example.c compiles and runs this
 * very text, so it stays true):
 *
 *     #include "nn.h"
 *
 *     int example(const char *mnist_dir, const char *path, float *acc, int *label) {
 *       nn_dataset train = {0}, test = {0};
 *       nn_model *m = NULL; nn_trainer *t = NULL; nn_workspace *ws = NULL;
 *       nn_train_config cfg; nn_epoch_metrics em; nn_err err = {0};
 *       float probs[NN_CLASSES];
 *       nn_train_defaults(&cfg);                        // batch 128, RMSprop, seed 1
 *       int rc = nn_dataset_load_dir(&train, mnist_dir, NN_SPLIT_TRAIN, &err);
 *       if (!rc) rc = nn_dataset_load_dir(&test, mnist_dir, NN_SPLIT_TEST, &err);
 *       nn_dataset_truncate(&train, 10000);             // a quick run
 *       if (!rc) rc = nn_model_create_preset(&m, "antirectifier");
 *       if (!rc) nn_model_init(m, cfg.seed);
 *       if (!rc) rc = nn_trainer_create(&t, m, &cfg);
 *       if (!rc) rc = nn_train_epoch(t, &train, NULL, NULL, NULL, &em);
 *       if (!rc) rc = nn_workspace_create(&ws, m, 500);  // inference, 500 at a time
 *       if (!rc) rc = nn_evaluate(m, ws, &test, NULL, acc, NULL);
 *       if (!rc) rc = nn_predict_u8(m, ws, test.images, 1, probs);  // one 28x28 image
 *       if (!rc) *label = nn_argmax(probs);
 *       if (!rc) rc = nn_model_save(m, path, &err);      // atomic; nn_model_load reads it
 *       nn_workspace_free(ws); nn_trainer_free(t); nn_model_free(m);
 *       nn_dataset_free(&test); nn_dataset_free(&train);
 *       return rc;                                      // err.msg says why, for files
 *     }
 *
 * Rules that hold for every function below unless its contract says otherwise:
 *   - Functions return int: 0 on success, a negative NN_E* code on failure
 *     (errno-style, as in libuv). nn_strerror() names a code.
 *   - A function that fails leaves nothing half-done: outputs are untouched
 *     or reset to an empty state, and nothing is leaked.
 *   - Functions that take an `nn_err *err` fill it on failure with the code
 *     and a sentence a person can act on (naming the file and what is wrong).
 *     `err` may be NULL.
 *   - Every *_create has a *_free; *_free(NULL) is a no-op.
 *   - The core is pure: no sockets, no JSON, no printing, no mutable globals.
 *     The one process-wide knob, nn_set_threads(), sets the team size of the
 *     matrix products (oneDNN).
 *
 * Numbers: float32 everywhere. Images are 28x28 uint8 (0 = background,
 * 255 = ink, as in MNIST) and are converted to x/255 floats batch by batch.
 *
 * Dense weights are stored [out][in] row-major (as PyTorch does), followed by
 * the bias [out]. All parameters of a model live in one contiguous block, in
 * layer order; gradients and optimizer state mirror that block.
 */
#ifndef MNISTD_NN_H
#define MNISTD_NN_H

#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */

#define NN_EINVAL    (-EINVAL)   /* bad argument */
#define NN_ENOMEM    (-ENOMEM)   /* allocation failed */
#define NN_EIO       (-EIO)      /* read/write/fsync/rename failed */
#define NN_ENOENT    (-ENOENT)   /* file not found */
#define NN_ENOSPC    (-ENOSPC)   /* disk full while saving */
#define NN_ECANCELED (-ECANCELED)/* training stopped by the cancel flag */
#define NN_EFORMAT   (-4001)     /* file is not in the expected format */
#define NN_ETRUNC    (-4002)     /* file is shorter than its header says */
#define NN_ECHECKSUM (-4003)     /* CRC32 mismatch: the file is corrupted */
#define NN_ETOOBIG   (-4004)     /* file or dimension beyond the sane limits */
#define NN_EVERSION  (-4005)     /* model file from an unsupported version */
#define NN_EMISMATCH (-4006)     /* shapes or counts that do not agree */

typedef struct nn_err {
  int code;
  char msg[512];
} nn_err;

/* Returns a static, human-readable name for an NN_E* code (or any negative
 * errno). Never NULL. */
const char *nn_strerror(int code);

/* ---------------------------------------------------------------- threads */

/* Sets the number of threads each matrix product may use, for every later
 * call from any thread of this process (n >= 1; applied per call, on the
 * calling thread). Until it is called, oneDNN's OpenMP default applies
 * (OMP_NUM_THREADS, or one per core). Trainers ignore it: each of their
 * threads runs single-threaded products. Same seed + same thread count
 * gives bit-identical training. */
void nn_set_threads(int n);

/* Which matrix-product kernels this process runs. library: "oneDNN 2.6.3";
 * isa: the instruction set oneDNN dispatches to on this CPU (after any
 * ONEDNN_MAX_CPU_ISA cap), e.g. "avx512_core_amx", "avx2"; kernel: the
 * implementation it picks for the seed network's first layer, e.g.
 * "brg:avx512_core". The first call compiles a kernel to ask (~1 ms); later
 * calls return the same answer at once. Never fails; unknown parts read
 * "unknown". Thread-safe. */
typedef struct nn_backend_info {
  char library[32];
  char isa[32];
  char kernel[48];
} nn_backend_info;
void nn_backend_info_get(nn_backend_info *out);

/* ---------------------------------------------------------------- data */

/* Limits that keep a hostile file from exhausting memory. */
#define NN_IDX_MAX_ITEMS 10000000u          /* images or labels per file */
#define NN_IDX_MAX_BYTES (1u << 30)        /* payload bytes per file */
#define NN_IMAGE_SIDE 28
#define NN_IMAGE_SIZE (NN_IMAGE_SIDE * NN_IMAGE_SIDE)
#define NN_CLASSES 10               /* MNIST's and Fashion-MNIST's classes */
#define NN_MAX_CLASSES 256          /* widest output layer (uploaded data sets) */

/* A labelled set of 28x28 images kept as uint8. */
typedef struct nn_dataset {
  uint32_t n;        /* number of samples */
  uint32_t rows;     /* 28 */
  uint32_t cols;     /* 28 */
  uint8_t *images;   /* n * rows * cols bytes, owned */
  uint8_t *labels;   /* n bytes, each < NN_CLASSES, owned */
} nn_dataset;

/* Reads an IDX file of uint8 images (magic 0x00000803, 3 dimensions), plain
 * or gzip-compressed (detected from content, not the name). On success
 * *images is a malloc'd buffer of n*rows*cols bytes the caller frees.
 * Rejects: wrong magic or type, dimension count != 3, zero or oversized
 * dimensions, payloads larger than NN_IDX_MAX_BYTES, files shorter than the
 * header says (NN_ETRUNC) and files with trailing bytes (NN_EFORMAT). */
int nn_idx_read_images(const char *path, uint8_t **images, uint32_t *n,
                       uint32_t *rows, uint32_t *cols, nn_err *err);

/* Reads an IDX file of uint8 labels (magic 0x00000801, 1 dimension), plain
 * or gzip. *labels is malloc'd; the caller frees it. Every label must be
 * < NN_CLASSES. Same rejections as nn_idx_read_images. */
int nn_idx_read_labels(const char *path, uint8_t **labels, uint32_t *n,
                       nn_err *err);

/* Loads an image file and a label file into ds (which is overwritten; on
 * failure it is left zeroed). The counts must match and images must be
 * 28x28. Free with nn_dataset_free. */
int nn_dataset_load(nn_dataset *ds, const char *images_path,
                    const char *labels_path, nn_err *err);

/* Which split of a data set directory to load. */
typedef enum { NN_SPLIT_TRAIN = 0, NN_SPLIT_TEST = 1 } nn_split;

/* Loads the train or test split from a directory holding the four standard
 * files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
 * t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each plain or with a .gz
 * suffix; the plain file wins when both exist. */
int nn_dataset_load_dir(nn_dataset *ds, const char *dir, nn_split split,
                        nn_err *err);

/* The number of samples in a split of such a directory, from the label
 * file's header alone (nothing is loaded): 0 and *n, or NN_ENOENT when the
 * file is absent, NN_EFORMAT/NN_ETRUNC for a header that is no IDX label
 * header, NN_EIO when it cannot be read. */
int nn_dataset_count_dir(const char *dir, nn_split split, uint32_t *n, nn_err *err);

/* Keeps only the first n samples (n larger than ds->n is a no-op). Does not
 * reallocate. */
void nn_dataset_truncate(nn_dataset *ds, uint32_t n);

/* Frees the buffers and zeroes ds. NULL and zeroed datasets are fine. */
void nn_dataset_free(nn_dataset *ds);

/* ---------------------------------------------------------------- model */

typedef enum {
  NN_LAYER_DENSE = 1,    /* y = x W^T + b; param = out units */
  NN_LAYER_ANTIRECT = 2, /* mean-centre, L2-normalise, [relu(x), relu(-x)];
                            on a feature map: across channels, per position */
  NN_LAYER_RELU = 3,
  NN_LAYER_DROPOUT = 4,  /* inverted dropout at rate `rate`, training only */
  NN_LAYER_SOFTMAX = 5,  /* last layer; fused with cross-entropy in training */
  NN_LAYER_CONV2D = 6,   /* 2-D convolution, NHWC, weights [filters][k][k][in_c] */
  NN_LAYER_MAXPOOL = 7,  /* 2-D max pooling, no padding */
  NN_LAYER_FLATTEN = 8,  /* feature map -> vector (NHWC order, as Keras) */
  NN_LAYER_BATCHNORM = 9 /* Keras BatchNormalization: per unit of a vector, per
                            channel (over batch, height, width) of a feature map */
} nn_layer_type;

typedef enum { NN_PAD_VALID = 0, NN_PAD_SAME = 1 } nn_padding;
typedef enum { NN_ACT_NONE = 0, NN_ACT_RELU = 1 } nn_activation;

/* One layer of a network as its user describes it (the JSON spec, parsed).
 * Fields a type does not use are ignored and should be zero. */
typedef struct nn_layer_spec {
  nn_layer_type type;
  uint32_t units;         /* DENSE: output width */
  float rate;             /* DROPOUT: drop probability in [0, 1) */
  uint32_t filters;       /* CONV2D: output channels */
  uint32_t kernel;        /* CONV2D: kernel side; MAXPOOL: window side */
  uint32_t stride;        /* CONV2D: 1 or 2 (0 = 1); MAXPOOL: 0 = the window side */
  nn_padding padding;     /* CONV2D */
  nn_activation activation; /* DENSE, CONV2D: relu runs as a separate layer */
  float momentum;         /* BATCHNORM: moving-average factor in [0, 1) (Keras 0.99) */
  float epsilon;          /* BATCHNORM: added to the variance, (0, 1] (Keras 0.001) */
} nn_layer_spec;

/* Keras' BatchNormalization defaults, for specs written in C (the JSON
 * parser fills them in when a layer leaves them out). */
#define NN_BN_MOMENTUM 0.99f
#define NN_BN_EPSILON 0.001f

/* A feature map's shape per sample; a vector of n is {1, 1, n}. */
typedef struct nn_shape { uint32_t h, w, c; } nn_shape;

#define NN_MAX_SPECS 64               /* layers a user spec may have */
#define NN_MAX_LAYERS (2 * NN_MAX_SPECS + 1) /* built: activations split + softmax */
#define NN_MAX_WIDTH 65536            /* dense units */
#define NN_MAX_PARAMS 50000000u
#define NN_MAX_FILTERS 4096
#define NN_MAX_ELEMS (1u << 22)       /* activation elements per sample and layer */
/* Per-batch activation budget (all shards of a trainer together). */
#define NN_ACT_BUDGET_BYTES ((size_t)1 << 30)

/* A built layer: shapes resolved and its slice of the parameter block. */
typedef struct nn_layer {
  nn_layer_type type;
  uint32_t in, out;       /* elements per sample of input and output */
  float rate;
  size_t w_off, b_off;    /* DENSE, CONV2D: offsets into the parameter block;
                             BATCHNORM: gamma[c] at w_off, then beta[c] at b_off,
                             moving_mean[c] at b_off + c, moving_variance[c]
                             at b_off + 2c (c = ishape.c; Keras' order) */
  float momentum, epsilon; /* BATCHNORM */
  nn_shape ishape, oshape;
  uint32_t kernel, stride; /* CONV2D, MAXPOOL */
  uint32_t pad_t, pad_l;   /* CONV2D: zero rows above, columns left */
  uint32_t spec;          /* index of the spec entry it was built from */
} nn_layer;

typedef struct nn_model {
  char arch[32];          /* preset name or "custom" */
  uint32_t n_inputs;      /* 784 */
  uint32_t n_layers;
  nn_layer layers[NN_MAX_LAYERS];
  size_t n_params;
  float *params;          /* one block: per DENSE layer W[out][in] then b[out] */
  uint32_t max_width;     /* widest activation, for workspaces */
  nn_shape input;         /* 28x28x1 */
  uint32_t n_specs;       /* the spec it was built from (no softmax) */
  nn_layer_spec specs[NN_MAX_SPECS];
} nn_model;

/* Builds a model from a layer list in the old form: the list must end with
 * DENSE(k) then SOFTMAX, with 2 <= k <= NN_MAX_CLASSES (one unit per class). The input is a 28x28x1 image
 * when n_inputs is 784, else a vector. Weights are zeroed; call
 * nn_model_init to randomise. *out is owned by the caller (nn_model_free). */
int nn_model_create(nn_model **out, const char *arch, uint32_t n_inputs,
                    const nn_layer_spec *specs, uint32_t n_specs);

/* Checks a user spec against an input shape and `classes` outputs (shape
 * inference): the softmax is added by the core after the last layer, which
 * must be dense with `classes` units and no activation. A dense layer on a
 * feature map reads it flattened. Limits: NN_MAX_SPECS layers,
 * NN_MAX_PARAMS parameters and, when batch > 0, NN_ACT_BUDGET_BYTES of
 * activations and scratch for a batch of that size split over `threads`.
 * Returns 0 and the parameter count in *n_params (may be NULL), or
 * NN_EINVAL / NN_ETOOBIG with err->msg naming the layer and the reason,
 * e.g. "layers[2] conv2d: kernel 5 is larger than its 4x4 input". */
int nn_spec_check(const nn_layer_spec *specs, uint32_t n, nn_shape input, uint32_t classes,
                  uint32_t batch, uint32_t threads, size_t *n_params, nn_err *err);

/* Builds a model from a user spec (nn_spec_check's rules, without the batch
 * budget). Weights are zeroed. */
int nn_model_create_spec(nn_model **out, const char *arch, nn_shape input,
                         const nn_layer_spec *specs, uint32_t n, nn_err *err);

/* The presets as specs. nn_preset_spec returns NN_EINVAL for an unknown
 * name; the arrays are static. nn_preset_name(i) names preset i (0 is the
 * default), NULL past the last. */
int nn_preset_spec(const char *name, const nn_layer_spec **specs, uint32_t *n);
const char *nn_preset_name(uint32_t i);

/* "dense", "conv2d", ...: the spec's name of a layer type ("?" if none). */
const char *nn_layer_type_name(nn_layer_type t);
/* The inverse; returns NN_EINVAL for an unknown name. */
int nn_layer_type_parse(const char *name, nn_layer_type *t);

/* The MNIST input: 28x28x1. */
#define NN_INPUT_MNIST ((nn_shape){NN_IMAGE_SIDE, NN_IMAGE_SIDE, 1})

/* Builds a preset by name:
 *   "antirectifier": Dense(256) Antirect Dropout(0.1) Dense(256) Antirect
 *                    Dropout(0.1) Dense(10) Softmax — 337,418 parameters;
 *   "relu":          Dense(512) ReLU Dropout(0.1) Dense(512) ReLU
 *                    Dropout(0.1) Dense(10) Softmax — 669,706 parameters;
 *   "cnn":           Keras mnist_convnet: Conv(32, 3x3, relu) MaxPool(2)
 *                    Conv(64, 3x3, relu) MaxPool(2) Flatten Dropout(0.5)
 *                    Dense(10) Softmax — 34,826 parameters.
 * Returns NN_EINVAL for an unknown name. */
int nn_model_create_preset(nn_model **out, const char *arch);
/* The same preset with an output layer of `classes` units (2..NN_MAX_CLASSES,
 * else NN_EINVAL): the network for a data set with that many classes. */
int nn_model_create_preset_classes(nn_model **out, const char *arch, uint32_t classes);
/* Width of the output layer: how many probabilities a prediction writes. */
uint32_t nn_model_classes(const nn_model *m);

/* Keras initialisation: glorot_uniform kernels (limit sqrt(6/(in+out));
 * for a convolution fan_in = k*k*in_c, fan_out = k*k*filters),
 * zero biases, batch_norm gamma 1, beta 0, moving mean 0, moving variance
 * 1, from the given seed. Deterministic. */
void nn_model_init(nn_model *m, uint64_t seed);

/* Deep copy (weights included). */
int nn_model_clone(nn_model **out, const nn_model *src);

void nn_model_free(nn_model *m);

/* ---------------------------------------------------------------- inference */

/* Scratch memory for forward/backward passes of up to max_batch samples.
 * A workspace belongs to one thread at a time; a model may be shared by
 * many threads as long as each has its own workspace and nobody trains it. */
typedef struct nn_workspace nn_workspace;

int nn_workspace_create(nn_workspace **out, const nn_model *m,
                        uint32_t max_batch);
void nn_workspace_free(nn_workspace *ws);

/* Makes single-image predictions of m through ws fast: ws keeps its own
 * transposed copy of m's wide dense layers (4 bytes per weight: 1.3 MB for
 * the seed network) and, for n = 1, reads only the weights of inputs that
 * are not zero (an MNIST digit is ~80% background; an antirectifier output
 * is half zeros), about a third of the bytes of a dense product. The copy
 * is taken now: m's weights must not change, and m must not be freed,
 * while ws is pinned to it (the pin is recognised by m's address), or
 * predictions go on using the old weights. Other models, and n > 1, take the
 * normal path. m = NULL unpins. Returns 0, NN_EINVAL (ws not made for m's
 * layers), or NN_ENOMEM (ws is then unpinned and works as before). */
int nn_workspace_pin(nn_workspace *ws, const nn_model *m);

/* Runs n images (n <= the workspace's max_batch) through the model in
 * inference mode (dropout off) and writes n*nn_model_classes(m) probabilities.
 * `images` holds n*784 uint8 pixels. Allocates nothing itself (oneDNN may
 * compile a kernel for a shape it has not seen). A batch of 64 or more leaves the pixels
 * that are 0 in all its images out of the first dense layer's products, so
 * an image's probabilities can differ in the last bits with the batch it is
 * in (same batch, same bits). Returns 0,
 * NN_EINVAL, or NN_ENOMEM when oneDNN could not run a matrix product
 * (probs is then left alone). */
int nn_predict_u8(const nn_model *m, nn_workspace *ws, const uint8_t *images,
                  uint32_t n, float *probs);

/* Same with float pixels already scaled to [0, 1]. */
int nn_predict_f32(const nn_model *m, nn_workspace *ws, const float *x,
                   uint32_t n, float *probs);

/* Index of the largest of the NN_CLASSES probabilities. */
int nn_argmax(const float *probs);
/* Index of the largest of k probabilities. */
int nn_argmax_n(const float *probs, uint32_t k);

/* ---------------------------------------------------------------- kernels */
/* The layer kernels, exposed so they can be tested one by one. `n` is the
 * batch size, rows are samples. Backward kernels take the forward input or
 * output they need and write the gradient with respect to the input. */

/* out[n][2*d] from x[n][d]; also stores the normalised, centred y[n][d] and
 * the per-row 1/norm in inv[n] for the backward pass. */
void nn_antirect_forward(const float *x, uint32_t n, uint32_t d, float *y,
                         float *inv, float *out);
/* dx[n][d] from dout[n][2d], with y and inv from the forward pass. */
void nn_antirect_backward(const float *y, const float *inv,
                          const float *dout, uint32_t n, uint32_t d,
                          float *dx);

/* Row-wise softmax of logits z[n][k] into p[n][k]; returns the mean
 * categorical cross-entropy over the n rows against labels, with
 * probabilities clipped to [1e-7, 1 - 1e-7] as Keras does. If dz is not
 * NULL it receives d(mean loss)/dz = (p - onehot) / n, the exact gradient of
 * the unclipped loss (what Keras computes through the softmax logits). If
 * correct is not NULL it receives the number of rows whose argmax matched. */
float nn_softmax_xent(const float *z, const uint8_t *labels, uint32_t n,
                      uint32_t k, float *p, float *dz, uint32_t *correct);

/* ---------------------------------------------------------------- training */

typedef enum { NN_OPT_RMSPROP = 0, NN_OPT_SGD = 1, NN_OPT_ADAM = 2 } nn_opt_kind;

typedef struct nn_opt_config {
  nn_opt_kind kind;
  float lr;        /* default 0.001 (rmsprop, adam), 0.01 (sgd) */
  float rho;       /* rmsprop decay, default 0.9 */
  float momentum;  /* sgd momentum, default 0.0 */
  float beta1;     /* adam, default 0.9 */
  float beta2;     /* adam, default 0.999 */
  float epsilon;   /* rmsprop and adam, default 1e-7 (Keras) */
} nn_opt_config;

/* Fills c with the Keras defaults for kind. */
void nn_opt_defaults(nn_opt_config *c, nn_opt_kind kind);
/* "rmsprop"/"sgd"/"adam" -> kind; returns NN_EINVAL for anything else. */
int nn_opt_parse(const char *name, nn_opt_kind *kind);
const char *nn_opt_name(nn_opt_kind kind);

/* Number of floats of optimizer state per parameter (rmsprop 1, sgd 1,
 * adam 2). */
uint32_t nn_opt_slots(nn_opt_kind kind);

/* Update rules, with g the gradient of the mean batch loss:
 *   RMSprop (Keras/TF): a = rho*a + (1-rho)*g^2; w -= lr*g/sqrt(a + eps)
 *   SGD (Keras):        v = momentum*v - lr*g;   w += v
 *   Adam (Keras):       m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *                       w -= lr_t*m/(sqrt(v) + eps),
 *                       lr_t = lr*sqrt(1-b2^t)/(1-b1^t)
 * nn_opt_step applies one update to n parameters; state holds
 * nn_opt_slots(kind)*n floats laid out slot by slot; t is the 1-based step. */
void nn_opt_step(const nn_opt_config *c, float *w, const float *g,
                 float *state, size_t n, uint64_t t);

/* Progress report from inside an epoch. */
typedef struct nn_progress {
  uint32_t epoch;        /* 1-based */
  uint32_t batch;        /* batches done in this epoch */
  uint32_t batches;      /* batches in this epoch */
  uint64_t samples;      /* samples done in this epoch */
  float loss;            /* running mean loss over this epoch so far */
  float accuracy;        /* running accuracy over this epoch so far */
} nn_progress;

/* Called after every batch; a non-zero return cancels like the flag. */
typedef int (*nn_progress_cb)(const nn_progress *p, void *user);

/* Random affine augmentation of training images, drawn per image and
 * epoch: shift up to +-shift pixels in x and y, rotation up to +-rotate
 * degrees, scale in [1 - scale, 1 + scale], about the image centre,
 * bilinear on the uint8 pixels. All zero: off. Limits: shift <= 8,
 * rotate <= 180, scale <= 0.5. */
typedef struct nn_augment {
  float shift, rotate, scale;
} nn_augment;

/* Writes src transformed into dst (28x28 each; dst != src): output pixel p
 * samples src bilinearly at R(-degrees)(p - c - (dx, dy)) / scale + c, c the
 * centre (13.5, 13.5), outside = 0, rounded to nearest. */
void nn_augment_apply(const uint8_t *src, uint8_t *dst, float dx, float dy, float degrees,
                      float scale);
/* nn_augment_apply with parameters drawn uniformly from a's ranges by an
 * RNG seeded with key. */
void nn_augment_random(const nn_augment *a, uint64_t key, const uint8_t *src, uint8_t *dst);
/* 1 when every field is within its limits. */
int nn_augment_valid(const nn_augment *a);

typedef struct nn_train_config {
  uint32_t batch_size;   /* default 128 */
  uint64_t seed;         /* shuffling and dropout */
  uint32_t threads;      /* worker threads, 1..NN_MAX_THREADS (default 1) */
  nn_opt_config opt;
  nn_augment augment;    /* nn_train_epoch only; default off; not kept in checkpoints */
} nn_train_config;

#define NN_MAX_THREADS 64

/* Fills c with the seed's settings: batch 128, seed 1, RMSprop defaults,
 * one thread. */
void nn_train_defaults(nn_train_config *c);

/* A training session: the model being trained plus its gradients, optimizer
 * state and scratch memory. The trainer does not own the model; the model
 * must outlive it and must not be used for inference by others while an
 * epoch runs.
 *
 * With threads = T > 1 the trainer starts T-1 worker threads that live as
 * long as it does. Each batch is split into T fixed row ranges, each thread
 * runs forward and backward on its rows with its own dropout stream; then
 * each thread forms the weight gradients of its share of every layer's
 * output rows over all T shards (summed in shard order) and applies the
 * optimizer to them, so the result depends on the seed and T only
 * (bit-identical between runs).
 * The matrix products then run single-threaded inside each worker (the
 * workers set their own OpenMP team size; nothing process-wide changes), so
 * T threads use T cores (T = 1 included: nn_set_threads() does not apply).
 * A dense first layer on the image leaves out, in nn_train_epoch, the
 * pixels that are zero in every image of the batch (an MNIST batch of 128
 * keeps ~535 of 784) unless augmentation is on: its products sum the same
 * terms, blocked differently, so the weights differ from a run over all
 * inputs in the last bits (and are still bit-identical between runs). The
 * optimizer updates the left-out inputs' weights as for any zero gradient
 * (RMSprop decays their accumulator; Adam's momentum still moves them).
 * With T > 1 the trainer also times its first ~200 full training batches
 * with and without a cross-core hand-off (streamed weight stores, flushed
 * activations: see nn_k_flush in nn_internal.h), keeps whichever is
 * faster on this machine, and times again every ~2000 batches (a virtual
 * machine's cores can move); the choice moves cache lines only, never a
 * value, so the results stay bit-identical. */
typedef struct nn_trainer nn_trainer;

int nn_trainer_create(nn_trainer **out, nn_model *m,
                      const nn_train_config *cfg);
void nn_trainer_free(nn_trainer *t);

/* Epochs finished so far (0 for a new trainer; restored from checkpoints). */
uint32_t nn_trainer_epoch(const nn_trainer *t);

/* Metrics of one epoch. */
typedef struct nn_epoch_metrics {
  uint32_t epoch;
  float loss, accuracy;          /* training, averaged over the epoch */
  float val_loss, val_accuracy;  /* on the evaluation set; NAN if none */
  double seconds;                /* training pass only */
  double eval_seconds;           /* evaluation pass */
  double samples_per_second;     /* training samples / seconds */
} nn_epoch_metrics;

/* Trains one epoch over ds in freshly shuffled mini-batches (the last batch
 * may be smaller). After each batch, calls cb (if any) and checks *cancel
 * (if not NULL); either one stops the epoch with NN_ECANCELED, leaving the
 * weights as updated so far and the epoch counter unchanged. On success
 * fills the training part of *out (val_* set to NAN) and advances the epoch
 * counter. The RNG stream depends only on the seed and the epoch number, so
 * a trainer restored from a checkpoint continues exactly. NN_ENOMEM when
 * oneDNN could not run a matrix product: the weights may then hold a
 * partial update (reload a checkpoint; the epoch counter is unchanged). */
int nn_train_epoch(nn_trainer *t, const nn_dataset *ds, nn_progress_cb cb,
                   void *user, const volatile int *cancel,
                   nn_epoch_metrics *out);

/* Evaluates m on ds in inference mode, in chunks of up to the workspace's
 * batch size. Any of loss, accuracy may be NULL. If predictions is not NULL
 * it receives ds->n predicted labels. NN_ENOMEM when oneDNN could not run
 * a matrix product (loss and accuracy are then not written). */
int nn_evaluate(const nn_model *m, nn_workspace *ws, const nn_dataset *ds,
                float *loss, float *accuracy, uint8_t *predictions);

/* Direct access for checkpoints and tests. */
nn_model *nn_trainer_model(nn_trainer *t);
const nn_train_config *nn_trainer_config(const nn_trainer *t);
/* The optimizer state block (nn_opt_slots * n_params floats) and the number
 * of optimizer steps taken so far. */
float *nn_trainer_opt_state(nn_trainer *t, uint64_t *steps);
/* Restores counters after loading a checkpoint's state into the block.
 * A checkpoint keeps batch size, seed and optimizer but not the thread
 * count, a property of the machine: nn_checkpoint_load makes a one-thread
 * trainer, and nn_trainer_set_threads changes that. */
void nn_trainer_restore(nn_trainer *t, uint32_t epoch, uint64_t steps);

/* Replaces the trainer's worker threads (between epochs only). Returns
 * NN_EINVAL for a count outside 1..NN_MAX_THREADS, NN_ENOMEM if threads or
 * memory could not be had (the trainer then keeps its old setting). */
int nn_trainer_set_threads(nn_trainer *t, uint32_t threads);

/* Sets the augmentation of later epochs (checkpoints do not keep it).
 * Returns NN_EINVAL when a is out of range (nothing changes). */
int nn_trainer_set_augment(nn_trainer *t, const nn_augment *a);

/* Forward + backward + update on one explicit batch (x: n*784 floats). Used
 * by tests and benchmarks; returns the batch loss via *loss. Dropout masks
 * come from the trainer's RNG. NN_ENOMEM as nn_train_epoch. */
int nn_train_batch(nn_trainer *t, const float *x, const uint8_t *labels,
                   uint32_t n, float *loss);

/* Computes the gradient of the mean batch loss into the trainer's gradient
 * block without updating weights, with dropout off so the result is a
 * deterministic function of the weights. Batch normalisation layers run as
 * in training (the statistics of these n rows, across all shards) but leave
 * their moving statistics alone. Returns the loss, or
 * NAN when oneDNN could not run a matrix product. For gradient checks. */
float nn_trainer_gradient(nn_trainer *t, const float *x, const uint8_t *labels,
                          uint32_t n, const float **grad);

/* ---------------------------------------------------------------- files */

/* Model file format, version 2 (all integers little-endian):
 *   offset 0   8 bytes  magic "MNISTDNN"
 *          8   u32      version (2)
 *         12   u32      flags (bit 0: optimizer state present)
 *         16   char[32] architecture name, NUL-padded
 *         48   u32      input height, width, channels (28, 28, 1)
 *         60   u32      n_specs (1..NN_MAX_SPECS)
 *         64   n_specs x { u32 type, u32 units, f32 rate, u32 filters,
 *                          u32 kernel, u32 stride, u32 padding,
 *                          u32 activation }: the user spec, softmax implied
 *              (batch_norm: rate holds the momentum, and the u32 in units'
 *              place holds the bits of the f32 epsilon)
 *          .   u64      n_params
 *          .   f32[n_params] parameters, layer order: per dense layer
 *              W[out][in] then b[out]; per conv2d W[filters][k][k][in_c]
 *              then b[filters]; per batch_norm gamma[c], beta[c],
 *              moving_mean[c], moving_variance[c]
 *   if flags & 1 (a training checkpoint):
 *          .   u32 optimizer kind, f32 lr, rho, momentum, beta1, beta2,
 *              epsilon, u32 batch_size, u64 seed, u32 epoch, u64 steps,
 *              f32[slots * n_params] optimizer state
 *   end-4      u32      CRC32 (zlib) of every byte before it
 * Version 1 (still read): bytes 48..55 are u32 n_inputs, u32 n_layers, then
 * n_layers x { u32 type, u32 units, f32 rate }, the built list ending in
 * DENSE(10) SOFTMAX; the rest as version 2.
 * Files are at most NN_MODEL_MAX_BYTES. */
#define NN_MODEL_MAGIC "MNISTDNN"
#define NN_MODEL_VERSION 2u
#define NN_MODEL_MAX_BYTES (256u << 20)

/* Writes m to path atomically: a temp file beside it, fsync, rename, fsync
 * of the directory. On failure the old file (if any) is untouched and the
 * temp file removed. */
int nn_model_save(const nn_model *m, const char *path, nn_err *err);

/* Loads and fully validates a model file (magic, version, layer list,
 * parameter count, size, CRC32). A checkpoint file loads as a plain model.
 * *out is owned by the caller. */
int nn_model_load(nn_model **out, const char *path, nn_err *err);

/* Same as nn_model_load for a file already in memory. */
int nn_model_load_mem(nn_model **out, const void *buf, size_t len,
                      nn_err *err);

/* Writes a checkpoint: the trainer's model plus optimizer state, config and
 * counters, atomically. */
int nn_checkpoint_save(nn_trainer *t, const char *path, nn_err *err);

/* Restores a trainer from a checkpoint: *model_out and *trainer_out are
 * created (the caller frees the trainer first, then the model). Fails with
 * NN_EFORMAT for a plain model file without optimizer state. */
int nn_checkpoint_load(nn_model **model_out, nn_trainer **trainer_out,
                       const char *path, nn_err *err);

/* Writes len bytes to path atomically: a temp file beside it, fsync,
 * rename, fsync of the directory (what nn_model_save does, for other file
 * formats). On failure the old file (if any) is untouched, the temp file is
 * removed and err names the file. */
int nn_file_write_atomic(const char *path, const void *data, size_t len, nn_err *err);

#ifdef __cplusplus
}
#endif
#endif
