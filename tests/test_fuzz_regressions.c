/*
 * test_fuzz_regressions.c — replays saved fuzzer findings under cmocka, so
 * `make test` and `make asan` keep them fixed without clang or libFuzzer.
 *
 *   - every file in tests/fuzz/regressions/ goes through every harness
 *     (a crasher found by one target must not crash the others either);
 *   - every seed in tests/fuzz/corpus/<target>/ goes through its own
 *     harness, which keeps the harnesses' invariants honest.
 *
 * The harnesses are #included with FUZZ_NO_ENTRY, so the checks are exactly
 * those the fuzzers run. Each replay runs in a child process, so one crash or
 * broken invariant (an abort) does not hide the others: the test fails at the
 * end with the list of (target, file) pairs that died.
 *
 * Several findings are memory amplifications (a small file that makes the
 * loader allocate gigabytes). libFuzzer catches those with its malloc limit;
 * here allocations are capped at 3 GiB, so such an allocation fails and the
 * harness's "a small input must not end in ENOMEM" check fires: under ASan
 * through its allocator options, otherwise (and not under Valgrind) by
 * capping the address space at 3 GiB above what the process already maps.
 *
 * The directory is found from this file's path (__FILE__), or from
 * MNISTD_FUZZ_DIR (the tests/fuzz directory) when set.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define FUZZ_NO_ENTRY
#include "fuzz/fuzz_idx.c"
#include "fuzz/fuzz_model.c"
#include "fuzz/fuzz_png.c"
#include "fuzz/fuzz_pgm.c"
#include "fuzz/fuzz_image.c"
#include "fuzz/fuzz_jobconfig.c"
#include "fuzz/fuzz_predict.c"
#include "fuzz/fuzz_dscsv.c"
#include "fuzz/fuzz_dsarchive.c"

typedef struct fuzz_target {
  const char *name; /* also the corpus directory name */
  int (*run)(const uint8_t *data, size_t size);
} fuzz_target;

static const fuzz_target TARGETS[] = {
    {"idx", fuzz_idx},     {"model", fuzz_model},         {"png", fuzz_png},
    {"pgm", fuzz_pgm},     {"image", fuzz_image},         {"jobconfig", fuzz_jobconfig},
    {"predict", fuzz_predict}, {"dscsv", fuzz_dscsv},    {"dsarchive", fuzz_dsarchive},
};
#define N_TARGETS (sizeof TARGETS / sizeof *TARGETS)

/* tests/fuzz, from MNISTD_FUZZ_DIR or from where this file was compiled. */
static void fuzz_dir(char *out, size_t len) {
  const char *env = getenv("MNISTD_FUZZ_DIR");
  if (env != NULL && env[0] != '\0') {
    snprintf(out, len, "%s", env);
    return;
  }
  const char *file = __FILE__;
  const char *slash = strrchr(file, '/');
  if (slash == NULL)
    snprintf(out, len, "fuzz");
  else
    snprintf(out, len, "%.*s/fuzz", (int)(slash - file), file);
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 4096;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  assert_int_equal(ferror(f), 0);
  fclose(f);
  *len = n;
  return buf;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Failed replays, for the final message. */
typedef struct replay_stats {
  size_t files, runs, failed;
  char report[4096];
} replay_stats;

/* Runs one input through one target in a child process. */
static void replay_one(const fuzz_target *t, const char *path, const uint8_t *data, size_t len,
                       replay_stats *st) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* An exact-size copy, so ASan sees reads past the end. */
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL) _exit(3);
    if (len) memcpy(copy, data, len);
    t->run(copy, len);
    free(copy);
    _exit(0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) assert_int_equal(errno, EINTR);
  st->runs++;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  st->failed++;
  char what[64];
  if (WIFSIGNALED(status))
    snprintf(what, sizeof what, "signal %d", WTERMSIG(status));
  else
    snprintf(what, sizeof what, "exit %d", WEXITSTATUS(status));
  size_t used = strlen(st->report);
  snprintf(st->report + used, sizeof st->report - used, "  %s <- %s (%s)\n", t->name, path,
           what);
  fprintf(stderr, "fuzz-regressions: FAILED %s <- %s (%s)\n", t->name, path, what);
}

