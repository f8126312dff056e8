# syntax=docker/dockerfile:1
#
# The `ferry` binary in a small Debian image, running as a user without privileges.
#
#   docker build -t ferry .
#   docker run --rm -p 8787:8787 -e FERRY_API_TOKEN=... ferry            # ferry serve on 0.0.0.0:8787
#   docker run --rm ferry validate /flows                                  # any other command
#
# The state (the SQLite file, the API token's digest) lives in /var/lib/ferry: mount a volume
# there, or set FERRY_DATABASE to a postgres:// URL to share one store between workers (see
# docker-compose.yml and README "Scaling out"). Pass FERRY_BUILD_REVISION (`--build-arg
# FERRY_BUILD_REVISION=$(git rev-parse HEAD)`) to have ferry_build_info name the source revision.

# The workspace's rust-version (Cargo.toml); a test keeps the two equal.
ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The whole workspace: every member's manifest is needed to resolve it, and the binary embeds
# flows/orders-to-warehouse.yaml (the demo's flow). .dockerignore keeps target/ and state out.
COPY . .
ARG FERRY_BUILD_REVISION=unknown
ENV FERRY_BUILD_REVISION=${FERRY_BUILD_REVISION}
# Cargo's download cache and the target directory are build caches, not layers: the binary is
# copied out of the target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p ferry --locked \
    && install -D -m 0755 target/release/ferry /out/ferry

FROM debian:bookworm-slim AS runtime
# ca-certificates: HTTPS sources and destinations, amqps:// and TLS to PostgreSQL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so a mounted volume's owner can be set to match from outside.
RUN groupadd --system --gid 10001 ferry \
    && useradd --system --uid 10001 --gid ferry --home-dir /var/lib/ferry --shell /usr/sbin/nologin ferry \
    && install -d -m 0750 -o ferry -g ferry /var/lib/ferry
COPY --from=build /out/ferry /usr/local/bin/ferry
ENV FERRY_STATE=/var/lib/ferry
WORKDIR /var/lib/ferry
USER 10001:10001
VOLUME ["/var/lib/ferry"]
EXPOSE 8787
# /healthz needs no token and answers 200 while the state store answers (503 when it does not).
# The image has no HTTP client; bash's /dev/tcp sends the request (the slim image has bash), so
# no curl is installed for the probe alone. A container started with `--no-api` or another
# command than `serve` has nothing listening here: disable the check for it
# (`--no-healthcheck`, or `healthcheck: { disable: true }` in compose).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8787 && printf 'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["ferry"]
CMD ["serve", "--listen", "0.0.0.0:8787"]
