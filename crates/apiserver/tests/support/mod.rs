//! Code shared by the integration tests: each test file declares `mod support;`.
//!
//! Cargo compiles every file directly in `tests/` as a test binary of its own, and each of them
//! compiles this module again and uses only part of it, so what one binary leaves unused is not
//! dead code: hence the `allow` below.
#![allow(dead_code)]

pub(crate) mod kubectl;
