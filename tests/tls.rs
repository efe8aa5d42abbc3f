//! `rediss://` against `redis-server --tls-port` with a CA and certificates
//! made at test time (feature `tls`).
//!
//! This binary links `metrics-exporter-prometheus` at its default features,
//! the exporter the README recommends: it compiles rustls with aws-lc-rs
//! beside fluster's ring, and without fluster choosing a provider every
//! test here would panic at its first TLS connect.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fluster::{FailureKind, ShardedPool};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use redis::AsyncCommands;
use support::RedisServer;

/// A CA, and a server certificate for 127.0.0.1 signed by it, as PEM files
/// in a fresh temporary directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fluster-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        // A subject of its own: OpenSSL (the server) takes a leaf named like
        // its issuer for a self-signed certificate.
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["fluster-client".to_owned()]).unwrap();
        client_params.distinguished_name.push(rcgen::DnType::CommonName, "fluster-client");
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
        std::fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
        Pki { dir, ca_pem: ca.pem() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server(&self) -> RedisServer {
        RedisServer::start_tls(
            &self.file("server.pem"),
            &self.file("server.key"),
            &self.file("ca.pem"),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_url(server: &RedisServer) -> String {
    format!("rediss://127.0.0.1:{}", server.port())
}

fn builder(url: &str, ca: &str) -> fluster::Builder {
    ShardedPool::builder()
        .node(url)
        .tls_root_certificates(ca.as_bytes())
        .penalty_min_wait(Duration::from_secs(30))
        .penalty_max_wait(Duration::from_secs(30))
}

#[tokio::test]
async fn rediss_works_with_the_right_ca() {
    if support::skip_without_tls("rediss_works_with_the_right_ca") {
        return;
    }
    // The exporter and its second rustls provider are in this binary.
    let _exporter = metrics_exporter_prometheus::PrometheusBuilder::new();
    let pki = Pki::new("ok");
    let server = pki.server();
    let pool = builder(&tls_url(&server), &pki.ca_pem).build().await.unwrap();
    assert!(pool.status()[0].up, "{:?}", pool.status());
    let mut conn = pool.get("tls:key").await.unwrap();
    let _: () = conn.set("tls:key", "over tls").await.unwrap();
    let back: String = conn.get("tls:key").await.unwrap();
    assert_eq!(back, "over tls");
}

/// The refusal of a TLS handshake `build` meets: the node, and why.
fn refused_tls(
    result: Result<impl std::fmt::Debug, fluster::Error>,
    server: &RedisServer,
) -> String {
    let e = result.expect_err("a refused TLS handshake fails the build");
    assert!(matches!(e, fluster::Error::Credentials { failure: FailureKind::Tls, .. }), "{e:?}");
    assert_eq!(e.node(), Some(server.name().as_str()));
    let text = e.to_string();
    let (head, tail) = (
        format!("node `{}` failed the TLS handshake: ", server.name()),
        " (check its certificate and the pool's `tls_root_certificates` and \
         `tls_client_certificate`)",
    );
    assert!(text.starts_with(&head) && text.ends_with(tail), "{text}");
    text
}

/// A server certificate the pool does not trust is a wrong setting, not
/// an outage: `build` fails, naming the node and the certificate problem.
#[tokio::test]
async fn a_wrong_ca_fails_the_build_clearly() {
    if support::skip_without_tls("a_wrong_ca_fails_the_build_clearly") {
        return;
    }
    let pki = Pki::new("server");
    let other = Pki::new("other");
    let server = pki.server();
    let text = refused_tls(builder(&tls_url(&server), &other.ca_pem).build().await, &server);
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[tokio::test]
async fn plain_redis_to_a_tls_port_boxes_the_node() {
    if support::skip_without_tls("plain_redis_to_a_tls_port_boxes_the_node") {
        return;
    }
    let pki = Pki::new("plain");
    let server = pki.server();
    let url = format!("redis://127.0.0.1:{}", server.port());
    let pool = ShardedPool::builder()
        .node(&url)
        .probe_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    assert!(!pool.status()[0].up, "{:?}", pool.status());
}

/// The synchronous flavour is built by the same builder: it trusts the same
/// private roots, and its build fails on a server they do not vouch for.
#[cfg(feature = "r2d2")]
#[test]
fn the_sync_flavour_trusts_the_same_roots() {
    if support::skip_without_tls("the_sync_flavour_trusts_the_same_roots") {
        return;
    }
    let (pki, other) = (Pki::new("sync"), Pki::new("sync-other"));
    let server = pki.server();
    let sync_pool = |ca: &str| {
        fluster::sync::ShardedPool::builder()
            .node(&tls_url(&server))
            .tls_root_certificates(ca.as_bytes())
            .penalty_min_wait(Duration::from_secs(30))
            .penalty_max_wait(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let pool = sync_pool(&pki.ca_pem);
    assert!(pool.status()[0].up, "{:?}", pool.status());
    let mut conn = pool.get("tls:sync").unwrap();
    let _: () = redis::Commands::set(&mut conn, "tls:sync", "blocking over tls").unwrap();
    let back: String = redis::Commands::get(&mut conn, "tls:sync").unwrap();
    assert_eq!(back, "blocking over tls");

    let untrusted = fluster::sync::ShardedPool::builder()
        .node(&tls_url(&server))
        .tls_root_certificates(other.ca_pem.as_bytes())
        .build();
    refused_tls(untrusted, &server);
}

/// Mutual TLS: a server that asks every client for a certificate refuses a
/// pool without one (its build fails) and serves one that presents it.
#[tokio::test]
async fn a_server_asking_for_client_certificates_serves_only_a_pool_that_has_one() {
    if support::skip_without_tls(
        "a_server_asking_for_client_certificates_serves_only_a_pool_that_has_one",
    ) {
        return;
    }
    let pki = Pki::new("mtls");
    let server = RedisServer::start_tls_asking(
        &pki.file("server.pem"),
        &pki.file("server.key"),
        &pki.file("ca.pem"),
        true,
    );
    refused_tls(builder(&tls_url(&server), &pki.ca_pem).build().await, &server);

    let cert = std::fs::read(pki.file("client.pem")).unwrap();
    let key = std::fs::read(pki.file("client.key")).unwrap();
    let builder = builder(&tls_url(&server), &pki.ca_pem).tls_client_certificate(cert, key.clone());
    let shown = format!("{builder:?}");
    assert!(!shown.contains("PRIVATE KEY"), "the key leaked into Debug: {shown}");
    let pool = builder.build().await.unwrap();
    assert!(pool.status()[0].up, "{:?}", pool.status());
    let mut conn = pool.get("mtls:key").await.unwrap();
    let _: () = conn.set("mtls:key", "both sides known").await.unwrap();
    let back: String = conn.get("mtls:key").await.unwrap();
    assert_eq!(back, "both sides known");
}

/// TLS settings that can never work are refused by `build`, naming the
/// setting, instead of building a pool whose node is boxed for good. A bad
/// key is refused without a word of its text.
#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_by_build() {
    let config_error = |result: Result<ShardedPool, fluster::Error>| match result {
        Err(fluster::Error::Config { setting, reason }) => format!("{setting}: {reason}"),
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let url = "rediss://127.0.0.1:1";
    let error = config_error(builder(url, "not pem at all").build().await);
    assert!(error.starts_with("tls_root_certificates: holds no PEM certificate"), "{error}");

    let pki = Pki::new("bad-key");
    let error = config_error(
        builder(url, &pki.ca_pem)
            .tls_client_certificate(pki.ca_pem.as_bytes(), "secret-key-text")
            .build()
            .await,
    );
    assert_eq!(error, "tls_client_certificate: the key is not a PEM private key");
    assert!(!error.contains("secret-key-text"));

    let error =
        config_error(ShardedPool::builder().node("rediss://127.0.0.1:1/#insecure").build().await);
    assert!(error.contains("`#insecure`") && error.contains("tls_root_certificates"), "{error}");
}
