/* Training: shuffled mini-batches split across worker threads, one
 * optimizer step per batch, and evaluation. */
#include "nn_internal.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What the threads work on for the current batch; written by the main
 * thread only while the workers wait at the start barrier. */
typedef struct batch_desc {
  uint32_t n;                /* rows in the batch */
  const uint8_t *images;     /* dataset images, rows picked through idx */
  const uint8_t *ds_labels;
  const uint32_t *idx;
  const float *x;            /* or explicit float rows */
  const uint8_t *labels;     /* with explicit labels */
  int training;              /* dropout on, and an optimizer step */
  const uint32_t *next_idx;  /* the epoch's next batch (NULL: none), for phase_update */
  uint32_t next_n;
  uint64_t aug_key;          /* augmentation: key of the epoch, 0 = off */
  uint32_t aug_off;          /* position of the batch's first row in the epoch */
  int stop;                  /* workers exit */
} batch_desc;

/* A barrier whose size can shrink while threads wait on it (needed when
 * thread creation fails half-way), and which spins before sleeping: a
 * training step lasts ~1 ms, and the shards of a phase routinely finish
 * tens of microseconds apart, more than a futex sleep and wake-up cost the
 * waiting thread and the last arriver (measured: with the old spin of 20000
 * polls, ~10 us, perf put 1.8% of an epoch in futex calls and the epoch
 * was 2-3% slower on a Zen 4). It polls for SPIN_PAUSE_NS, then yields the core
 * between polls up to SPIN_YIELD_NS, so that a thread another process or
 * the daemon's HTTP work pre-empted can run on it, and only then sleeps. */
#define SPIN_PAUSE_NS 100000
#define SPIN_YIELD_NS 1000000
typedef struct barrier {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint32_t count, waiting;
  _Atomic uint64_t gen;
} barrier;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Tells the core a spin loop is polling (x86 PAUSE: less power, and the
 * other hardware thread of the core gets the pipeline). */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static int barrier_init(barrier *b, uint32_t count) {
  b->count = count;
  b->waiting = 0;
  atomic_init(&b->gen, 0);
  if (pthread_mutex_init(&b->mu, NULL)) return -1;
  if (pthread_cond_init(&b->cv, NULL)) {
    pthread_mutex_destroy(&b->mu);
    return -1;
  }
  return 0;
}

static void barrier_destroy(barrier *b) {
  pthread_cond_destroy(&b->cv);
  pthread_mutex_destroy(&b->mu);
}

static void barrier_wait(barrier *b) {
  pthread_mutex_lock(&b->mu);
  uint64_t gen = atomic_load(&b->gen);
  if (++b->waiting >= b->count) {
    b->waiting = 0;
    atomic_store(&b->gen, gen + 1);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return;
  }
  pthread_mutex_unlock(&b->mu);
  const double t0 = now_s();
  for (;;) {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&b->gen, memory_order_acquire) != gen) {
        /* Pairs with the release in the unlock of the last arriver. */
        pthread_mutex_lock(&b->mu);
        pthread_mutex_unlock(&b->mu);
        return;
      }
      cpu_relax();
    }
    const double waited = now_s() - t0;
    if (waited > SPIN_YIELD_NS * 1e-9) break;
    if (waited > SPIN_PAUSE_NS * 1e-9) sched_yield();
  }
  pthread_mutex_lock(&b->mu);
  while (atomic_load(&b->gen) == gen) pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
}

static void barrier_resize(barrier *b, uint32_t count) {
  pthread_mutex_lock(&b->mu);
  b->count = count;
  pthread_mutex_unlock(&b->mu);
}

typedef struct shard {
  nn_workspace *ws;
  float *grad;               /* n_params */
  float *dz;                 /* [rows][classes] */
  uint8_t *labels;
  nn_rng rng;
  double loss_sum;           /* results of the last batch */
  uint32_t correct;
  uint32_t k;                /* index of this shard and its thread */
  struct pool *pool;
  nn_sync sync;              /* batch_norm's sums over all shards */
  uint32_t parity;           /* which half of pool->red its next sum uses */
  /* The batch's kept inputs of layer 0 (see phase_pre); every shard works
   * them out itself, so each reads its own copy. */
  uint8_t used[NN_IMAGE_SIZE];
  nn_cols cols;              /* cols.nr = 0: this batch keeps all inputs */
  nn_cols next;              /* the next batch's, when has_next */
  uint8_t next_used[NN_IMAGE_SIZE]; /* nn_k_u8_or_rows of this shard's rows of it */
  int has_next;              /* next worked out and w0 packed for it */
} shard;

typedef struct pool {
  uint32_t n;                /* threads including the caller */
  uint32_t n_alloc;          /* shards allocated (n unless creation failed) */
  shard *shards;
  pthread_t *tids;           /* n - 1 workers */
  barrier start, mid, end;
  barrier red_bar;           /* one phase per cross-shard sum (shard_sum) */
  double *red;               /* 2 halves x n slots x red_len doubles */
  size_t red_len;
  barrier pre;               /* w0 packed before any shard's forward pass */
  int sparse;                /* layer 0 is dense on the image: see phase_pre */
  float *w0;                 /* layer 0's weights of the kept inputs, [out][k0] */
  float *dw0;                /* their gradient, [out][k0] */
  uint64_t sparse_steps, kept; /* nn_trainer_input_stats (thread 0 writes) */
  int prepacked;             /* every shard has_next: w0 holds this batch's weights */
  int barriers;              /* initialised */
  /* The cross-core hand-off in this step (nn_k_flush): weights the other
   * threads read are streamed, and each thread flushes the other shards'
   * activations once its update has read them. Set by run_batch while the
   * workers wait at the start barrier. */
  int handoff;
  uint32_t tune_n;           /* handoff_pick: full training steps timed so far */
  double tune_s[2];          /* their seconds, off and on */
  uint32_t tune_left;        /* full steps the last decision still holds (0: timing) */
  int decided;               /* the last decision, -1 before the first */
  uint32_t rounds;           /* decisions made */
  struct nn_trainer *t;
} pool;

