//! Game exports for analysis (pandas, DuckDB): one JSON object per line, or CSV. Used by
//! `zero2048 export games` and the dashboard's download links.

use serde::Serialize;
use zero2048_game::GameRecord;
use zero2048_train::db::DbError;
use zero2048_train::{RunDb, StoredGame};

/// The two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, with the whole record.
    Jsonl,
    /// A header line, then one row per game; the record as hex of its canonical encoding.
    Csv,
}

impl ExportFormat {
    /// `jsonl` or `csv`.
    pub fn parse(name: &str) -> Option<ExportFormat> {
        match name {
            "jsonl" => Some(ExportFormat::Jsonl),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }

    /// The MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv",
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Csv => "csv",
        }
    }
}

#[derive(Serialize)]
struct Row<'a> {
    uuid: String,
    worker: &'a str,
    revision: u64,
    score: u64,
    moves: u32,
    max_tile: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch_step: Option<u32>,
    record: GameRecord,
}

fn uuid_text(bytes: [u8; 16]) -> String {
    zero2048_protocol::Uuid::from_bytes(bytes).to_string()
}

/// Writes the games of `revision` (all games when `None`) in pages of 1,000, handing each chunk
/// to `out`; stops early when `out` returns false. Returns the number of games written.
pub fn write_games(
    db: &RunDb,
    revision: Option<u64>,
    format: ExportFormat,
    out: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<u64, DbError> {
    if format == ExportFormat::Csv
        && !out(b"uuid,worker,revision,score,moves,max_tile,parent,branch_step,record_hex\n".to_vec())
    {
        return Ok(0);
    }
    let mut after = 0;
    let mut written = 0;
    loop {
        let page: Vec<StoredGame> = db.games_page(revision, after, 1000)?;
        let Some(last) = page.last() else { return Ok(written) };
        after = last.id;
        let mut chunk = Vec::with_capacity(page.len() * 256);
        for game in &page {
            match format {
                ExportFormat::Jsonl => {
                    let row = Row {
                        uuid: uuid_text(game.uuid),
                        worker: &game.worker,
                        revision: game.revision,
                        score: game.score,
                        moves: game.moves,
                        max_tile: game.max_tile,
                        parent: game.origin.map(|(parent, _)| uuid_text(parent)),
                        branch_step: game.origin.map(|(_, step)| step),
                        record: GameRecord::decode(&game.record).map_err(|e| DbError::Corrupt {
                            what: format!("stored game {}", game.id),
                            value: e.to_string(),
                            expected: "a game record",
                        })?,
                    };
                    if serde_json::to_writer(&mut chunk, &row).is_ok() {
                        chunk.push(b'\n');
                    }
                }
                ExportFormat::Csv => {
                    // Worker names are [A-Za-z0-9._-] (or "local"): no quoting needed.
                    chunk.extend_from_slice(
                        format!(
                            "{},{},{},{},{},{},{},{},{}\n",
                            uuid_text(game.uuid),
                            game.worker,
                            game.revision,
                            game.score,
                            game.moves,
                            game.max_tile,
                            game.origin.map(|(parent, _)| uuid_text(parent)).unwrap_or_default(),
                            game.origin.map(|(_, step)| step.to_string()).unwrap_or_default(),
                            hex::encode(&game.record)
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        written += page.len() as u64;
        if !out(chunk) {
            return Ok(written);
        }
    }
}
