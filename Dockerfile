# kassa's container image: the release binary on Debian slim, run as a non-root user,
# its data (database, generated keys, backups) in the /data volume.
#   docker build -t kassa .
#   docker run -d -p 8080:8080 -v kassa-data:/data \
#     -e KASSA_SERVER_PUBLIC_URL=https://pay.example.com kassa

# The builder's Rust is the rust-version in Cargo.toml.
FROM rust:1.89-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kassa \
    && cp target/release/kassa /usr/local/bin/kassa

FROM debian:bookworm-slim
# A fixed numeric id, so that orchestrators can tell the user is not root and the
# volume's owner stays the same across image versions.
RUN groupadd --system --gid 10001 kassa \
    && useradd --system --uid 10001 --gid kassa --home-dir /data --no-create-home kassa \
    && install -d -o kassa -g kassa -m 0700 /data
COPY --from=builder /usr/local/bin/kassa /usr/local/bin/kassa
ENV KASSA_SERVER_DATA_DIR=/data \
    KASSA_SERVER_BIND=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
WORKDIR /data
USER 10001:10001
# `kassa healthcheck` asks /healthz on [server] bind; the image needs no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["kassa", "healthcheck"]
ENTRYPOINT ["kassa"]
CMD ["serve"]
