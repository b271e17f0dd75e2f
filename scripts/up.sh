#!/usr/bin/env bash
# One command from a fresh clone to a running Sail: install, build, put `sail`
# on the PATH, then start the daemon in the foreground (arguments go to `sail up`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
chmod +x packages/cli/dist/main.js
ln -sf "$PWD/packages/cli/dist/main.js" /usr/local/bin/sail
exec sail up "$@"
