#!/usr/bin/env bash
# Runs the example pipeline with every step as a Kubernetes Job, from this
# machine: builds the image, makes it available to the cluster, applies the
# RBAC, stores the bucket's credentials in a secret and submits.
#
# Needs docker, kubectl pointed at a cluster, and an S3-compatible bucket
# reachable from here and from the pods:
#   STORE=s3://bucket/prefix AWS_ENDPOINT=... AWS_REGION=... \
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
#   [AWS_ALLOW_HTTP=true] [IMAGE=registry/sluice:tag | KIND_CLUSTER=name] \
#   deploy/kubernetes/run-example.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${STORE:?set STORE=s3://bucket/prefix (the bucket the pods read and write)}"
: "${AWS_ACCESS_KEY_ID:?set the bucket's credentials}"
: "${AWS_SECRET_ACCESS_KEY:?set the bucket's credentials}"
IMAGE=${IMAGE:-sluice:dev}
if [ -z "${SLUICE_STORE_KEY:-}" ]; then
  # The same key must sign and check the bucket's documents everywhere:
  # keep it for the next run.
  SLUICE_STORE_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  echo "SLUICE_STORE_KEY was not set; using a new one: export SLUICE_STORE_KEY=$SLUICE_STORE_KEY" >&2
fi
export SLUICE_STORE_KEY

docker build -f deploy/kubernetes/Dockerfile -t "$IMAGE" .
if [ -n "${KIND_CLUSTER:-}" ]; then
  kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"
else
  docker push "$IMAGE"
fi

kubectl apply -f deploy/kubernetes/rbac.yaml
kubectl -n sluice create secret generic sluice-store \
  --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  --from-literal=SLUICE_STORE_KEY="$SLUICE_STORE_KEY" \
  --dry-run=client -o yaml | kubectl apply -f -

config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
sed -e "s|@IMAGE@|$IMAGE|" -e "s|@STORE@|$STORE|" deploy/kubernetes/config.toml >"$config"

cargo run --release -- run examples/pipelines/tabular.toml --config "$config"
