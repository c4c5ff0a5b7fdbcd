//! `zero2048 export games`: stored games as JSON lines or CSV.

use std::io::Write;

use anyhow::{Context, Result};
use zero2048_server::export::{ExportFormat, write_games};
use zero2048_storage::StorageAdapter;
use zero2048_train::RunDb;
use zero2048_train::db::GameShelf;

use crate::args::{ExportArgs, ExportFormatArg, ExportWhat};
use crate::bad_input;
use crate::config;

/// Runs the command.
pub fn run(args: ExportArgs) -> Result<()> {
    let ExportWhat::Games { revision, format, db, database, output } = args.what;
    let storage = crate::storage::load_config(&args.storage)?;
    let (_, database) = config::database(database.as_deref(), &db)?;
    if database.sqlite_path().is_some_and(|path| !path.is_file()) {
        return Err(bad_input(format!("{database}: no run database there (--db FILE or --database URL)")));
    }
    // The records are in the run's game chunks, wherever storage keeps them.
    let runtime = crate::storage::runtime()?;
    let adapter = runtime.block_on(StorageAdapter::from_config(&storage)).context("opening storage")?;
    let games =
        GameShelf::from_storage(&adapter, runtime.handle().clone()).map_err(|e| anyhow::anyhow!(e))?;
    let db = RunDb::open(&database).map_err(|e| anyhow::anyhow!(e))?.with_games(games);
    if let Some(revision) = revision
        && !db.revisions_with_games().map_err(|e| anyhow::anyhow!(e))?.contains(&revision)
    {
        return Err(bad_input(format!(
            "revision {revision} has no stored games (zero2048 weights list shows the revisions)"
        )));
    }
    let format = match format {
        ExportFormatArg::Jsonl => ExportFormat::Jsonl,
        ExportFormatArg::Csv => ExportFormat::Csv,
    };
    let mut sink: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut failure = None;
    let written = write_games(&db, revision, format, &mut |chunk| match sink.write_all(&chunk) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    // A closed pipe (`| head`) is the reader having seen enough, not a failure.
    let broken_pipe = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    match failure {
        Some(e) if broken_pipe(&e) => return Ok(()),
        Some(e) => return Err(e).context("writing the export"),
        None => {}
    }
    match sink.flush() {
        Err(e) if broken_pipe(&e) => return Ok(()),
        other => other.context("writing the export")?,
    }
    eprintln!(
        "exported {written} games{}",
        revision.map(|r| format!(" of revision {r}")).unwrap_or_default()
    );
    Ok(())
}
