//! The API server's Prometheus series, named and labelled as kube-apiserver's, and its
//! store health check.
//!
//! | series | labels |
//! |---|---|
//! | `apiserver_request_total` | `verb`, `dry_run`, `group`, `version`, `resource`, `subresource`, `scope`, `component`, `code` |
//! | `apiserver_request_duration_seconds` (histogram) | the same but `code` |
//! | `apiserver_current_inflight_requests` | `request_kind` (`readOnly`, `mutating`) |
//! | `apiserver_longrunning_requests` | `verb`, `group`, `version`, `resource`, `subresource`, `scope`, `component` |
//! | `apiserver_registered_watchers` | `group`, `version`, `kind` |
//!
//! Verbs are kube-apiserver's: the HTTP method for non-resource paths (`GET /healthz`), else
//! `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH` (`APPLY` for a server-side apply patch),
//! `DELETE`, `DELETECOLLECTION`. Scopes are `resource` (a named object, or a create),
//! `namespace`, `cluster`, or empty for non-resource paths, where `subresource` is the path.
//! Long-running requests (watches) are counted when they end, with their whole duration.
//!
//! The `http` layer that records them is `http::observe::MetricsLayer` (feature `server`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_api::health::HealthCheck;
use capstan_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// kube-apiserver's `apiserver_request_duration_seconds` buckets.
pub const REQUEST_DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// What one request was, as the metrics label it.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// kube-apiserver's verb, e.g. `LIST`.
    pub verb: String,
    /// `All` for a dry run, else empty.
    pub dry_run: String,
    /// The API group (empty for the core group).
    pub group: String,
    /// The API version.
    pub version: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource; for a non-resource request, its path.
    pub subresource: String,
    /// `resource`, `namespace`, `cluster` or empty.
    pub scope: String,
    /// `apiserver`.
    pub component: String,
}

/// A request's labels and its status code: the labels are moved in, not copied, so a request
/// costs one family lookup per series and no label copies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodedLabels {
    #[prometheus(flatten)]
    labels: RequestLabels,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LongRunningLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InflightLabels {
    request_kind: String,
}

/// The labels of `apiserver_registered_watchers`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatcherLabels {
    /// The API group.
    pub group: String,
    /// The API version.
    pub version: String,
    /// The kind watched.
    pub kind: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

/// The API server's request metrics; cheap to clone (clones share the series).
/// [`register`](Self::register) them into a registry and give them to the server
/// (`ApiServerOptions::metrics`).
#[derive(Clone, Debug)]
pub struct ApiServerMetrics {
    requests: Family<CodedLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    inflight: Family<InflightLabels, Gauge>,
    /// The two `apiserver_current_inflight_requests` series, looked up once.
    inflight_read_only: Gauge,
    inflight_mutating: Gauge,
    longrunning: Family<LongRunningLabels, Gauge>,
    watchers: Family<WatcherLabels, Gauge>,
}

impl Default for ApiServerMetrics {
    fn default() -> Self {
        let inflight: Family<InflightLabels, Gauge> = Family::default();
        // Both kinds are always reported, as kube-apiserver does.
        let gauge = |kind: &str| {
            inflight
                .get_or_create(&InflightLabels {
                    request_kind: kind.to_string(),
                })
                .clone()
        };
        let (inflight_read_only, inflight_mutating) = (gauge("readOnly"), gauge("mutating"));
        ApiServerMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            inflight,
            inflight_read_only,
            inflight_mutating,
            longrunning: Family::default(),
            watchers: Family::default(),
        }
    }
}

