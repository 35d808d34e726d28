//! Container runtimes for Capstan's node agent.
//!
//! **Not implemented yet.** This crate reserves its place in the workspace and exports nothing.
//! The CRI-shaped `ContainerRuntime` SPI with a deterministic `fake` backend and a real
//! `containerd` backend arrive with the node-side issue. `ARCHITECTURE.md` says what the crate
//! will own and what it must not know.
