//! `capstan`: one Capstan component per process (`capstan --help`), or the whole example
//! cluster in one (`capstan cluster`). The command lines live in `capstan_cluster::cli`; this
//! binary is the application that picks the Kubernetes API version (k8s-openapi's `latest`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    capstan_cluster::cli::main().await
}
