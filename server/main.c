/* mnistd: one binary, several commands. */
#include <stdio.h>
#include <string.h>

#include "nn.h"
#include "srv.h"
#include "srv_cli.h"

static const char HELP[] =
    "mnistd " NN_VERSION " — MNIST training and inference daemon\n"
    "usage: mnistd [COMMAND] [options]\n"
    "commands:\n"
    "  serve     run the daemon (the default; 'mnistd serve --help')\n"
    "  healthcheck  exit 0 if the daemon answers /healthz (for containers)\n"
    "  train     train a network and print per-epoch metrics ('mnistd train --help')\n"
    "  predict   classify images with a saved model ('mnistd predict --help')\n"
    "  export    write a model as ONNX ('mnistd export --help')\n"
    "  --help    this text\n"
    "  --version print the version\n";

/* The one place that knows exit statuses: 0 success, 2 a usage error,
 * 1 any other failure (its message is already on stderr). */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static int exit_status(int rc) { return rc == 0 ? EXIT_OK : rc == SRV_EUSAGE ? EXIT_USAGE : EXIT_FAIL; }

/* Runs a command: 0, SRV_EUSAGE or a negative errno. */
static int run(int argc, char **argv) {
  if (argc < 2) return srv_serve_main(argc, argv);
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(HELP, stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    nn_backend_info bi;
    nn_backend_info_get(&bi);
    printf("mnistd %s\nkernels: %s, isa %s, matmul %s\n", NN_VERSION, bi.library, bi.isa,
           bi.kernel);
    return 0;
  }
  if (!strcmp(argv[1], "serve")) return srv_serve_main(argc - 1, argv + 1);
  if (argv[1][0] == '-') return srv_serve_main(argc, argv); /* flags of serve */
  if (!strcmp(argv[1], "healthcheck")) return srv_healthcheck_main(argc - 1, argv + 1);
  if (!strcmp(argv[1], "train")) return srv_cli_train(argc - 1, argv + 1);
  if (!strcmp(argv[1], "predict")) return srv_cli_predict(argc - 1, argv + 1);
  if (!strcmp(argv[1], "export")) return srv_cli_export(argc - 1, argv + 1);
  fprintf(stderr, "mnistd: unknown command '%s' (see 'mnistd --help')\n", argv[1]);
  return SRV_EUSAGE;
}

int main(int argc, char **argv) { return exit_status(run(argc, argv)); }