struct nn_trainer {
  nn_model *m;
  nn_train_config cfg;
  float *state;              /* slots * n_params */
  uint32_t *order;           /* shuffled sample indices, grown on demand */
  uint32_t order_cap;
  uint32_t epoch;
  uint64_t steps;
  batch_desc batch;
  int handoff_mode;          /* NN_HANDOFF_* */
  pool *pool;
};

void nn_train_defaults(nn_train_config *c) {
  memset(c, 0, sizeof *c);
  c->batch_size = 128;
  c->seed = 1;
  c->threads = 1;
  nn_opt_defaults(&c->opt, NN_OPT_RMSPROP);
}

/* ---------------------------------------------------------------- batch */

static void row_range(uint32_t n, uint32_t parts, uint32_t k, uint32_t *lo, uint32_t *hi) {
  *lo = (uint32_t)((uint64_t)n * k / parts);
  *hi = (uint32_t)((uint64_t)n * (k + 1) / parts);
}

/* nn_sync for the shards: each writes its part into its slot of one half
 * of the buffer, waits for the others, then adds the slots in shard order,
 * so every shard gets the same bits. The halves alternate: a shard can only
 * write the half it read two sums ago once everyone has passed the barrier
 * of the sum in between, i.e. has finished reading. */
static void shard_sum(nn_sync *sy, const double *part, double *total, size_t len) {
  shard *s = sy->ctx;
  pool *p = s->pool;
  double *half = p->red + (size_t)s->parity * p->n * p->red_len;
  s->parity ^= 1;
  memcpy(half + (size_t)s->k * p->red_len, part, len * sizeof *part);
  barrier_wait(&p->red_bar);
  for (size_t i = 0; i < len; i++) {
    double acc = 0.0;
    for (uint32_t k = 0; k < p->n; k++) acc += half[(size_t)k * p->red_len + i];
    total[i] = acc;
  }
}

/* Whether this batch's first layer leaves out the inputs that are zero in
 * all its images: images of a data set (explicit float rows and augmented
 * images are not scanned) into a dense first layer. */
static int sparse_batch(const pool *p, const batch_desc *b) {
  return p->sparse && b->images && !b->x && !b->aug_key;
}

/* An MNIST batch of 128 has ~530 of its 784 pixels non-zero in some image
 * (~67 are zero in every training image): the first layer's forward pass
 * and weight gradient, half of a step's arithmetic, need only those
 * inputs. Every shard works out the batch's kept inputs from all its
 * images (the same on every shard, no wait) and packs its slice of the
 * first layer's weights (the rows phase_update gives it) into the shared
 * w0. Within an epoch that happens at the end of the step before, right
 * after the update of those rows (dense0_update), while they are in cache;
 * otherwise here, and the forward passes start once all slices are there
 * (returns 1: wait). The products sum the same terms as the whole layer's,
 * blocked differently, so the results differ from the unpacked layer's in
 * the last bits; they are still the same on every run for a seed and a
 * thread count. */
static int phase_pre(nn_trainer *t, uint32_t k) {
  pool *p = t->pool;
  shard *s = &p->shards[k];
  const batch_desc *b = &t->batch;
  s->cols.nr = s->cols.k = 0;
  s->ws->k0 = 0;
  /* The pool's flag, not the shard's own: every shard must take the same
   * branch (and wait at the same barriers) even if one failed to pack. */
  const int prepacked = p->prepacked;
  s->has_next = 0;
  if (!sparse_batch(p, b)) return 0;
  if (prepacked) {
    s->cols = s->next;
  } else {
    nn_k_u8_or_rows(s->used, b->images, b->idx, b->n, NN_IMAGE_SIZE);
    /* All inputs kept (the same on every shard): nothing packed to wait for. */
    if (!nn_input_runs(s->used, NN_IMAGE_SIZE, &s->cols)) return 0;
  }
  if (k == 0) p->sparse_steps++, p->kept += s->cols.k;
  if (prepacked) return 0;
  const nn_layer *l = &t->m->layers[0];
  uint32_t o_lo, o_hi;
  row_range(l->out, p->n, k, &o_lo, &o_hi);
  nn_k_pack_runs(p->w0 + (size_t)o_lo * s->cols.k,
                 t->m->params + l->w_off + (size_t)o_lo * l->in, o_hi - o_lo, l->in, &s->cols);
  return 1;
}

/* The non-zero pixels of shard k's rows of the epoch's next batch, which
 * dense0_update combines over the shards: each reads only the images it
 * will gather at the next step. */
static void next_used(nn_trainer *t, uint32_t k) {
  pool *p = t->pool;
  const batch_desc *b = &t->batch;
  if (!b->training || !b->next_idx || !sparse_batch(p, b)) return;
  uint32_t lo, hi;
  row_range(b->next_n, p->n, k, &lo, &hi);
  nn_k_u8_or_rows(p->shards[k].next_used, b->images, b->next_idx + lo, hi - lo, NN_IMAGE_SIZE);
}

