# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on a small Debian image as a
# non-root user. No secret is baked in: pass SEQUESTRA_* at run time.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migration ./migration
COPY src ./src
COPY schema.graphql ./
RUN cargo build --release --locked --bin sequestra

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sequestra --create-home sequestra
COPY --from=build /src/target/release/sequestra /usr/local/bin/sequestra
USER sequestra
WORKDIR /var/lib/sequestra
ENV SEQUESTRA_ENV=production \
    SEQUESTRA_LISTEN=0.0.0.0:8080 \
    SEQUESTRA_DATABASE_URL=sqlite:///var/lib/sequestra/sequestra.db?mode=rwc
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/sequestra"]
CMD ["serve"]
