#!/usr/bin/env bash
# A real multi-node Docker Swarm on one machine, for the swarm backend's specs
# and `make demo-swarm`. N dockerd processes ("nodes"), each with
#   - its own network namespace (ip netns NAME-nI) with one interface, eth0,
#     address $NET.(10+I)/24, plugged into a bridge that lives in ITS OWN
#     namespace (NAME-br), never the host's: the host's bridge netfilter and
#     its dockerd's FORWARD DROP policy would drop node-to-node traffic;
#   - its own mount namespace (ip netns exec makes one) in which the cgroup
#     hierarchies are mounted again (ip netns exec remounts /sys, which hides
#     /sys/fs/cgroup), /etc/docker is the node's own directory (its own
#     key.json, so a distinct engine id), and /etc/resolv.conf points at
#     127.0.0.1 inside the namespace, where nothing listens (lookups fail at
#     once: the lab has no internet);
#   - its own hostname (unshare --uts): swarm-node1, swarm-node2, ...;
#   - its own data root, exec root (its own containerd), pidfile and cgroup
#     parent, all under the lab directory ($CP_SWARM_LAB, /tmp/cp-swarm-lab).
# The host reaches the bridge through a veth (host side $NET.1/24), so the
# nodes' addresses and the ports they publish in host mode are reachable from
# the host, and each node's API is a unix socket file in the lab directory.
# Node 1 inits the swarm (the manager), the others join as workers. The test
# images are copied in with `docker save | docker load`. The host's dockerd,
# docker0 and iptables are not touched (iptables is per network namespace).
#
#   swarm_lab.sh up [N]        bring up N nodes (default 3) and the swarm; idempotent
#   swarm_lab.sh down          remove everything of the lab (idempotent)
#   swarm_lab.sh sock I        print node I's API URL (unix:///...)
#   swarm_lab.sh nodes         print CP_DOCKER_NODES: swarm-node1=unix:///...,...
#   swarm_lab.sh ip I          print node I's address
#   swarm_lab.sh stop-node I   kill node I: dockerd, containerd and its containers (SIGKILL)
#   swarm_lab.sh start-node I  start it again; it rejoins the swarm by itself
#   swarm_lab.sh status        exit 0 when every node of the lab answers
set -uo pipefail
LAB=${CP_SWARM_LAB:-/tmp/cp-swarm-lab}
P=${CP_SWARM_PREFIX:-cpsw}                 # names: netns, interfaces, cgroup parents
NET=${CP_SWARM_NET:-10.231.0}              # the lab link, a /24 not used on this host
POOL=${CP_SWARM_POOL:-10.232.0.0/16}       # overlay subnets inside the nodes
IMAGES=${CP_SWARM_IMAGES:-cpdocker-test/busybox:1 cpdocker-test/busybox:2}
BRNS=$P-br
HOSTIF=$P-host                             # host side of the uplink veth

die() { echo "swarm_lab: $*" >&2; exit 1; }
node_ns() { echo "$P-n$1"; }
node_ip() { echo "$NET.$((10 + $1))"; }
node_dir() { echo "$LAB/node$1"; }
node_sock() { echo "$(node_dir "$1")/docker.sock"; }
node_name() { echo "swarm-node$1"; }
dk() { local i=$1; shift; docker -H "unix://$(node_sock "$i")" "$@"; }
count() { cat "$LAB/nodes" 2>/dev/null || echo 0; }

answers() {
  curl -s --max-time 2 --unix-socket "$(node_sock "$1")" http://localhost/_ping 2>/dev/null | grep -q OK
}

