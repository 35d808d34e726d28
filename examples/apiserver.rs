//! The API server on the in-memory store, for `kubectl`.
//!
//! ```text
//! cargo run --release --example apiserver -- [ADDRESS] [KUBECONFIG]
//! kubectl --kubeconfig ./capstan.kubeconfig apply -f examples/manifests/newkubia-deployment.yaml
//! ```
//!
//! ADDRESS defaults to `127.0.0.1:6443`, KUBECONFIG to `./capstan.kubeconfig`. Only the API
//! server runs: objects are stored, listed and watched, but nothing acts on them. The
//! `cluster` example adds the controllers and fake nodes.

use capstan::apiserver::http::ApiServer;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:6443".into())
        .parse()?;
    let kubeconfig = args.next().unwrap_or_else(|| "capstan.kubeconfig".into());
    let registry = capstan::apiserver::testing::registry();
    let server = ApiServer::bind(registry, address).await?;
    server.write_kubeconfig(kubeconfig.as_ref())?;
    println!("serving the Kubernetes API at {}", server.url());
    println!("kubectl --kubeconfig {kubeconfig} get pods");
    tokio::select! {
        () = server.wait() => {}
        _ = tokio::signal::ctrl_c() => println!("shutting down"),
    }
    Ok(())
}
