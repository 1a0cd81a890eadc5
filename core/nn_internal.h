/* Private to core/: pieces shared between the core's translation units. */
#ifndef MNISTD_NN_INTERNAL_H
#define MNISTD_NN_INTERNAL_H

#include "nn.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Hot element-wise kernels get an AVX2 clone picked at load time, so one
 * binary runs everywhere and uses the wide units where they exist. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(NN_NO_CLONES)
#define NN_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define NN_HOT
#endif

/* n floats (at least one) on a cache line of their own, zeroed if zero;
 * NULL if out of memory or n too large. Freed with free(). Weights,
 * gradients and optimizer state live in these: malloc's 16-byte alignment
 * splits every 64-byte vector across two lines, and a store that straddles
 * two lines another core has read takes two ownership transfers. */
static inline float *nn_falloc(size_t n, int zero) {
  if (n > (SIZE_MAX - 63) / sizeof(float)) return NULL;
  size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
  float *p = aligned_alloc(64, bytes);
  if (p && zero) memset(p, 0, bytes);
  return p;
}

/* bytes (at least one) of uninitialised memory for a large array read at
 * random, above all a data set's images: where it is 2 MB or more, on 2 MB
 * boundaries with transparent huge pages asked for (MADV_HUGEPAGE; THP's
 * "madvise" mode is the usual default), before anything touches it. With
 * 4 KB pages each image of a shuffled batch is a TLB miss as well as a
 * cache miss (MNIST's 47 MB span 11,500 pages): on a 2-vCPU Zen 5 guest
 * the trainer's scan of the next batch's pixels took 3x as long.
 * Freed with free(); NULL if out of memory. */
void *nn_halloc(size_t bytes);

/* xoshiro256** seeded through splitmix64: fast, good enough for shuffling
 * and dropout, and identical on every platform. */
typedef struct nn_rng { uint64_t s[4]; } nn_rng;
void nn_rng_seed(nn_rng *r, uint64_t seed);
uint64_t nn_rng_next(nn_rng *r);
/* Uniform in [0, 1) with 24 bits of precision. */
float nn_rng_uniform(nn_rng *r);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint32_t nn_rng_below(nn_rng *r, uint32_t n);

/* Matrix products (dnn.c, oneDNN). One per workspace: it caches the
 * compiled kernels of the last shapes and is used by one thread at a time. */
typedef struct nn_dnn nn_dnn;
int nn_dnn_create(nn_dnn **out);
void nn_dnn_free(nn_dnn *d);
/* Compiles the forward kernels for full_rows rows now (NN_ENOMEM if it
 * cannot), so that predictions of that size allocate nothing later; other
 * row counts use dnnl_sgemm unless any_rows (a trainer shard: every row
 * count it sees gets its kernels). m = NULL: compile nothing now. */
int nn_dnn_prepare(nn_dnn *d, const nn_model *m, uint32_t full_rows, int any_rows);
/* Also keeps forward kernels for `rows` rows beside the full_rows ones:
 * the pieces a batch prediction is cut into (nn_predict_*). */
int nn_dnn_prepare_piece(nn_dnn *d, const nn_model *m, uint32_t rows);
/* Team size of this workspace's products; 0 follows nn_set_threads(). */
void nn_dnn_set_threads(nn_dnn *d, uint32_t threads);
/* y[n][out] = x[n][in] W^T + b, W stored [out][in]. */
void nn_dnn_dense_fwd(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *x,
                      uint32_t n, const float *w, const float *b, float *y);
/* dw[out][in] = g[n][out]^T x[n][in] (overwrites). */
void nn_dnn_dense_dw(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *x, uint32_t n, float *dw);
/* Rows [o_lo, o_hi) of dw[out][in] (+)= g[n][out]^T x[n][in]: one part of
 * the weight gradient, for summing shards in place (accumulate = 1 adds to
 * what is there). part < n_parts identifies the cached kernel. */
int nn_dnn_dense_dw_rows(nn_dnn *d, uint32_t layer, uint32_t part, uint32_t n_parts,
                         const nn_layer *l, uint32_t o_lo, uint32_t o_hi, const float *g,
                         const float *x, uint32_t n, int accumulate, float *dw);
