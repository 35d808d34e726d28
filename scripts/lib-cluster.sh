# Capstan's multi-process cluster on real parts, one process per component, sourced by
# scripts/cluster and scripts/test (bash; needs root).
#
# Layout: a "LAN" network namespace holds a bridge; each node is a network namespace wired to
# it (eth0, 172.18.0.1N/24) with its own CNI bridge, iptables rules and host-gw routes. The
# processes run in the host's namespace and reach the API server on loopback; each node's
# kubelet runs the CNI plugins, and its proxy and route agent their commands, inside the
# node's namespace, and serves its API (logs, exec, port-forward) on port 10250 there. The API
# server also serves on the LAN bridge's address (172.18.0.1, inside the LAN namespace),
# which the `kubernetes` Service points at, so Pods reach it; it dials kubelets from the LAN
# namespace too. Nothing is added to the host's own interfaces, routes or tables.
#
#   apiserver            etcd (CAPSTAN_ETCD_ENDPOINTS)
#   controller-manager   ×2, leader-elected
#   scheduler            ×2, leader-elected
#   kubelet + proxy      per node: containerd (CAPSTAN_CONTAINERD_SOCKET), CNI bridge, iptables
#
# The images the seed manifests name are busybox images (no registry is reachable) serving
# `<pod hostname>` over HTTP on port 8080.

# capstan_cluster_build: builds the `capstan` binary with the real backends; sets CAPSTAN_BIN.
capstan_cluster_build() {
  if [ -z "${CAPSTAN_BIN:-}" ]; then
    cargo build --quiet -p capstan-cli --features etcd,containerd
    CAPSTAN_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/capstan"
  fi
  export CAPSTAN_BIN
}

