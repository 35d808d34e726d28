//! The API server as a cluster runs it: the registry on the chosen store, served over HTTP
//! (or HTTPS), with an optional bearer token for everyone who must authenticate, and a
//! kubeconfig written for kubectl and the other components.
//!
//! HTTPS (feature `tls`) serves the certificate files given, or, with only a certificate
//! directory, a CA and a serving certificate generated (or reused) there as kube-apiserver
//! does in its `--cert-dir` (see `capstan_apiserver::http::tls::selfsigned`). Over HTTPS
//! without a token, a random admin token is generated (kept in the certificate directory when
//! there is one). The kubeconfig then carries the CA and the token, so every client verifies
//! the server and authenticates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capstan_api::Client;
use capstan_apiserver::http::layers::{StaticTokens, UserInfo, SUPERUSER_GROUP};
use capstan_apiserver::http::pod_streams::KubeletClientConfig;
use capstan_apiserver::http::{ApiServer, ApiServerOptions, Kubeconfig};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
use capstan_apiserver::serviceaccount::{
    KeyError, ServiceAccountAdmission, ServiceAccountKeys, ServiceAccountTokens, TokenIssuer,
};
use capstan_store::Store;

use crate::options::StoreOption;

/// Why the API server did not start, or a component could not reach it.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The store could not be opened (etcd unreachable).
    #[error("opening the {store} store: {message}")]
    Store {
        /// The store asked for.
        store: StoreOption,
        /// Why not.
        message: String,
    },
    /// The address could not be bound, or the TLS material is unusable.
    #[error("serving on {address}: {source}")]
    Serve {
        /// The address.
        address: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Where.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// The client could not be built from the kubeconfig.
    #[error("connecting with {path}: {message}")]
    Connect {
        /// The kubeconfig.
        path: PathBuf,
        /// Why not.
        message: String,
    },
    /// The kubelet client's certificate, key or CA could not be read or used.
    #[error("kubelet client TLS: {0}")]
    KubeletClient(std::io::Error),
    /// A backend or option this build leaves out.
    #[error(transparent)]
    Option(#[from] crate::options::OptionError),
    /// The service account signing or verification keys could not be read, generated or
    /// kept.
    #[error("service account keys: {0}")]
    ServiceAccountKeys(#[from] KeyError),
    /// The self-signed certificates or the admin token could not be read, generated or
    /// written (feature `tls`).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    SelfSigned(#[from] capstan_apiserver::http::tls::selfsigned::SelfSignedError),
}

/// The API server's settings.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Where objects are kept.
    pub store: StoreOption,
    /// Where to listen (`--listen`); port 0 picks a free one.
    pub listen: SocketAddr,
    /// A bearer token every client must present (`--token`), which authenticates as
    /// `admin` in `system:masters`; anonymous requests are refused then. `None`: over plain
    /// HTTP everyone is anonymous and allowed (loopback development); over HTTPS a random
    /// token is generated, kept in [`cert_dir`](Self::cert_dir) when set.
    pub token: Option<String>,
    /// HTTPS: the serving certificate chain and key (PEM files) (`--tls-cert-file`,
    /// `--tls-private-key-file`; feature `tls`). The kubeconfig trusts the certificates of
    /// the chain file as CAs, which suits a self-signed certificate or a chain ending in its
    /// CA.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// HTTPS with a CA and a serving certificate generated in (or reused from) this directory
    /// when [`tls`](Self::tls) names no files (`--tls`, `--cert-dir`; feature `tls`), as
    /// kube-apiserver's `--cert-dir`. The serving certificate covers the listen address,
    /// `127.0.0.1`, `::1`, `localhost`, the `kubernetes` Service's names and its ClusterIP;
    /// the kubeconfig trusts the CA. A generated admin token is kept here too.
    pub cert_dir: Option<PathBuf>,
    /// The CA certificate and key (PEM files) that sign approved CertificateSigningRequests
    /// (`--cluster-signing-cert-file`, `--cluster-signing-key-file`, as
    /// kube-controller-manager's; feature `tls`, over HTTPS). `None`: the CA generated in
    /// [`cert_dir`](Self::cert_dir) signs them, and with certificate files nothing does.
    pub signing_ca: Option<(PathBuf, PathBuf)>,
    /// How often the store's history is compacted (`--etcd-compaction-interval`, as
    /// kube-apiserver's; zero: never). Default: 5 minutes.
    pub compaction_interval: std::time::Duration,
    /// Service accounts (default on): the `ServiceAccount` admission plugin (Pods get the
    /// `default` account and the projected `kube-api-access-*` token volume, and are refused
    /// for a missing account, so a controller manager running the service account controller
    /// must serve the cluster), `serviceaccounts/token` and the token authenticator.
    pub service_accounts: bool,
    /// The key service account tokens are signed with (`--service-account-signing-key-file`:
    /// PEM, RSA or P-256). `None`: one kept in [`cert_dir`](Self::cert_dir) as `sa.key`, or
    /// without a certificate directory one generated for this run only.
    pub service_account_signing_key_file: Option<PathBuf>,
    /// Further keys whose tokens verify (`--service-account-key-file`, repeatable): the
    /// public halves of keys rotated out.
    pub service_account_key_files: Vec<PathBuf>,
    /// The issuer of service account tokens (`--service-account-issuer`). `None`:
    /// `https://kubernetes.default.svc.cluster.local`.
    pub service_account_issuer: Option<String>,
    /// The longest lifetime a TokenRequest gets (`--service-account-max-token-expiration`).
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// The network namespace the cluster's nodes are on (`--cluster-netns`, an `ip netns`
    /// name or a path): the server dials kubelets from there, and serves
    /// [`advertise_address`](Self::advertise_address) there. `None`: the process's own.
    pub cluster_netns: Option<String>,
    /// Where Pods reach the server (`--advertise-address`): published in the `kubernetes`
    /// Service's endpoints and, when it is not the listen address, served as well (on the
    /// listen port, inside [`cluster_netns`](Self::cluster_netns) when set). `None`: the
    /// listen address.
    pub advertise_address: Option<std::net::IpAddr>,
    /// The certificate and key (PEM files) the server presents to kubelets
    /// (`--kubelet-client-certificate`, `--kubelet-client-key`; feature `tls`): kubelets are
    /// reached over HTTPS then.
    pub kubelet_client_certificate: Option<(PathBuf, PathBuf)>,
    /// The CA bundle (PEM file) kubelets' serving certificates are verified against
    /// (`--kubelet-certificate-authority`; feature `tls`): HTTPS too. Without it they are not
    /// verified, as kube-apiserver does.
    pub kubelet_certificate_authority: Option<PathBuf>,
}

impl ApiServerConfig {
    /// The in-memory store on `listen`, open to everyone.
    pub fn new(listen: SocketAddr) -> Self {
        ApiServerConfig {
            store: StoreOption::Memory,
            listen,
            token: None,
            tls: None,
            cert_dir: None,
            signing_ca: None,
            compaction_interval: capstan_apiserver::compactor::DEFAULT_COMPACTION_INTERVAL,
            service_accounts: true,
            service_account_signing_key_file: None,
            service_account_key_files: Vec::new(),
            service_account_issuer: None,
            service_account_max_token_expiration: None,
            cluster_netns: None,
            advertise_address: None,
            kubelet_client_certificate: None,
            kubelet_certificate_authority: None,
        }
    }

    /// The service account token issuer these settings ask for; see
    /// [`service_account_signing_key_file`](Self::service_account_signing_key_file).
    ///
    /// Errors: [`ApiServerError::ServiceAccountKeys`] for an unreadable or unusable key file,
    /// or a certificate directory where the key cannot be kept.
    pub fn service_account_issuer(&self) -> Result<TokenIssuer, ApiServerError> {
        let keys = match (&self.service_account_signing_key_file, &self.cert_dir) {
            (Some(file), _) => ServiceAccountKeys::load(file, &self.service_account_key_files)?,
            (None, dir) => {
                let mut keys = match dir {
                    Some(dir) => ServiceAccountKeys::load_or_generate(&dir.join("sa.key"))?,
                    None => ServiceAccountKeys::generate()?,
                };
                for file in &self.service_account_key_files {
                    let text = std::fs::read_to_string(file).map_err(|source| KeyError::Io {
                        path: file.clone(),
                        source,
                    })?;
                    keys = keys.with_verification_keys_pem(&text)?;
                }
                keys
            }
        };
        let mut issuer = TokenIssuer::new(keys);
        if let Some(url) = &self.service_account_issuer {
            issuer = issuer.issuer(url.clone());
        }
        if let Some(max) = self.service_account_max_token_expiration {
            issuer = issuer.max_expiration(max);
        }
        Ok(issuer)
    }
}

/// A serving API server and its registry.
pub struct RunningApiServer {
    /// The registry (the API's logic), for in-process clients.
    pub registry: Arc<Registry>,
    /// The HTTP server.
    pub server: ApiServer,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RunningApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApiServer")
            .field("url", &self.server.url())
            .finish_non_exhaustive()
    }
}