/* nn_dnn_dense_fwd and nn_dnn_dense_dw_rows for a layer whose l->in
 * changes from call to call (a trainer's first layer without the batch's
 * all-zero inputs): dnnl_sgemm, which compiles nothing per shape, instead
 * of a kernel that would be rebuilt at every step. dw_rows_var's dw is
 * [out][l->in]; it returns 0 or NN_ENOMEM (also kept for nn_dnn_error). */
void nn_dnn_dense_fwd_var(nn_dnn *d, const nn_layer *l, const float *x, uint32_t n,
                          const float *w, const float *b, float *y);
int nn_dnn_dense_dw_rows_var(nn_dnn *d, const nn_layer *l, uint32_t o_lo, uint32_t o_hi,
                             const float *g, const float *x, uint32_t n, int accumulate,
                             float *dw);
/* dx[n][in] = g[n][out] W[out][in]. */
void nn_dnn_dense_dx(nn_dnn *d, uint32_t layer, const nn_layer *l, const float *g,
                     const float *w, uint32_t n, float *dx);
/* Nanoseconds this nn_dnn has spent in the dense products above (wall
 * time of the calls, on the calling thread), since it was created: for
 * benchmarks that split a step into its products and the rest. */
uint64_t nn_dnn_gemm_ns(const nn_dnn *d);
/* The products above return nothing: when oneDNN cannot run one (no memory
 * for its buffers) its output is undefined and the failure is kept here.
 * Returns the first failure since the last call (NN_ENOMEM) and clears it,
 * or 0: whoever runs a pass checks it before using the result. */
int nn_dnn_error(nn_dnn *d);
/* Keeps rc (when not 0) as d's failure, as a failed product would: the
 * convolutions (conv.c) report through their workspace's nn_dnn. */
void nn_dnn_fail(nn_dnn *d, int rc);
/* Test hook (process-wide): the nth product from now that goes through
 * dnnl_sgemm or a weight-gradient part fails as if oneDNN had no memory;
 * 0 disarms. */
void nn_dnn_inject_failure(uint32_t nth);

typedef struct nn_conv nn_conv; /* conv.c */
typedef struct nn_cols nn_cols; /* a first layer's kept inputs, below */

/* Sums across the shards of one batch, for the layers whose forward or
 * backward pass needs statistics of the whole batch (batch_norm). The
 * trainer provides one per shard (train.c); a workspace without one holds
 * the whole batch. sum() adds len doubles over the shards: shard k passes
 * its part, and on return `total` holds part_0 + part_1 + ... in shard
 * order, the same bits on every shard. Every shard of a batch makes the
 * same sequence of calls (a shard without rows passes zeros). */
typedef struct nn_sync nn_sync;
struct nn_sync {
  void (*sum)(nn_sync *s, const double *part, double *total, size_t len);
  void *ctx;
};

/* nn_forward's and nn_backward's `training`: 0 inference (dropout off,
 * batch_norm on its moving statistics), 1 training (dropout on, batch_norm
 * on the batch's statistics), NN_PASS_STATS: the batch's statistics with
 * dropout off (nn_trainer_gradient). */
#define NN_PASS_TRAIN 1
#define NN_PASS_STATS 2

