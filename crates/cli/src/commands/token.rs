//! `zero2048 token`: worker tokens in the server's database.

use std::path::Path;

use anyhow::{Context, Result};
use zero2048_server::{TokenStore, TokenStoreError};
use zero2048_train::RunDb;

use crate::args::{TokenAction, TokenArgs};
use crate::bad_input;
use crate::config;

/// Runs the command.
pub fn run(args: TokenArgs) -> Result<()> {
    let (_, database) = config::database(args.database.as_deref(), &args.db)?;
    // A PostgreSQL database is the operator's to create; a SQLite file is made here if needed.
    let existed = database.sqlite_path().is_none_or(Path::is_file);
    if !existed && !matches!(args.action, TokenAction::Add { .. }) {
        return Err(bad_input(format!("{database}: no run database there (--db FILE or --database URL)")));
    }
    let mut store = TokenStore::open(&database).with_context(|| format!("opening {database}"))?;
    if !existed {
        eprintln!(
            "created a new run database at {database} (no run was there yet; give --db if the server's is elsewhere)"
        );
    }
    let user_error = |e: TokenStoreError| match e {
        TokenStoreError::Db { .. } => anyhow::anyhow!(e),
        other => bad_input(other.to_string()),
    };
    match args.action {
        TokenAction::Add { name } => {
            let token = store.add(&name).map_err(user_error)?;
            eprintln!("token for worker {name:?} (shown once; only its hash is stored):");
            println!("{token}");
            eprintln!("run: zero2048 worker --server http://SERVER:PORT --token {token}");
        }
        TokenAction::List { json } => {
            let tokens = store.list().map_err(user_error)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else if tokens.is_empty() {
                println!("no tokens; issue one with `zero2048 token add NAME`");
            } else {
                println!("{:<24} {:<10} {:<22} revoked", "name", "hash", "created");
                for t in tokens {
                    println!(
                        "{:<24} {:<10} {:<22} {}",
                        t.name,
                        t.fingerprint,
                        timestamp(t.created_at),
                        t.revoked_at.map_or("-".to_string(), timestamp)
                    );
                }
            }
        }
        TokenAction::Revoke { name, purge_games } => {
            store.revoke(&name).map_err(user_error)?;
            eprintln!("revoked the token of {name:?}: its requests are refused from now on");
            if purge_games {
                let db = RunDb::open(&database).map_err(|e| anyhow::anyhow!(e))?;
                let purged = db.quarantine_worker(&name).map_err(|e| anyhow::anyhow!(e))?;
                eprintln!(
                    "quarantined {purged} games of {name:?}: the learner skips those not learned yet \
                     (games already learned stay in the published revisions)"
                );
            }
        }
    }
    Ok(())
}

fn timestamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
