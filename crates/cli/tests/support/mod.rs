//! Processes for the distributed tests: a server, its tokens, workers, and a tiny HTTP server the
//! tests control (for latest records that point at bad weights or expired URLs).
#![allow(dead_code)]

#[path = "../../../train/tests/support/postgres.rs"]
pub mod postgres_server;
// Not every test binary takes each of them (garage_e2e takes `ports` for the bucket too).
#[allow(unused_imports)]
pub use postgres_server::ports::{self, free_port, free_ports};

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether the server tests run against PostgreSQL (`ZERO2048_TEST_BACKEND=postgres`, the second
/// pass of `scripts/test`) instead of SQLite files.
pub fn on_postgres() -> bool {
    std::env::var("ZERO2048_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
}

/// The run database of the run in `dir` on PostgreSQL (a database of its own per directory), or
/// `None` on SQLite (the `zero2048.db` file there).
pub fn database_url(dir: &Path) -> Option<String> {
    static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    if !on_postgres() {
        return None;
    }
    let mut databases = DATABASES.lock().unwrap();
    let url = databases
        .get_or_insert_with(HashMap::new)
        .entry(dir.to_path_buf())
        .or_insert_with(postgres_server::new_database)
        .clone();
    Some(url)
}

/// The environment every process of the run in `dir` gets: its database.
fn run_env(dir: &Path) -> Vec<(String, String)> {
    database_url(dir).map(|url| vec![("ZERO2048_DATABASE__URL".to_string(), url)]).unwrap_or_default()
}

pub fn zero2048(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zero2048"))
        .current_dir(dir)
        .args(args)
        .envs(run_env(dir))
        .output()
        .unwrap()
}

/// A child process killed when dropped, its stderr in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> Proc {
        Proc::spawn_env(dir, name, args, &[])
    }

    pub fn spawn_env(dir: &Path, name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zero2048"))
            .current_dir(dir)
            .args(args)
            .envs(run_env(dir))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    pub fn interrupt(&self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
    }

    /// Waits for the exit (at most `limit`), returning the exit code and stdout.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                if let Some(mut stdout) = self.child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                return (status.code(), out, self.log());
            }
            if started.elapsed() > limit {
                let log = self.log();
                self.kill9();
                panic!("process did not exit within {limit:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// The server's status, once it answers.
pub fn status(port: u16) -> serde_json::Value {
    http().get(format!("http://127.0.0.1:{port}/api/v1/status")).send().unwrap().json().unwrap()
}

/// Polls `check` every 50 ms for up to `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const SMALL_RUN: [&str; 6] =
    ["--network", "4x4", "--eval-games", "30", "--revision-every-seconds", "3600"];

/// Starts `zero2048 server` in `dir` on `port` and waits until it publishes revision 1.
pub fn server(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    server_env(dir, port, extra, &[])
}

/// [`server`] with environment variables.
pub fn server_env(dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut args: Vec<String> = ["server", "--port", &port.to_string(), "--localhost-weights"]
        .iter()
        .chain(SMALL_RUN.iter())
        .chain(extra.iter())
        .map(|s| s.to_string())
        .collect();
    if !extra.contains(&"--revision-every-games") {
        args.extend(["--revision-every-games".to_string(), "100".to_string()]);
    }
    let mut proc = Proc::spawn_env(dir, &format!("server-{}", rand_suffix()), &args, env);
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("http://127.0.0.1:{port}/api/v1/status")).send()
            && let Ok(status) = response.json::<serde_json::Value>()
            && status["revision"].as_u64().unwrap_or(0) >= 1
        {
            return proc;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("the server exited ({status}):\n{}", proc.log());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start:\n{}", proc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 0xFFFFFF
    )
}

/// Issues a token.
pub fn token(dir: &Path, name: &str) -> String {
    let out = zero2048(dir, &["token", "add", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts a worker with its own spool and cache under `dir/<name>`.
pub fn worker(dir: &Path, port: u16, token: &str, name: &str, extra: &[&str]) -> Proc {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let mut args: Vec<String> =
        ["worker", "--server", &format!("http://127.0.0.1:{port}"), "--token", token, "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for (flag, value) in [
        ("--threads", "1"),
        ("--poll-interval", "300ms"),
        ("--adopt-delay", "200ms"),
        ("--upload-interval", "300ms"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(
        ["--spool", home.join("spool").to_str().unwrap(), "--cache", home.join("cache").to_str().unwrap()]
            .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(dir, name, &args)
}

/// Every stored game's (uuid, worker), from the run database `db` (`<dir>/zero2048.db`, or the
/// PostgreSQL database of `<dir>`).
pub fn stored_games(db: &Path) -> Vec<(Vec<u8>, String)> {
    let sql = "SELECT uuid, worker FROM games ORDER BY id";
    match database_url(db.parent().unwrap()) {
        Some(url) => postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        None => {
            let conn = rusqlite::Connection::open(db).unwrap();
            let mut query = conn.prepare(sql).unwrap();
            query.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        }
    }
}

/// The run database `db` (`<dir>/zero2048.db`, or the PostgreSQL database of `<dir>`), opened
/// with the run's game chunks (`<dir>/games`, the default beside `<dir>/weights`).
pub fn run_db(db: &Path) -> zero2048_train::RunDb {
    let dir = db.parent().unwrap();
    let opened = match database_url(dir) {
        Some(url) => {
            zero2048_train::RunDb::open(zero2048_train::db::DatabaseUrl::parse(&url).unwrap()).unwrap()
        }
        None => zero2048_train::RunDb::open(db).unwrap(),
    };
    let games = zero2048_storage::ObjectShelf::local(&dir.join("games")).unwrap();
    opened.with_games(zero2048_train::db::GameShelf::new(games, None, zero2048_storage::ObjectRetention::ALL))
}

/// Reads every stored game's record back (from its chunk) and decodes it; returns how many.
pub fn read_back_every_record(db: &Path) -> usize {
    let db = run_db(db);
    let (mut read, mut after) = (0, 0);
    loop {
        let page = db.games_page(None, after, 500).unwrap();
        let Some(last) = page.last() else { return read };
        for game in &page {
            let decoded = zero2048_game::GameRecord::decode(&game.record);
            assert!(decoded.is_ok(), "game {}'s record does not decode: {decoded:?}", game.id);
        }
        after = last.id;
        read += page.len();
    }
}

/// The first column of `sql`'s rows, as whole numbers, from the run database `db` (as
/// [`stored_games`]); `sql` must read the same on SQLite and PostgreSQL.
pub fn numbers(db: &Path, sql: &str) -> Vec<i64> {
    match database_url(db.parent().unwrap()) {
        Some(url) => postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .query(&format!("SELECT CAST(n AS BIGINT) FROM ({sql}) AS q (n)"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
        None => {
            let conn = rusqlite::Connection::open(db).unwrap();
            let mut query = conn.prepare(sql).unwrap();
            query.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
    }
}

pub fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "game"))
                .count()
        })
        .unwrap_or(0)
}

/// A tiny HTTP server whose answers the test sets: path → (status, body, headers).
type Answer = (u16, Vec<u8>, Vec<(String, String)>);

#[derive(Clone, Default)]
pub struct Scripted {
    routes: Arc<Mutex<std::collections::HashMap<String, Answer>>>,
    pub port: u16,
}

impl Scripted {
    pub fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scripted = Scripted { port: listener.local_addr().unwrap().port(), ..Scripted::default() };
        let routes = Arc::clone(&scripted.routes);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let routes = Arc::clone(&routes);
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                            break;
                        }
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, body, headers) = routes.lock().unwrap().get(&path).cloned().unwrap_or((
                        404,
                        b"not here".to_vec(),
                        Vec::new(),
                    ));
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                });
            }
        });
        scripted
    }

    pub fn set(&self, path: &str, status: u16, body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) {
        self.routes.lock().unwrap().insert(
            path.to_string(),
            (status, body.into(), headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