struct nn_workspace {
  uint32_t max_batch;
  uint32_t dnn_piece;  /* rows of the prediction pieces the dnn has kernels for */
  int predicting;      /* inside nn_predict_*: no backward pass will follow */
  /* Layer 0 (dense) without the batch's all-zero inputs: while k0 != 0,
   * x holds [n][k0] kept inputs and w0k layer 0's weights of those inputs,
   * [out][k0]; a prediction packs them into its own w0 (compact_inputs),
   * a trainer's shards share the trainer's copy (train.c). */
  uint32_t k0;
  const float *w0k;
  float *w0;           /* predicting: [out][n_inputs] room for the packed weights */
  nn_cols *cols;       /* predicting: the inputs kept */
  uint8_t *used;       /* predicting: [n_inputs] flags for nn_input_runs */
  uint32_t n_layers;
  float *x;                         /* [B][n_inputs] input as floats */
  float *act[NN_MAX_LAYERS];        /* output buffer of each layer */
  const float *cur[NN_MAX_LAYERS];  /* output of each layer in the last pass:
                                       act[i], or the input for an identity */
  float *anti_y[NN_MAX_LAYERS];     /* ANTIRECT: normalised centred input */
  float *anti_inv[NN_MAX_LAYERS];   /* ANTIRECT: 1/norm per row */
  uint32_t drop_key[NN_MAX_LAYERS]; /* DROPOUT: key of the last training pass */
  uint8_t fused[NN_MAX_LAYERS];     /* layer ran inside its predecessor's kernel */
  uint8_t blk[NN_MAX_LAYERS];       /* output in channel blocks (nn_conv_fwd) */
  uint8_t gemm[NN_MAX_LAYERS];      /* CONV2D: im2col + GEMM (no oneDNN kernel) */
  uint8_t nhwc[NN_MAX_LAYERS];      /* CONV2D: no blocked kernel, NHWC in and out */
  uint32_t cblock;                  /* channels per block: 16 or 8 */
  float *col[NN_MAX_LAYERS];        /* CONV2D gemm: patch matrix [B*oh*ow][k*k*c] */
  float *dcol;                      /* CONV2D gemm backward: gradient of a patch matrix */
  float *g[2];                      /* gradient ping-pong, [B][max_width] */
  float *delta[NN_MAX_LAYERS];      /* DENSE: gradient w.r.t. its output, [B][out] */
  const float *dg[NN_MAX_LAYERS];   /* DENSE: where the last backward pass left it */
  nn_dnn *dnn;
  void *block;                      /* the single allocation behind all */
  const nn_model *pinned;           /* nn_workspace_pin: the model wt copies */
  float *wt[NN_MAX_LAYERS];         /* DENSE: its weights transposed, [in][out] */
  uint32_t *pool_idx[NN_MAX_LAYERS]; /* MAXPOOL: input index of each maximum */
  nn_conv *conv;                    /* CONV2D: oneDNN kernels, or NULL */
  void *wt_block;
  float *bn_stat[NN_MAX_LAYERS];    /* BATCHNORM: mean[c], 1/sqrt(var+eps)[c] and
                                       var[c] of the last forward pass */
  double *bn_acc;                   /* BATCHNORM: scratch (nn_bn_scratch_bytes) */
  nn_sync *sync;                    /* the trainer's shards, or NULL */
};

/* Batch normalisation (bnorm.c). x and y are n samples of l->ishape, NHWC
 * (n*h*w rows of c = l->ishape.c channels), or in oneDNN's blocks of blk
 * channels when blk is not 0. p: the layer's parameters
 * (gamma at p, beta at p + c, moving mean at p + 2c, moving var at p + 3c).
 * stat: 3c floats the backward pass reads (mean, inverse deviation, var);
 * acc: nn_bn_scratch_bytes(c) of scratch, 8-byte aligned. With batch
 * statistics the sums go through sync (NULL: these rows are the whole
 * batch); n may be 0. */
size_t nn_bn_scratch_bytes(uint32_t c);
void nn_bn_fwd(const nn_layer *l, const float *p, const float *x, uint32_t n, uint32_t blk,
               int batch_stats, nn_sync *sync, double *acc, float *stat, float *y);
/* Writes dgamma, dbeta (summed over the whole batch through sync) into
 * g = grad + l->w_off (and zeros where the moving statistics are), and
 * dx when not NULL. */
void nn_bn_bwd(const nn_layer *l, const float *p, const float *x, const float *dy, uint32_t n,
               uint32_t blk, int batch_stats, nn_sync *sync, double *acc, const float *stat,
               float *grad, float *dx);
/* The part of a shard without rows: every batch_norm layer's sums (zeros)
 * in the order nn_forward and nn_backward make them, and their results
 * (the whole batch's statistics, dgamma, dbeta) in ws and grad. */
