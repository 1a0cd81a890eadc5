#!/usr/bin/env bash
# Installs a built mnistd for systemd (what `make install` runs).
#
# Usage: scripts/install.sh [PREFIX [DESTDIR]]
#   PREFIX   default /usr/local (or $PREFIX)
#   DESTDIR  staging root for packaging/tests, default empty (or $DESTDIR)
# Environment: BUILD (default build), DATA_DIR (default data), UNITDIR.
#
# Layout (paths below are under DESTDIR):
#   PREFIX/bin/mnistd                      the daemon
#   PREFIX/share/mnistd/data/{mnist,fashion-mnist}/   IDX files, copied (symlinks dereferenced)
#   PREFIX/share/doc/mnistd/               README.md, docs/*.md, mnistd.env.example
#   UNITDIR/mnistd.service                 unit, its paths rewritten to PREFIX
#   /etc/mnistd/mnistd.env                 only when absent (never overwritten)
# UNITDIR defaults to PREFIX/lib/systemd/system for PREFIX /usr/local or /usr
# (both are on systemd's unit search path; /usr/local is the place for
# locally built software) and to /etc/systemd/system for any other PREFIX.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${1:-${PREFIX:-/usr/local}}
DESTDIR=${2:-${DESTDIR:-}}
BUILD=${BUILD:-build}
DATA_DIR=${DATA_DIR:-data}
case "$PREFIX" in /*) ;; *) echo "install: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;; esac
DESTDIR=${DESTDIR%/}
P=${PREFIX%/}   # PREFIX without its trailing slash: empty for PREFIX=/
case "$P" in
  /usr|/usr/local) UNITDIR=${UNITDIR:-$P/lib/systemd/system} ;;
  *)               UNITDIR=${UNITDIR:-/etc/systemd/system} ;;
esac
SHARE=$P/share/mnistd
ENVFILE=/etc/mnistd/mnistd.env

[ -x "$BUILD/mnistd" ] || { echo "install: $BUILD/mnistd is missing; run 'make'" >&2; exit 1; }
[ -d "$DATA_DIR/mnist" ] || { echo "install: $DATA_DIR/mnist is missing; run 'make data'" >&2; exit 1; }

say() { echo "install: $*"; }

install -d -m 0755 "$DESTDIR$P/bin"
install -m 0755 "$BUILD/mnistd" "$DESTDIR$P/bin/mnistd"
say "$DESTDIR$P/bin/mnistd"

for set in mnist fashion-mnist; do
  [ -d "$DATA_DIR/$set" ] || continue
  dst=$DESTDIR$SHARE/data/$set
  install -d -m 0755 "$dst"
  n=0
  for f in "$DATA_DIR/$set"/*; do
    [ -e "$f" ] || continue                     # dangling link or empty dir
    install -m 0644 "$f" "$dst/$(basename "$f")"  # install(1) follows symlinks
    n=$((n + 1))
  done
  say "$dst ($n files)"
done

install -d -m 0755 "$DESTDIR$P/share/doc/mnistd"
[ -f README.md ] && install -m 0644 README.md "$DESTDIR$P/share/doc/mnistd/README.md"
# The README links to docs/ (reference, configuration, operations).
if ls docs/*.md >/dev/null 2>&1; then
  install -d -m 0755 "$DESTDIR$P/share/doc/mnistd/docs"
  install -m 0644 docs/*.md "$DESTDIR$P/share/doc/mnistd/docs/"
fi
install -m 0644 systemd/mnistd.env.example "$DESTDIR$P/share/doc/mnistd/mnistd.env.example"

# The unit template carries /usr/local paths; point them at PREFIX.
install -d -m 0755 "$DESTDIR$UNITDIR"
sed "s|/usr/local/|$P/|g" systemd/mnistd.service > "$DESTDIR$UNITDIR/mnistd.service.tmp"
chmod 0644 "$DESTDIR$UNITDIR/mnistd.service.tmp"
mv -f "$DESTDIR$UNITDIR/mnistd.service.tmp" "$DESTDIR$UNITDIR/mnistd.service"
say "$DESTDIR$UNITDIR/mnistd.service"

install -d -m 0755 "$DESTDIR/etc/mnistd"
if [ -e "$DESTDIR$ENVFILE" ]; then
  say "$DESTDIR$ENVFILE exists, left as it is (defaults: $P/share/doc/mnistd/mnistd.env.example)"
else
  # Root-only: the file may later hold MNISTD_API_TOKEN.
  ( umask 077
    sed -e "s|/usr/local/|$P/|g" \
        -e "s|^#MNISTD_DATA_DIR=.*|MNISTD_DATA_DIR=$SHARE/data|" \
        systemd/mnistd.env.example > "$DESTDIR$ENVFILE" )
  say "$DESTDIR$ENVFILE"
fi

if [ -z "$DESTDIR" ]; then
  echo "install: now run: systemctl daemon-reload && systemctl enable --now mnistd"
fi
