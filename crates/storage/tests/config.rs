//! The configuration file, the environment and the flags.

use std::path::{Path, PathBuf};

use zero2048_storage::{Config, ConfigError, Overrides, REDACTED, Secret};

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    zero2048_storage::parse_yaml(text, Path::new("test.yaml"))
}

#[test]
fn unknown_keys_and_wrong_types_name_the_file_line_and_key() {
    let error = parse("storage:\n  weights_dir: w\n  use_r3: true\n").unwrap_err().to_string();
    assert!(error.starts_with("test.yaml:3:"), "{error}");
    assert!(error.contains("unknown field `use_r3`"), "{error}");

    let error = parse("server:\n  port: eighty\n").unwrap_err().to_string();
    assert!(error.starts_with("test.yaml:2:"), "{error}");
    assert!(error.contains("`server.port`"), "{error}");

    let error = parse("storage:\n  use_r2: maybe\n").unwrap_err().to_string();
    assert!(error.contains("`storage.use_r2`") && error.contains("test.yaml:2:"), "{error}");

    let error = parse("storage: [1, 2\n").unwrap_err().to_string();
    assert!(error.starts_with("test.yaml:"), "{error}");
}

/// `Config::apply` is how the binary layers the storage guide's variables and flags over the
/// file (`zero2048`'s configuration pipeline calls it).
#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let mut config = parse(
        "storage:\n  r2_access_key: from-file\n  r2_secret_key: file-secret\n  r2_endpoint_url: https://file.example\n  r2_bucket: b\n",
    )
    .unwrap();
    let env = |key: &str| match key {
        "R2_ACCESS_KEY" => Some("from-env".to_string()),
        "R2_ENDPOINT" => Some("https://env.example".to_string()),
        _ => None,
    };
    let overrides = Overrides {
        use_r2: true,
        r2_endpoint: Some("https://flag.example".into()),
        weights_dir: Some("flag-weights".into()),
        port: Some(9100),
        ..Overrides::default()
    };
    config.apply(&env, &overrides);
    config.validate().unwrap();
    let s = &config.storage;
    assert!(s.use_r2);
    assert_eq!(s.r2_access_key.as_ref().unwrap().expose(), "from-env");
    assert_eq!(s.r2_secret_key.as_ref().unwrap().expose(), "file-secret");
    assert_eq!(s.r2_endpoint_url.as_deref(), Some("https://flag.example"));
    assert_eq!(s.weights_dir, PathBuf::from("flag-weights"));
    assert_eq!(config.server.port, 9100);
    let mut defaults = Config::default();
    defaults.apply(&no_env, &Overrides::default());
    assert_eq!(defaults, Config::default());
}

#[test]
fn secrets_never_print() {
    let secret = Secret::new("hunter2-but-longer");
    assert_eq!(format!("{secret}"), REDACTED);
    assert_eq!(format!("{secret:?}"), REDACTED);
    let mut config = Config::default();
    config.storage.r2_secret_key = Some(secret.clone());
    config.storage.r2_access_key = Some(Secret::new("AKIA-ACCESS-KEY-ID"));
    for shown in [
        format!("{config:?}"),
        serde_json::to_string(&config).unwrap(),
        serde_yaml_ng::to_string(&config).unwrap(),
    ] {
        assert!(!shown.contains("hunter2") && !shown.contains("AKIA-ACCESS"), "{shown}");
    }
    let text =
        "GET https://x.r2.dev/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc failed with hunter2-but-longer";
    let cleaned = zero2048_storage::redact(text, &[&secret]);
    assert!(!cleaned.contains("X-Amz-Signature=abc") && !cleaned.contains("hunter2"), "{cleaned}");
    assert!(cleaned.contains("https://x.r2.dev/k?[redacted]"), "{cleaned}");
}

#[test]
fn incomplete_r2_settings_say_what_is_missing() {
    let mut config = Config::default();
    config.storage.use_r2 = true;
    config.storage.r2_access_key = Some(Secret::new("AKIA-ONLY-THIS"));
    let reason = config.r2_settings().unwrap_err();
    for missing in ["r2_bucket", "r2_secret_key", "r2_endpoint_url"] {
        assert!(reason.contains(missing), "{reason}");
    }
    assert!(!reason.contains("r2_access_key") && !reason.contains("AKIA-ONLY-THIS"), "{reason}");
}

#[test]
fn invalid_values_are_refused() {
    let mut config = Config::default();
    config.storage.r2_connect_timeout_seconds = 0.0;
    assert!(config.validate().unwrap_err().to_string().contains("storage.r2_connect_timeout_seconds"));
    let mut config = Config::default();
    config.server.localhost_weights = true;
    config.server.host = "0.0.0.0".into();
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.advertised_host"), "{error}");
    config.server.host = "::".into();
    assert!(config.validate().is_err());
    config.server.advertised_host = Some("trainer.example".into());
    assert_eq!(config.server.public_base_url().unwrap(), "http://trainer.example:8000");
}