void nn_bn_idle(const nn_model *m, nn_workspace *ws, int training, float *grad);
/* moving = moving * momentum + batch * (1 - momentum), from a forward
 * pass's stat (Keras; the variance biased). */
void nn_bn_update_moving(const nn_layer *l, float *p, const float *stat);

/* Element-wise kernels (layers.c). n counts floats unless said otherwise. */
void nn_k_colsum(float *db, const float *g, uint32_t rows, uint32_t d);
void nn_k_u8_to_f32(float *x, const uint8_t *px, size_t n);
void nn_k_add(float *acc, const float *x, size_t n);

/* Dropout is a counter-based hash: element k of a pass keyed `key` is kept
 * when hash(key, k) >= thr (thr = rate * 2^32), and kept elements are scaled
 * by 1/(1-rate). Nothing is stored: the backward pass recomputes the same
 * mask from the key, inside the kernel that needs it. thr = 0 is no dropout. */
typedef struct nn_drop {
  uint32_t key, thr;
  float scale;
} nn_drop;
static inline uint32_t nn_drop_hash(uint32_t key, uint32_t k) {
  /* lowbias32 (Wellons): a strong 32-bit integer hash. */
  uint32_t h = k * 0x9e3779b9u ^ key;
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  h *= 0x846ca68bu;
  h ^= h >> 16;
  return h;
}
/* y = dropout(x) over n floats (forward, or backward with the same key). */
void nn_k_dropout(float *y, const float *x, size_t n, nn_drop dr);

/* y[out] = b + sum over the non-zero x[k] of x[k] * wt[k][out]: one input
 * row against transposed weights, reading only the rows of inputs that are
 * not zero. */
void nn_k_sparse_row(float *y, const float *x, const float *wt, const float *b, uint32_t in,
                     uint32_t out);

/* Fused antirectifier (+ dropout) forward over n rows of width d: one sweep
 * per row writes y (normalised centred input) and inv (as
 * nn_antirect_forward) and out[n][2d] = dropout([relu(y), relu(-y)]). */
void nn_k_antirect_fwd(const float *x, uint32_t n, uint32_t d, float *y, float *inv,
                       float *out, nn_drop dr);
/* Its backward: dout [n][2d] is the gradient w.r.t. out; writes dx [n][d]
 * and, when db is not NULL, db[d] = column sums of dx (the bias gradient of
 * the dense layer before). */
void nn_k_antirect_bwd(const float *y, const float *inv, const float *dout, uint32_t n,
                       uint32_t d, float *dx, float *db, nn_drop dr);
/* used[c] = OR of px[r][c] over n rows of width d (row r at px + idx[r] * d,
 * or px + r * d when idx is NULL): non-zero where some row has a non-zero
 * pixel. */
void nn_k_u8_or_rows(uint8_t *used, const uint8_t *px, const uint32_t *idx, uint32_t n,
                     uint32_t d);
/* The inputs a first dense layer keeps for a batch whose all-zero inputs
 * are left out (d <= NN_IMAGE_SIZE inputs): runs[2q] is the start of run
 * q, runs[2q+1] its length; mask[b] has bit j set when input 16b + j is
 * kept (d a multiple of 16; the vector kernels use it). The vector kernels
 * move a block's floats with one permutation: lane j of the unpacked block
 * takes packed lane xi[b][j] (kept lanes only), lane i of the packed block
 * takes unpacked lane ci[b][i] (i below the block's kept count). */
struct nn_cols {
  uint32_t nr, k; /* runs, and inputs kept (their lengths' sum) */
  uint32_t runs[2 * (NN_IMAGE_SIZE + 1)];
  uint16_t mask[NN_IMAGE_SIZE / 16];
  uint8_t xi[NN_IMAGE_SIZE / 16][16], ci[NN_IMAGE_SIZE / 16][16];
};
/* Fills c from used[d] (nn_k_u8_or_rows), which it first tops up with
 * unused inputs to a multiple of 16 kept. Returns c->nr; 0 (and c->k = 0)
 * when so few inputs drop out (90% or more kept) that the whole layer
 * should run. */
