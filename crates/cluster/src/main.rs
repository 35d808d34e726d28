//! `capstan`: one Capstan component per process (`capstan --help`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    capstan_cluster::cli::main().await
}
