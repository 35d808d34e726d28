//! Endpoints: ports default to `protocol: TCP`.

use serde_json::Value;

use super::KindStrategy;
use crate::registry::defaults::{each_object, ensure_map, set_default};

/// The rules of `v1` Endpoints.
pub(crate) struct EndpointsStrategy;

impl KindStrategy for EndpointsStrategy {
    fn apply_defaults(&self, endpoints: &mut Value) {
        default_endpoints(endpoints);
    }
}

fn default_endpoints(endpoints: &mut Value) {
    for subset in each_object(ensure_map(endpoints), "subsets") {
        for port in each_object(subset, "ports") {
            set_default(port, "protocol", "TCP");
        }
    }
}