node_pid() {
  local f pid
  f=$(node_dir "$1")/docker.pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# --- inside a node's namespaces (run by start_node through ip netns exec + unshare) ---
inner() {
  local i=$1 d
  d=$(node_dir "$i")
  hostname "$(node_name "$i")" || exit 1
  # the cgroup hierarchies, as the host mounts them (recorded by `up` before ip netns exec)
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup || exit 1
  while read -r path type opts; do
    mkdir -p "$path"
    if [ "$type" = cgroup2 ]; then
      mount -t cgroup2 cgroup2 "$path" || exit 1
    else
      local o
      o=$(echo "$opts" | tr ',' '\n' | grep -vE '^(rw|ro|relatime|nosuid|nodev|noexec)$' | paste -sd, -)
      case "$o" in name=*) o="none,$o" ;; esac
      mount -t cgroup -o "$o" cgroup "$path" || exit 1
    fi
  done <"$LAB/cgroups"
  mount --bind "$d/etc-docker" /etc/docker || exit 1
  mount --bind "$d/resolv.conf" /etc/resolv.conf || exit 1
  mount --bind "$d/hosts" /etc/hosts || exit 1
  ip link set lo up
  # --shutdown-timeout: containers get 2 s on stop, so a stopped node goes quickly
  exec dockerd --host "unix://$(node_sock "$i")" --data-root "$d/data" --exec-root "$d/exec" \
    --pidfile "$d/docker.pid" --cgroup-parent "/$P-n$i" --shutdown-timeout 2 \
    --bip 172.31.254.1/24 --default-address-pool "base=172.30.0.0/16,size=24"
}

start_node() {
  local i=$1 d
  d=$(node_dir "$i")
  answers "$i" && return 0
  mkdir -p "$d/data" "$d/exec" "$d/etc-docker"
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$d/resolv.conf"
  printf '127.0.0.1 localhost\n%s %s\n' "$(node_ip "$i")" "$(node_name "$i")" >"$d/hosts"
  setsid ip netns exec "$(node_ns "$i")" unshare --uts -- "$0" _inner "$i" \
    >>"$d/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 150); do # 30 s
    answers "$i" && return 0
    sleep 0.2
  done
  echo "swarm_lab: node $i did not answer within 30 s; log:" >&2
  tail -20 "$d/dockerd.log" >&2
  return 1
}

# A node stops the way a machine fails: dockerd, its containerd, the shims and
# the containers are killed at once (SIGKILL), nothing is handed over. On
# start-node, dockerd starts on the same data root and rejoins the swarm.
stop_node() {
  local i=$1 pid
  pid=$(node_pid "$i") && kill -KILL "$pid"
  kill_rest "$i"
  for _ in $(seq 1 50); do
    [ -z "$(ip netns pids "$(node_ns "$i")" 2>/dev/null)" ] && break
    sleep 0.1
  done
  rm -f "$(node_sock "$i")" "$(node_dir "$i")/docker.pid"
  return 0
}

net_up() {
  ip netns add "$BRNS" || return 1
  ip -n "$BRNS" link set lo up
  ip -n "$BRNS" link add br0 type bridge
  ip -n "$BRNS" link set br0 up
  ip link add "$HOSTIF" type veth peer name uplink netns "$BRNS" || return 1
  ip -n "$BRNS" link set uplink master br0 up
  ip addr add "$NET.1/24" dev "$HOSTIF"
  ip link set "$HOSTIF" up
}

node_net_up() {
  local i=$1 ns
  ns=$(node_ns "$i")
  ip netns add "$ns" || return 1
  ip -n "$ns" link set lo up
  ip link add "$P-v$i" netns "$BRNS" type veth peer name eth0 netns "$ns" || return 1
  ip -n "$BRNS" link set "$P-v$i" master br0 up
  ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
}

