#!/usr/bin/env bash
# Submit `ftcl run SPEC` to a running Ray cluster as a Ray job (logs, status and stop via the dashboard).
#   cluster/submit.sh http://HEAD:8265 tune_configs/toys/apple_retrieval.yaml [--set seeds=[0,1,2,3,4] ...]
# The repo is uploaded as the job's working directory; the nodes need ftcl's dependencies installed
# (see setup_commands in the cluster YAMLs). MLflow: point MLFLOW_TRACKING_URI at a server the head
# can reach, or leave it unset to use the SQLite store in the job's FTCL_HOME on the head node.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DASHBOARD_ADDRESS SPEC [ftcl run options...]" >&2
  exit 2
fi
address=$1; spec=$2; shift 2
cd "$(dirname "$0")/.."
# Ray 2.60 clusters use token auth by default; the job client only sends the token in token mode.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
  export RAY_AUTH_MODE=token
fi
env_vars="{\"FTCL_HOME\": \"${FTCL_HOME:-/tmp/ftcl}\""
# The tracking server's URI and credentials (MLflow's basic-auth app) reach the job and its trials.
# They travel in the job's runtime env, which the dashboard shows to whoever holds the Ray token.
for name in MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN; do
  if [ -n "${!name:-}" ]; then env_vars="$env_vars, \"$name\": \"${!name}\""; fi
done
env_vars="$env_vars}"
# A freshly started head can answer before its job agent is up ("No available agent"): then the
# job was never created, so wait and submit again (10 tries; each waits ≈ 10 s for the agent, so
# ≈ 2 min in all). Any other failure is final.
output=$(mktemp); trap 'rm -f "$output"' EXIT
for attempt in $(seq 1 10); do
  status=0
  ray job submit --address "$address" --working-dir . \
    --runtime-env-json "{\"excludes\": [\".venv\", \".ftcl\", \".git\", \"results\"], \"env_vars\": $env_vars}" \
    -- python -m ftcl.cli run "$spec" --address auto "$@" 2>&1 | tee "$output" || status=$?
  if [ "$status" -eq 0 ] || ! grep -q "No available agent" "$output"; then
    exit "$status"
  fi
  echo "submit.sh: the cluster's job agent is not up yet (attempt $attempt/10); retrying in 3 s" >&2
  sleep 3
done
exit 1
