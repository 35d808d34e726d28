//! The part of a kubeconfig file the remote client reads: the current context's cluster
//! `server` with its TLS settings (`certificate-authority(-data)`, `insecure-skip-tls-verify`,
//! `tls-server-name`), its user's bearer `token` (or `tokenFile`) and client certificate
//! (`client-certificate(-data)`, `client-key(-data)`), and its default namespace.
//!
//! File paths are relative to the kubeconfig's directory, as kubectl reads them; `-data`
//! fields (base64 PEM) win over files.

use std::path::Path;

use base64::Engine;
use capstan_api::{Error, Result};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
    namespace: Option<String>,
}

/// What the current context says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) server: String,
    pub(super) token: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) tls: TlsFiles,
}

/// The TLS material of the current context, read and decoded (PEM bytes). Used with the
/// `tls` feature; without it an `https` server is refused anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(super) struct TlsFiles {
    pub(super) certificate_authority: Option<Vec<u8>>,
    pub(super) client_certificate: Option<Vec<u8>>,
    pub(super) client_key: Option<Vec<u8>>,
    pub(super) insecure_skip_tls_verify: bool,
    pub(super) tls_server_name: Option<String>,
}

/// The bytes of a `<field>-data` (base64) or, failing that, of the `<field>` file.
fn material(
    path: &Path,
    field: &str,
    data: Option<String>,
    file: Option<String>,
) -> Result<Option<Vec<u8>>> {
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| invalid(path, format!("{field}-data is not base64: {e}")));
    }
    match file.filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(file) => {
            let file = path.parent().unwrap_or(Path::new("")).join(file);
            std::fs::read(&file)
                .map(Some)
                .map_err(|e| invalid(path, format!("reading {field} {}: {e}", file.display())))
        }
    }
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::bad_request(format!("kubeconfig {}: {message}", path.display()))
}

/// Reads the current context of the kubeconfig at `path`.
///
/// Errors: [`Error::BadRequest`] when the file cannot be read or parsed, has no current
/// context, or the context names a cluster (or user) it does not define.
pub(super) fn load(path: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Target> {
    let config: Kubeconfig = serde_yaml_ng::from_str(text).map_err(|e| invalid(path, e))?;
    let current = config
        .current_context
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid(path, "no current-context is set"))?;
    let context = config
        .contexts
        .into_iter()
        .find(|c| c.name == current)
        .ok_or_else(|| invalid(path, format!("the context {current:?} is not defined")))?
        .value
        .unwrap_or_default();
    let cluster_name = context
        .cluster
        .ok_or_else(|| invalid(path, format!("the context {current:?} names no cluster")))?;
    let cluster = config
        .clusters
        .into_iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| invalid(path, format!("the cluster {cluster_name:?} is not defined")))?
        .value
        .unwrap_or_default();
    let server = cluster
        .server
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(path, format!("the cluster {cluster_name:?} has no server")))?;
    let mut tls = TlsFiles {
        certificate_authority: material(
            path,
            "certificate-authority",
            cluster.certificate_authority_data,
            cluster.certificate_authority,
        )?,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
        tls_server_name: cluster.tls_server_name.filter(|n| !n.is_empty()),
        ..TlsFiles::default()
    };
    let token = match context.user {
        None => None,
        Some(user_name) => {
            let user = config
                .users
                .into_iter()
                .find(|u| u.name == user_name)
                .ok_or_else(|| invalid(path, format!("the user {user_name:?} is not defined")))?
                .value
                .unwrap_or_default();
            tls.client_certificate = material(
                path,
                "client-certificate",
                user.client_certificate_data,
                user.client_certificate,
            )?;
            tls.client_key = material(path, "client-key", user.client_key_data, user.client_key)?;
            if tls.client_certificate.is_some() != tls.client_key.is_some() {
                return Err(invalid(
                    path,
                    format!(
                        "the user {user_name:?} needs both a client certificate and a client key"
                    ),
                ));
            }
            match (user.token, user.token_file) {
                (Some(token), _) if !token.is_empty() => Some(token),
                (_, Some(file)) if !file.is_empty() => {
                    let file = path.parent().unwrap_or(Path::new("")).join(file);
                    let token = std::fs::read_to_string(&file).map_err(|e| {
                        invalid(path, format!("reading tokenFile {}: {e}", file.display()))
                    })?;
                    Some(token.trim().to_string())
                }
                _ => None,
            }
        }
    };
    Ok(Target {
        server,
        token,
        namespace: context.namespace.filter(|n| !n.is_empty()),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_picks_server_token_and_namespace() {
        let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: http://a:1\n- name: b\n  cluster:\n    server: http://b:2\nusers:\n- name: u\n  user:\n    token: secret\ncontexts:\n- name: one\n  context:\n    cluster: a\n- name: two\n  context:\n    cluster: b\n    user: u\n    namespace: prod\ncurrent-context: two\n";
        assert_eq!(
            parse(Path::new("k"), text).unwrap(),
            Target {
                server: "http://b:2".into(),
                token: Some("secret".into()),
                namespace: Some("prod".into()),
                tls: TlsFiles::default(),
            }
        );
    }

    #[test]
    fn tls_material_comes_from_data_fields_or_files_beside_the_kubeconfig() {
        let dir = std::env::temp_dir().join(format!("capstan-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "CA FROM FILE").unwrap();
        std::fs::write(dir.join("client.key"), "KEY FROM FILE").unwrap();
        let path = dir.join("config");
        let text = "clusters:\n- name: c\n  cluster:\n    server: https://h:1\n    certificate-authority: ca.crt\n    tls-server-name: api.internal\nusers:\n- name: u\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key: client.key\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";
        let target = parse(&path, text).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            target.tls,
            TlsFiles {
                certificate_authority: Some(b"CA FROM FILE".to_vec()),
                client_certificate: Some(b"CERT".to_vec()),
                client_key: Some(b"KEY FROM FILE".to_vec()),
                insecure_skip_tls_verify: false,
                tls_server_name: Some("api.internal".into()),
            }
        );
    }

    #[test]
    fn a_client_certificate_without_its_key_is_a_bad_request() {
        let text = "clusters:\n- name: c\n  cluster:\n    server: https://h:1\nusers:\n- name: u\n  user:\n    client-certificate-data: Q0VSVA==\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n";
        let error = parse(Path::new("k"), text).unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        assert!(error.to_string().contains("client key"), "{error}");
    }

    #[test]
    fn a_missing_context_is_a_bad_request() {
        let text = "clusters: []\ncontexts: []\ncurrent-context: nope\n";
        let error = parse(Path::new("k"), text).unwrap_err();
        assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
        assert!(error.to_string().contains("nope"), "{error}");
    }

    #[test]
    fn an_empty_user_has_no_token() {
        let text = crate::http::kubeconfig("http://127.0.0.1:1");
        let target = parse(Path::new("k"), &text).unwrap();
        assert_eq!(target.token, None);
        assert_eq!(target.namespace.as_deref(), Some("default"));
    }
}
