#!/usr/bin/env bash
# make chart-test: the Helm chart in deploy/helm/superweight, checked offline (no cluster).
#   1. Helm: $HELM, else a cached build, else helm on PATH, else built from the Go module proxy
#      (helm.sh/helm/v4 at HELM_VERSION, v3 at HELM_FALLBACK_VERSION if that fails), cached in
#      ${XDG_CACHE_HOME:-$HOME/.cache}/superweight/helm-VERSION/ so that a second run is instant.
#   2. kubernetes-validate (PyPI; it ships Kubernetes' JSON schemas) in the repository's .venv.
#   3. helm lint: the default values (plus the required models.existingClaim) and, --strict,
#      ci/full-values.yaml (every option on).
#   4. helm template of both.
#   5. The rendered manifests against Kubernetes' schemas, strictly, for the chart's oldest
#      Kubernetes (1.27) and the newest the package ships; the ServiceMonitor (a CRD) is skipped.
#   6. The chart's unit tests (tests/chart, pytest).
# Prints each step's wall time; exits non-zero on the first failure. --helm-only: step 1 alone
# (make test's background set-up, tools/test-stages.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=${HELM_VERSION:-v4.3.2}
HELM_FALLBACK_VERSION=${HELM_FALLBACK_VERSION:-v3.21.4}
KUBERNETES_VALIDATE_VERSION=1.37.0
# Rendered for the chart's kubeVersion floor (native gRPC probes; explicit, since a helm built
# by go install assumes an old Kubernetes), validated against that and the newest schemas shipped.
KUBE_VERSION=1.27.0
KUBE_VERSIONS=("$KUBE_VERSION" latest)
CHART=deploy/helm/superweight
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/superweight"
PY=.venv/bin/python

