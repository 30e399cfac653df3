# syntax=docker/dockerfile:1
# Builds both binaries in one image; docker-compose.yml picks the command.
#   docker build -t portail .
#   docker run --env-file .env portail portail-agent watch

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep the crates.io index and the target dir between builds; the binaries are
# copied out because a cache mount does not survive into the next stage.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portail-agent --bin portail-url-service \
 && install -D -m 0755 target/release/portail-agent target/release/portail-url-service -t /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin portail
COPY --from=build /out/ /usr/local/bin/
# Non-root. The agent only needs read access to SYNC_ROOT; nothing is written inside the image.
USER 10001:10001
ENV LOG_METHOD=stdout
# 8080: url-service LISTEN_ADDR. 9101: agent METRICS_ADDR.
EXPOSE 8080 9101
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["portail-url-service", "serve"]
