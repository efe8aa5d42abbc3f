//! `fluster::Config` loaded through the `config` crate from TOML and from
//! environment variables, and turned into a pool in one call.

mod support;

use std::time::Duration;

use config::{Environment, File, FileFormat};
use fluster::{Config, Error, Failover, NodeConfig};
use support::start_servers;

fn from_toml(text: &str) -> Result<Config, config::ConfigError> {
    config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()?
        .try_deserialize()
}

#[tokio::test]
async fn toml_file_builds_a_pool() {
    let servers = start_servers(2);
    let text = format!(
        r#"
        nodes = [
            "{}",
            {{ name = "cache-b", url = "{}", weight = 2.0 }},
        ]
        penalty_min_wait = "250ms"
        penalty_max_wait = "1m 30s"
        penalty_multiplier = 2.0
        response_timeout = "300ms"
        max_connections = 4
        min_idle = 1
        failover = "fail_fast"
        max_boxed_fraction = 0.5
        "#,
        servers[0].url(),
        servers[1].url()
    );
    let config = from_toml(&text).unwrap();
    assert_eq!(config.settings.penalty_min_wait, Duration::from_millis(250));
    assert_eq!(config.settings.penalty_max_wait, Duration::from_secs(90));
    assert_eq!(config.nodes[0], NodeConfig::Url(servers[0].url()));
    assert_eq!(config.settings.failover, Failover::FailFast);
    let pool = config.build().await.unwrap();
    let status = pool.status();
    assert_eq!(status[0].name, servers[0].name());
    assert_eq!(status[1].name, "cache-b");
    assert_eq!(status[1].weight, 2.0);
    assert!(status.iter().all(|s| s.up));
    let _conn = pool.get("k").await.unwrap();
}

#[tokio::test]
async fn environment_variables_build_a_pool() {
    let servers = start_servers(2);
    // `config`'s Environment source reads from a map here instead of the
    // process environment, so parallel tests cannot see each other's values.
    let env: std::collections::HashMap<String, String> = [
        ("FLUSTER__NODES".to_owned(), format!("{},{}", servers[0].url(), servers[1].url())),
        ("FLUSTER__PENALTY_MAX_WAIT".to_owned(), "5s".to_owned()),
        ("FLUSTER__TIMEOUTS_BEFORE_PENALTY".to_owned(), "2".to_owned()),
    ]
    .into();
    let config: Config = config::Config::builder()
        .add_source(
            Environment::with_prefix("FLUSTER")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("nodes")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    assert_eq!(config.nodes.len(), 2);
    assert_eq!(config.settings.penalty_max_wait, Duration::from_secs(5));
    assert_eq!(config.settings.timeouts_before_penalty, 2);
    let pool = config.build().await.unwrap();
    assert_eq!(pool.status().iter().filter(|s| s.up).count(), 2);
}

#[tokio::test]
async fn invalid_values_name_their_field() {
    let parse_error = |text: &str| from_toml(text).unwrap_err().to_string();
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_min_wait = "soon""#,
    );
    assert!(err.contains("penalty_min_wait"), "{err}");
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_maxwait = "1s""#,
    );
    assert!(err.contains("penalty_maxwait"), "{err}");
    let err = parse_error(
        r#"nodes = ["redis://127.0.0.1:1"]
max_connections = -1"#,
    );
    assert!(err.contains("max_connections"), "{err}");

    // Values that parse but make no sense are caught by the builder.
    let config = from_toml(
        r#"nodes = ["redis://127.0.0.1:1"]
penalty_multiplier = 0.5"#,
    )
    .unwrap();
    match config.build().await {
        Err(Error::Config { setting, .. }) => assert_eq!(setting, "penalty_multiplier"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let config = from_toml(r#"nodes = [{ url = "redis://127.0.0.1:1", weight = -1.0 }]"#).unwrap();
    match config.build().await {
        Err(Error::Config { setting, .. }) => assert_eq!(setting, "weight of node `127.0.0.1:1`"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
