# shellcheck shell=bash
# Setup for the service proxy's dataplane tests (`capstan-net`, internal test feature `test-dataplane`): they
# build network namespaces with iproute2, program them with iptables (Debian's default
# `iptables-nft` flavour) and nftables, serve HTTP from busybox `httpd`, and check the ipvs
# backend's rules with ipvsadm. Source it; it changes nothing by itself.

# capstan_net_proxy_setup — installs the tools the tests run from the PATH.
capstan_net_proxy_setup() {
  capstan_require iproute2:ip iptables:iptables-restore nftables:nft busybox-static:busybox ipvsadm:ipvsadm
}
