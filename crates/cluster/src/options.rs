//! The backend choices on a command line: `--store`, `--runtime`, `--network` and `--proxy`,
//! parsed into typed values. Each parses from the same text it displays, so a choice can be
//! handed on to another process's command line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Why a backend choice was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    /// The text names no backend of that kind.
    #[error("{flag}: unknown backend {given:?}; expected one of {expected}")]
    UnknownBackend {
        /// The flag, e.g. `--store`.
        flag: &'static str,
        /// What was given.
        given: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// The backend needs a value after `=` (endpoints, a socket) and got none.
    #[error("{flag}: {backend} needs a value: {backend}=<{what}>")]
    MissingValue {
        /// The flag.
        flag: &'static str,
        /// The backend named.
        backend: &'static str,
        /// What the value is.
        what: &'static str,
    },
    /// The backend exists but this build leaves it out.
    #[error("{flag}: {backend} is not in this build; rebuild with `--features {feature}`")]
    NotBuilt {
        /// The flag.
        flag: &'static str,
        /// The backend named.
        backend: &'static str,
        /// The cargo feature that brings it in.
        feature: &'static str,
    },
}

/// Where the API server keeps its objects (`--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOption {
    /// `memory`: the in-process store (lost on exit).
    Memory,
    /// `etcd=<endpoint>[,<endpoint>...]`: a real etcd (feature `etcd`).
    Etcd(Vec<String>),
}

impl FromStr for StoreOption {
    type Err = OptionError;

    fn from_str(text: &str) -> Result<Self, OptionError> {
        const FLAG: &str = "--store";
        match split(text) {
            ("memory", None) => Ok(StoreOption::Memory),
            ("etcd", value) => {
                let endpoints: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect();
                if endpoints.is_empty() {
                    return Err(OptionError::MissingValue {
                        flag: FLAG,
                        backend: "etcd",
                        what: "endpoints",
                    });
                }
                Ok(StoreOption::Etcd(endpoints))
            }
            _ => Err(OptionError::UnknownBackend {
                flag: FLAG,
                given: text.into(),
                expected: "memory, etcd=<endpoints>",
            }),
        }
    }
}

impl fmt::Display for StoreOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreOption::Memory => f.write_str("memory"),
            StoreOption::Etcd(endpoints) => write!(f, "etcd={}", endpoints.join(",")),
        }
    }
}

/// What runs a node's containers (`--runtime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeOption {
    /// `fake`: the in-process fake runtime; every image "runs" at once.
    Fake,
    /// `containerd=<socket>`: a real containerd (feature `containerd`).
    Containerd(PathBuf),
}

impl FromStr for RuntimeOption {
    type Err = OptionError;

    fn from_str(text: &str) -> Result<Self, OptionError> {
        const FLAG: &str = "--runtime";
        match split(text) {
            ("fake", None) => Ok(RuntimeOption::Fake),
            ("containerd", Some(socket)) if !socket.is_empty() => {
                Ok(RuntimeOption::Containerd(socket.into()))
            }
            ("containerd", _) => Err(OptionError::MissingValue {
                flag: FLAG,
                backend: "containerd",
                what: "socket",
            }),
            _ => Err(OptionError::UnknownBackend {
                flag: FLAG,
                given: text.into(),
                expected: "fake, containerd=<socket>",
            }),
        }
    }
}

impl fmt::Display for RuntimeOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeOption::Fake => f.write_str("fake"),
            RuntimeOption::Containerd(socket) => write!(f, "containerd={}", socket.display()),
        }
    }
}

/// What wires a node's Pods into the pod network (`--network`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkOption {
    /// `fake`: in-process address management over the node's pod CIDR, no interfaces.
    Fake,
    /// `cni`: the real CNI plugins (`bridge`, `host-local`, `loopback`) over the node's pod
    /// CIDR, found in `--cni-bin-dir`.
    Cni,
}