uint32_t nn_input_runs(uint8_t *used, uint32_t d, nn_cols *c);
/* dst[rows][c->k] = the kept columns of src[rows][d] (a weight matrix
 * [out][in] packed to its kept inputs); nn_k_unpack_runs is the reverse,
 * with zeros in the other columns. */
void nn_k_pack_runs(float *dst, const float *src, uint32_t rows, uint32_t d, const nn_cols *c);
void nn_k_unpack_runs(float *dst, const float *src, uint32_t rows, uint32_t d,
                      const nn_cols *c);
/* x[n][c->k] = the kept pixels of px[n][d], / 255. */
void nn_k_u8_gather_runs(float *x, const uint8_t *px, uint32_t n, uint32_t d, const nn_cols *c);
/* The same three without the AVX-512 paths, for tests on machines that
 * have them. */
void nn_k_pack_runs_ref(float *dst, const float *src, uint32_t rows, uint32_t d,
                        const nn_cols *c);
void nn_k_unpack_runs_ref(float *dst, const float *src, uint32_t rows, uint32_t d,
                          const nn_cols *c);
void nn_k_u8_gather_runs_ref(float *x, const uint8_t *px, uint32_t n, uint32_t d,
                             const nn_cols *c);
/* nn_k_antirect_fwd without dropout and without y and inv (a prediction:
 * no backward pass follows); out gets the same values. */
void nn_k_antirect_infer(const float *x, uint32_t n, uint32_t d, float *out);
/* Fused ReLU (+ dropout): out = dropout(relu(x)); backward from the ReLU's
 * input x: dx = x > 0 ? dropout(g) : 0, with db as above. */
void nn_k_relu_drop_fwd(float *out, const float *x, uint32_t n, uint32_t d, nn_drop dr);
void nn_k_relu_drop_bwd(float *dx, const float *x, const float *g, uint32_t n, uint32_t d,
                        float *db, nn_drop dr);

/* RMSprop on rows x d parameters (w and accumulator a, rows of d <=
 * NN_IMAGE_SIZE) whose gradient is zero outside the kept columns:
 * g[rows][c->k] holds those (nn_k_pack_runs' layout). The same bits as
 * nn_k_rmsprop_sum on the unpacked gradient, without a full-size copy.
 * With next not NULL, also packs each updated row to next's columns, into
 * pack[rows][next->k], while it is in L1 (the next batch's weights). */
void nn_k_rmsprop_runs(float *w, float *a, const float *g, uint32_t rows, uint32_t d,
                       const nn_cols *c, float lr, float rho, float eps, const nn_cols *next,
                       float *pack, int stream);
/* RMSprop fused with the sum of n_g gradient blocks (g[0] + g[1] + ...,
 * in that order) over n parameters. */
void nn_k_rmsprop_sum(float *w, float *a, const float *const *g, uint32_t n_g, size_t n,
                      float lr, float rho, float eps);

/* Cross-core hand-off (train.c): on CPUs whose cores are far apart (seen:
 * two vCPUs ~250 ns apart, a Zen 5), writing a cache line another core has
 * read costs ~6x writing one it never saw (each store waits for the other
 * copy to be invalidated, even after that core evicted the line to its own
 * L3). Two ways around it, both leaving every value as it would be:
 *
 * nn_k_rmsprop_stream is nn_k_rmsprop_sum with one gradient block (the
 * same bits) whose weights' whole cache lines are written with
 * non-temporal stores, which invalidate other copies without waiting. For
 * weights other threads read; the writer loses them from its own cache.
 * With stream set, nn_k_rmsprop_runs writes pack that way (rows of
 * next->k floats starting on 64-byte lines; otherwise plainly).
 *
 * nn_k_flush evicts [p, p + bytes) from every cache (clflushopt, or
 * clflush on x86 CPUs without it; nothing elsewhere): a reader done with
 * another thread's buffer gives its lines back, so that thread's next
 * writes find no copy to invalidate. Values are unaffected. */
void nn_k_rmsprop_stream(float *w, float *a, const float *g, size_t n, float lr, float rho,
                         float eps);
void nn_k_flush(const void *p, size_t bytes);

