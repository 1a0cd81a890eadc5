/* LD_PRELOAD shim for scripts/test-faults.sh (part d): fsync() of a
 * directory whose path ends with $FSYNC_FAIL_DIR fails with EIO, as it can
 * on a failing disk. Everything else goes to the real fsync.
 *   cc -shared -fPIC -o fsync_fail.so tests/reliability/fsync_fail.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  const char *want = getenv("FSYNC_FAIL_DIR");
  struct stat sb;
  if (want && *want && fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n > 0) {
      path[n] = 0;
      size_t wl = strlen(want);
      if ((size_t)n >= wl && !strcmp(path + n - wl, want)) {
        errno = EIO;
        return -1;
      }
    }
  }
  return real(fd);
}