impl RunningApiServer {
    /// The server's URL, `http(s)://<address>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The URL clients on this machine reach the server at: [`url`](Self::url), with an
    /// unspecified listen address (`0.0.0.0`, `::`) replaced by loopback, which the
    /// self-signed serving certificate covers.
    pub fn client_url(&self) -> String {
        let mut address = self.server.address();
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if self.url().starts_with("https://") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{address}")
    }

    /// The bearer token clients present: the one configured, or the one generated for HTTPS.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The CA certificates (PEM) clients verify the server with, over HTTPS.
    pub fn certificate_authority(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    /// Writes a kubeconfig for this server at `path` (with the token and CA it needs), naming
    /// the server by its [`client_url`](Self::client_url).
    ///
    /// Errors: [`ApiServerError::Kubeconfig`].
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ApiServerError> {
        let mut kubeconfig = Kubeconfig::new(self.client_url());
        if let Some(token) = &self.token {
            kubeconfig = kubeconfig.token(token.clone());
        }
        if let Some(ca) = &self.ca_pem {
            kubeconfig = kubeconfig.certificate_authority(ca);
        }
        kubeconfig
            .write(path)
            .map_err(|source| ApiServerError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })
    }
}

/// Opens the store, builds the registry and serves it.
///
/// Errors: the store cannot be opened, the address bound, or the TLS material read or
/// generated (`ApiServerError::SelfSigned`, feature `tls`); a backend this build leaves out
/// ([`OptionError::NotBuilt`](crate::options::OptionError)).
pub async fn serve(config: &ApiServerConfig) -> Result<RunningApiServer, ApiServerError> {
    let store = open_store(&config.store).await?;
    let mut registry = Registry::new(store.clone()).add_admission(
        capstan_apiserver::registry::admission::PodSecurityAdmission::new(store.clone()),
    );
    if config.service_accounts {
        registry = registry.add_admission(ServiceAccountAdmission::new(store));
    }
    let registry = Arc::new(registry);
    // The server's own credential for kubelets (logs, exec, port-forward, metrics): a fresh
    // token each start, which the server authenticates as `kube-apiserver-kubelet-client` in
    // `system:masters` when kubelets review it.
    let mut options = ApiServerOptions::default()
        .compaction_interval(config.compaction_interval)
        .kubelet_client(kubelet_client(config)?);
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut token = config.token.clone();
    #[cfg(feature = "tls")]
    let ca_pem = match tls_material(config, &registry)? {
        None if config.signing_ca.is_some() => {
            return Err(ApiServerError::Serve {
                address: config.listen,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "--cluster-signing-cert-file needs HTTPS",
                ),
            })
        }
        None => None,
        Some((tls, ca_pem)) => {
            let tls = match &config.signing_ca {
                Some((cert, key)) => tls.with_signing_ca_files(cert, key).map_err(|source| {
                    ApiServerError::Serve {
                        address: config.listen,
                        source,
                    }
                })?,
                None => tls,
            };
            options = options.tls(tls);
            if token.is_none() {
                token = Some(admin_token(config.cert_dir.as_deref())?);
            }
            Some(ca_pem)
        }
    };
    #[cfg(not(feature = "tls"))]
    let ca_pem: Option<Vec<u8>> = match (&config.tls, &config.cert_dir) {
        (None, None) if config.signing_ca.is_none() => None,
        (files, dir) => {
            return Err(crate::options::OptionError::NotBuilt {
                flag: if files.is_some() {
                    "--tls-cert-file"
                } else if dir.is_some() {
                    "--tls"
                } else {
                    "--cluster-signing-cert-file"
                },
                backend: "tls",
                feature: "tls",
            }
            .into())
        }
    };
    match &token {
        Some(token) => {
            options = options
                .authenticator(
                    StaticTokens::new()
                        .with(token.clone(), UserInfo::new("admin", [SUPERUSER_GROUP])),
                )
                .anonymous(false);
        }
        None => {
            // Open to everyone: every component and user is anonymous, so anonymous requests
            // get the whole in-flight budget (there is no authenticated caller to keep slots
            // for). Kept small, the anonymous share made a busy cluster refuse its own
            // components with 429.
            let mut limits = options.limits;
            limits.max_anonymous_in_flight = limits.max_in_flight;
            options = options.limits(limits);
        }
    }
    if config.service_accounts {
        let issuer = config.service_account_issuer()?;
        options =
            options.service_account_tokens(ServiceAccountTokens::new(issuer, registry.clone()));
    }
    let mut listen = config.listen;
    if listen.port() == 0 && config.advertise_address.is_some() {
        // The advertise address is served on the listen port: pick it now.
        listen = std::net::TcpListener::bind(listen)
            .and_then(|listener| listener.local_addr())
            .map_err(|source| ApiServerError::Serve {
                address: config.listen,
                source,
            })?;
    }
    options = reach_nodes(config, listen, options).await?;
    let server = ApiServer::bind_with(registry.clone(), listen, options)
        .await
        .map_err(|source| ApiServerError::Serve {
            address: config.listen,
            source,
        })?;
    Ok(RunningApiServer {
        registry,
        server,
        token,
        ca_pem,
    })
}

