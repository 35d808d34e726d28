//! A whole Capstan cluster in one process, on the embedded defaults: the API server on
//! loopback with the in-memory store (kubeconfig written beside it), the controller manager
//! and the scheduler with leader election, and three nodes, each a kubelet on the fake
//! runtime and fake network with a service proxy on the fake backend.
//!
//! ```text
//! cargo run --release --example cluster                 # scenario, then serve until Ctrl-C
//! cargo run --release --example cluster -- --exit       # scenario, then exit
//! cargo run --release --example cluster -- --help       # backends, nodes, address, TLS, token
//! ```
//!
//! The scenario is seeds/000's: the `newkubia` Deployment with 5 replicas is created and
//! its Pods scheduled and run, then it is scaled to 3; a live table of nodes and Pods shows
//! the progress, and the Events are printed as `kubectl get events --watch` shows them.
//! Then the cluster keeps serving for `kubectl --kubeconfig capstan.kubeconfig ...` until
//! Ctrl-C, which stops every component cleanly.
//!
//! The same command line is `capstan cluster` (the `capstan-cluster` crate's binary).

use capstan::cluster::cli::{init_tracing, run_cluster, ClusterArgs};
use clap::Parser;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    init_tracing("error");
    run_cluster(ClusterArgs::parse()).await
}
