//! Helpers shared by the registry's unit tests.

use std::{future::Future, time::Duration};

/// Runs `future` with a deadline, so a hung test fails instead of stalling the suite.
pub(crate) async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the test took longer than 30 s")
}