/* Softmax + cross-entropy of n rows: writes p, and when dz is not NULL
 * dz = (p - onehot) * dz_scale; returns the summed (not mean) clipped loss. */
double nn_xent_sum(const float *z, const uint8_t *labels, uint32_t n, uint32_t k,
                   float *p, float *dz, float dz_scale, uint32_t *correct);

/* nn_opt_step on a slice of n parameters whose optimizer slots are `stride`
 * floats apart (the full parameter count). */
void nn_opt_step_range(const nn_opt_config *c, float *w, const float *g, float *state,
                       size_t n, size_t stride, uint64_t t);

/* Seconds the trainer's threads have spent in dense products so far,
 * summed over its threads (nn_dnn_gemm_ns of each shard); restarts when
 * the thread count changes. */
double nn_trainer_gemm_seconds(const nn_trainer *t);
/* How many of a trainer's batches so far ran layer 0 without their
 * all-zero inputs (train.c: phase_pre), and the inputs those kept in all;
 * for tests and benchmarks. Counts restart when the thread count changes. */
void nn_trainer_input_stats(const nn_trainer *t, uint64_t *steps, uint64_t *kept);
/* The cross-core hand-off of a trainer with more than one thread (see
 * nn_k_flush; train.c: handoff_pick): NN_HANDOFF_AUTO (the default) times
 * its first training steps with it off and on, alternating, and keeps the
 * faster, and times again now and then; the others force it. It changes
 * no value, only where cache lines go. nn_trainer_handoff: 1 on, 0 off,
 * -1 not decided yet (one thread: always 0). For tests and benchmarks. */
enum { NN_HANDOFF_AUTO, NN_HANDOFF_OFF, NN_HANDOFF_ON };
void nn_trainer_set_handoff(nn_trainer *t, int mode);
int nn_trainer_handoff(const nn_trainer *t);
/* How many times NN_HANDOFF_AUTO has decided (it times again every ~2000
 * full steps). */
uint32_t nn_trainer_handoff_rounds(const nn_trainer *t);

/* Forward pass of n rows already in ws->x. training != 0 enables dropout,
 * drawing masks from rng. Returns the last layer's output (probabilities). */
const float *nn_forward(const nn_model *m, nn_workspace *ws, uint32_t n,
                        int training, nn_rng *rng);

/* Backward pass from dz (gradient w.r.t. the logits, [n][classes]) into
 * grad (same layout as m->params). training must match the forward pass.
 * defer_dw: leave the weight gradients out; ws->dg[i] then holds each dense
 * layer's output gradient (dz itself for the last), kept until the next
 * pass, for the caller to form dw = dg^T x over several shards at once.
 * The bias gradients are always written. */
void nn_backward(const nn_model *m, nn_workspace *ws, uint32_t n,
                 const float *dz, float *grad, int training, int defer_dw);

/* The layer before the softmax: the logits of the last forward pass. */
const float *nn_logits(const nn_model *m, const nn_workspace *ws);

/* Shape inference (spec.c): fills m's layer table, parameter count and
 * spec from a user spec without allocating the parameters. */
int nn_model_layout_spec(nn_model *m, const char *arch, nn_shape input,
                         const nn_layer_spec *specs, uint32_t n, nn_err *err);
/* Bytes per batch row of a workspace for m. */
size_t nn_workspace_bytes_per_row(const nn_model *m);

/* Convolution and pooling helpers (conv.c), NHWC, n samples. */
void nn_im2col(const float *x, uint32_t n, const nn_layer *l, float *col);
/* dx (overwritten) = the sum of the patch gradients back in place. */
void nn_col2im(const float *col, uint32_t n, const nn_layer *l, float *dx);
/* rect: x is the output of a ReLU whose backward pass the pooling does;
 * a window whose maximum is 0 then records NN_POOL_NONE (no gradient). */
#define NN_POOL_NONE UINT32_MAX
void nn_maxpool_fwd(const float *x, uint32_t n, const nn_layer *l, int rect, float *y,
                    uint32_t *idx);
void nn_maxpool_bwd(const float *g, const uint32_t *idx, uint32_t n, const nn_layer *l,
                    float *dx);

