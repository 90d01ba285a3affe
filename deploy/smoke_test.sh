#!/usr/bin/env bash
# Builds the image, starts deploy/docker-compose.yml and checks what a deployment promises:
# the image's size is within its budget and it carries its OCI labels, `superweightd --help`
# and the client run from it, the container runs as a non-root user, its HEALTHCHECK turns
# healthy, the bundled client locates the default model's super weight through the published
# port, and Prometheus scrapes superweightd's /metrics (target up, requests counted). Then the
# scaleout profile: PostgreSQL and two replicas behind one gRPC address (nginx), where an Ablate
# fans out into parts and any replica answers for the job.
#
# `make docker-test`; not part of `make test` (make docker-context-test is: the build stage's
# layout, configured without an engine). From a fresh Debian 12 machine: installs what it
# lacks, as tools/setup.sh installs the build's packages (the engine, docker.io, unless one is
# installed; debootstrap; docker-compose unless the docker CLI has its compose plugin); starts
# an engine where none runs (as root). Where images cannot be pulled (an offline machine),
# Debian 12 comes from debootstrap and a stand-in prom/prometheus is built from Debian's
# prometheus package, with the same entrypoint and config path (and postgres:15 and nginx:stable
# from Debian's postgresql-15 and nginx, as the compose file uses them).
#
# Leaves the engine as it found it: an engine this script started is stopped at the end, and
# the compose project's containers, network and volume are removed (docker compose down -v).
# It keeps the images (superweight:latest, prom/prometheus, debian:bookworm{,-slim}) and their
# build cache as a cache for the next run: in build/dockerd/ when it started the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
size_budget_mb=${SUPERWEIGHT_IMAGE_BUDGET_MB:-330}  # docs/service.md states it
model=SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f models/$model ]] || { echo "models/$model missing: run make setup" >&2; exit 1; }

source tools/apt.sh
missing=()
# An engine installed otherwise (Docker's own docker-ce) will do: docker.io would conflict with it.
if ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null && ! installed docker.io; then
  missing+=(docker.io)
