//! The Store conformance suite on `store::etcd`, against the real etcd named by
//! `CAPSTAN_ETCD_ENDPOINTS`.

mod support;

use std::sync::Arc;

use capstan_store::Store;

capstan_store::store_conformance_tests!(|| async {
    Arc::new(support::etcd_from_env().await) as Arc<dyn Store>
});
