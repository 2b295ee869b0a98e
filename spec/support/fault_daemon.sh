#!/usr/bin/env bash
# A private, throw-away Docker daemon for the daemon-fault specs, beside the
# shared one (which is never touched): its own socket, data root, exec root
# (its own containerd), cgroup parent, and its OWN NETWORK NAMESPACE
# (unshare --net), so nothing it does to bridges and links can reach the
# host's: dockerd 20.10 deletes an interface named docker0 when started with
# --bridge none, and again when restarted on an existing data root, which
# outside a namespace is the shared daemon's bridge. Its socket is a file,
# reachable from the host namespace. The test image is copied in from the
# main daemon.
#
#   fault_daemon.sh start    start it (or keep the running one); prints the socket URL
#   fault_daemon.sh stop     stop it (TERM, then KILL after 20 s); keeps its data
#   fault_daemon.sh crash    SIGKILL dockerd alone (its containerd and containers live on)
#   fault_daemon.sh destroy  stop it and remove its data root
#   fault_daemon.sh status   exit 0 when it answers
set -uo pipefail
ROOT=${CP_FAULT_ROOT:-/run/cpdocker-fault}
DATA=${CP_FAULT_DATA:-/var/lib/cpdocker-fault}
SOCK=$ROOT/docker.sock
PIDFILE=$ROOT/docker.pid
LOG=$ROOT/dockerd.log
IMAGE=${CP_FAULT_IMAGE:-cpdocker-test/busybox:1}

answers() {
  curl -s --max-time 2 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null | grep -q OK
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if answers; then echo "unix://$SOCK"; return 0; fi
  mkdir -p "$ROOT/exec" "$DATA"
  # --shutdown-timeout: containers get 2 s on stop, so an outage starts quickly
  # unshare execs sh, which execs dockerd: the pid in the pidfile is dockerd's
  setsid unshare --net -- sh -c 'ip link set lo up && exec dockerd "$@"' dockerd \
    --host "unix://$SOCK" --data-root "$DATA" --exec-root "$ROOT/exec" \
    --pidfile "$PIDFILE" --iptables=false --ip-masq=false --ip 127.0.0.1 \
    --cgroup-parent /cpdocker-fault --default-address-pool base=10.213.0.0/16,size=24 \
    --shutdown-timeout 2 >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 150); do # 30 s
    answers && break
    sleep 0.2
  done
  if ! answers; then
    echo "fault_daemon: dockerd did not answer on $SOCK within 30 s; log:" >&2
    tail -20 "$LOG" >&2
    return 1
  fi
  if ! docker -H "unix://$SOCK" image inspect "$IMAGE" >/dev/null 2>&1; then
    docker save "$IMAGE" | docker -H "unix://$SOCK" load >/dev/null || {
      echo "fault_daemon: cannot load $IMAGE" >&2
      return 1
    }
  fi
  echo "unix://$SOCK"
}

stop() {
  local pid
  pid=$(running_pid) || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 100); do # 20 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  for _ in $(seq 1 25); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  rm -f "$SOCK"
  return 0
}

stop_containerd() {
  local pidf=$ROOT/exec/containerd/containerd.pid pid
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  crash)
    pid=$(running_pid) && kill -KILL "$pid"
    for _ in $(seq 1 25); do
      kill -0 "${pid:-0}" 2>/dev/null || break
      sleep 0.2
    done
    rm -f "$SOCK"
    ;;
  destroy)
    start >/dev/null 2>&1 # a crashed daemon comes back to stop its containers in order
    stop
    stop_containerd
    # containerd's mounts under the exec root go away with it; be sure before removing
    grep -q " $ROOT" /proc/mounts && awk -v r="$ROOT" '$2 ~ "^"r {print $2}' /proc/mounts |
      sort -r | xargs -r -n1 umount -l 2>/dev/null
    grep -q " $DATA" /proc/mounts && awk -v r="$DATA" '$2 ~ "^"r {print $2}' /proc/mounts |
      sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$DATA" "$ROOT"
    ;;
  status) answers ;;
  *) echo "usage: $0 start|stop|crash|destroy|status" >&2; exit 2 ;;
esac