/// How the server reaches kubelets: its generated token, and over HTTPS with the client
/// certificate and CA of `config` when given.
///
/// Errors: unreadable or unusable material ([`ApiServerError::KubeletClient`]), or a build
/// without the `tls` feature.
fn kubelet_client(config: &ApiServerConfig) -> Result<KubeletClientConfig, ApiServerError> {
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut client = KubeletClientConfig::with_generated_token();
    #[cfg(feature = "tls")]
    {
        if let Some((cert, key)) = &config.kubelet_client_certificate {
            client = client
                .with_client_certificate_files(cert, key)
                .map_err(ApiServerError::KubeletClient)?;
        }
        if let Some(ca) = &config.kubelet_certificate_authority {
            client = client
                .with_certificate_authority_file(ca)
                .map_err(ApiServerError::KubeletClient)?;
        }
    }
    #[cfg(not(feature = "tls"))]
    if config.kubelet_client_certificate.is_some() || config.kubelet_certificate_authority.is_some()
    {
        return Err(crate::options::OptionError::NotBuilt {
            flag: if config.kubelet_client_certificate.is_some() {
                "--kubelet-client-certificate"
            } else {
                "--kubelet-certificate-authority"
            },
            backend: "HTTPS to kubelets",
            feature: "tls",
        }
        .into());
    }
    Ok(client)
}

