# shellcheck shell=bash
# Helpers shared by the project's scripts: install Debian packages that are missing, find free
# loopback ports, and start or stop a throwaway etcd. Source it; it changes nothing by itself.

# capstan_require PACKAGE:COMMAND ... — installs each Debian PACKAGE whose COMMAND is missing.
capstan_require() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# capstan_free_port — prints a loopback TCP port that nothing listens on.
capstan_free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 25000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

# capstan_start_etcd DIR — starts a one-member etcd with its data in DIR on free loopback
# ports, waits until it is healthy, and exports CAPSTAN_ETCD_ENDPOINTS and CAPSTAN_ETCD_PID.
capstan_start_etcd() {
  local dir=$1 client peer
  mkdir -p "$dir"
  client=$(capstan_free_port)
  peer=$(capstan_free_port)
  while [ "$peer" = "$client" ]; do peer=$(capstan_free_port); done
  etcd --name capstan-test --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "capstan-test=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
  export CAPSTAN_ETCD_PID=$!
  export CAPSTAN_ETCD_ENDPOINTS="http://127.0.0.1:$client"
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints="$CAPSTAN_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; then
      echo "etcd $(etcd --version | head -n1 | awk '{print $3}') is up at $CAPSTAN_ETCD_ENDPOINTS" >&2
      return 0
    fi
    if ! kill -0 "$CAPSTAN_ETCD_PID" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "etcd did not become healthy; its log:" >&2
  cat "$dir/etcd.log" >&2
  return 1
}

# capstan_stop_etcd — stops the etcd started by capstan_start_etcd, if any.
capstan_stop_etcd() {
  if [ -n "${CAPSTAN_ETCD_PID:-}" ]; then
    kill "$CAPSTAN_ETCD_PID" 2>/dev/null || true
    wait "$CAPSTAN_ETCD_PID" 2>/dev/null || true
    unset CAPSTAN_ETCD_PID
  fi
}
