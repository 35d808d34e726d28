//! The API server's health endpoints and `/metrics` over real HTTP on loopback: readiness
//! follows the store (a store that can be switched off), every request is counted with
//! kube-apiserver's labels, watches are counted while they run, and `/metrics` needs
//! credentials where health does not.
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::testing::within;
use capstan_apiserver::http::layers::{ApiServerOptions, StaticTokens, UserInfo, SUPERUSER_GROUP};
use capstan_apiserver::http::ApiServer;
use capstan_apiserver::registry::Registry;
use capstan_store::memory::MemoryStore;
use capstan_store::{
    Error, RangeResponse, Result, Revision, Store, Txn, TxnResponse, WatchRequest, WatchStream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test's time limit.
const LIMIT: Duration = Duration::from_secs(30);

/// The memory store, unreachable while `down` is set, as etcd is when it is down.
struct SwitchableStore {
    inner: MemoryStore,
    down: AtomicBool,
}

impl SwitchableStore {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable {
                message: "connection refused".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for SwitchableStore {
    async fn range(&self, range: capstan_store::Range) -> Result<RangeResponse> {
        self.check()?;
        self.inner.range(range).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.check()?;
        self.inner.txn(txn).await
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        self.check()?;
        self.inner.watch(request).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.check()?;
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.check()?;
        self.inner.current_revision().await
    }
}

#[derive(Debug)]
struct Reply {
    code: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.0 exchange (so the body is not chunked and ends with the connection).
async fn request(address: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: capstan\r\n{extra}Content-Length: {}\r\nContent-Type: application/json\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        code,
        content_type,
        body: body.to_string(),
    }
}

async fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, "GET", path, "", "").await
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_store_is_unreachable_and_recovers_with_it() {
    within(LIMIT, async {
        let store = Arc::new(SwitchableStore {
            inner: MemoryStore::new(),
            down: AtomicBool::new(false),
        });
        let registry = Arc::new(Registry::new(store.clone()));
        let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();

        let ready = get(address, "/readyz").await;
        assert_eq!((ready.code, ready.body.as_str()), (200, "ok"));
        assert_eq!(ready.content_type, "text/plain; charset=utf-8");
        let verbose = get(address, "/readyz?verbose").await;
        assert_eq!(
            (verbose.code, verbose.body.as_str()),
            (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n")
        );
        assert_eq!(get(address, "/readyz/ping").await.body, "ok");
        assert_eq!(get(address, "/readyz/etcd").await.body, "ok");
        assert_eq!(get(address, "/readyz/nope").await.code, 404);

        store.down.store(true, Ordering::SeqCst);
        let not_ready = get(address, "/readyz").await;
        assert_eq!(
            (not_ready.code, not_ready.body.as_str()),
            (
                500,
                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
            )
        );
        let healthz = get(address, "/healthz?verbose").await;
        assert_eq!(
            (healthz.code, healthz.body.as_str()),
            (
                500,
                "[+]ping ok\n[-]etcd failed: reason withheld\nhealthz check failed\n"
            )
        );
        let etcd = get(address, "/readyz/etcd").await;
        assert_eq!(etcd.code, 500);
        assert_eq!(
            etcd.body,
            "internal server error: the store is unreachable: store unavailable: connection refused\n"
        );
        // Liveness does not follow the store: restarting would not bring it back.
        let live = get(address, "/livez?verbose").await;
        assert_eq!(
            (live.code, live.body.as_str()),
            (200, "[+]ping ok\nlivez check passed\n")
        );
        let excluded = get(address, "/readyz?verbose&exclude=etcd").await;
        assert_eq!(
            (excluded.code, excluded.body.as_str()),
            (
                200,
                "[+]ping ok\n[+]etcd excluded: ok\nreadyz check passed\n"
            )
        );

        store.down.store(false, Ordering::SeqCst);
        assert_eq!(get(address, "/readyz").await.code, 200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_watches_are_counted_with_kube_apiserver_labels() {
    within(LIMIT, async {
        let registry = capstan_apiserver::testing::registry();
        let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let address = server.address();
        let configmap = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"}}"#;
        let created = request(
            address,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "",
            configmap,
        )
        .await;
        assert_eq!(created.code, 201, "{created:?}");
        let duplicate = request(
            address,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "",
            configmap,
        )
        .await;
        assert_eq!(duplicate.code, 409);
        assert_eq!(
            get(address, "/api/v1/namespaces/default/configmaps").await.code,
            200
        );
        assert_eq!(
            get(address, "/api/v1/namespaces/default/configmaps/settings")
                .await
                .code,
            200
        );

        // A watch that the server ends after a second: counted while open, then as a WATCH.
        let watch = tokio::spawn(get(
            address,
            "/api/v1/configmaps?watch=1&timeoutSeconds=1",
        ));
        let watchers = "apiserver_registered_watchers{group=\"\",version=\"v1\",kind=\"ConfigMap\"}";
        let mut open = None;
        for _ in 0..100 {
            open = value(&get(address, "/metrics").await.body, watchers);
            if open == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(open, Some(1.0), "the watch is registered while it runs");
        assert_eq!(watch.await.unwrap().code, 200);

        let metrics = get(address, "/metrics").await;
        assert_eq!(metrics.code, 200);
        assert_eq!(
            metrics.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = metrics.body;
        let series = |verb: &str, scope: &str, code: u16| {
            format!(
                "apiserver_request_total{{verb=\"{verb}\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"configmaps\",subresource=\"\",scope=\"{scope}\",component=\"apiserver\",code=\"{code}\"}}"
            )
        };
        assert_eq!(value(&text, &series("POST", "resource", 201)), Some(1.0), "{text}");
        assert_eq!(value(&text, &series("POST", "resource", 409)), Some(1.0));
        assert_eq!(value(&text, &series("LIST", "namespace", 200)), Some(1.0));
        assert_eq!(value(&text, &series("GET", "resource", 200)), Some(1.0));
        assert_eq!(value(&text, &series("WATCH", "cluster", 200)), Some(1.0));
        assert_eq!(value(&text, watchers), Some(0.0), "the watch ended");
        let watch_duration = value(
            &text,
            "apiserver_request_duration_seconds_sum{verb=\"WATCH\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"configmaps\",subresource=\"\",scope=\"cluster\",component=\"apiserver\"}",
        )
        .unwrap();
        assert!(watch_duration >= 0.9, "a watch lasts until it ends: {watch_duration}");
        assert_eq!(
            value(
                &text,
                "apiserver_request_duration_seconds_count{verb=\"POST\",dry_run=\"\",group=\"\",version=\"v1\",resource=\"configmaps\",subresource=\"\",scope=\"resource\",component=\"apiserver\"}"
            ),
            Some(2.0)
        );
        assert!(
            value(
                &text,
                "apiserver_request_total{verb=\"GET\",dry_run=\"\",group=\"\",version=\"\",resource=\"\",subresource=\"/metrics\",scope=\"\",component=\"\",code=\"200\"}"
            )
            .unwrap()
                >= 1.0
        );
        assert_eq!(
            value(&text, "apiserver_current_inflight_requests{request_kind=\"mutating\"}"),
            Some(0.0)
        );
        // The scrape itself is in flight while it is encoded.
        assert_eq!(
            value(&text, "apiserver_current_inflight_requests{request_kind=\"readOnly\"}"),
            Some(1.0)
        );
        assert!(text.contains("# TYPE apiserver_request_duration_seconds histogram"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_credentials_and_health_does_not() {
    within(LIMIT, async {
        let options = ApiServerOptions::default()
            .authenticator(
                StaticTokens::new().with("secret", UserInfo::new("admin", [SUPERUSER_GROUP])),
            )
            .anonymous(false);
        let registry = capstan_apiserver::testing::registry();
        let server = ApiServer::bind_with(registry, "127.0.0.1:0".parse().unwrap(), options)
            .await
            .unwrap();
        let address = server.address();
        assert_eq!(get(address, "/metrics").await.code, 401);
        for path in ["/healthz", "/livez", "/readyz", "/readyz/ping", "/readyz/etcd"] {
            assert_eq!(get(address, path).await.code, 200, "{path}");
        }
        let scraped = request(
            address,
            "GET",
            "/metrics",
            "Authorization: Bearer secret\r\n",
            "",
        )
        .await;
        assert_eq!(scraped.code, 200);
        // The refusal was counted too.
        assert_eq!(
            value(
                &scraped.body,
                "apiserver_request_total{verb=\"GET\",dry_run=\"\",group=\"\",version=\"\",resource=\"\",subresource=\"/metrics\",scope=\"\",component=\"\",code=\"401\"}"
            ),
            Some(1.0)
        );
    })
    .await
}

/// A TCP relay to `target` that can be cut: every connection closed and no new one accepted,
/// as when etcd goes down.
#[cfg(feature = "etcd")]
struct Relay {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "etcd")]
impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { address, task }
    }

    /// Closes the listener and every relayed connection (the `JoinSet` aborts them).
    fn cut(&self) {
        self.task.abort();
    }
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_check_fails_while_etcd_is_unreachable() {
    use capstan_api::health::HealthCheck;
    use capstan_apiserver::metrics::StoreCheck;
    use capstan_store::etcd::EtcdStore;

    within(LIMIT, async {
        let endpoints = std::env::var(capstan_store::etcd::ENDPOINTS_ENV).unwrap_or_else(|_| {
            panic!(
                "this test needs a real etcd: run `scripts/test`, which starts one, or set {}",
                capstan_store::etcd::ENDPOINTS_ENV
            )
        });
        let first = endpoints.split(',').next().unwrap().trim();
        let target: SocketAddr = tokio::net::lookup_host(
            first
                .trim_start_matches("http://")
                .trim_start_matches("https://"),
        )
        .await
        .unwrap()
        .next()
        .unwrap();
        let relay = Relay::start(target).await;
        let store = EtcdStore::connect(&[format!("http://{}", relay.address)])
            .await
            .expect("etcd through the relay");
        let check = StoreCheck::new(Arc::new(store)).timeout(Duration::from_secs(2));
        assert_eq!(check.name(), "etcd");
        assert_eq!(check.check().await, Ok(()));
        relay.cut();
        let failed = check.check().await;
        assert!(failed.is_err(), "etcd is unreachable: {failed:?}");
    })
    .await
}
