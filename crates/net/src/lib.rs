//! Pod networking and the service proxy for Capstan.
//!
//! **Not implemented yet.** This crate reserves its place in the workspace and exports nothing.
//! The CNI-shaped `NetworkPlugin` SPI (real CNI plugins or an in-process fake) and the service
//! proxy with its iptables, nftables, ipvs and fake backends arrive with the networking issue.
//! `ARCHITECTURE.md` says what the crate will own and what it must not know.