fi
installed debootstrap || command -v debootstrap >/dev/null || missing+=(debootstrap)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  missing+=(docker-compose)
fi
if ((${#missing[@]})); then
  echo "docker-test: installing ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq "${missing[@]}"
fi

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -f deploy/docker-compose.yml -p superweight-smoke)
else
  compose=(docker-compose -f deploy/docker-compose.yml -p superweight-smoke)
fi

# No engine running (a machine without systemd, or one where it is stopped): start one, on the
# vfs storage driver, which needs no kernel support, with its state under build/dockerd/. It
# leaves the host's network as it found it: no iptables rules, no ip_forward, no docker0 (the
# image builds and the client runs on the host's network; the compose project's own bridge is
# removed with it, and a published port is served by docker-proxy).
dockerd_pid=""
cleanup() {
  local rc=$?
  if [[ -n ${compose_started:-} ]]; then
    "${compose[@]}" --profile scaleout down -v >/dev/null 2>&1 ||
      echo "docker-test: compose down -v failed" >&2
  fi
  if [[ -n $dockerd_pid ]]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "docker-test: dockerd ($dockerd_pid) did not stop" >&2
    else
      # dockerd leaves its run-time directory, a network namespace still mounted in it.
      if [[ -z $exec_root_existed && -d /run/docker ]]; then
        grep -o ' /run/docker/[^ ]*' /proc/mounts | xargs -r umount 2>/dev/null || true
        rm -rf /run/docker 2>/dev/null || true
      fi
      echo "docker-test: stopped the engine it started; images kept in build/dockerd/data" \
        "($(du -sh build/dockerd/data 2>/dev/null | cut -f1))"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null || [[ $(id -u) != 0 ]]; then
    echo "no Docker engine running, and this script starts one only as root" \
      "(or: sudo systemctl start docker)" >&2
    exit 1
  fi
  mkdir -p build/dockerd
  exec_root_existed=""; [[ -e /run/docker ]] && exec_root_existed=1
  echo "docker-test: starting dockerd (vfs storage, state in build/dockerd; log build/dockerd/log)"
  dockerd --storage-driver=vfs --data-root="$PWD/build/dockerd/data" \
    --iptables=false --ip-forward=false --bridge=none >build/dockerd/log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    tail -n 30 build/dockerd/log >&2
    echo "dockerd did not start (build/dockerd/log)" >&2
    exit 1
  fi
fi

# An offline machine: Debian 12 from its package archive instead of the registry's image.
for base in debian:bookworm debian:bookworm-slim; do
  if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull "$base" >/dev/null 2>&1; then
    echo "$base cannot be pulled: importing a debootstrap of Debian 12" >&2
    rootfs=build/docker-rootfs
    [[ -x $rootfs/bin/sh ]] || debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    # Without the .debs debootstrap leaves in apt's cache, which Debian's images do not have.
    tar -C "$rootfs" --exclude='./var/cache/apt/archives/*.deb' -c . | docker import - "$base" >/dev/null
  fi
done

revision=$(git rev-parse HEAD)
# The clone's origin, if it is a web URL (without any credentials in it).
source_url=$({ git remote get-url origin 2>/dev/null || true; } | sed -n 's#^\(https\?://\)\([^@/]*@\)\?#\1#p')
build_start=$SECONDS
version=$(sed -n 's/^project(superweight VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
docker build --network host --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
  --build-arg VERSION="$version" -t superweight:latest -t "superweight:$version" .
echo "docker-test: image built in $((SECONDS - build_start)) s"

# The image: its size against the budget, its labels, and both binaries runnable.
size=$(docker image inspect -f '{{.Size}}' superweight:latest)
size_mb=$(((size + 999999) / 1000000))
echo "image size: $size_mb MB (budget $size_budget_mb MB)"
((size_mb <= size_budget_mb)) || { echo "the image is over its size budget" >&2; exit 1; }
label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' \
  superweight:latest)
[[ $label == "$revision" ]] || { echo "revision label '$label', not $revision" >&2; exit 1; }
# One version: CMake's, in the label and in what the image's binaries say.
label=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' \
  superweight:latest)
[[ $label == "$version" ]] || { echo "version label '$label', not $version" >&2; exit 1; }
said=$(docker run --rm --network none superweight:latest --version)
[[ $said == "superweightd $version (git ${revision:0:12}, CPU class "* ]] ||
  { echo "the image's superweightd --version: $said (want $version, git ${revision:0:12})" >&2; exit 1; }
echo "$said"
docker image inspect -f '{{range $k, $v := .Config.Labels}}{{println "  " $k "=" $v}}{{end}}' \
  superweight:latest
bins=$(docker run --rm --network none --entrypoint sh superweight:latest -c \
  'ls /usr/local/bin; ldd /usr/local/bin/* | grep "not found" || true')
[[ $bins == $'superweight\nsuperweightd' ]] ||
  { echo "/usr/local/bin in the image (and unresolved libraries): $bins" >&2; exit 1; }
help_server=$(docker run --rm --network none superweight:latest --help 2>&1) ||
  { echo "$help_server" >&2; echo "superweightd --help failed in the image" >&2; exit 1; }
help_client=$(docker run --rm --network none --entrypoint superweight superweight:latest \
  --help 2>&1) ||
  { echo "$help_client" >&2; echo "superweight --help failed in the image" >&2; exit 1; }
echo "superweightd --help (exit 0, $(wc -l <<<"$help_server") lines): $(head -n 1 <<<"$help_server")"
echo "superweight --help (exit 0, $(wc -l <<<"$help_client") lines): $(head -n 1 <<<"$help_client")"

if ! docker image inspect prom/prometheus >/dev/null 2>&1 &&
  ! docker pull prom/prometheus >/dev/null 2>&1; then
  echo "prom/prometheus cannot be pulled: building a stand-in from Debian's package" >&2
  docker build --network host -t prom/prometheus - <<'EOF'
FROM debian:bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      prometheus && rm -rf /var/lib/apt/lists/* && mkdir -p /prometheus && chown nobody /prometheus
USER nobody
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
fi

compose_started=1
"${compose[@]}" up -d --no-build

# wait_healthy SERVICE: until the service's container's HEALTHCHECK says healthy (2 min at most).
wait_healthy() {
  local container health
  container=$("${compose[@]}" ps -q "$1")
  for _ in $(seq 1 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$container")
    [[ $health == healthy ]] && return 0
    sleep 2
  done
  docker logs "$container"
  echo "$1: $health" >&2
  exit 1
}

container=$("${compose[@]}" ps -q superweightd)
echo "waiting for the HEALTHCHECK ..."
wait_healthy superweightd
user=$(docker exec "$container" id -u)
[[ $user != 0 ]] || { echo "superweightd runs as root" >&2; exit 1; }
echo "healthy, uid $user"

# The published port, with the client from the image (as a CI job on the host would).
docker run --rm --network host --entrypoint superweight superweight:latest \
  --server=127.0.0.1:50051 locate --model="$model" --expect=1

prometheus=$("${compose[@]}" ps -q prometheus)
echo "waiting for Prometheus to scrape superweightd ..."
for _ in $(seq 1 40); do
  # Prometheus's own query API, through the promtool its image ships.
  value=$(docker exec "$prometheus" sh -c \
    'promtool query instant http://127.0.0.1:9090 "sum(superweight_requests_total)" 2>/dev/null' \
    | sed -n 's/.*=> \([0-9.]*\) @.*/\1/p' | head -1)
  up=$(docker exec "$prometheus" sh -c \
    'promtool query instant http://127.0.0.1:9090 "up{job=\"superweightd\"}" 2>/dev/null' \
    | sed -n 's/.*=> \([0-9.]*\) @.*/\1/p' | head -1)
  [[ $up == 1 && -n $value && $value != 0 ]] && break
  sleep 3
done
[[ $up == 1 && -n $value && $value != 0 ]] || { echo "scrape: up=$up requests=$value" >&2; exit 1; }
echo "Prometheus scrapes superweightd: up=1, superweight_requests_total summed = $value"
# The scaleout profile: PostgreSQL, two replicas on it, one address in front of them.
if ! docker image inspect postgres:15 >/dev/null 2>&1 && ! docker pull postgres:15 >/dev/null 2>&1; then
  echo "postgres:15 cannot be pulled: building a stand-in from Debian's postgresql-15" >&2
  docker build --network host -t postgres:15 - <<'EOF'
FROM debian:bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-15 && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown postgres /var/lib/postgresql/data /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
# As the official image: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB on the first start.
RUN printf '%s\n' '#!/bin/sh' 'set -e' 'if [ ! -s "$PGDATA/PG_VERSION" ]; then' \
      '  echo "$POSTGRES_PASSWORD" >/tmp/pw' \
      '  initdb -U "$POSTGRES_USER" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256' \
      '  rm /tmp/pw' \
      '  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"' \
      '  pg_ctl -w -o "-c listen_addresses=" start' \
      '  createdb -U "$POSTGRES_USER" "$POSTGRES_DB"' \
      '  pg_ctl -w stop' \
      'fi' \
      'exec postgres -c "listen_addresses=*"' >/usr/local/bin/postgres-entrypoint
USER postgres
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint"]
EOF
fi
if ! docker image inspect nginx:stable >/dev/null 2>&1 && ! docker pull nginx:stable >/dev/null 2>&1; then
  echo "nginx:stable cannot be pulled: building a stand-in from Debian's nginx" >&2
  docker build --network host -t nginx:stable - <<'EOF'
FROM debian:bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nginx && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["nginx", "-g", "daemon off;"]
EOF
fi
"${compose[@]}" --profile scaleout up -d --no-build
echo "waiting for the two replicas' HEALTHCHECKs ..."
for service in replica-1 replica-2; do wait_healthy "$service"; done
# Through the one address, with the client from the image: an Ablate of three rows (intact,
# prune, scale x2) runs as three parts, and the job is then listed with them.
lb=(docker run --rm --network host --entrypoint superweight superweight:latest
  --server=127.0.0.1:50052)
job=$("${lb[@]}" ablate --model="$model" --super_weights=11,507,1229 --settings=prune,scale \
  --scales=2 --tasks=wikitext2 --window=64 --max_windows=2 --json |
  sed -n 's/.*"job_id": "\([^"]*\)".*/\1/p')
listed=$("${lb[@]}" jobs --json)
parts=$(python3 -c 'import json, sys
print(next((j.get("parts", 0) for j in json.load(sys.stdin)["jobs"] if j["id"] == sys.argv[1]), ""))' \
  "$job" <<<"$listed")
[[ -n $job && $parts == 3 ]] || { echo "job '$job': '$parts' parts, not 3: $listed" >&2; exit 1; }
ran=$(for service in replica-1 replica-2; do
  docker logs "$("${compose[@]}" ps -q "$service")" 2>&1 | grep -c "running here" || true
done | tr '\n' ' ')
echo "scaleout: $job fanned out into $parts parts through one address; parts run per replica: $ran"

echo "docker smoke test passed in $((SECONDS - start)) s" \
  "(compose project removed: containers, network, volume; images kept)"
