//! Shared helpers of the real-etcd tests.

#![allow(dead_code, unreachable_pub)]

use capstan_store::etcd::{endpoints_from_env, EtcdStore, ENDPOINTS_ENV};

/// How to get an etcd for these tests, printed when none is reachable.
pub const HOW_TO_START_ETCD: &str = "run `scripts/test`, which installs etcd (Debian's \
etcd-server), starts it on a free loopback port and exports CAPSTAN_ETCD_ENDPOINTS; or start \
one yourself, e.g. `etcd --data-dir $(mktemp -d) --listen-client-urls http://127.0.0.1:2379 \
--advertise-client-urls http://127.0.0.1:2379`, then `export \
CAPSTAN_ETCD_ENDPOINTS=http://127.0.0.1:2379`";

/// Connects to the etcd named by the environment, or fails the test saying how to start one.
pub async fn etcd_from_env() -> EtcdStore {
    let Some(endpoints) = endpoints_from_env() else {
        panic!(
            "the etcd tests need a real etcd, but {ENDPOINTS_ENV} is not set: {HOW_TO_START_ETCD}"
        );
    };
    match EtcdStore::connect(&endpoints).await {
        Ok(store) => store,
        Err(e) => panic!("cannot reach etcd at {endpoints:?} ({e}): {HOW_TO_START_ETCD}"),
    }
}
