/* LD_PRELOAD shim for the cmocka test binaries: leaves out the tests named
 * in CMOCKA_SKIP (comma-separated, exact names) and prints what it left
 * out. Used by tests/system/test_valgrind.sh to keep the slowest training tests of
 * test_core out of the default memcheck run (VG_FULL=1 runs everything).
 * Build: cc -shared -fPIC -o cmocka_skip.so cmocka_skip.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef int (*run_fn)(const char *, const struct CMUnitTest *const, const size_t,
                      CMFixtureFunction, CMFixtureFunction);

static int listed(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; p && *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && !strncmp(p, name, n)) return 1;
    p = e ? e + 1 : NULL;
  }
  return 0;
}

int _cmocka_run_group_tests(const char *group_name, const struct CMUnitTest *const tests,
                            const size_t num_tests, CMFixtureFunction group_setup,
                            CMFixtureFunction group_teardown) {
  run_fn real = (run_fn)dlsym(RTLD_NEXT, "_cmocka_run_group_tests");
  if (!real) {
    fprintf(stderr, "cmocka_skip: %s\n", dlerror());
    return 1;
  }
  const char *skip = getenv("CMOCKA_SKIP");
  if (!skip || !*skip) return real(group_name, tests, num_tests, group_setup, group_teardown);
  struct CMUnitTest *kept = calloc(num_tests ? num_tests : 1, sizeof *kept);
  if (!kept) return 1;
  size_t n = 0;
  for (size_t i = 0; i < num_tests; i++) {
    if (listed(skip, tests[i].name)) fprintf(stderr, "cmocka_skip: left out %s\n", tests[i].name);
    else kept[n++] = tests[i];
  }
  int rc = real(group_name, kept, n, group_setup, group_teardown);
  free(kept);
  return rc;
}
