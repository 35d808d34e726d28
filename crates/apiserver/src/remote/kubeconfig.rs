//! The part of a kubeconfig file the remote client reads: the current context's cluster
//! `server`, its user's bearer `token` (or `tokenFile`), and its default namespace.

use std::path::Path;

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
struct Cluster {
    server: Option<String>,
}

#[derive(Deserialize, Default)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
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
    let server = config
        .clusters
        .into_iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| invalid(path, format!("the cluster {cluster_name:?} is not defined")))?
        .value
        .unwrap_or_default()
        .server
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(path, format!("the cluster {cluster_name:?} has no server")))?;
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
            }
        );
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
