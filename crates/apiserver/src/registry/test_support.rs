//! Helpers shared by the registry's unit tests.

use std::time::Duration;

pub(crate) use capstan_api::testing::within;

/// How long one registry test may take, so a hung test fails instead of stalling the suite.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);