impl ApiServerMetrics {
    /// No request seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the `apiserver_*` series (see the [module docs](self)) into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "apiserver_request",
            "Requests answered, by verb, dry run, group, version, resource, subresource, scope, component and HTTP status code",
            self.requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Seconds from a request's arrival to its answer (to its end for long-running requests), by verb, dry run, group, version, resource, subresource, scope and component",
            self.durations.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests being served now, read-only or mutating (long-running requests excluded)",
            self.inflight.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Long-running requests (watches) open now, by verb, group, version, resource, subresource, scope and component",
            self.longrunning.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Watches open now, by group, version and kind",
            self.watchers.clone(),
        );
    }

    /// Counts a finished request answered with `code` after `took`.
    pub fn record(&self, labels: RequestLabels, code: u16, took: Duration) {
        let coded = CodedLabels { labels, code };
        self.requests.get_or_create(&coded).inc();
        self.durations
            .get_or_create(&coded.labels)
            .observe(took.as_secs_f64());
    }

    /// The gauge of requests in flight of `kind` (`readOnly` or `mutating`).
    pub fn inflight(&self, kind: &str) -> Gauge {
        match kind {
            "readOnly" => self.inflight_read_only.clone(),
            "mutating" => self.inflight_mutating.clone(),
            _ => self
                .inflight
                .get_or_create(&InflightLabels {
                    request_kind: kind.to_string(),
                })
                .clone(),
        }
    }

    /// The gauge of long-running requests like `labels`.
    pub fn longrunning(&self, labels: &RequestLabels) -> Gauge {
        self.longrunning
            .get_or_create(&LongRunningLabels {
                verb: labels.verb.clone(),
                group: labels.group.clone(),
                version: labels.version.clone(),
                resource: labels.resource.clone(),
                subresource: labels.subresource.clone(),
                scope: labels.scope.clone(),
                component: labels.component.clone(),
            })
            .clone()
    }

    /// The gauge of watchers of `labels`' kind.
    pub fn watchers(&self, labels: &WatcherLabels) -> Gauge {
        self.watchers.get_or_create(labels).clone()
    }

    /// How many requests like `labels` were answered with `code` so far.
    pub fn requests(&self, labels: &RequestLabels, code: u16) -> u64 {
        let coded = CodedLabels {
            labels: labels.clone(),
            code,
        };
        self.requests.get_or_create(&coded).get()
    }
}

/// How long the store check waits for the store: kube-apiserver's etcd health check uses
/// the same bound by default.
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The API server's store health check, named `etcd` as kube-apiserver names it (whatever
/// the backend): it asks the store for its current revision, which on etcd is a round trip,
/// and fails when that errs or takes longer than its timeout.
#[derive(Clone)]
pub struct StoreCheck {
    store: Arc<dyn Store>,
    timeout: Duration,
}

impl std::fmt::Debug for StoreCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCheck")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StoreCheck {
    /// A check of `store`, with [`STORE_CHECK_TIMEOUT`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreCheck {
            store,
            timeout: STORE_CHECK_TIMEOUT,
        }
    }

    /// Sets how long the store may take to answer.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl HealthCheck for StoreCheck {
    fn name(&self) -> &str {
        "etcd"
    }

    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.store.current_revision()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("the store is unreachable: {error}")),
            Err(_) => Err(format!(
                "the store did not answer within {:?}",
                self.timeout
            )),
        }
    }
}

#[cfg(all(test, feature = "etcd", feature = "server"))]
mod etcd_readiness_tests {
    //! `/readyz` and `/healthz` of a server on a real etcd that this test starts and stops.

    use std::net::{SocketAddr, TcpListener};
    use std::process::{Child, Command, Stdio};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::http::ApiServer;
    use crate::registry::Registry;

    /// A one-member etcd on free loopback ports, killed (and its data removed) on drop.
    struct Etcd {
        child: Child,
        dir: std::path::PathBuf,
        url: String,
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port")
    }

    fn start_etcd() -> Etcd {
        let dir = std::env::temp_dir().join(format!("capstan-readyz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let binary = std::env::var("CAPSTAN_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(binary)
            .args(["--name", "readyz", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("readyz={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the etcd binary (set CAPSTAN_ETCD_BIN, or put etcd on the PATH)");
        Etcd { child, dir, url }
    }

    async fn get(address: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!("GET {path} HTTP/1.0\r\nHost: capstan\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, body.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_fails_with_kube_apiservers_detail_once_etcd_is_stopped() {
        capstan_api::testing::within(std::time::Duration::from_secs(60), async {
            let mut etcd = start_etcd();
            let store = capstan_api::testing::eventually_some(
                std::time::Duration::from_secs(20),
                "etcd answers",
                || {
                    let url = etcd.url.clone();
                    async move { capstan_store::etcd::EtcdStore::connect(&[url]).await.ok() }
                },
            )
            .await;
            let registry = std::sync::Arc::new(Registry::new(std::sync::Arc::new(store)));
            let server = ApiServer::bind(registry, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let address = server.address();
            assert_eq!(get(address, "/readyz").await, (200, "ok".into()));
            assert_eq!(
                get(address, "/readyz?verbose").await,
                (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".into())
            );

            etcd.child.kill().unwrap();
            etcd.child.wait().unwrap();
            assert_eq!(
                get(address, "/readyz?verbose").await,
                (
                    500,
                    "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n".into()
                )
            );
            let (code, body) = get(address, "/healthz?verbose").await;
            assert_eq!(code, 500);
            assert!(body.contains("[-]etcd failed: reason withheld\n"), "{body}");
            assert_eq!(get(address, "/livez").await, (200, "ok".into()));
        })
        .await;
    }
}