/* Forward and backward of shard k's rows into its own gradient block. */
static void phase_grad(nn_trainer *t, uint32_t k) {
  pool *p = t->pool;
  shard *s = &p->shards[k];
  const batch_desc *b = &t->batch;
  uint32_t lo, hi;
  row_range(b->n, p->n, k, &lo, &hi);
  uint32_t n = hi - lo;
  s->loss_sum = 0;
  s->correct = 0;
  /* Dropout in training only; batch_norm on batch statistics in both. */
  const int mode = b->training ? NN_PASS_TRAIN : NN_PASS_STATS;
  if (n == 0) {
    /* Only the bias gradients are summed from the shards' blocks. */
    memset(s->grad, 0, t->m->n_params * sizeof(float));
    nn_bn_idle(t->m, s->ws, mode, s->grad);
    next_used(t, k);
    return;
  }
  for (uint32_t r = 0; r < n; r++) {
    float *dst = s->ws->x + (size_t)r * NN_IMAGE_SIZE;
    if (b->x) {
      memcpy(dst, b->x + (size_t)(lo + r) * NN_IMAGE_SIZE, NN_IMAGE_SIZE * sizeof(float));
      s->labels[r] = b->labels[lo + r];
    } else {
      uint32_t i = b->idx ? b->idx[lo + r] : lo + r;
      const uint8_t *img = b->images + (size_t)i * NN_IMAGE_SIZE;
      uint8_t aug[NN_IMAGE_SIZE];
      if (b->aug_key) {
        uint64_t pos = b->aug_off + lo + r;
        nn_augment_random(&t->cfg.augment, b->aug_key ^ (pos * 0x9e3779b97f4a7c15ull), img, aug);
        img = aug;
      }
      if (s->cols.nr)
        nn_k_u8_gather_runs(s->ws->x + (size_t)r * s->cols.k, img, 1, NN_IMAGE_SIZE, &s->cols);
      else
        nn_k_u8_to_f32(dst, img, NN_IMAGE_SIZE);
      s->labels[r] = b->ds_labels[i];
    }
  }
  s->ws->k0 = s->cols.k;
  s->ws->w0k = p->w0;
  nn_forward(t->m, s->ws, n, mode, &s->rng);
  s->loss_sum = nn_xent_sum(nn_logits(t->m, s->ws), s->labels, n, nn_model_classes(t->m),
                            s->ws->act[t->m->n_layers - 1], s->dz, 1.0f / (float)b->n,
                            &s->correct);
  nn_backward(t->m, s->ws, n, s->dz, s->grad, mode, 1);
  next_used(t, k);
}

/* The optimizer on n parameters from offset off, whose gradient is in g.
 * shared: other threads read these parameters in their passes (streamed
 * under the hand-off). */
static void update_slice(nn_trainer *t, const float *g, size_t off, size_t n, int shared) {
  const nn_opt_config *c = &t->cfg.opt;
  if (!n) return;
  if (c->kind == NN_OPT_RMSPROP) {
    const float *gs = g + off;
    if (shared && t->pool->handoff)
      nn_k_rmsprop_stream(t->m->params + off, t->state + off, gs, n, c->lr, c->rho,
                          c->epsilon);
    else
      nn_k_rmsprop_sum(t->m->params + off, t->state + off, &gs, 1, n, c->lr, c->rho,
                       c->epsilon);
  } else {
    nn_opt_step_range(c, t->m->params + off, g + off, t->state + off, n, t->m->n_params,
                      t->steps);
  }
}

/* Thread k's rows [o_lo, o_hi) of dense layer i's weight gradient into dw
 * ([out][l->in]), the products accumulating over the shards' rows in shard
 * order, then the shards' bias gradients of those rows into shards[0]'s, in
 * shard order. packed: l is the first layer on its kept inputs (phase_pre),
 * whose size changes every step. Returns 0, or a product's failure (kept in
 * the dnn: the batch's caller reports it, batch_error). */
static int dw_rows_all(nn_trainer *t, uint32_t k, uint32_t i, const nn_layer *l, int packed,
                       uint32_t o_lo, uint32_t o_hi, float *dw) {
  pool *p = t->pool;
  nn_dnn *d = p->shards[k].ws->dnn;
  float *g = p->shards[0].grad;
  int acc = 0;
  for (uint32_t s = 0; s < p->n; s++) {
    uint32_t lo, hi;
    row_range(t->batch.n, p->n, s, &lo, &hi);
    if (hi == lo) continue;
    const nn_workspace *ws = p->shards[s].ws;
    const float *x = i > 0 ? ws->cur[i - 1] : ws->x;
    int rc = packed ? nn_dnn_dense_dw_rows_var(d, l, o_lo, o_hi, ws->dg[i], x, hi - lo, acc, dw)
                    : nn_dnn_dense_dw_rows(d, i, s, p->n, l, o_lo, o_hi, ws->dg[i], x, hi - lo,
                                           acc, dw);
    if (rc) return rc;
    acc = 1;
  }
  for (uint32_t s = 1; s < p->n; s++)
    nn_k_add(g + l->b_off + o_lo, p->shards[s].grad + l->b_off + o_lo, o_hi - o_lo);
  return 0;
}

