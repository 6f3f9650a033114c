#!/bin/sh
# Start the second bank's node (bank-b): its SuperNode from this kit's node.toml, in the foreground (Ctrl-C or SIGTERM stops it).
#   ./start.sh [CONFIG] [more 'fedcredit node start' options, which override the file]
# FEDCREDIT names the fedcredit command (default: fedcredit on PATH).
set -eu

kit=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
config="$kit/node.toml"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    config=$1
    shift
fi
fedcredit=${FEDCREDIT:-fedcredit}

if [ ! -r "$config" ]; then
    echo "start.sh: cannot read $config (fill in the kit's node.toml, see README.md)" >&2
    exit 1
fi
if ! grep -Eq '^[[:space:]]*role[[:space:]]*=[[:space:]]*"bank-b"' "$config"; then
    echo "start.sh: $config does not say role = \"bank-b\" (this is the bank-b kit)" >&2
    exit 1
fi
if ! command -v "$fedcredit" >/dev/null 2>&1; then
    echo "start.sh: $fedcredit not found (install fedcredit, or set FEDCREDIT=/path/to/fedcredit)" >&2
    exit 1
fi

umask 077   # state, logs and outputs readable by this account only
exec "$fedcredit" node start --config "$config" "$@"
