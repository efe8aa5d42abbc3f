//! `redis` builds its TLS configuration from rustls's process-level crypto
//! provider and takes none from its caller. With two providers compiled in
//! (ring for fluster, aws-lc-rs for `metrics-exporter-prometheus` at its
//! default features) rustls refuses to pick one and panics at the first
//! TLS connect. fluster therefore installs ring as the process's provider
//! when it makes a TLS node, unless the application installed one. This
//! binary holds one test: the provider is process-wide.

use std::time::Duration;

#[tokio::test]
async fn a_tls_node_installs_a_provider_before_any_connect() {
    use rustls::crypto::CryptoProvider;
    assert!(CryptoProvider::get_default().is_none(), "nothing has installed one yet");
    // Nothing is connected: rustls has had no chance to pick a provider.
    let pool = fluster::ShardedPool::builder()
        .node("rediss://127.0.0.1:1")
        .probe_at_build(false)
        .checkout_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    assert!(CryptoProvider::get_default().is_some(), "fluster left no provider installed");
    drop(pool);
}
