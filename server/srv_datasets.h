/* srv_datasets: data sets uploaded over REST (POST /v1/datasets), kept as
 * durable objects beside the models: STATE/datasets/NAME.mds in the
 * daemon's own compact format, a row in the store (srv_store_dataset_*),
 * and the descriptions in memory.
 *
 * The file: "MNISTDS1", u32 LE classes, train, test, names_len; the class
 * names joined by '\n' (names_len bytes); train labels, test labels, train
 * images, test images (784 bytes each, 0 = background); then the SHA-256
 * of everything before it. Written to a temporary file, fsynced, renamed
 * into place and the directory fsynced, then recorded: a crash at any
 * point leaves either no data set or a whole one. Temporary files are
 * removed at open; a complete file without its row (a crash between the
 * rename and the insert) is registered again from its own contents.
 * A delete renames the file to the tombstone .deleted-NAME (directory
 * fsynced) before it removes the record, then removes the tombstone; open
 * finishes the deletes a crash interrupted (tombstones are never
 * registered), so a set is either whole and listed or gone for good.
 * Checksums are verified whenever a file is loaded.
 *
 * Every function may be called from any thread. A NULL srv_datasets (a
 * read-only replica keeps none) lists nothing, finds nothing and refuses
 * uploads with -EROFS. */
#ifndef MNISTD_SRV_DATASETS_H
#define MNISTD_SRV_DATASETS_H

#include <cJSON.h>
#include <stdint.h>

#include "nn.h"
#include "srv_dsparse.h"
#include "srv_store.h"
#include "srv_validate.h"

typedef struct srv_datasets srv_datasets;

typedef struct srv_ds_config {
  srv_ds_limits lim;
  uint64_t max_body;  /* upload bytes, default 512 MiB */
  uint64_t quota;     /* --max-datasets-bytes: all uploaded files, default 4 GiB */
} srv_ds_config;

void srv_ds_config_default(srv_ds_config *c);

/* Opens STATE/datasets (creating it), finishes interrupted deletes
 * (removes the record of each tombstone's set, then the tombstone), removes
 * temporary files, loads the records whose file is present and intact
 * (others are logged and not listed). log may be NULL. */
int srv_datasets_open(srv_datasets **out, srv_store *st, const char *state_dir,
                      const srv_ds_config *cfg, void (*log)(const char *msg));
void srv_datasets_close(srv_datasets *d);
/* The sets of a daemon's state directory for a reader beside it (mnistd
 * train --state-dir): the records of st whose file is present with its
 * size; nothing on disk is created, removed or registered. Loads check
 * the checksums as usual; uploads and deletes answer -EROFS. 0, -ENOMEM or
 * the store's error. */
int srv_datasets_open_readonly(srv_datasets **out, srv_store *st, const char *state_dir);
const srv_ds_config *srv_datasets_config(srv_datasets *d);

/* The class names of a built-in set ("0".."9", Fashion-MNIST's names). */
const char *const *srv_dataset_builtin_classes(const char *name);

/* The description of an uploaded set, or NULL (unknown). Caller frees. */
cJSON *srv_datasets_json(srv_datasets *d, const char *name);
/* Appends every uploaded set's description to arr. */
void srv_datasets_list(srv_datasets *d, cJSON *arr);
/* Counts of an uploaded set: -ENOENT if unknown. */
int srv_datasets_count(srv_datasets *d, const char *name, uint32_t *train, uint32_t *test,
                       uint32_t *classes);
/* A malloc'd copy of the class names (one block: free(*names) frees all);
 * -ENOENT if unknown. */
int srv_datasets_classes(srv_datasets *d, const char *name, char ***names, uint32_t *n);

/* The recorded checksum (64 hex digits) of an uploaded set: -ENOENT if
 * unknown. */
int srv_datasets_sha(srv_datasets *d, const char *name, char sha[65]);
/* Loads one split of an uploaded set into ds (free with nn_dataset_free),
 * checking the file's checksum against the record (sha receives it):
 * -ENOENT unknown, -EIO damaged (msg says which), -ENOMEM. */
int srv_datasets_load(srv_datasets *d, const char *name, nn_split split, nn_dataset *ds,
                      char sha[65], char *msg, size_t msglen);

/* Removes record and file: -ENOENT unknown, -EIO store failure. */
int srv_datasets_delete(srv_datasets *d, const char *name);
/* The same in two steps, so that the decision can be taken under a
 * caller's lock and the disk work outside it. begin (quick, no I/O) marks
 * the set as being deleted: from then on it is not listed or found (a job
 * submitted for it is refused) but its name stays taken; -ENOENT unknown
 * (or already being deleted). finish (slow: rename to the tombstone,
 * directory fsyncs, the store's commit, unlink; call it with no lock held)
 * removes file and record and frees the name: 0, -ENOENT if begin did not
 * mark it, or the error of the rename, its fsync or the store (-EIO,
 * -ENOSPC...; the log says which), after which the file is back and the
 * set listed again as before. Every successful begin must be followed by
 * one finish. */
int srv_datasets_delete_begin(srv_datasets *d, const char *name);
int srv_datasets_delete_finish(srv_datasets *d, const char *name);

/* ---- uploads: the body is streamed to STATE/datasets/.upload-XXXXXX. */
typedef struct srv_ds_upload srv_ds_upload;

int srv_ds_upload_open(srv_datasets *d, srv_ds_upload **out);
/* Appends n bytes: -E2BIG past max_body (the file is then truncated and
 * the upload is only drained), -ENOSPC/-EIO on write errors. */
int srv_ds_upload_write(srv_ds_upload *u, const void *buf, size_t n);
uint64_t srv_ds_upload_size(const srv_ds_upload *u);
/* Removes the temporary file and frees u. NULL is a no-op. */
void srv_ds_upload_free(srv_ds_upload *u);

typedef struct srv_ds_create {
  const char *name;
  const char *content_type;  /* media type, lower case, no parameters */
  int preprocess;            /* 1: like predictions; 0: only scale to 28x28 */
  double test_fraction;      /* held out when there is no test part */
} srv_ds_create;

/* Converts the uploaded body into a data set and registers it. On success
 * *out is its description (caller frees). Errors, with msg filled:
 * -EEXIST name taken (409), -EBUSY that name is being deleted (409), -EINVAL
 * bad input (400), -E2BIG a limit (413),
 * -ENOTSUP unknown Content-Type (415), -EDQUOT quota (507), -ENOSPC disk
 * full (507), -EIO/-ENOMEM (500). Nothing is left behind on failure. */
int srv_datasets_create(srv_datasets *d, srv_ds_upload *u, const srv_ds_create *c, cJSON **out,
                        char *msg, size_t msglen);

#endif
