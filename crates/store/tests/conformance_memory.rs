//! The Store conformance suite on `store::memory`.

use std::sync::Arc;

use capstan_store::{memory::MemoryStore, Store};

capstan_store::store_conformance_tests!(|| async {
    Arc::new(MemoryStore::new()) as Arc<dyn Store>
});