step_names=()
step_secs=()
now() { date +%s.%N; }
# run_step NAME FUNCTION: runs it, prints and records its wall time.
run_step() {
  local name=$1 start end secs
  shift
  echo "==> $name"
  start=$(now)
  "$@"
  end=$(now)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  step_names+=("$name")
  step_secs+=("$secs")
  echo "    ($name: ${secs} s)"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/chart-test.XXXXXX")
trap 'status=$?; if ((status)); then echo "chart-test: FAILED (rendered manifests kept in $work)" >&2; else rm -rf "$work"; fi' EXIT

# helm VERSION built by the Go toolchain, with its version stamped in (go install leaves the
# major.minor only). Built into a scratch directory, then moved: an interrupted build caches
# nothing. Built for the build's sake: without cgo or symbol tables, and only the standard
# library (the runtime, templates, reflection: where lint and render spend their time) optimized,
# not the modules (Kubernetes' generated code is most of the compile): 546 -> 431 CPU seconds on
# Zen 3, the chart's tests as fast (everything unoptimized, 382, made them 40% slower).
build_helm() {
  local version=$1 major=${1%%.*} dest="$CACHE/helm-$1" tmp
  command -v go >/dev/null || { echo "chart-test: no helm and no go to build it with" >&2; return 1; }
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.helm-build.XXXXXX")
  echo "    building helm $version with $(go version | cut -d' ' -f3) (go install; minutes the first time)"
  if CGO_ENABLED=0 GOBIN="$tmp" go install -gcflags=all='-N -l' -gcflags=std= \
      -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$version" \
      "helm.sh/helm/$major/cmd/helm@$version"; then
    rm -rf "$dest"
    mkdir -p "$dest"
    mv "$tmp/helm" "$dest/helm"
    rm -rf "$tmp"
  else
    rm -rf "$tmp"
    return 1
  fi
  [[ -x $dest/helm ]]
}

helm_major_ok() {  # helm 3 or 4
  local v
  v=$("$1" version --template '{{.Version}}' 2>/dev/null) || return 1
  [[ $v == v3.* || $v == v4.* ]]
}

# One build at a time (a lock): make test's background set-up and this stage wait for each
# other.
find_helm() {
  mkdir -p "$CACHE"
  local lock
  exec {lock}>"$CACHE/helm.lock"
  flock "$lock"
  if [[ -n ${HELM:-} ]]; then
    helm_major_ok "$HELM" || { echo "chart-test: HELM=$HELM is not helm 3 or 4" >&2; return 1; }
  elif [[ -x $CACHE/helm-$HELM_VERSION/helm ]]; then
    HELM=$CACHE/helm-$HELM_VERSION/helm
  elif [[ -x $CACHE/helm-$HELM_FALLBACK_VERSION/helm ]]; then
    HELM=$CACHE/helm-$HELM_FALLBACK_VERSION/helm
  elif command -v helm >/dev/null && helm_major_ok "$(command -v helm)"; then
    HELM=$(command -v helm)
  elif build_helm "$HELM_VERSION"; then
    HELM=$CACHE/helm-$HELM_VERSION/helm
  else
    echo "    helm $HELM_VERSION did not build; trying $HELM_FALLBACK_VERSION" >&2
    build_helm "$HELM_FALLBACK_VERSION"
    HELM=$CACHE/helm-$HELM_FALLBACK_VERSION/helm
  fi
  exec {lock}>&-
  export HELM CHART_KUBE_VERSION=$KUBE_VERSION
  echo "    $HELM: $("$HELM" version --template '{{.Version}} ({{.GoVersion}})')"
}

python_deps() {
  if [[ ! -x $PY ]]; then  # as tools/setup.sh makes it (Debian's python3-yaml and pytest)
    /usr/bin/python3 -m venv --system-site-packages .venv
  fi
  local missing=()
  $PY -c 'import yaml' 2>/dev/null || missing+=(pyyaml)
  $PY -c 'import pytest' 2>/dev/null || missing+=(pytest)
  $PY - "$KUBERNETES_VALIDATE_VERSION" <<'EOF' 2>/dev/null || missing+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
import importlib.metadata, sys
import kubernetes_validate  # noqa: F401
sys.exit(importlib.metadata.version("kubernetes-validate") != sys.argv[1])
EOF
  if ((${#missing[@]})); then
    echo "    pip install ${missing[*]} (into .venv)"
    .venv/bin/pip install -q --disable-pip-version-check "${missing[@]}"
  fi
  echo "    $($PY -c 'import importlib.metadata as m; print(", ".join(p + " " + m.version(p) for p in ("kubernetes-validate", "jsonschema", "PyYAML", "pytest")))')"
}

lint_default() {
  "$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --set models.existingClaim=models
}

lint_full() {
  "$HELM" lint --strict "$CHART" --kube-version "$KUBE_VERSION" -f "$CHART/ci/full-values.yaml"
}

template_default() {
  "$HELM" template superweight "$CHART" --namespace superweight --kube-version "$KUBE_VERSION" \
    --set models.existingClaim=models >"$work/default.yaml"
  echo "    $(grep -c '^kind:' "$work/default.yaml") manifests: $(grep '^kind:' "$work/default.yaml" | cut -d' ' -f2 | sort | tr '\n' ' ')"
}

template_full() {
  "$HELM" template superweight "$CHART" --namespace superweight --kube-version "$KUBE_VERSION" \
    -f "$CHART/ci/full-values.yaml" >"$work/full-values.yaml"
  echo "    $(grep -c '^kind:' "$work/full-values.yaml") manifests: $(grep '^kind:' "$work/full-values.yaml" | cut -d' ' -f2 | sort | tr '\n' ' ')"
}

validate() {
  local args=()
  for v in "${KUBE_VERSIONS[@]}"; do args+=(-k "$v"); done
  echo "    kubernetes-validate, strict; ServiceMonitor (monitoring.coreos.com/v1) is a CRD without a shipped schema: skipped"
  $PY tests/chart/k8s_validate.py "${args[@]}" "$work/default.yaml" "$work/full-values.yaml"
}

unit_tests() {
  $PY -m pytest -q -p no:cacheprovider tests/chart
}

total_start=$(now)
run_step "helm" find_helm
if [[ ${1:-} == --helm-only ]]; then exit 0; fi
run_step "python deps" python_deps
run_step "helm lint (default values)" lint_default
run_step "helm lint --strict (ci/full-values.yaml)" lint_full
run_step "helm template (default values)" template_default
run_step "helm template (ci/full-values.yaml)" template_full
run_step "validate manifests" validate
run_step "unit tests (tests/chart)" unit_tests

echo
echo "chart-test: passed"
for i in "${!step_names[@]}"; do
  printf '  %-44s %7s s\n' "${step_names[$i]}" "${step_secs[$i]}"
done
printf '  %-44s %7s s\n' "total" "$(awk -v a="$total_start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