up() {
  local n=${1:-3} i token t0
  t0=$(date +%s.%N)
  case "$n" in '' | *[!0-9]*) die "up: N must be a number" ;; esac
  [ "$n" -ge 1 ] || die "up: N must be at least 1"
  if [ -f "$LAB/nodes" ]; then
    [ "$(count)" = "$n" ] || die "a lab of $(count) nodes is up; run down first"
    local ok=1
    for i in $(seq 1 "$n"); do answers "$i" || ok=0; done
    [ $ok = 1 ] && return 0
    die "the lab is up but not every node answers (start-node I, or down)"
  fi
  ip route | grep -q "^$NET\." && die "$NET.0/24 is already routed on this host (set CP_SWARM_NET)"
  mkdir -p "$LAB" || die "cannot create $LAB"
  echo "$n" >"$LAB/nodes"
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2, $3, $4}' /proc/mounts >"$LAB/cgroups"
  net_up || { down; die "cannot create the lab bridge"; }
  for i in $(seq 1 "$n"); do
    node_net_up "$i" || { down; die "cannot create node $i's namespace"; }
  done
  for i in $(seq 1 "$n"); do start_node "$i" & done
  wait
  for i in $(seq 1 "$n"); do answers "$i" || { down; die "node $i did not start"; }; done
  for i in $(seq 1 "$n"); do
    # shellcheck disable=SC2086
    docker save $IMAGES | dk "$i" load >/dev/null &
  done
  wait
  dk 1 swarm init --advertise-addr "$(node_ip 1)" --listen-addr "$(node_ip 1):2377" \
    --default-addr-pool "$POOL" --default-addr-pool-mask-length 24 >/dev/null ||
    { down; die "swarm init failed"; }
  token=$(dk 1 swarm join-token -q worker) || { down; die "no join token"; }
  for i in $(seq 2 "$n"); do
    dk "$i" swarm join --token "$token" --advertise-addr "$(node_ip "$i")" \
      --listen-addr "$(node_ip "$i"):2377" "$(node_ip 1):2377" >/dev/null &
  done
  wait
  for _ in $(seq 1 150); do # 30 s
    [ "$(dk 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$')" = "$n" ] && break
    sleep 0.2
  done
  [ "$(dk 1 node ls --format '{{.Status}}' | grep -c '^Ready$')" = "$n" ] ||
    { dk 1 node ls >&2; down; die "not every node is Ready"; }
  echo "swarm lab up: $n nodes in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s; manager $(node_sock 1)" >&2
}

# kill every process left in a namespace, then every process in a node's cgroups
kill_rest() {
  local i=$1 pids
  pids=$(ip netns pids "$(node_ns "$i")" 2>/dev/null)
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  while read -r path _ _; do
    [ -d "$path/$P-n$i" ] || continue
    # shellcheck disable=SC2038 # xargs gets pids (the files' contents), not file names
    find "$path/$P-n$i" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  done <"$LAB/cgroups"
  sleep 0.2
  while read -r path _ _; do
    [ -d "$path/$P-n$i" ] && find "$path/$P-n$i" -depth -type d -exec rmdir {} + 2>/dev/null
  done <"$LAB/cgroups"
  return 0
}

down() {
  local n i
  n=$(count)
  [ "$n" -gt 0 ] 2>/dev/null || n=$(ip netns list | grep -c "^$P-n[0-9]")
  for i in $(seq 1 "$n"); do stop_node "$i" & done
  wait
  for i in $(seq 1 "$n"); do
    [ -f "$LAB/cgroups" ] && kill_rest "$i"
    ip netns del "$(node_ns "$i")" 2>/dev/null
  done
  ip link del "$HOSTIF" 2>/dev/null
  ip netns del "$BRNS" 2>/dev/null
  if [ -d "$LAB" ]; then
    # mounts of the nodes lived in their own mount namespaces, gone with their processes;
    # be sure before removing
    awk -v r="$LAB" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$LAB"
  fi
  return 0
}

need_node() {
  case "${1:-}" in '' | *[!0-9]*) die "node number expected" ;; esac
  if [ "$1" -lt 1 ] || [ "$1" -gt "$(count)" ]; then die "no node $1 in the lab ($(count) nodes)"; fi
}

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, dockerd)"
case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  sock) need_node "${2:-}"; echo "unix://$(node_sock "$2")" ;;
  ip) need_node "${2:-}"; node_ip "$2" ;;
  nodes)
    out=""
    for i in $(seq 1 "$(count)"); do out="$out${out:+,}$(node_name "$i")=unix://$(node_sock "$i")"; done
    echo "$out"
    ;;
  stop-node) need_node "${2:-}"; stop_node "$2" ;;
  start-node) need_node "${2:-}"; start_node "$2" ;;
  status)
    [ "$(count)" -gt 0 ] || exit 1
    for i in $(seq 1 "$(count)"); do answers "$i" || exit 1; done
    ;;
  _inner) inner "$2" ;;
  *) echo "usage: $0 up [N] | down | sock I | ip I | nodes | stop-node I | start-node I | status" >&2; exit 2 ;;
esac
