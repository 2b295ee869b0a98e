#!/usr/bin/env bash
# One-step setup for a fresh Debian bookworm machine (run as root), shared by
# `make test`, `make demo`, `make bench` and .ci/run:
#   1. installs the Debian packages that are missing,
#   2. starts dockerd when no daemon answers (published ports default to
#      127.0.0.1) and waits for it,
#   3. starts a local registry on 127.0.0.1:5000 for pull tests,
#   4. builds the local test images (docker import of a busybox-static root).
# Re-running it is cheap and changes nothing.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

PACKAGES=(gcc make pkg-config curl ca-certificates lua5.4 liblua5.4-dev lua-cjson
  libcurl4-openssl-dev lua-busted lua-check docker.io busybox-static docker-registry
  iproute2 valgrind cppcheck luarocks openssl util-linux)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}) and not root to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- the Docker daemon --------------------------------------------------------
SOCK=/var/run/docker.sock
ping_daemon() { curl -sf --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; }
if ! ping_daemon; then
  [ "$(id -u)" = 0 ] || die "no Docker daemon answers on $SOCK and not root to start one"
  log "starting dockerd (log: /var/log/cpdocker-dockerd.log)"
  # a daemon that is still shutting down holds its pid file: wait for it to
  # go; a pid file left by a daemon that died would stop the new one
  for _ in $(seq 1 60); do
    [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null || break
    sleep 0.5
  done
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  start_dockerd() {
    setsid nohup dockerd --ip 127.0.0.1 >>/var/log/cpdocker-dockerd.log 2>&1 </dev/null &
    DOCKERD_PID=$!
  }
  start_dockerd
  for _ in $(seq 1 120); do
    ping_daemon && break
    # it exited at once (e.g. a pid file still held): start it once more
    if ! kill -0 "$DOCKERD_PID" 2>/dev/null && [ -z "${DOCKERD_RETRIED:-}" ]; then
      DOCKERD_RETRIED=1
      sleep 1
      if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
      fi
      start_dockerd
    fi
    sleep 0.5
  done
  ping_daemon || { tail -20 /var/log/cpdocker-dockerd.log >&2; die "dockerd did not answer within 60 s"; }
fi

# ---- a local registry for pull tests --------------------------------------------
REG_DIR=/var/lib/cpdocker-registry
if ! curl -sf --max-time 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  mkdir -p "$REG_DIR/data"
  cat >"$REG_DIR/config.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
http:
  addr: 127.0.0.1:5000
YAML
  log "starting docker-registry on 127.0.0.1:5000"
  setsid nohup docker-registry serve "$REG_DIR/config.yml" >>/var/log/cpdocker-registry.log 2>&1 </dev/null &
  for _ in $(seq 1 40); do
    curl -sf --max-time 1 http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break
    sleep 0.25
  done
  curl -sf --max-time 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1 \
    || { tail -20 /var/log/cpdocker-registry.log >&2; die "docker-registry did not start"; }
fi

# ---- test images ----------------------------------------------------------------
# cpdocker-test/busybox:1 and :2 differ in /VERSION and /www/index.html, so a
# deploy or rollback is visible from outside.
build_image() {
  local tag=$1 version=$2
  if docker image inspect "$tag" >/dev/null 2>&1; then return; fi
  local root
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,sbin,etc,tmp,www,data,proc,sys,dev,var/log,root}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo "$version" >"$root/VERSION"
  echo "ctrlplane test page version $version" >"$root/www/index.html"
  chmod 1777 "$root/tmp"
  log "building $tag"
  tar -C "$root" -c . | docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/bin:/sbin' \
    --change "LABEL org.ctrlplane.test.version=$version" \
    - "$tag" >/dev/null
  rm -rf "$root"
}
build_image cpdocker-test/busybox:1 1
build_image cpdocker-test/busybox:2 2
log "ready: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), images cpdocker-test/busybox:1 and :2, registry 127.0.0.1:5000"