/* phase_update's part for layer 0 when phase_pre left inputs out: the
 * gradient of the kept inputs' weights, then RMSprop on the packed
 * gradient (nn_k_rmsprop_runs: the same bits as on the unpacked one), or
 * the gradient unpacked into shards[0].grad for the other optimizers (for
 * which a zero gradient still moves a weight) and passes without an
 * update. */
static void dense0_update(nn_trainer *t, uint32_t k, uint32_t o_lo, uint32_t o_hi) {
  pool *p = t->pool;
  nn_model *m = t->m;
  const batch_desc *b = &t->batch;
  shard *ks = &p->shards[k];
  const nn_layer *l = &m->layers[0];
  nn_layer c = *l;
  c.in = ks->cols.k;
  float *g = p->shards[0].grad;
  if (dw_rows_all(t, k, 0, &c, 1, o_lo, o_hi, p->dw0)) return;
  const size_t w_lo = l->w_off + (size_t)o_lo * l->in;
  const float *dw = p->dw0 + (size_t)o_lo * ks->cols.k;
  /* The next batch of the epoch: its kept inputs, and these rows packed
   * for it as soon as they are updated, while in this core's cache (see
   * phase_pre). Nobody reads w0 between here and the next forward passes. */
  const nn_cols *next = NULL;
  if (b->training && b->next_idx) {
    memcpy(ks->used, p->shards[0].next_used, NN_IMAGE_SIZE);
    for (uint32_t s = 1; s < p->n; s++)
      for (uint32_t j = 0; j < NN_IMAGE_SIZE; j++) ks->used[j] |= p->shards[s].next_used[j];
    if (nn_input_runs(ks->used, NN_IMAGE_SIZE, &ks->next)) next = &ks->next;
  }
  float *pack = next ? p->w0 + (size_t)o_lo * next->k : NULL;
  const nn_opt_config *oc = &t->cfg.opt;
  if (b->training && oc->kind == NN_OPT_RMSPROP) {
    /* Only this thread reads these rows of the whole layer; the packed
     * copy is what every shard's forward pass reads. */
    nn_k_rmsprop_runs(m->params + w_lo, t->state + w_lo, dw, o_hi - o_lo, l->in, &ks->cols,
                      oc->lr, oc->rho, oc->epsilon, next, pack, p->handoff);
  } else {
    nn_k_unpack_runs(g + w_lo, dw, o_hi - o_lo, l->in, &ks->cols);
    if (b->training) update_slice(t, g, w_lo, (size_t)(o_hi - o_lo) * l->in, 0);
    if (next) nn_k_pack_runs(pack, m->params + w_lo, o_hi - o_lo, l->in, next);
  }
  ks->has_next = next != NULL;
  if (b->training) update_slice(t, g, l->b_off + o_lo, o_hi - o_lo, 0);
}

/* The hand-off's second half: what thread k's products in phase_update
 * read of the other shards (each dense layer's input and output gradient),
 * flushed, so that their owners' next writes find no copy here. At the end
 * of the update rather than after each product: the owner may still be
 * reading its own rows for the same layer. */
static void flush_shards(nn_trainer *t, uint32_t k) {
  pool *p = t->pool;
  const nn_model *m = t->m;
  for (uint32_t s = 0; s < p->n; s++) {
    uint32_t lo, hi;
    row_range(t->batch.n, p->n, s, &lo, &hi);
    if (s == k || hi == lo) continue;
    const nn_workspace *ws = p->shards[s].ws;
    const size_t n = hi - lo;
    for (uint32_t i = 0; i < m->n_layers; i++) {
      const nn_layer *l = &m->layers[i];
      if (l->type != NN_LAYER_DENSE) continue;
      if (i == 0) nn_k_flush(ws->x, n * (ws->k0 ? ws->k0 : l->in) * sizeof(float));
      else nn_k_flush(ws->cur[i - 1], n * l->in * sizeof(float));
      nn_k_flush(ws->dg[i], n * l->out * sizeof(float));
    }
  }
}

/* Thread k's part of the weight gradients and the update: rows [o_lo, o_hi)
 * of every dense layer's weight matrix (and those biases), summed over all
 * shards' rows with the products accumulating in shard order (so the result
 * depends on the thread count only), then the optimizer on those rows while
 * they are still in this core's cache. The shards' activations and output
 * gradients are what moves between cores, not per-shard copies of the whole
 * gradient. The full gradient ends up in shards[0].grad (but for a packed
 * first layer under RMSprop: see dense0_update). */