/* Convolutions through oneDNN primitives (conv.c), NHWC activations,
 * weights [filters][ky][kx][c]. One context per workspace, used by one
 * thread at a time; it keeps each layer's compiled kernels for the last
 * image count and team size. When oneDNN cannot build or run a kernel (no
 * memory) the output is undefined and the failure is kept as the matrix
 * products keep theirs (nn_dnn_fail). */
/* d: the workspace's products, where a failing convolution leaves its error
 * (nn_dnn_error). */
int nn_conv_create(nn_conv **out, nn_dnn *d);
void nn_conv_free(nn_conv *c);
/* fmt: the layouts of the layer's input (NN_CONV_SRC_BLK) and output
 * (NN_CONV_DST_BLK): oneDNN's channel blocks ([n][c/B][h][w][B], for
 * channel counts that are multiples of B = 16, or 8 with NN_CONV_BLK8),
 * else NHWC. */
#define NN_CONV_SRC_BLK 1u
#define NN_CONV_DST_BLK 2u
#define NN_CONV_BLK8 4u
/* The block size the CPU's kernels want: 16 (AVX-512) or 8. */
uint32_t nn_conv_block(void);
/* y = conv(x, w) + b, then max(0, .) when relu. */
void nn_conv_fwd(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                 const float *x, uint32_t n, const float *w, const float *b, int relu, float *y);
/* dw, db (overwritten) = the weight and bias gradients from x and the
 * output gradient g. */
void nn_conv_bwd_w(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                   const float *x, const float *g, uint32_t n, float *dw, float *db);
/* dx (overwritten) = the input gradient from g. */
void nn_conv_bwd_d(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                   const float *g, const float *w, uint32_t n, float *dx);
/* Builds the kernels of one layer for n images (the backward ones too;
 * need_dx: also the input gradient's) and keeps them. Returns 0 when they
 * are all optimised kernels, 1 when oneDNN has only its reference code for
 * one (odd shapes: a few channels, "same" padding with strides), negative
 * on failure. */
int nn_conv_probe(nn_conv *c, int team, uint32_t layer, const nn_layer *l, unsigned fmt,
                  uint32_t n, int relu, int need_dx);
/* y = x (n maps of shape sh) from NHWC to blocks of `block` channels
 * (to_blocks) or back; the primitive is kept under `layer`. */
void nn_conv_reorder(nn_conv *c, int team, uint32_t layer, nn_shape sh, uint32_t n,
                     uint32_t block, int to_blocks, const float *x, float *y);
/* Applies this workspace's team size to the calling thread (dnn.c) and
 * returns it. */
int nn_dnn_team(nn_dnn *d);
/* The dense layer a convolution is, over its patch matrix. */
static inline nn_layer nn_conv_as_dense(const nn_layer *l) {
  nn_layer d = *l;
  d.type = NN_LAYER_DENSE;
  d.in = l->kernel * l->kernel * l->ishape.c;
  d.out = l->oshape.c;
  return d;
}

/* Fills m's layer table and parameter count from a layer list without
 * allocating the parameters (m->params is NULL). Same checks as
 * nn_model_create. Lets a loader bound a file's claims before allocating. */
int nn_model_layout(nn_model *m, const char *arch, uint32_t n_inputs,
                    const nn_layer_spec *specs, uint32_t n_specs);

/* Serialisation shared by model files and checkpoints. */
typedef struct nn_ckpt_info {
  nn_train_config cfg;
  uint32_t epoch;
  uint64_t steps;
  const float *state;   /* slots * n_params floats */
} nn_ckpt_info;
int nn_file_save(const nn_model *m, const nn_ckpt_info *ck, const char *path,
                 nn_err *err);
/* Parses buf; when ck_state is not NULL and the file is a checkpoint,
 * *ck_state receives a malloc'd copy of the optimizer state and *ck the
 * config and counters. */
int nn_file_parse(nn_model **out, const void *buf, size_t len,
                  const char *name, nn_ckpt_info *ck, float **ck_state,
                  nn_err *err);

/* Fills err (if any) and returns code. */
int nn_fail(nn_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
