# AGP's container image: `docker build -t agp .`, then see README.md, "Deploying".
#
# Two stages: the build compiles `agp` from the locked dependencies (Cargo.lock, --locked) in the
# official Rust image; the image that runs it is Debian slim with the binary, the CA
# certificates AGP checks TLS peers against, and an unprivileged user. No shell tools are
# needed at run time: the health check is `agp healthcheck`.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the build reads (.dockerignore is an allow-list).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY vendor ./vendor
COPY assets ./assets
COPY benches ./benches
# No debug info in the shipped binary (the release profile keeps some for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agp \
    && cp target/release/agp /usr/local/bin/agp

FROM debian:${DEBIAN_RELEASE}-slim
# AGP calls OAuth providers and MCP servers over TLS and trusts the system's roots: the build
# image's bundle, so this stage needs no package manager run.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /usr/local/bin/agp /usr/local/bin/agp
# An unprivileged user owns the data directory (0700: the event log, the vault, admin.token).
RUN groupadd --system --gid 10001 agp \
    && useradd --system --uid 10001 --gid agp --home-dir /var/lib/agp --no-create-home \
       --shell /usr/sbin/nologin agp \
    && mkdir -p /var/lib/agp \
    && chown agp:agp /var/lib/agp \
    && chmod 0700 /var/lib/agp
USER 10001:10001
# The master key: AGP_MASTER_KEY, or better a mounted secret named by AGP_MASTER_KEY_FILE
# (e.g. /run/secrets/agp_master_key); with neither, master.key is created in the volume on the
# first start and must be backed up with it.
ENV AGP_DATA_DIR=/var/lib/agp \
    AGP_LISTEN=0.0.0.0:8080 \
    AGP_LOG_FORMAT=json
VOLUME ["/var/lib/agp"]
EXPOSE 8080
# `agp healthcheck` asks /readyz at AGP_LISTEN (a wildcard address is asked on loopback).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["agp", "healthcheck", "--timeout", "5"]
# Exec form: agp is PID 1 and gets SIGTERM itself (graceful shutdown: stops accepting, lets
# requests finish, closes the event log). It starts no child processes, so it reaps none.
STOPSIGNAL SIGTERM
ENTRYPOINT ["agp"]
CMD ["serve"]