static void phase_update(nn_trainer *t, uint32_t k) {
  pool *p = t->pool;
  nn_model *m = t->m;
  const batch_desc *b = &t->batch;
  float *g = p->shards[0].grad;
  for (uint32_t i = 0; i < m->n_layers; i++) {
    const nn_layer *l = &m->layers[i];
    if (l->type == NN_LAYER_BATCHNORM) {
      /* Every shard holds the whole batch's gamma and beta gradients
       * (summed across shards in the backward pass): thread k updates its
       * slice of them; the moving statistics, which the optimizer never
       * sees, are thread 0's, once per step. */
      size_t len = 2 * (size_t)l->ishape.c;
      size_t lo = l->w_off + len * k / p->n, hi = l->w_off + len * (k + 1) / p->n;
      if (b->training) {
        update_slice(t, g, lo, hi - lo, 0);
        if (k == 0) nn_bn_update_moving(l, m->params + l->w_off, p->shards[0].ws->bn_stat[i]);
      }
      continue;
    }
    if (l->type == NN_LAYER_CONV2D) {
      /* Each shard's backward pass left its full gradient of this layer in
       * its own block (small: 18k floats for the cnn preset); thread k sums
       * its slice of it in shard order and updates that slice. */
      size_t len = l->b_off + l->oshape.c - l->w_off;
      size_t lo = l->w_off + len * k / p->n, hi = l->w_off + len * (k + 1) / p->n;
      for (uint32_t s = 1; s < p->n; s++) nn_k_add(g + lo, p->shards[s].grad + lo, hi - lo);
      if (b->training) update_slice(t, g, lo, hi - lo, 0);
      continue;
    }
    if (l->type != NN_LAYER_DENSE) continue;
    uint32_t o_lo = (uint32_t)((uint64_t)l->out * k / p->n);
    uint32_t o_hi = (uint32_t)((uint64_t)l->out * (k + 1) / p->n);
    if (o_lo == o_hi) continue;
    const shard *ks = &p->shards[k];
    if (i == 0 && ks->cols.nr) {
      dense0_update(t, k, o_lo, o_hi);
      continue;
    }
    if (dw_rows_all(t, k, i, l, 0, o_lo, o_hi, g + l->w_off)) return;
    if (b->training) {
      /* Every shard's passes read the whole matrix. */
      update_slice(t, g, l->w_off + (size_t)o_lo * l->in, (size_t)(o_hi - o_lo) * l->in, 1);
      update_slice(t, g, l->b_off + o_lo, o_hi - o_lo, 0);
    }
  }
  if (p->handoff) flush_shards(t, k);
}

static void *worker(void *arg) {
  shard *s = arg;
  pool *p = s->pool;
  for (;;) {
    barrier_wait(&p->start);
    if (p->t->batch.stop) break;
    if (phase_pre(p->t, s->k)) barrier_wait(&p->pre);
    phase_grad(p->t, s->k);
    barrier_wait(&p->mid);
    phase_update(p->t, s->k);
    barrier_wait(&p->end);
  }
  return NULL;
}

/* NN_HANDOFF_AUTO: the hand-off pays where cores are far apart and costs
 * a little where they share a cache (flushed lines then come back from
 * memory; streamed weights too), and no CPU feature tells which; on a
 * virtual machine it even changes while the trainer runs (seen on a 2-vCPU
 * Zen 5 guest: the host moved its vCPUs between cores ~60 ns and ~250 ns
 * apart within minutes; epochs of 0.36 s with the hand-off against 0.40 s
 * without when apart, 0.29 s without it when close). So the trainer
 * times its own full training steps: TUNE_SKIP first (kernels and pages
 * still being set up), then blocks of TUNE_BLOCK steps alternating off
 * and on (the host's speed drifts slower than that) until TUNE_STEPS are
 * timed, keeps the hand-off if its steps took TUNE_GAIN less, and times
 * again after TUNE_EVERY more full steps (~4 MNIST epochs; each round
 * costs ~0.5% of them). Either way every value is the same. */
#define TUNE_SKIP 8
#define TUNE_BLOCK 4
#define TUNE_STEPS 192
#define TUNE_GAIN 0.98
#define TUNE_EVERY 2048

/* Before a batch: this step's hand-off. Returns 1 if the step is to be
 * timed (with arm p->handoff). */
static int handoff_pick(nn_trainer *t) {
  pool *p = t->pool;
  if (p->n < 2 || t->handoff_mode != NN_HANDOFF_AUTO) {
    p->handoff = p->n > 1 && t->handoff_mode == NN_HANDOFF_ON;
    return 0;
  }
  const int full = t->batch.training && t->batch.n == t->cfg.batch_size;
  if (p->tune_left) {
    /* A decision holds for TUNE_EVERY full steps, then is timed again. */
    if (!full || --p->tune_left) return 0;
    p->tune_n = 0;
    p->tune_s[0] = p->tune_s[1] = 0;
  }
  if (!full) {
    /* Not timed: the last decision (off before the first). */
    p->handoff = p->decided > 0;
    return 0;
  }
  p->handoff = (p->tune_n / TUNE_BLOCK) & 1;
  return 1;
}

/* After a timed batch of `secs` seconds. */
static void handoff_count(pool *p, double secs) {
  static const uint32_t total = TUNE_SKIP + TUNE_STEPS;
  if (p->tune_n >= TUNE_SKIP) p->tune_s[p->handoff] += secs;
  if (++p->tune_n < total) return;
  p->handoff = p->decided = p->tune_s[1] < TUNE_GAIN * p->tune_s[0];
  p->rounds++;
  p->tune_left = TUNE_EVERY;
}

/* Runs the batch described in t->batch on all threads. Returns the summed
 * loss; *correct gets the number of right answers. */
static double run_batch(nn_trainer *t, uint32_t *correct) {
  pool *p = t->pool;
  if (t->batch.training) t->steps++;
  const int timed = handoff_pick(t);
  const double t0 = timed ? now_s() : 0;
  p->prepacked = 1;
  for (uint32_t k = 0; k < p->n; k++) p->prepacked &= p->shards[k].has_next;
  if (p->n > 1) barrier_wait(&p->start);
  if (phase_pre(t, 0) && p->n > 1) barrier_wait(&p->pre);
  phase_grad(t, 0);
  if (p->n > 1) barrier_wait(&p->mid);
  phase_update(t, 0);
  /* The caller may read the weights (checkpoint, evaluation) as soon as we
   * return: wait until every range is updated. */
  if (p->n > 1) barrier_wait(&p->end);
  if (timed) handoff_count(p, now_s() - t0);
  double loss = 0;
  uint32_t ok = 0;
  for (uint32_t k = 0; k < p->n; k++) {
    loss += p->shards[k].loss_sum;
    ok += p->shards[k].correct;
  }
  if (correct) *correct = ok;
  return loss;
}

