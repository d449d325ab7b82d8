#!/usr/bin/env bash
# Deploys gcr.io/k8s-prow/hook:v20240101-aaaaaaa (comments change too in text mode)
set -euo pipefail
HOOK_IMAGE="gcr.io/k8s-prow/hook:v20240101-aaaaaaa"
DECK_IMAGE=gcr.io/k8s-prow/deck:v20240101-aaaaaaa
kubectl set image deploy/hook hook=gcr.io/k8s-prow/hook:v20240101-aaaaaaa
docker pull gcr.io/k8s-prow/hook:latest
docker pull gcr.io/k8s-prow-edge/hook:v20240101-aaaaaaa   # another prefix
echo "see https://gcr.io/k8s-prow/hook:v20240101-aaaaaaa"  # a URL, not a reference
for i in gcr.io/k8s-prow/{hook,deck}:v20240101-aaaaaaa; do echo "$i"; done
