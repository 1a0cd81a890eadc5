/* srv_dsparse: turns an uploaded data set (an archive of class folders or
 * IDX files, or a Kaggle-style CSV) into labelled 28x28 uint8 images.
 * Pure: input bytes in (a FILE* or a libarchive reader the caller opened),
 * a srv_ds_build out; no files written, no globals, no printing, so each
 * parser can be fuzzed on its own (tests/fuzz/fuzz_dscsv.c, fuzz_dsarchive.c).
 *
 * Every function returns 0 or a negative errno-style code, and fills msg
 * with one sentence naming the entry and the reason
 * ("train/7/x.png: not a PNG (bad signature)"):
 *   -EINVAL  malformed or refused input (traversal, links, bad rows)  -> 400
 *   -E2BIG   a limit was passed (entries, bytes, images, classes)      -> 413
 *   -ENOMEM  allocation failed                                         -> 500
 * On failure the build may hold partial data: free it with
 * srv_ds_build_free, nothing else is left behind. */
#ifndef MNISTD_SRV_DSPARSE_H
#define MNISTD_SRV_DSPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_DS_MAX_CLASS_NAME 64

typedef struct srv_ds_limits {
  uint64_t max_images;        /* images per set, default 1M */
  uint32_t max_classes;       /* default 256 (the output layer's limit) */
  uint64_t max_archive_bytes; /* total uncompressed bytes read from an archive */
  uint64_t max_entries;       /* archive entries */
  uint64_t max_image_bytes;   /* one image file (encoded) */
} srv_ds_limits;

/* Defaults: 1M images, 256 classes, 2 GiB uncompressed, 2M entries, 16 MiB
 * per image file. */
void srv_ds_limits_default(srv_ds_limits *l);

/* One split: n images of 784 bytes and n labels (indices into the build's
 * classes). */
typedef struct srv_ds_split {
  uint8_t *images, *labels;
  uint64_t n, cap;
} srv_ds_split;

typedef struct srv_ds_build {
  char **classes;          /* n_classes malloc'd names, in label order */
  uint32_t n_classes;
  srv_ds_split train, test;
  int has_test;            /* the input had its own test part */
  char source_format[16];  /* "png-folders", "idx", "csv" */
} srv_ds_build;

void srv_ds_build_free(srv_ds_build *b);

/* Reads a Kaggle digit-recognizer CSV: a header "label,pixel0,...,pixel783"
 * (first column named label, 785 columns), then one row per image: the
 * label (an integer 0..255, or a class name) and 784 integers 0..255. With
 * integer labels the classes are "0".."max" and every one must have a
 * row; with names the classes are the names, sorted. Rows go to b->train. */
int srv_ds_parse_csv(FILE *f, const srv_ds_limits *lim, srv_ds_build *b, char *msg,
                     size_t msglen);

struct archive;
/* Walks an opened libarchive reader: either class folders
 * ([top/]train/<class>/<image>, optional [top/]test/<class>/<image>; PNG or
 * PGM, preprocessed like predictions unless preprocess == 0, then only
 * scaled to 28x28 gray) or the four MNIST IDX files (plain or .gz) with an
 * optional classes.txt. Refuses absolute paths, "..", links, special files,
 * class folders differing only in case, empty classes, test classes
 * unknown to train, labels outside classes.txt. Classes come out sorted
 * (numerically when every name is a number). The caller frees the reader. */
int srv_ds_parse_archive(struct archive *a, const srv_ds_limits *lim, int preprocess,
                         srv_ds_build *b, char *msg, size_t msglen);

/* Moves a seeded fraction (0 < fraction < 1) of each class of b->train to
 * b->test, deterministically (the same input gives the same split). */
int srv_ds_hold_out(srv_ds_build *b, double fraction, uint64_t seed);

/* Checks the finished build: 2..max_classes classes, each with at least
 * one training image, counts within limits. */
int srv_ds_check(const srv_ds_build *b, const srv_ds_limits *lim, char *msg, size_t msglen);

#endif
