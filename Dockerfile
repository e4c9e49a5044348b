# ByteEdit image: the `byteedit` binary (API, worker, serve, edit).
# FEATURES=cuda (the default here) builds the CUDA backend; no CUDA toolkit is
# needed at build time, the driver is loaded at run time.
FROM rust:1.95-bookworm AS build
ARG FEATURES=cuda
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p byteedit --features "${FEATURES}" \
    && cp target/release/byteedit /usr/local/bin/byteedit

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/byteedit /usr/local/bin/byteedit
ENTRYPOINT ["byteedit"]
