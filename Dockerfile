# The dataserver daemon. Build: docker build -t dataserver .
# Run:   docker run -p 8080:8080 -v dataserver-data:/data dataserver
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p daemon --bin dataserver

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin dataserver \
    && mkdir -p /data && chown dataserver /data
COPY --from=builder /src/target/release/dataserver /usr/local/bin/dataserver
USER dataserver
VOLUME ["/data"]
EXPOSE 8080
# Listen on all interfaces inside the container; the data directory is the volume.
ENTRYPOINT ["dataserver", "--data-dir", "/data", "--http-listen", "0.0.0.0:8080"]
