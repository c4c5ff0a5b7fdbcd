//! The one configuration pipeline every command uses: the file (`--config`), then the
//! environment, then the flags. Each default is written once, in its section's `Default`; flags
//! carry no defaults of their own; every section is validated after the last layer, so a value is
//! checked by the same rule whether it came from the file, a variable or a flag.
//!
//! Environment variables name any key of the file: `ZERO2048_<SECTION>__<KEY>[__<KEY>…]`, each
//! level separated by two underscores (`ZERO2048_TRAIN__TD__LAMBDA=0.5` sets `train.td.lambda`);
//! the value is read as YAML (`0.5`, `true`, `[1, 2]`, or text). The storage guide's own variables
//! (`R2_ACCESS_KEY`, `R2_SECRET_KEY`, `R2_ENDPOINT`) keep working too.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use zero2048_server::ApiConfig;
use zero2048_storage::{Overrides, ServerConfig, StorageConfig, parse_yaml};
use zero2048_train::TrainConfig;
use zero2048_train::db::DatabaseUrl;
use zero2048_worker::WorkerSettings;

use crate::bad_input;

/// The prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "ZERO2048_";

/// The whole configuration file: every section any command reads. Unknown keys are errors.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// `storage:`.
    pub storage: StorageConfig,
    /// `server:`.
    pub server: ServerConfig,
    /// `train:`.
    pub train: TrainConfig,
    /// `api:`.
    pub api: ApiConfig,
    /// `worker:`.
    pub worker: WorkerSettings,
    /// `database:`.
    pub database: zero2048_train::db::DatabaseConfig,
}

/// Reads the file (if any) and lays the `ZERO2048_…` variables of `vars` over it. A problem names
/// the file, line and key, or the variable and key.
pub fn read(path: Option<&Path>, vars: &[(String, String)]) -> Result<FileConfig> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| bad_input(format!("cannot read the configuration file {}: {e}", path.display())))?,
        None => String::new(),
    };
    let shown = path.unwrap_or(Path::new("(no configuration file)"));
    // First the file alone, so that its errors name their line.
    let from_file: FileConfig = parse_yaml(&text, shown).map_err(|e| bad_input(e.to_string()))?;
    let overrides = environment_overrides(vars)?;
    if overrides.is_empty() {
        return Ok(from_file);
    }
    let mut merged: Value = if text.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| bad_input(format!("{}: {e}", shown.display())))?
    };
    for (name, keys, value) in &overrides {
        set(&mut merged, keys, value.clone()).map_err(|e| bad_input(format!("{name}: {e}")))?;
    }
    serde_path_to_error::deserialize(merged).map_err(|error| {
        let key = error.path().to_string();
        let variable = overrides
            .iter()
            .find(|(_, keys, _)| key.starts_with(&keys.join(".")))
            .map_or_else(|| "the environment".to_string(), |(name, _, _)| name.clone());
        let message =
            if is_secret(&key) { "not a valid value".to_string() } else { error.into_inner().to_string() };
        bad_input(format!("{variable}: `{key}`: {message}"))
    })
}

/// The run's local files' anchor and its database, from `database.url` (the flag, or the file and
/// environment) or else the `--db` file: one rule for every command that opens the run database.
pub fn database(url: Option<&str>, db: &Path) -> Result<(PathBuf, DatabaseUrl)> {
    let Some(url) = url else { return Ok((db.to_path_buf(), DatabaseUrl::from(db))) };
    let database = DatabaseUrl::parse(url).map_err(|e| bad_input(e.to_string()))?;
    let anchor = database.sqlite_path().unwrap_or(db).to_path_buf();
    Ok((anchor, database))
}

/// Keys whose values must never be printed.
fn is_secret(key: &str) -> bool {
    key.ends_with("_key") || key.ends_with("secret") || key.contains("token")
}

