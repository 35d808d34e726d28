//! The kubelet API over HTTPS as the `capstan` flags set it up (feature `tls`): a kubelet
//! serving a self-signed certificate and trusting a client CA (`--client-ca-file`), an API
//! server presenting a client certificate of that CA (`--kubelet-client-certificate`), and
//! the real `kubectl logs` reaching the Pod through both.
//!
//! Needs `kubectl` on the PATH (Debian's `kubernetes-client`; `scripts/test` installs it when
//! missing).
#![cfg(feature = "tls")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_api::ext::PodExt;
use capstan_api::k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use capstan_api::kube_core::params::{Patch, PatchParams, PostParams};
use capstan_api::testing::{eventually, within};
use capstan_api::Api;
use capstan_cluster::apiserver::{connect, serve, ApiServerConfig};
use capstan_cluster::node::{start_kubelet, KubeletHttps, NodeOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client CA in `dir` (`ca.crt`) and a client certificate it signed for `cn` in group
/// `org` (`client.crt`, `client.key`).
fn client_pki(dir: &Path, cn: &str, org: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "kubelet-client-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(dir.join("ca.crt"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, cn);
    client
        .distinguished_name
        .push(DnType::OrganizationName, org);
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = client.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_logs_reach_a_kubelet_serving_https_through_the_api_server_s_client_certificate() {
    within(Duration::from_secs(120), async {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = TempDir(std::env::temp_dir().join(format!("capstan-kubelet-https-{nonce}")));
        std::fs::create_dir_all(&dir.0).unwrap();
        client_pki(&dir.0, "kube-apiserver-kubelet-client", "system:masters");

        let mut config = ApiServerConfig::new("127.0.0.1:0".parse().unwrap());
        config.kubelet_client_certificate =
            Some((dir.0.join("client.crt"), dir.0.join("client.key")));
        let server = serve(&config).await.unwrap();
        let kubeconfig = dir.0.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let client = connect(&kubeconfig).unwrap();

        let mut node = NodeOptions::fake("https-node", "127.0.0.1");
        node.state_dir = dir.0.join("node");
        node.kubelet_listen = Some("127.0.0.1:0".parse().unwrap());
        node.kubelet_https = Some(KubeletHttps {
            certificate: None,
            client_ca: Some(dir.0.join("ca.crt")),
        });
        let kubelet = start_kubelet(client.clone(), &node).await.unwrap();
        let address = kubelet
            .server_address()
            .expect("the kubelet serves its API");
        // The self-signed serving certificate is kept under the node's state.
        assert!(dir.0.join("node/kubelet/pki").is_dir());

        // What the controller manager would do: the node's pod CIDR, the default account and
        // the root CA.
        let nodes: Api<Node> = Api::all(client.clone());
        eventually(Duration::from_secs(30), "the Node registered", || async {
            nodes.get("https-node").await.is_ok()
        })
        .await;
        nodes
            .patch(
                "https-node",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"podCIDR": "10.244.0.0/24",
                                              "podCIDRs": ["10.244.0.0/24"]}})),
            )
            .await
            .unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), "default")
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
            )
            .await
            .unwrap();
        let root_ca: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"},
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &root_ca)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "greeter"},
            "spec": {"nodeName": "https-node", "containers": [{
                "name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo hello over https; sleep 3600"],
            }]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        eventually(Duration::from_secs(60), "greeter Ready", || async {
            pods.get("greeter").await.is_ok_and(|p| p.is_ready())
        })
        .await;

        let logs = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["logs", "greeter"])
            .output()
            .await
            .expect("kubectl (Debian's kubernetes-client; scripts/test installs it)");
        assert!(
            logs.status.success(),
            "kubectl logs: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello over https\n");

        // The kubelet speaks only HTTPS: a plain HTTP request is turned away.
        let plain = tokio::process::Command::new("curl")
            .args(["-s", &format!("http://{address}/pods")])
            .output()
            .await
            .expect("curl (scripts/test installs it)");
        assert!(
            String::from_utf8_lossy(&plain.stdout).contains("HTTP request to an HTTPS server"),
            "{}",
            String::from_utf8_lossy(&plain.stdout)
        );
        kubelet.stop();
    })
    .await;
}
