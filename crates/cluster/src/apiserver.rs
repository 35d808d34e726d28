//! The API server as a cluster runs it: the registry on the chosen store, served over HTTP
//! (or HTTPS), with an optional bearer token for everyone who must authenticate, and a
//! kubeconfig written for kubectl and the other components.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capstan_api::Client;
use capstan_apiserver::http::layers::{StaticTokens, UserInfo, SUPERUSER_GROUP};
use capstan_apiserver::http::{ApiServer, ApiServerOptions};
use capstan_apiserver::registry::Registry;
use capstan_apiserver::remote::RemoteClient;
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
    /// A backend or option this build leaves out.
    #[error(transparent)]
    Option(#[from] crate::options::OptionError),
}

/// The API server's settings.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Where objects are kept.
    pub store: StoreOption,
    /// Where to listen (`--listen`); port 0 picks a free one.
    pub listen: SocketAddr,
    /// A bearer token every client must present (`--token`), which authenticates as
    /// `admin` in `system:masters`; anonymous requests are refused then. `None`: everyone is
    /// anonymous and allowed (loopback development).
    pub token: Option<String>,
    /// HTTPS: the serving certificate chain and key (PEM files) (`--tls-cert-file`,
    /// `--tls-private-key-file`; feature `tls`). The kubeconfig trusts the chain's first
    /// certificate as its CA, which suits a self-signed certificate.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ApiServerConfig {
    /// The in-memory store on `listen`, open to everyone.
    pub fn new(listen: SocketAddr) -> Self {
        ApiServerConfig {
            store: StoreOption::Memory,
            listen,
            token: None,
            tls: None,
        }
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

    /// Writes a kubeconfig for this server at `path` (with the token and CA it needs).
    ///
    /// Errors: [`ApiServerError::Kubeconfig`].
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ApiServerError> {
        let mut kubeconfig = self.server.kubeconfig();
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
/// Errors: the store cannot be opened, the address bound or the TLS material read; a
/// backend this build leaves out ([`OptionError::NotBuilt`](crate::options::OptionError)).
pub async fn serve(config: &ApiServerConfig) -> Result<RunningApiServer, ApiServerError> {
    let store = open_store(&config.store).await?;
    let registry = Arc::new(Registry::new(store));
    let mut options = ApiServerOptions::default();
    if let Some(token) = &config.token {
        options = options
            .authenticator(
                StaticTokens::new().with(token.clone(), UserInfo::new("admin", [SUPERUSER_GROUP])),
            )
            .anonymous(false);
    }
    let ca_pem = match &config.tls {
        None => None,
        #[cfg(feature = "tls")]
        Some((cert, key)) => {
            let serve_error = |source| ApiServerError::Serve {
                address: config.listen,
                source,
            };
            let tls = capstan_apiserver::http::tls::TlsConfig::from_pem_files(cert, key)
                .map_err(serve_error)?;
            options = options.tls(tls);
            Some(std::fs::read(cert).map_err(serve_error)?)
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => {
            return Err(crate::options::OptionError::NotBuilt {
                flag: "--tls-cert-file",
                backend: "tls",
                feature: "tls",
            }
            .into())
        }
    };
    let server = ApiServer::bind_with(registry.clone(), config.listen, options)
        .await
        .map_err(|source| ApiServerError::Serve {
            address: config.listen,
            source,
        })?;
    Ok(RunningApiServer {
        registry,
        server,
        token: config.token.clone(),
        ca_pem,
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
