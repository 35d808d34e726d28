# shellcheck shell=bash
# Setup for the CNI backend's tests (`capstan-net`, internal test feature `test-cni`): Debian's CNI plugins, iproute2
# for network namespaces, ping, and iptables for the portmap plugin. Source it after
# scripts/lib.sh; it changes nothing by itself.

# capstan_setup_net_cni — installs what is missing and exports CAPSTAN_CNI_PATH.
capstan_setup_net_cni() {
  capstan_require containernetworking-plugins:/usr/lib/cni/bridge iproute2:ip iputils-ping:ping \
    iptables:iptables
  export CAPSTAN_CNI_PATH=/usr/lib/cni
}