/* Runs every regular file of dir (sorted, dot files and README* skipped)
 * through the targets [first, first + count). A missing directory counts as
 * empty. */
static void replay_dir(const char *dir, size_t first, size_t count, replay_stats *st) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    print_message("fuzz-regressions: %s: no such directory, nothing to replay\n", dir);
    return;
  }
  char **names = NULL;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0) continue;
    names = realloc(names, (n + 1) * sizeof *names);
    assert_non_null(names);
    names[n] = strdup(e->d_name);
    assert_non_null(names[n]);
    n++;
  }
  closedir(d);
  if (n > 1) qsort(names, n, sizeof *names, by_name);

  for (size_t i = 0; i < n; i++) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
      size_t len = 0;
      uint8_t *data = read_all(path, &len);
      for (size_t t = first; t < first + count; t++) replay_one(&TARGETS[t], path, data, len, st);
      free(data);
      st->files++;
    }
    free(names[i]);
  }
  free(names);
}

static void finish(const char *what, const replay_stats *st) {
  print_message("fuzz-regressions: %s: %zu files, %zu replays, %zu failed\n", what, st->files,
                st->runs, st->failed);
  if (st->failed) fail_msg("%zu replays crashed or broke an invariant:\n%s", st->failed, st->report);
}

static void test_regressions(void **state) {
  (void)state;
  char dir[4096], sub[4200];
  fuzz_dir(dir, sizeof dir);
  snprintf(sub, sizeof sub, "%s/regressions", dir);
  replay_stats st;
  memset(&st, 0, sizeof st);
  replay_dir(sub, 0, N_TARGETS, &st);
  finish("regressions", &st);
}

static void test_seed_corpora(void **state) {
  (void)state;
  char dir[4096], sub[4200];
  fuzz_dir(dir, sizeof dir);
  replay_stats st;
  memset(&st, 0, sizeof st);
  for (size_t t = 0; t < N_TARGETS; t++) {
    snprintf(sub, sizeof sub, "%s/corpus/%s", dir, TARGETS[t].name);
    replay_dir(sub, t, 1, &st);
  }
  /* The seeds are committed: finding none means the path is wrong. */
  if (st.files == 0)
    fail_msg("no seed files under %s/corpus; run from the repository root or set "
             "MNISTD_FUZZ_DIR to the tests/fuzz directory", dir);
  finish("seed corpora", &st);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifdef UNDER_ASAN
/* Read by the ASan runtime at start-up; ASAN_OPTIONS still overrides. */
__attribute__((used, visibility("default"))) const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "max_allocation_size_mb=3072:allocator_may_return_null=1";
}
#endif

/* Caps the address space at 3 GiB above the current mapping (see the top
 * of the file). Not under ASan (its shadow needs terabytes of address
 * space) nor Valgrind (the limit would apply to Valgrind itself). */
static void cap_address_space(void) {
#ifndef UNDER_ASAN
  const char *preload = getenv("LD_PRELOAD");
  if (preload != NULL && strstr(preload, "vgpreload") != NULL) return;
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (f == NULL) return;
  int ok = fscanf(f, "%lu", &pages) == 1;
  fclose(f);
  if (!ok) return;
  rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)3 << 30);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > cap)) {
    rl.rlim_cur = cap;
    (void)setrlimit(RLIMIT_AS, &rl);
  }
#endif
}

int main(void) {
  /* BLAS's own thread pool and buffers come up before the cap. */
  nn_set_threads(1);
  cap_address_space();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_regressions),
      cmocka_unit_test(test_seed_corpora),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
