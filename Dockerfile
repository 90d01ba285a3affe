# superweightd, multi-stage: build on Debian 12 with its packages, run as a non-root user.
# dnnl-config.cmake looks for OpenCL even for the CPU engine, hence its headers here.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler libdnnl-dev libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev \
      nlohmann-json3-dev libicu-dev libssl-dev libpq-dev ocl-icd-opencl-dev opencl-c-headers && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The source tree as a whole, less what .dockerignore keeps out (builds, environments, models,
# test data): a new source directory needs no line here. make docker-context-test (part of make
# test) configures exactly what this stage sees, with these options (make build's).
COPY . .
# The commit (deploy/smoke_test.sh passes it): the context holds no .git for --version to read.
ARG REVISION=""
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "-DSUPERWEIGHT_GIT_REVISION=${REVISION}" \
    && cmake --build build --target superweightd superweight

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libdnnl2 libabsl20220623 libprometheus-cpp-pull1.0 \
      libprometheus-cpp-core1.0 libicu72 libssl3 libpq5 libgomp1 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/superweight superweight \
    && mkdir -p /models /var/lib/superweight && chown superweight /var/lib/superweight
COPY --from=build /src/build/bin/superweightd /src/build/bin/superweight /usr/local/bin/
COPY server/data/eval /usr/share/superweight/eval
# The evaluation sets' provenance and licenses (its paths are relative to this directory).
COPY server/data/SOURCES.md /usr/share/superweight/
COPY LICENSE NOTICE /usr/share/doc/superweight/
USER superweight
# On a shared box OpenMP threads that spin while they wait take the cores other work (gRPC's
# threads, other tenants) needs: under load a 16-token score took 0.6-7.3 s spinning, 0.07-0.3 s
# passive (bench/soak_bench.py, README "Soak and kill -9"). Override with -e for a dedicated box.
ENV OMP_WAIT_POLICY=PASSIVE
EXPOSE 50051 9090
VOLUME ["/models", "/var/lib/superweight"]
# gRPC health checking, which needs no bearer token.
HEALTHCHECK --interval=30s --timeout=5s CMD ["superweight", "--server=127.0.0.1:50051", "--timeout=4", "health"]
ENTRYPOINT ["superweightd", "--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9090", \
            "--model_root=/models", "--state_dir=/var/lib/superweight", \
            "--eval_data_dir=/usr/share/superweight/eval"]
# OCI labels; deploy/smoke_test.sh passes the commit (git rev-parse HEAD) and, where the clone
# has one, its origin URL. Last, so that a new commit reuses every layer above.
ARG REVISION=""
ARG SOURCE=""
ARG VERSION=""
LABEL org.opencontainers.image.title="superweight" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="superweightd, a gRPC service that locates and ablates the super weights of LLMs, with its client superweight" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"
