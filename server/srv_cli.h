/* Command-line front ends of mnistd: `train`, `predict` and `export`. Each returns
 * the process exit status: 0 on success, 1 on a runtime failure, 2 on a
 * usage error (after a one-line message on stderr). */
#ifndef MNISTD_SRV_CLI_H
#define MNISTD_SRV_CLI_H

#include <stddef.h>

#define SRV_EXIT_OK 0
#define SRV_EXIT_FAIL 1
#define SRV_EXIT_USAGE 2

int srv_cli_train(int argc, char **argv);
int srv_cli_predict(int argc, char **argv);
/* `mnistd export --format onnx MODEL OUT` (server/srv_export.c). */
int srv_cli_export(int argc, char **argv);

/* Parses a whole decimal integer in [lo, hi]; 0 on success, -1 otherwise. */
int srv_parse_long(const char *s, long lo, long hi, long *out);
/* Parses a finite float in (lo, hi]; 0 on success, -1 otherwise. */
int srv_parse_float(const char *s, double lo, double hi, double *out);

/* Resolves a data set directory: DIR/NAME when it holds the MNIST file
 * names, else DIR itself when it does. Writes into buf; 0 or -ENOENT. */
int srv_dataset_dir(const char *data_dir, const char *name, char *buf, size_t len);

#endif
