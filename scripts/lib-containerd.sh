# shellcheck shell=bash
# Start and stop a throwaway containerd for the `containerd` feature's tests. Source it after
# scripts/lib.sh; it changes nothing by itself.

# capstan_require_containerd — installs containerd, runc and busybox-static when missing.
capstan_require_containerd() {
  capstan_require containerd:containerd runc:runc busybox-static:busybox
}

# capstan_start_containerd DIR — starts containerd with its root, state, socket and config
# under DIR (namespace-free config: no CRI plugin, overlayfs snapshotter), waits until it
# answers, and exports CAPSTAN_CONTAINERD_SOCKET and CAPSTAN_CONTAINERD_PID.
capstan_start_containerd() {
  local dir=$1
  mkdir -p "$dir/root" "$dir/state"
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$dir/containerd.sock"

[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
TOML
  containerd --config "$dir/config.toml" --root "$dir/root" --state "$dir/state" \
    --address "$dir/containerd.sock" >"$dir/containerd.log" 2>&1 &
  export CAPSTAN_CONTAINERD_PID=$!
  export CAPSTAN_CONTAINERD_SOCKET="$dir/containerd.sock"
  for _ in $(seq 1 100); do
    if ctr --address "$CAPSTAN_CONTAINERD_SOCKET" version >/dev/null 2>&1; then
      echo "containerd $(containerd --version | awk '{print $3}') is up at $CAPSTAN_CONTAINERD_SOCKET" >&2
      return 0
    fi
    if ! kill -0 "$CAPSTAN_CONTAINERD_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "containerd did not come up; its log:" >&2
  cat "$dir/containerd.log" >&2
  return 1
}

# capstan_stop_containerd — stops the containerd started by capstan_start_containerd and any
# shim still serving it (found by its socket; tests remove their tasks, so normally none),
# and unmounts what is left under its root.
capstan_stop_containerd() {
  if [ -n "${CAPSTAN_CONTAINERD_PID:-}" ]; then
    local root shim
    root=$(dirname "$CAPSTAN_CONTAINERD_SOCKET")
    kill "$CAPSTAN_CONTAINERD_PID" 2>/dev/null || true
    wait "$CAPSTAN_CONTAINERD_PID" 2>/dev/null || true
    for shim in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CAPSTAN_CONTAINERD_SOCKET" || true); do
      kill "$shim" 2>/dev/null || true
    done
    { grep -o " $root/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    unset CAPSTAN_CONTAINERD_PID CAPSTAN_CONTAINERD_SOCKET
  fi
}
