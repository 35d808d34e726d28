# shellcheck shell=bash
# Setup for the cluster DNS tests (`capstan-net`, internal test feature `test-dns`): Debian's `dig` (dnsutils) to
# query the server from inside a network namespace, and iproute2 for the namespace and its veth
# pair. Source it after scripts/lib.sh; it changes nothing by itself.

# capstan_setup_net_dns — installs what is missing.
capstan_setup_net_dns() {
  capstan_require dnsutils:dig iproute2:ip
}