/* After run_batch: the first failure of a matrix product on any thread
 * (NN_ENOMEM), or 0. The weights may then hold a partial update. */
static int batch_error(nn_trainer *t) {
  int rc = 0;
  for (uint32_t k = 0; k < t->pool->n; k++) {
    int e = nn_dnn_error(t->pool->shards[k].ws->dnn);
    if (!rc) rc = e;
  }
  return rc;
}

static void pool_free(pool *p) {
  if (!p) return;
  if (p->tids) {
    p->t->batch.stop = 1;
    barrier_wait(&p->start);
    for (uint32_t k = 1; k < p->n; k++) pthread_join(p->tids[k - 1], NULL);
    p->t->batch.stop = 0;
  }
  if (p->barriers) {
    barrier_destroy(&p->pre);
    barrier_destroy(&p->red_bar);
    barrier_destroy(&p->end);
    barrier_destroy(&p->mid);
    barrier_destroy(&p->start);
  }
  for (uint32_t k = 0; p->shards && k < p->n_alloc; k++) {
    nn_workspace_free(p->shards[k].ws);
    free(p->shards[k].grad);
    free(p->shards[k].dz);
    free(p->shards[k].labels);
  }
  free(p->w0);
  free(p->dw0);
  free(p->shards);
  free(p->tids);
  free(p->red);
  free(p);
}

static int pool_create(pool **out, nn_trainer *t, uint32_t n) {
  pool *p = calloc(1, sizeof *p);
  if (!p) return NN_ENOMEM;
  p->n = p->n_alloc = n;
  p->decided = -1;
  p->t = t;
  int rc = NN_ENOMEM;
  uint32_t rows = (t->cfg.batch_size + n - 1) / n;
  const nn_layer *l0 = &t->m->layers[0];
  p->sparse = l0->type == NN_LAYER_DENSE && l0->in == NN_IMAGE_SIZE;
  if (p->sparse && (!(p->w0 = nn_falloc((size_t)l0->in * l0->out, 0)) ||
                    !(p->dw0 = nn_falloc((size_t)l0->in * l0->out, 0))))
    goto fail;
  if (!(p->shards = calloc(n, sizeof *p->shards))) goto fail;
  for (uint32_t k = 0; k < n; k++) {
    shard *s = &p->shards[k];
    s->k = k;
    s->pool = p;
    if ((rc = nn_workspace_create(&s->ws, t->m, rows))) goto fail;
    /* A shard sees a few row counts (the last batch, uneven splits): give
     * each its compiled kernels. */
    /* Each thread runs its own single-threaded products: T threads on T
     * cores, no OpenMP team on top (measured: one trainer thread with a
     * team of two took 7x longer per epoch than two threads with a team of
     * one when other processes shared the cores; a team waits for its
     * slowest member at every product). */
    nn_dnn_set_threads(s->ws->dnn, 1);
    if ((rc = nn_dnn_prepare(s->ws->dnn, t->m, rows, 1))) goto fail;
    rc = NN_ENOMEM;
    if (!(s->grad = nn_falloc(t->m->n_params, 1))) goto fail;
    if (!(s->dz = calloc((size_t)rows * nn_model_classes(t->m), sizeof(float)))) goto fail;
    if (!(s->labels = calloc(rows, 1))) goto fail;
  }
  if (n > 1) {
    /* batch_norm's sums: at most 2 per channel and a count. */
    for (uint32_t i = 0; i < t->m->n_layers; i++)
      if (t->m->layers[i].type == NN_LAYER_BATCHNORM &&
          2 * (size_t)t->m->layers[i].ishape.c + 1 > p->red_len)
        p->red_len = 2 * (size_t)t->m->layers[i].ishape.c + 1;
    if (p->red_len) {
      if (!(p->red = calloc(2 * (size_t)n * p->red_len, sizeof *p->red))) goto fail;
      for (uint32_t k = 0; k < n; k++) {
        p->shards[k].sync = (nn_sync){.sum = shard_sum, .ctx = &p->shards[k]};
        p->shards[k].ws->sync = &p->shards[k].sync;
      }
    }
    if (barrier_init(&p->start, n)) goto fail;
    if (barrier_init(&p->mid, n)) {
      barrier_destroy(&p->start);
      goto fail;
    }
    if (barrier_init(&p->end, n)) {
      barrier_destroy(&p->mid);
      barrier_destroy(&p->start);
      goto fail;
    }
    if (barrier_init(&p->red_bar, n)) {
      barrier_destroy(&p->end);
      barrier_destroy(&p->mid);
      barrier_destroy(&p->start);
      goto fail;
    }
    if (barrier_init(&p->pre, n)) {
      barrier_destroy(&p->red_bar);
      barrier_destroy(&p->end);
      barrier_destroy(&p->mid);
      barrier_destroy(&p->start);
      goto fail;
    }
    p->barriers = 1;
    if (!(p->tids = calloc(n - 1, sizeof *p->tids))) goto fail;
    for (uint32_t k = 1; k < n; k++) {
      if (pthread_create(&p->tids[k - 1], NULL, worker, &p->shards[k])) {
        /* Threads already started wait at the start barrier, which needs
         * all n: shrink it to what exists so they can be told to stop. */
        barrier_resize(&p->start, k);
        p->n = k;
        goto fail;
      }
    }
  }
  *out = p;
  return 0;
fail:
  pool_free(p);
  return rc;
}

