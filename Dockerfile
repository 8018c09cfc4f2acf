# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on a small Debian image as a
# non-root user. No secret is baked in: pass SEQUESTRA_* at run time (compose.yaml
# reads them from env files).
#
# CI cannot pull base images, so it checks the build context instead: `.ci/docker-context`
# copies exactly what the build stage's COPY lines name into an empty folder and runs
# `cargo build --locked` there, so a file the build needs but the Dockerfile does not
# copy fails CI.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# 1. Dependencies alone, in a layer of their own: the manifests and the lock file
#    with stub sources. A change to the sources reuses this layer; a change to the
#    dependencies rebuilds it.
COPY Cargo.toml Cargo.lock ./
COPY migration/Cargo.toml ./migration/
RUN mkdir -p src migration/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs migration/src/lib.rs \
    && cargo build --release --locked --bin sequestra \
    && rm -rf src migration/src

# 2. The sources and what they embed at compile time: assets/ holds the sample photo
#    (include_bytes!) and the playground's built page (rust-embed); templates/ the
#    mail templates (include_str!); build.rs hands linker/symbol-order.txt to the
#    linker (the release binary's code layout).
COPY build.rs ./
COPY linker ./linker
COPY migration ./migration
COPY src ./src
COPY assets ./assets
COPY templates ./templates
# COPY keeps the sources' times, which can be older than the stub build's outputs:
# touch them so cargo rebuilds the real crates instead of shipping the stubs.
RUN touch src/main.rs src/lib.rs migration/src/lib.rs \
    && cargo build --release --locked --bin sequestra

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sequestra --create-home sequestra \
    && mkdir -p /var/lib/sequestra/proofs \
    && chown -R sequestra:sequestra /var/lib/sequestra
COPY --from=build /src/target/release/sequestra /usr/local/bin/sequestra
USER sequestra
WORKDIR /var/lib/sequestra
ENV SEQUESTRA_ENV=production \
    SEQUESTRA_LISTEN=0.0.0.0:8080 \
    SEQUESTRA_DATABASE_URL=sqlite:///var/lib/sequestra/sequestra.db?mode=rwc \
    SEQUESTRA_PROOF_DIR=/var/lib/sequestra/proofs
VOLUME ["/var/lib/sequestra"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/usr/local/bin/sequestra"]
CMD ["serve"]