/// Serves Pods on the advertise address and dials kubelets from the cluster's network
/// namespace, as [`ApiServerConfig::cluster_netns`] and
/// [`ApiServerConfig::advertise_address`] ask (on `listen`'s port).
///
/// Errors: the advertise address cannot be bound (in the namespace).
async fn reach_nodes(
    config: &ApiServerConfig,
    listen: SocketAddr,
    mut options: ApiServerOptions,
) -> Result<ApiServerOptions, ApiServerError> {
    if let Some(netns) = &config.cluster_netns {
        let netns = netns.clone();
        let timeout = options.kubelet_client.connect_timeout;
        options.kubelet_client.dialer = Some(Arc::new(move |host: String, port: u16| {
            let netns = netns.clone();
            Box::pin(async move {
                let ip: std::net::IpAddr = host.parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{host}: kubelets in another network namespace are dialled by IP"),
                    )
                })?;
                capstan_net::netns::connect_tcp(&netns, SocketAddr::new(ip, port), timeout).await
            })
        }));
    }
    let Some(ip) = config.advertise_address else {
        return Ok(options);
    };
    let advertised = SocketAddr::new(ip, listen.port());
    options = options.advertise_address(advertised);
    let serve_error = |source| ApiServerError::Serve {
        address: advertised,
        source,
    };
    match &config.cluster_netns {
        Some(netns) => {
            let listener = capstan_net::netns::bind_tcp(netns, advertised)
                .await
                .map_err(serve_error)?;
            options = options.additional_listener(listener);
        }
        None if advertised != listen && !listen.ip().is_unspecified() => {
            let listener = std::net::TcpListener::bind(advertised).map_err(serve_error)?;
            options = options.additional_listener(listener);
        }
        None => {}
    }
    Ok(options)
}