# capstan_cluster_start_process <dir> <name> <command...>: starts a component in the
# background, logging to <dir>/logs/<name>.log, its pid in <dir>/pids/<name>.pid.
capstan_cluster_start_process() {
  local dir=$1 name=$2
  shift 2
  mkdir -p "$dir/logs" "$dir/pids"
  RUST_LOG="${RUST_LOG:-info}" "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

# capstan_cluster_netns_prefix <dir>: the prefix of the network namespaces of the cluster
# whose state is in <dir>. It is derived from the directory, so clusters in other directories
# (a concurrent one, or the leftovers of one that was killed) never collide with this one.
capstan_cluster_netns_prefix() {
  printf 'capstan-%s' "$(realpath -m "$1" | cksum | cut -d' ' -f1)"
}

# capstan_cluster_lan_netns <dir>: the namespace holding the cluster's LAN bridge.
capstan_cluster_lan_netns() {
  printf '%s-lan' "$(capstan_cluster_netns_prefix "$1")"
}

# capstan_cluster_node_netns <dir> <index>: the namespace of node <index> (1-based).
capstan_cluster_node_netns() {
  printf '%s-node%02d' "$(capstan_cluster_netns_prefix "$1")" "$2"
}

# capstan_cluster_up <dir> <nodes>: starts the cluster; the kubeconfig is <dir>/kubeconfig.
# Needs CAPSTAN_ETCD_ENDPOINTS, CAPSTAN_CONTAINERD_SOCKET and CAPSTAN_CNI_PATH.
capstan_cluster_up() {
  local dir=$1 nodes=$2 port i name netns ip image lan
  : "${CAPSTAN_ETCD_ENDPOINTS:?start etcd first (capstan_start_etcd)}"
  : "${CAPSTAN_CONTAINERD_SOCKET:?start containerd first (capstan_start_containerd)}"
  : "${CAPSTAN_CNI_PATH:?install the CNI plugins first (capstan_setup_net_cni)}"
  capstan_cluster_build
  mkdir -p "$dir/images"
  echo "$nodes" >"$dir/node-count"

  # The images of the seed manifests.
  for image in luksa/kubia:v2 nginx nginx:1.14 nginx:1.15 web:v1 web:v2; do
    "$CAPSTAN_BIN" busybox-image --name "$image" --out "$dir/images/${image//[\/:]/_}.tar" -- \
      sh -c 'mkdir -p /tmp/www && hostname >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'
  done

  # The LAN and the nodes' namespaces. Namespaces of the same name can only be left over from a
  # cluster in this directory that was killed before `down` (up refuses a running one).
  lan=$(capstan_cluster_lan_netns "$dir")
  ip netns del "$lan" 2>/dev/null || true
  ip netns add "$lan"
  ip -n "$lan" link add br0 type bridge
  ip -n "$lan" link set br0 up
  ip -n "$lan" addr add 172.18.0.1/24 dev br0
  for i in $(seq 1 "$nodes"); do
    netns=$(capstan_cluster_node_netns "$dir" "$i")
    ip=172.18.0.$((10 + i))
    ip netns del "$netns" 2>/dev/null || true
    ip netns add "$netns"
    ip -n "$netns" link set lo up
    ip -n "$lan" link add "lan$i" type veth peer name eth0 netns "$netns"
    ip -n "$lan" link set "lan$i" master br0 up
    ip -n "$netns" addr add "$ip/24" dev eth0
    ip -n "$netns" link set eth0 up
    ip netns exec "$netns" sysctl -qw net.ipv4.ip_forward=1
  done

  # The control plane.
  port=$(capstan_free_port)
  capstan_cluster_start_process "$dir" apiserver "$CAPSTAN_BIN" apiserver \
    --store "etcd=$CAPSTAN_ETCD_ENDPOINTS" --listen "127.0.0.1:$port" --kubeconfig "$dir/kubeconfig" \
    --cluster-netns "$lan" --advertise-address 172.18.0.1
  for _ in $(seq 1 100); do
    [ -s "$dir/kubeconfig" ] && kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.1
  done
  for replica in a b; do
    capstan_cluster_start_process "$dir" "controller-manager-$replica" "$CAPSTAN_BIN" \
      controller-manager --kubeconfig "$dir/kubeconfig" --identity "controller-manager-$replica"
    capstan_cluster_start_process "$dir" "scheduler-$replica" "$CAPSTAN_BIN" \
      scheduler --kubeconfig "$dir/kubeconfig" --identity "scheduler-$replica"
  done

  # The nodes.
  for i in $(seq 1 "$nodes"); do
    name=$(printf 'node%02d' "$i")
    netns=$(capstan_cluster_node_netns "$dir" "$i")
    ip=172.18.0.$((10 + i))
    local preload=()
    for image in "$dir"/images/*.tar; do preload+=(--preload-image "$image"); done
    capstan_cluster_start_process "$dir" "kubelet-$name" "$CAPSTAN_BIN" kubelet \
      --kubeconfig "$dir/kubeconfig" --node-name "$name" --node-ip "$ip" \
      --runtime "containerd=$CAPSTAN_CONTAINERD_SOCKET" --network cni --netns "$netns" \
      --cni-bin-dir "$CAPSTAN_CNI_PATH" --state-dir "$dir/nodes/$name" --host-gw "${preload[@]}" \
      --address "$ip"
    capstan_cluster_start_process "$dir" "proxy-$name" "$CAPSTAN_BIN" proxy \
      --kubeconfig "$dir/kubeconfig" --node-name "$name" --node-ip "$ip" \
      --proxy iptables --netns "$netns" --masquerade-all
  done
  echo "capstan cluster up: kubectl --kubeconfig $dir/kubeconfig get nodes (logs in $dir/logs)" >&2
}

# capstan_cluster_stop_process <dir> <name>: stops one component (SIGTERM, then SIGKILL).
capstan_cluster_stop_process() {
  local dir=$1 name=$2 pid
  [ -f "$dir/pids/$name.pid" ] || return 0
  pid=$(cat "$dir/pids/$name.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pids/$name.pid"
}

# capstan_cluster_down <dir>: stops every component, removes the Pods' containers (in each
# node's containerd namespace), the namespaces and the state.
capstan_cluster_down() {
  local dir=$1 nodes i name pidfile
  [ -d "$dir" ] || return 0
  for pidfile in "$dir"/pids/*.pid; do
    [ -e "$pidfile" ] || continue
    capstan_cluster_stop_process "$dir" "$(basename "$pidfile" .pid)"
  done
  nodes=$(cat "$dir/node-count" 2>/dev/null || echo 0)
  for i in $(seq 1 "$nodes"); do
    name=$(printf 'node%02d' "$i")
    if [ -n "${CAPSTAN_CONTAINERD_SOCKET:-}" ]; then
      local ctr=(ctr --address "$CAPSTAN_CONTAINERD_SOCKET" -n "capstan-$name")
      for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
        "${ctr[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
      done
      sleep 0.2
      for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
        "${ctr[@]}" tasks delete -f "$task" >/dev/null 2>&1 || true
      done
      for container in $("${ctr[@]}" containers ls -q 2>/dev/null); do
        "${ctr[@]}" containers delete "$container" >/dev/null 2>&1 || true
      done
    fi
    ip netns del "$(capstan_cluster_node_netns "$dir" "$i")" 2>/dev/null || true
  done
  ip netns del "$(capstan_cluster_lan_netns "$dir")" 2>/dev/null || true
  # Pod namespaces the runtime pinned under the nodes' state.
  awk -v prefix="$dir/nodes/" 'index($2, prefix) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true; done
}
