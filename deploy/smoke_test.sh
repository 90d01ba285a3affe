#!/usr/bin/env bash
# Builds the image, starts deploy/docker-compose.yml and checks what a deployment promises:
# the container runs as a non-root user, its HEALTHCHECK turns healthy, the bundled client
# locates the default model's super weight through the published port, and Prometheus
# scrapes superweightd's /metrics (target up, requests counted).
#
# Needs a Docker engine (`make docker-test`); not part of `make test`, whose machines have
# none. Where images cannot be pulled (an offline machine), Debian 12 comes from debootstrap
# and a stand-in prom/prometheus is built from Debian's prometheus package, with the same
# entrypoint and config path.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose -f deploy/docker-compose.yml -p superweight-smoke)
else
  compose=(docker-compose -f deploy/docker-compose.yml -p superweight-smoke)
fi
model=SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f models/$model ]] || { echo "models/$model missing: run make setup" >&2; exit 1; }

# A machine with the engine installed but not running (and root): start one, on the vfs storage
# driver, which needs no kernel support.
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null && [[ $(id -u) == 0 ]] || { echo "no Docker engine" >&2; exit 1; }
  mkdir -p build/dockerd
  dockerd --storage-driver=vfs --data-root="$PWD/build/dockerd/data" >build/dockerd/log 2>&1 &
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
# An offline machine: Debian 12 from its package archive instead of the registry's image.
for base in debian:bookworm debian:bookworm-slim; do
  if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull "$base" >/dev/null 2>&1; then
    echo "$base cannot be pulled: importing a debootstrap of Debian 12" >&2
    command -v debootstrap >/dev/null || { echo "offline without debootstrap" >&2; exit 1; }
    rootfs=build/docker-rootfs
    [[ -x $rootfs/bin/sh ]] || debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  fi
done

docker build --network host -t superweight:latest .
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

cleanup() { "${compose[@]}" down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${compose[@]}" up -d --no-build

container=$("${compose[@]}" ps -q superweightd)
echo "waiting for the HEALTHCHECK ..."
for _ in $(seq 1 60); do
  health=$(docker inspect -f '{{.State.Health.Status}}' "$container")
  [[ $health == healthy ]] && break
  sleep 2
done
[[ $health == healthy ]] || { docker logs "$container"; echo "health: $health" >&2; exit 1; }
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
echo "docker smoke test passed"
