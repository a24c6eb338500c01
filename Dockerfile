# syntax=docker/dockerfile:1
# Build: docker build -t o365-fixbot .
# Run:   docker run --stop-timeout 30 -v fixbot-data:/var/lib/o365-fixbot \
#          -v $PWD/config/local.toml:/etc/o365-fixbot/config.toml:ro \
#          -e FIXBOT_DISCORD_TOKEN_FILE=/run/secrets/discord_token ... o365-fixbot

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin o365-fixbot \
    && rm -rf src
COPY src ./src
COPY config ./config
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin o365-fixbot \
    && mkdir -p /out/data \
    && cp target/release/o365-fixbot /out/o365-fixbot

# glibc and CA certificates, no shell, no package manager, runs as uid 65532. TLS is rustls with
# bundled roots, so no OpenSSL is needed at run time.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/o365-fixbot /usr/local/bin/o365-fixbot
COPY --from=build --chown=65532:65532 /out/data /var/lib/o365-fixbot
ENV FIXBOT_CONFIG=/etc/o365-fixbot/config.toml \
    FIXBOT_STORE__DATA_DIR=/var/lib/o365-fixbot \
    FIXBOT_OPS__LISTEN=0.0.0.0:9464
VOLUME ["/var/lib/o365-fixbot"]
EXPOSE 9464
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/o365-fixbot", "healthcheck"]
# The binary is PID 1 (no shell, no init) and handles SIGTERM itself: it stops taking commands,
# waits up to [ops] shutdown_grace (25 s) for executing runs, releases its lease and exits 0.
# Stop it with a longer timeout than that: docker stop -t 30 (Kubernetes:
# terminationGracePeriodSeconds: 30 or more); Docker's default 10 s SIGKILLs runs mid-step.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/o365-fixbot"]
CMD ["serve"]