/* ---------------------------------------------------------------- trainer */

int nn_trainer_create(nn_trainer **out, nn_model *m, const nn_train_config *cfg) {
  if (!out || !m || !cfg || cfg->batch_size == 0 || cfg->batch_size > 65536 ||
      cfg->threads > NN_MAX_THREADS || !(cfg->opt.lr > 0.f) || !isfinite(cfg->opt.lr) ||
      (uint32_t)cfg->opt.kind > NN_OPT_ADAM || m->n_inputs != NN_IMAGE_SIZE ||
      !nn_augment_valid(&cfg->augment))
    return NN_EINVAL;
  *out = NULL;
  nn_trainer *t = calloc(1, sizeof *t);
  if (!t) return NN_ENOMEM;
  t->m = m;
  t->cfg = *cfg;
  if (t->cfg.threads == 0) t->cfg.threads = 1;
  int rc = NN_ENOMEM;
  if (!(t->state = nn_falloc((size_t)nn_opt_slots(cfg->opt.kind) * m->n_params, 1)))
    goto fail;
  if ((rc = pool_create(&t->pool, t, t->cfg.threads))) goto fail;
  *out = t;
  return 0;
fail:
  nn_trainer_free(t);
  return rc;
}

void nn_trainer_free(nn_trainer *t) {
  if (!t) return;
  pool_free(t->pool);
  free(t->order);
  free(t->state);
  free(t);
}

int nn_trainer_set_threads(nn_trainer *t, uint32_t threads) {
  if (!t || threads == 0 || threads > NN_MAX_THREADS) return NN_EINVAL;
  if (threads == t->pool->n) return 0;
  pool *p;
  int rc = pool_create(&p, t, threads);
  if (rc) return rc;
  pool_free(t->pool);
  t->pool = p;
  t->cfg.threads = threads;
  return 0;
}

int nn_trainer_set_augment(nn_trainer *t, const nn_augment *a) {
  if (!t || !a || !nn_augment_valid(a)) return NN_EINVAL;
  t->cfg.augment = *a;
  return 0;
}

uint32_t nn_trainer_epoch(const nn_trainer *t) { return t->epoch; }
nn_model *nn_trainer_model(nn_trainer *t) { return t->m; }
const nn_train_config *nn_trainer_config(const nn_trainer *t) { return &t->cfg; }

float *nn_trainer_opt_state(nn_trainer *t, uint64_t *steps) {
  if (steps) *steps = t->steps;
  return t->state;
}

double nn_trainer_gemm_seconds(const nn_trainer *t) {
  uint64_t ns = 0;
  for (uint32_t k = 0; k < t->pool->n; k++) ns += nn_dnn_gemm_ns(t->pool->shards[k].ws->dnn);
  return (double)ns * 1e-9;
}

void nn_trainer_input_stats(const nn_trainer *t, uint64_t *steps, uint64_t *kept) {
  *steps = t->pool->sparse_steps;
  *kept = t->pool->kept;
}

void nn_trainer_set_handoff(nn_trainer *t, int mode) {
  t->handoff_mode = mode;
  t->pool->tune_left = 0;
  t->pool->tune_n = 0;
  t->pool->tune_s[0] = t->pool->tune_s[1] = 0;
  t->pool->decided = -1;
}

uint32_t nn_trainer_handoff_rounds(const nn_trainer *t) { return t->pool->rounds; }

int nn_trainer_handoff(const nn_trainer *t) {
  if (t->pool->n < 2) return 0;
  if (t->handoff_mode != NN_HANDOFF_AUTO) return t->handoff_mode == NN_HANDOFF_ON;
  return t->pool->decided;
}

void nn_trainer_restore(nn_trainer *t, uint32_t epoch, uint64_t steps) {
  t->epoch = epoch;
  t->steps = steps;
}

int nn_train_batch(nn_trainer *t, const float *x, const uint8_t *labels, uint32_t n,
                   float *loss) {
  if (!t || !x || !labels || n == 0 || n > t->cfg.batch_size) return NN_EINVAL;
  for (uint32_t i = 0; i < n; i++)
    if (labels[i] >= nn_model_classes(t->m)) return NN_EINVAL;
  t->batch = (batch_desc){.n = n, .x = x, .labels = labels, .training = 1};
  double l = run_batch(t, NULL);
  int rc = batch_error(t);
  if (rc) return rc;
  if (loss) *loss = (float)(l / n);
  return 0;
}

float nn_trainer_gradient(nn_trainer *t, const float *x, const uint8_t *labels, uint32_t n,
                          const float **grad) {
  t->batch = (batch_desc){.n = n, .x = x, .labels = labels, .training = 0};
  double l = run_batch(t, NULL);
  if (grad) *grad = t->pool->shards[0].grad;
  return batch_error(t) ? NAN : (float)(l / n);
}

/* Every label must name one of the model's outputs: a label past the
 * output layer would index past the probabilities. */
