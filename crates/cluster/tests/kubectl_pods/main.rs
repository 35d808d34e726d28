//! Everyday `kubectl` commands on Pods against the embedded cluster on the fakes, whose
//! containers run their commands through a busybox-like shell: `logs` (follow, tail, since,
//! timestamps, previous, containers, Deployments and selectors), `exec`, `attach`, `cp`,
//! `port-forward`, the service account credentials a Pod gets, the kubelet's own API, and
//! the errors and endings kubectl users see.
//!
//! Complements `pod_streams.rs` (plain logs, exec, exec -i, port-forward to a Pod, nodes
//! proxy, top). Needs `kubectl` and `curl` on the PATH (`scripts/test` installs them).

mod endings;
mod logs;
mod service_accounts;
mod streams;
mod support;