/// `(variable, key path, value)` of every `ZERO2048_SECTION__KEY` variable.
fn environment_overrides(vars: &[(String, String)]) -> Result<Vec<(String, Vec<String>, Value)>> {
    let mut out = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX).filter(|rest| rest.contains("__")) else { continue };
        let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(bad_input(format!("{name}: an empty key between `__` separators")));
        }
        let value = serde_yaml_ng::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        out.push((name.clone(), keys, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Sets `keys` in `root` to `value`, creating mappings on the way.
fn set(root: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = keys.split_last() else { return Err("no key".into()) };
    let mut node = root;
    for key in parents {
        let map = match node {
            Value::Mapping(map) => map,
            Value::Null => {
                *node = Value::Mapping(Default::default());
                let Value::Mapping(map) = node else { unreachable!() };
                map
            }
            _ => return Err(format!("`{key}` is inside a value that is not a section")),
        };
        node = map.entry(Value::String(key.clone())).or_insert(Value::Null);
    }
    match node {
        Value::Mapping(map) => {
            map.insert(Value::String(last.clone()), value);
            Ok(())
        }
        Value::Null => {
            let mut map = serde_yaml_ng::Mapping::new();
            map.insert(Value::String(last.clone()), value);
            *node = Value::Mapping(map);
            Ok(())
        }
        _ => Err(format!("`{last}` is inside a value that is not a section")),
    }
}

/// The storage layers over the file: the storage guide's variables, then the flags.
pub fn storage(file: &FileConfig, overrides: &Overrides) -> Result<zero2048_storage::Config> {
    let mut config = zero2048_storage::Config { storage: file.storage.clone(), server: file.server.clone() };
    let env = |key: &str| std::env::var(key).ok();
    config.apply(&env, overrides);
    config.validate().map_err(|e| bad_input(e.to_string()))?;
    Ok(config)
}

/// The process's variables.
pub fn environment() -> Vec<(String, String)> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn error(result: Result<FileConfig>) -> String {
        format!("{:#}", result.expect_err("an error"))
    }

    #[test]
    fn the_example_file_holds_every_default() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config.example.yaml");
        let read = read(Some(&example), &[]).unwrap();
        let defaults = FileConfig::default();
        assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::to_value(&defaults).unwrap());
        // And documents every key of every section.
        let text = std::fs::read_to_string(&example).unwrap();
        fn keys(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    out.push(format!("{prefix}{k}"));
                    keys(v, &format!("{prefix}{k}."), out);
                }
            }
        }
        let mut all = Vec::new();
        keys(&serde_json::to_value(&defaults).unwrap(), "", &mut all);
        for key in all {
            let last = key.rsplit('.').next().unwrap();
            assert!(text.contains(&format!("{last}:")), "config.example.yaml does not document {key}");
        }
    }

    #[test]
    fn the_environment_sets_any_key_and_beats_the_file() {
        let (_dir, path) = write("train:\n  td:\n    lambda: 0.25\n  seed: 7\n");
        let read = read(
            Some(&path),
            &vars(&[
                ("ZERO2048_TRAIN__TD__LAMBDA", "0.5"),
                ("ZERO2048_TRAIN__EVALUATION__GAMES", "50"),
                ("ZERO2048_WORKER__THREADS", "3"),
                ("ZERO2048_TOKEN", "not a key path"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(read.train.td.lambda, 0.5);
        assert_eq!(read.train.seed, 7, "the file still counts where no variable speaks");
        assert_eq!(read.train.evaluation.games, 50);
        assert_eq!(read.worker.threads, 3);
    }

    #[test]
    fn every_problem_names_where_it_came_from() {
        let (_dir, path) = write("train:\n  td:\n    lamda: 0.5\n");
        let message = error(read(Some(&path), &[]));
        assert!(message.contains("c.yaml:3") && message.contains("lamda"), "{message}");
        let message = error(read(None, &vars(&[("ZERO2048_TRAIN__NO_SUCH_KEY", "1")])));
        assert!(
            message.contains("ZERO2048_TRAIN__NO_SUCH_KEY") && message.contains("no_such_key"),
            "{message}"
        );
        let message = error(read(None, &vars(&[("ZERO2048_TRAIN__SEED", "many")])));
        assert!(message.contains("ZERO2048_TRAIN__SEED") && message.contains("train.seed"), "{message}");
        let message = error(read(None, &vars(&[("ZERO2048_STORAGE__R2_SECRET_KEY", "[1, 2]")])));
        assert!(!message.contains("[1, 2]") && message.contains("r2_secret_key"), "{message}");
        let message = error(read(Some(Path::new("/no/such/file.yaml")), &[]));
        assert!(message.contains("/no/such/file.yaml"), "{message}");
    }

    #[test]
    fn a_variable_is_checked_by_the_same_rule_as_the_file() {
        let from_env = read(None, &vars(&[("ZERO2048_TRAIN__REVISION_EVERY_GAMES", "0")])).unwrap();
        let (_dir, path) = write("train:\n  revision_every_games: 0\n");
        let from_file = read(Some(&path), &[]).unwrap();
        for config in [from_env, from_file] {
            let message = config.train.validate().unwrap_err().to_string();
            assert!(message.starts_with("train.revision_every_games:"), "{message}");
        }
    }

    #[test]
    fn a_network_key_given_alone_keeps_the_others_at_the_default_shapes() {
        let default = TrainConfig::default().network;
        let from_env = read(None, &vars(&[("ZERO2048_TRAIN__NETWORK__STAGES", "3")])).unwrap();
        assert_eq!(from_env.train.network, zero2048_model::NTupleConfig { stages: 3, ..default.clone() });
        let (_dir, path) = write("train:\n  network:\n    stages: 1\n    stage_tile: 13\n");
        let from_file = read(Some(&path), &[]).unwrap().train.network;
        assert_eq!((from_file.tuples, from_file.stages, from_file.stage_tile), (default.tuples, 1, 13));
        let message = error(read(None, &vars(&[("ZERO2048_TRAIN__NETWORK__STAGEZ", "2")])));
        assert!(
            message.contains("ZERO2048_TRAIN__NETWORK__STAGEZ") && message.contains("stagez"),
            "{message}"
        );
    }

    #[test]
    fn a_restart_key_given_alone_keeps_the_other_at_its_default() {
        let default = zero2048_protocol::RestartSpec::default();
        let from_env = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT", "0.85")])).unwrap();
        assert_eq!(from_env.train.restart.map(|r| (r.min_moves, r.at)), Some((default.min_moves, 0.85)));
        let (_dir, path) = write("train:\n  restart:\n    min_moves: 20\n");
        let from_file = read(Some(&path), &[]).unwrap();
        assert_eq!(from_file.train.restart.map(|r| (r.min_moves, r.at)), Some((20, default.at)));
        let (_dir, path) = write("train:\n  restart: null\n");
        assert_eq!(read(Some(&path), &[]).unwrap().train.restart, None, "null still turns it off");
        let over_null = read(Some(&path), &vars(&[("ZERO2048_TRAIN__RESTART__AT", "0.6")])).unwrap();
        assert_eq!(over_null.train.restart.map(|r| r.at), Some(0.6), "a variable over a null file");
        let message = error(read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AFTER", "0.6")])));
        assert!(message.contains("ZERO2048_TRAIN__RESTART__AFTER") && message.contains("after"), "{message}");
        let out_of_range = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT", "1.5")])).unwrap();
        let message = out_of_range.train.validate().unwrap_err().to_string();
        assert!(message.starts_with("train.restart.at:"), "{message}");
        let range = read(
            None,
            &vars(&[("ZERO2048_TRAIN__RESTART__AT", "0.5"), ("ZERO2048_TRAIN__RESTART__AT_MAX", "0.85")]),
        )
        .unwrap();
        assert_eq!(range.train.restart.map(|r| (r.at, r.at_max)), Some((0.5, Some(0.85))));
        assert_eq!(from_env.train.restart.and_then(|r| r.at_max), None, "`at` alone: a fixed branch point");
        let default_range = read(None, &[]).unwrap().train.restart.unwrap();
        assert_eq!((default_range.at, default_range.at_max), (default.at, default.at_max));
        let later_end = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT_MAX", "0.9")])).unwrap();
        assert_eq!(later_end.train.restart.map(|r| (r.at, r.at_max)), Some((default.at, Some(0.9))));
        let reversed = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT_MAX", "0.4")])).unwrap();
        let message = reversed.train.validate().unwrap_err().to_string();
        assert!(message.starts_with("train.restart.at_max:"), "{message}");
        let at_tile = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT_TILE", "14")])).unwrap();
        assert_eq!(at_tile.train.restart.map(|r| (r.at, r.at_tile)), Some((default.at, Some(14))));
        assert_eq!(from_env.train.restart.and_then(|r| r.at_tile), default.at_tile, "the default's tile");
        let no_tile = read(None, &vars(&[("ZERO2048_TRAIN__RESTART__AT_TILE", "null")])).unwrap();
        assert_eq!(
            no_tile.train.restart.map(|r| (r.at_max, r.at_tile)),
            Some((default.at_max, None)),
            "null: none"
        );
        let (_dir, path) = write("train:\n  restart:\n    at_tile: null\n");
        assert_eq!(
            read(Some(&path), &[]).unwrap().train.restart.and_then(|r| r.at_tile),
            None,
            "null in a file"
        );
    }
}
