#!/usr/bin/env bash
# Supplies the `debian:bookworm-slim` base image to podman when no registry
# can be reached: debootstraps a minimal Debian 12 from the apt mirror this
# machine already uses and imports it under that name, so the Dockerfile's
# `FROM debian:bookworm-slim` resolves locally (`podman build --pull=never`).
#
# Usage: scripts/make-base-image.sh [--force] [IMAGE]     (as root)
#   IMAGE defaults to debian:bookworm-slim. Does nothing when it already exists
#   (pulled or built earlier) unless --force. Needs debootstrap and podman.
#
# The rootfs is trimmed the way Debian's official -slim images are (no docs,
# man pages or locales; no apt lists or caches), and its apt sources point at
# the host's mirror, so `RUN apt-get update` works inside builds.
set -euo pipefail

force=0
[ "${1:-}" = "--force" ] && { force=1; shift; }
IMAGE=${1:-debian:bookworm-slim}
SUITE=bookworm

if [ $force -eq 0 ] && podman image exists "$IMAGE"; then
  echo "base-image: $IMAGE present"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "make-base-image: run as root (debootstrap)" >&2; exit 1; }
for t in debootstrap podman; do
  command -v "$t" >/dev/null || { echo "make-base-image: $t is missing (apt-get install $t)" >&2; exit 1; }
done

# The host's Debian mirrors: the first http(s) URI serving the main suite, and
# the one serving $SUITE-security. deb822 files first, then one-line format.
host_uri() {  # $1 = suite name to look for (exact word)
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas are separated by blank lines; print URIs of the stanza
    # whose Suites field lists $1.
    awk -v want="$1" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; hit=0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { uris = $i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == want) hit = 1 }
          if ($i ~ /^Enabled:[ \t]*no/) hit = 0
        }
        if (hit && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [opts] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v want="$1" '$1 == "deb" && $3 == want { print $2; exit }'
  done
}
MIRROR=$(host_uri "$SUITE" | head -n1)
SECURITY=$(host_uri "$SUITE-security" | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SECURITY:-${MIRROR%/debian}/debian-security}
echo "base-image: debootstrap $SUITE from $MIRROR (security: $SECURITY)"

tmp=$(mktemp -d /var/tmp/mnistd-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$tmp"' EXIT
rootfs=$tmp/rootfs
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
# Same exclusions as the official slim images, in place before any package
# is unpacked (debootstrap keeps existing files in the target).
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Trimmed like debian:*-slim: no documentation or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
t0=$(date +%s)
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 || {
  tail -n 30 "$tmp/debootstrap.log" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  echo "make-base-image: debootstrap failed" >&2; exit 1
}
echo "base-image: debootstrap done in $(( $(date +%s) - t0 ))s"

# apt inside the image uses the host's mirror, in deb822 form like bookworm.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Container conventions from the official images: no cached .debs, no
# recommends pulled by accident, no daemons started by postinst scripts.
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat > "$rootfs/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
# Files the excludes above would have kept out had they been there from the
# first unpack (debootstrap's first stage extracts with plain ar/tar).
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/groff/* \
       "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/linda/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
  -exec rm -rf {} + 2>/dev/null || true
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/ldconfig/aux-cache \
       "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/debootstrap "$rootfs"/root/.bash_history
mkdir -p "$rootfs/var/lib/apt/lists/partial"
: > "$rootfs/etc/machine-id"
echo "debian-container" > "$rootfs/etc/hostname"

# /dev, /proc and /sys are provided by the container runtime.
tar --numeric-owner --xattrs -C "$rootfs" \
    --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
  podman import --quiet --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "debootstrap --variant=minbase $SUITE (mnistd scripts/make-base-image.sh)" \
    - "$IMAGE" >/dev/null
echo "base-image: imported $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
