//! List-watch for Capstan components.
//!
//! **Not implemented yet.** This crate reserves its place in the workspace and exports nothing.
//! The `Watch` SPI (a typed list+watch source), the reflector, informer caches with indexes,
//! shared informers and the work queue arrive with the list-watch issue. `ARCHITECTURE.md` says
//! what the crate will own and what it must not know.
