//! Writing kubeconfig files: a server, how to trust it, and how its user authenticates.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use serde_json::json;

/// A kubeconfig with one cluster, user and context, all named `capstan`, being built.
///
/// The cluster is the server URL, plus for `https` the CA that signs its serving certificate
/// (`certificate-authority-data`, base64 PEM). The user carries a bearer token, a client
/// certificate and key (`client-certificate-data`, `client-key-data`), both, or nothing. The
/// context's namespace is `default` unless set. Nothing is checked here: a kubeconfig for a
/// server that does not exist yet is fine.
///
/// ```
/// use capstan_apiserver::http::Kubeconfig;
///
/// let yaml = Kubeconfig::new("https://127.0.0.1:6443")
///     .certificate_authority("-----BEGIN CERTIFICATE-----\n...")
///     .token("s3cret")
///     .to_yaml();
/// assert!(yaml.contains("certificate-authority-data:"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Kubeconfig {
    server: String,
    namespace: Option<String>,
    certificate_authority: Option<Vec<u8>>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
    token: Option<String>,
    client_certificate: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field(
                "certificate_authority",
                &self.certificate_authority.is_some(),
            )
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("tls_server_name", &self.tls_server_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certificate", &self.client_certificate.is_some())
            .finish()
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Kubeconfig {
    /// A kubeconfig for the API server at `server`, e.g. `https://127.0.0.1:6443`.
    pub fn new(server: impl Into<String>) -> Self {
        Kubeconfig {
            server: server.into(),
            ..Default::default()
        }
    }

    /// Trusts the CA certificates in `pem` (PEM) for the server's certificate.
    pub fn certificate_authority(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.certificate_authority = Some(pem.as_ref().to_vec());
        self
    }

    /// Skips verifying the server's certificate (`insecure-skip-tls-verify: true`). For
    /// throwaway test servers only.
    pub fn insecure_skip_tls_verify(mut self) -> Self {
        self.insecure_skip_tls_verify = true;
        self
    }

    /// Verifies the server's certificate for `name` rather than the URL's host
    /// (`tls-server-name`).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Authenticates with the bearer `token`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticates with a client certificate (PEM, leaf first) and its private key (PEM).
    pub fn client_certificate(
        mut self,
        certificate_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        self.client_certificate =
            Some((certificate_pem.as_ref().to_vec(), key_pem.as_ref().to_vec()));
        self
    }

    /// Sets the context's default namespace (`default` unless set).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The kubeconfig as YAML.
    pub fn to_yaml(&self) -> String {
        let mut cluster = json!({ "server": self.server });
        if let Some(pem) = &self.certificate_authority {
            cluster["certificate-authority-data"] = base64(pem).into();
        }
        if self.insecure_skip_tls_verify {
            cluster["insecure-skip-tls-verify"] = true.into();
        }
        if let Some(name) = &self.tls_server_name {
            cluster["tls-server-name"] = name.clone().into();
        }
        let mut user = json!({});
        if let Some(token) = &self.token {
            user["token"] = token.clone().into();
        }
        if let Some((certificate, key)) = &self.client_certificate {
            user["client-certificate-data"] = base64(certificate).into();
            user["client-key-data"] = base64(key).into();
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "capstan", "cluster": cluster }],
            "users": [{ "name": "capstan", "user": user }],
            "contexts": [{
                "name": "capstan",
                "context": {
                    "cluster": "capstan",
                    "user": "capstan",
                    "namespace": self.namespace.as_deref().unwrap_or("default"),
                },
            }],
            "current-context": "capstan",
        });
        serde_yaml_ng::to_string(&config).expect("a JSON value always serializes as YAML")
    }

    /// Writes the kubeconfig at `path`, replacing any file there. On Unix a new file is
    /// readable by its owner only, since it may hold a token or a private key.
    ///
    /// Errors: the file cannot be written.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(self.to_yaml().as_bytes())?;
        file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_kubeconfig_carries_base64_pem_for_the_ca_and_the_client_certificate() {
        let yaml = Kubeconfig::new("https://h:1")
            .certificate_authority("CA PEM")
            .client_certificate("CERT PEM", "KEY PEM")
            .namespace("prod")
            .to_yaml();
        let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let cluster = &value["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://h:1");
        assert_eq!(cluster["certificate-authority-data"], base64(b"CA PEM"));
        let user = &value["users"][0]["user"];
        assert_eq!(user["client-certificate-data"], base64(b"CERT PEM"));
        assert_eq!(user["client-key-data"], base64(b"KEY PEM"));
        assert!(user.get("token").is_none());
        assert_eq!(value["contexts"][0]["context"]["namespace"], "prod");
        assert_eq!(value["current-context"], "capstan");
    }

    #[test]
    fn tokens_are_quoted_and_never_printed() {
        let config = Kubeconfig::new("https://h:1").token("a: b # c");
        let value: serde_json::Value = serde_yaml_ng::from_str(&config.to_yaml()).unwrap();
        assert_eq!(value["users"][0]["user"]["token"], "a: b # c");
        assert!(!format!("{config:?}").contains("a: b"));
    }
}
