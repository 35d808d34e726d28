# shellcheck shell=bash
# Helpers shared by the project's scripts: install Debian packages that are missing, find free
# loopback ports, and start or stop a throwaway etcd. Source it; it changes nothing by itself.

# capstan_require PACKAGE:NEED ... — installs each Debian PACKAGE whose NEED is missing. NEED
# is a command on the PATH, or an absolute path to a file the package ships (for example
# libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto). Every pair is remembered,
# so capstan_verify_requirements can check them all once the installs are done.
CAPSTAN_REQUIREMENTS=()
capstan_has() {
  case $1 in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
capstan_require() {
  local missing=() pair
  for pair in "$@"; do
    CAPSTAN_REQUIREMENTS+=("$pair")
    capstan_has "${pair#*:}" || missing+=("${pair%%:*}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# capstan_verify_requirements — fails with one line per missing tool or file (and the Debian
# package that provides it) if anything capstan_require was asked for is still missing, so a
# broken install stops the script before any build instead of failing deep inside one.
capstan_verify_requirements() {
  local pair missing=0
  for pair in "${CAPSTAN_REQUIREMENTS[@]}"; do
    if ! capstan_has "${pair#*:}"; then
      echo "missing after the install step: ${pair#*:} (Debian package ${pair%%:*})" >&2
      missing=1
    fi
  done
  if ! command -v cargo >/dev/null 2>&1; then
    echo "missing: cargo (install the Rust toolchain with rustup)" >&2
    missing=1
  fi
  if [ "$missing" -ne 0 ]; then
    echo "the tests need the tools above; install them (apt-get install <package>) and rerun" >&2
    return 1
  fi
}

# The protobuf compiler and its well-known types (google/protobuf/*.proto), which the build
# scripts of etcd-client and containerd-client need.
CAPSTAN_PROTOC=(protobuf-compiler:protoc libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto)

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