static int check_dataset(const nn_dataset *ds, const nn_model *m) {
  if (!ds || ds->n == 0 || !ds->images || !ds->labels ||
      (uint64_t)ds->rows * ds->cols != NN_IMAGE_SIZE)
    return NN_EINVAL;
  uint32_t k = nn_model_classes(m);
  for (uint32_t i = 0; i < ds->n; i++)
    if (ds->labels[i] >= k) return NN_EINVAL;
  return 0;
}

int nn_train_epoch(nn_trainer *t, const nn_dataset *ds, nn_progress_cb cb, void *user,
                   const volatile int *cancel, nn_epoch_metrics *out) {
  if (!t || check_dataset(ds, t->m)) return NN_EINVAL;
  if (ds->n > t->order_cap) {
    uint32_t *o = realloc(t->order, (size_t)ds->n * sizeof *o);
    if (!o) return NN_ENOMEM;
    t->order = o;
    t->order_cap = ds->n;
  }
  uint32_t epoch = t->epoch + 1;
  /* Every stream depends on (seed, epoch, shard) only, so resuming from a
   * checkpoint after epoch k replays what an uninterrupted run would do. */
  uint64_t base = t->cfg.seed * 0x9e3779b97f4a7c15ull + epoch;
  nn_rng rng;
  nn_rng_seed(&rng, base);
  for (uint32_t i = 0; i < ds->n; i++) t->order[i] = i;
  for (uint32_t i = ds->n - 1; i > 0; i--) {
    uint32_t j = nn_rng_below(&rng, i + 1), tmp = t->order[i];
    t->order[i] = t->order[j];
    t->order[j] = tmp;
  }
  for (uint32_t k = 0; k < t->pool->n; k++)
    nn_rng_seed(&t->pool->shards[k].rng, base ^ ((uint64_t)(k + 1) << 48));

  const uint32_t bs = t->cfg.batch_size;
  const nn_augment *au = &t->cfg.augment;
  uint64_t aug_key = au->shift > 0.f || au->rotate > 0.f || au->scale > 0.f
                         ? (base * 0xbf58476d1ce4e5b9ull) | 1
                         : 0;
  nn_progress pr = {.epoch = epoch, .batches = (ds->n + bs - 1) / bs};
  double loss_sum = 0.0, t0 = now_s();
  uint64_t correct_sum = 0;
  /* Nothing packed for a batch of an earlier call (the weights may have
   * changed since). */
  for (uint32_t k = 0; k < t->pool->n; k++) t->pool->shards[k].has_next = 0;
  for (uint32_t off = 0; off < ds->n; off += bs) {
    uint32_t n = ds->n - off < bs ? ds->n - off : bs, correct = 0, next = off + n;
    t->batch = (batch_desc){.n = n, .images = ds->images, .ds_labels = ds->labels,
                            .idx = t->order + off, .training = 1, .aug_key = aug_key,
                            .aug_off = off, .next_idx = next < ds->n ? t->order + next : NULL,
                            .next_n = next < ds->n ? (ds->n - next < bs ? ds->n - next : bs) : 0};
    loss_sum += run_batch(t, &correct);
    int rc = batch_error(t);
    if (rc) return rc;
    correct_sum += correct;
    pr.batch++;
    pr.samples += n;
    pr.loss = (float)(loss_sum / pr.samples);
    pr.accuracy = (float)((double)correct_sum / pr.samples);
    if ((cb && cb(&pr, user)) || (cancel && *cancel)) return NN_ECANCELED;
  }
  double secs = now_s() - t0;
  t->epoch = epoch;
  if (out) {
    memset(out, 0, sizeof *out);
    out->epoch = epoch;
    out->loss = pr.loss;
    out->accuracy = pr.accuracy;
    out->val_loss = NAN;
    out->val_accuracy = NAN;
    out->seconds = secs;
    out->samples_per_second = secs > 0 ? ds->n / secs : 0;
  }
  return 0;
}

int nn_evaluate(const nn_model *m, nn_workspace *ws, const nn_dataset *ds, float *loss,
                float *accuracy, uint8_t *predictions) {
  if (!m || !ws || check_dataset(ds, m) || ws->n_layers != m->n_layers) return NN_EINVAL;
  double loss_sum = 0.0;
  uint64_t correct_sum = 0;
  for (uint32_t off = 0; off < ds->n; off += ws->max_batch) {
    uint32_t n = ds->n - off < ws->max_batch ? ds->n - off : ws->max_batch, correct = 0;
    nn_k_u8_to_f32(ws->x, ds->images + (size_t)off * NN_IMAGE_SIZE, (size_t)n * NN_IMAGE_SIZE);
    const float *p = nn_forward(m, ws, n, 0, NULL);
    int rc = nn_dnn_error(ws->dnn);
    if (rc) return rc;
    /* Recomputes the softmax from the logits so the loss uses the same
     * clipping as training. */
    loss_sum += nn_xent_sum(nn_logits(m, ws), ds->labels + off, n, nn_model_classes(m), (float *)p,
                            NULL, 0.f, &correct);
    correct_sum += correct;
    if (predictions)
      for (uint32_t r = 0; r < n; r++)
        predictions[off + r] =
            (uint8_t)nn_argmax_n(p + (size_t)r * nn_model_classes(m), nn_model_classes(m));
  }
  if (loss) *loss = (float)(loss_sum / ds->n);
  if (accuracy) *accuracy = (float)((double)correct_sum / ds->n);
  return 0;
}
