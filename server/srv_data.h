/* srv_data: the data sets the daemon has loaded (DATA_DIR/NAME), shared
 * by jobs, samples and evaluation. */
#ifndef MNISTD_SRV_DATA_H
#define MNISTD_SRV_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

/* ---- data sets: loaded on first use, shared, reference counted. */
typedef struct srv_data srv_data;

/* Creates an empty cache over data_dir (nothing is read yet): 0, or
 * -ENOMEM. Free with srv_data_close (NULL is a no-op), after every get has
 * been put back. */
int srv_data_open(srv_data **out, const char *data_dir);
void srv_data_close(srv_data *d);
/* A loaded split of a data set ("mnist", "fashion-mnist" or an uploaded
 * one); give it back with srv_data_put. Training sets are freed when nobody
 * holds them (they are most of the daemon's memory); test sets stay for
 * samples and evaluation. The file is read outside the cache's lock (one
 * reader per split; others wait for it), and an uploaded set's splits are
 * kept under its checksum: a set deleted and uploaded again under the same
 * name is read anew, never served from the old one's cache. */
int srv_data_get(srv_data *d, const char *name, nn_split split, const nn_dataset **ds,
                 char *msg, size_t msglen); /* 0, -ENOENT, -ENOMEM or an NN_E* code; msg says why */
/* Gives back what srv_data_get handed out (the pointer it returned). */
void srv_data_put(srv_data *d, const nn_dataset *ds);
/* Counts from the file headers without loading: -ENOENT if absent. */
int srv_data_count(srv_data *d, const char *name, uint32_t *train, uint32_t *test);

/* Uploaded data sets (srv_datasets.h) are served through the same calls
 * once attached; names that are not built in are looked up there. */
struct srv_datasets;
void srv_data_attach(srv_data *d, struct srv_datasets *up);
/* Class names of a data set (built-in or uploaded): a malloc'd block
 * (free(*names) frees all); -ENOENT if unknown. */
int srv_data_classes(srv_data *d, const char *name, char ***names, uint32_t *n);
/* Drops the cached splits of a data set (after a delete): now if nobody
 * holds them, else at their last srv_data_put. */
void srv_data_forget(srv_data *d, const char *name);
/* Deletes an uploaded set (srv_datasets_delete) and forgets its splits:
 * -ENOENT unknown or built in, -EIO store failure. */
int srv_data_delete(srv_data *d, const char *name);
/* The same in two steps (srv_datasets_delete_begin/_finish): begin marks
 * the set as being deleted (quick, no I/O; -ENOENT unknown or built in),
 * finish does the disk work with no lock held, then forgets the splits. */
int srv_data_delete_begin(srv_data *d, const char *name);
int srv_data_delete_finish(srv_data *d, const char *name);

#endif