impl FromStr for NetworkOption {
    type Err = OptionError;

    fn from_str(text: &str) -> Result<Self, OptionError> {
        match split(text) {
            ("fake", None) => Ok(NetworkOption::Fake),
            ("cni", None) => Ok(NetworkOption::Cni),
            _ => Err(OptionError::UnknownBackend {
                flag: "--network",
                given: text.into(),
                expected: "fake, cni",
            }),
        }
    }
}

impl fmt::Display for NetworkOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkOption::Fake => "fake",
            NetworkOption::Cni => "cni",
        })
    }
}

/// How a node's service proxy programs its dataplane (`--proxy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// `fake`: records the desired state only.
    Fake,
    /// `iptables`: kube-proxy's iptables chains.
    Iptables,
    /// `nftables`: one nftables table with verdict maps.
    Nftables,
    /// `ipvs`: IPVS virtual servers (the kernel needs the `ip_vs` module).
    Ipvs,
}

impl FromStr for ProxyMode {
    type Err = OptionError;

    fn from_str(text: &str) -> Result<Self, OptionError> {
        match split(text) {
            ("fake", None) => Ok(ProxyMode::Fake),
            ("iptables", None) => Ok(ProxyMode::Iptables),
            ("nftables", None) => Ok(ProxyMode::Nftables),
            ("ipvs", None) => Ok(ProxyMode::Ipvs),
            _ => Err(OptionError::UnknownBackend {
                flag: "--proxy",
                given: text.into(),
                expected: "fake, iptables, nftables, ipvs",
            }),
        }
    }
}

impl fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyMode::Fake => "fake",
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
            ProxyMode::Ipvs => "ipvs",
        })
    }
}

/// `name=value` into its parts; `name` alone gives no value.
fn split(text: &str) -> (&str, Option<&str>) {
    match text.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (text.trim(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_parses_back_from_its_display() {
        for store in [
            StoreOption::Memory,
            StoreOption::Etcd(vec![
                "http://127.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into(),
            ]),
        ] {
            assert_eq!(store.to_string().parse::<StoreOption>(), Ok(store));
        }
        for runtime in [
            RuntimeOption::Fake,
            RuntimeOption::Containerd("/run/containerd/containerd.sock".into()),
        ] {
            assert_eq!(runtime.to_string().parse::<RuntimeOption>(), Ok(runtime));
        }
        for network in [NetworkOption::Fake, NetworkOption::Cni] {
            assert_eq!(network.to_string().parse::<NetworkOption>(), Ok(network));
        }
        for mode in [
            ProxyMode::Fake,
            ProxyMode::Iptables,
            ProxyMode::Nftables,
            ProxyMode::Ipvs,
        ] {
            assert_eq!(mode.to_string().parse::<ProxyMode>(), Ok(mode));
        }
    }

    #[test]
    fn etcd_without_endpoints_names_what_is_missing() {
        let error = "etcd=".parse::<StoreOption>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "--store: etcd needs a value: etcd=<endpoints>"
        );
        assert!("etcd".parse::<StoreOption>().is_err());
    }

    #[test]
    fn an_unknown_backend_lists_the_accepted_ones() {
        let error = "postgres".parse::<StoreOption>().unwrap_err();
        assert!(
            error.to_string().contains("memory, etcd=<endpoints>"),
            "{error}"
        );
        let error = "docker".parse::<RuntimeOption>().unwrap_err();
        assert!(
            error.to_string().contains("fake, containerd=<socket>"),
            "{error}"
        );
        assert!("flannel".parse::<NetworkOption>().is_err());
        assert!("userspace".parse::<ProxyMode>().is_err());
        assert!("fake=1".parse::<ProxyMode>().is_err());
    }

    #[test]
    fn containerd_needs_its_socket() {
        assert!(matches!(
            "containerd".parse::<RuntimeOption>(),
            Err(OptionError::MissingValue { .. })
        ));
    }
}