/// The serving TLS configuration and the CA certificates (PEM) the kubeconfig trusts.
#[cfg(feature = "tls")]
type TlsMaterial = (capstan_apiserver::http::tls::TlsConfig, Vec<u8>);

/// The serving TLS configuration and the CA PEM the kubeconfig trusts: from the certificate
/// files, else self-signed in the certificate directory; `None` for plain HTTP.
#[cfg(feature = "tls")]
fn tls_material(
    config: &ApiServerConfig,
    registry: &Registry,
) -> Result<Option<TlsMaterial>, ApiServerError> {
    use capstan_apiserver::http::tls::selfsigned::{CertDir, ServingNames};
    use capstan_apiserver::http::tls::TlsConfig;
    let serve_error = |source| ApiServerError::Serve {
        address: config.listen,
        source,
    };
    match (&config.tls, &config.cert_dir) {
        (Some((cert, key)), _) => {
            let tls = TlsConfig::from_pem_files(cert, key).map_err(serve_error)?;
            Ok(Some((tls, std::fs::read(cert).map_err(serve_error)?)))
        }
        (None, None) => Ok(None),
        (None, Some(dir)) => {
            let dir = CertDir::new(dir);
            let names = ServingNames::kubernetes(config.listen.ip())
                .ip(registry.service_cidr().kubernetes_service_ip().into());
            let certificates = dir.load_or_generate(&names)?;
            tracing::info!(
                cert_dir = %dir.path().display(),
                origin = ?certificates.origin(),
                "self-signed serving certificate"
            );
            let tls = certificates.tls_config().map_err(serve_error)?;
            Ok(Some((tls, certificates.ca_pem().as_bytes().to_vec())))
        }
    }
}

/// The admin token for HTTPS without a configured one: kept in the certificate directory, or
/// random for this run only.
#[cfg(feature = "tls")]
fn admin_token(cert_dir: Option<&Path>) -> Result<String, ApiServerError> {
    use capstan_apiserver::http::tls::selfsigned::{random_token, CertDir};
    Ok(match cert_dir {
        Some(dir) => CertDir::new(dir).load_or_generate_token()?,
        None => random_token()?,
    })
}

async fn open_store(store: &StoreOption) -> Result<Arc<dyn Store>, ApiServerError> {
    match store {
        StoreOption::Memory => Ok(Arc::new(capstan_store::memory::MemoryStore::new())),
        #[cfg(feature = "etcd")]
        StoreOption::Etcd(endpoints) => capstan_store::etcd::EtcdStore::connect(endpoints)
            .await
            .map(|etcd| Arc::new(etcd) as Arc<dyn Store>)
            .map_err(|e| ApiServerError::Store {
                store: store.clone(),
                message: e.to_string(),
            }),
        #[cfg(not(feature = "etcd"))]
        StoreOption::Etcd(_) => Err(crate::options::OptionError::NotBuilt {
            flag: "--store",
            backend: "etcd",
            feature: "etcd",
        }
        .into()),
    }
}

/// A client for the API server the kubeconfig at `path` names, as every component but the
/// API server itself talks to it: over HTTP(S), never to the store.
///
/// Errors: [`ApiServerError::Connect`] when the kubeconfig is unreadable or incomplete.
pub fn connect(path: &Path) -> Result<Arc<dyn Client>, ApiServerError> {
    RemoteClient::from_kubeconfig(path)
        .map(|client| Arc::new(client) as Arc<dyn Client>)
        .map_err(|e| ApiServerError::Connect {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}
