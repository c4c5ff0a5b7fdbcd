//! A real PostgreSQL server for tests, started by the test itself: `initdb` into a temporary
//! directory, then `postgres` on a free loopback port, as an unprivileged user when the tests run
//! as root (PostgreSQL refuses to run as root). One server per test process, started on first use;
//! each caller gets a database of its own. A watchdog shell stops the server and removes its
//! directory when the test process exits, however it exits.
//!
//! The server binaries come from `PATH` or Debian's `/usr/lib/postgresql/<version>/bin`
//! (`scripts/test` installs the `postgresql` package when they are missing).
#![allow(dead_code)]

#[path = "../../../storage/tests/common/ports.rs"]
pub mod ports;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The running server.
pub struct Postgres {
    port: u16,
    next: AtomicUsize,
    /// Outlives this process on purpose: it stops the server after the tests.
    _watchdog: std::process::Child,
}

fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.into_iter().rev().find(|dir| dir.join("initdb").is_file()).unwrap_or_else(|| {
        panic!(
            "the PostgreSQL server binaries (initdb, postgres) are not installed: run scripts/test, which \
             installs Debian's postgresql package, or put them on PATH"
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as the unprivileged `nobody` when this process is root.
fn command(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "nobody", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

#[allow(
    clippy::zombie_processes,
    reason = "the watchdog must outlive the test process, which never waits for it"
)]
fn start() -> Postgres {
    let bin = bin_dir();
    let root = running_as_root();
    // /tmp rather than $TMPDIR: `nobody` must reach it, and the server's socket path must stay
    // short (about 100 bytes at most).
    let base = if Path::new("/tmp").is_dir() { PathBuf::from("/tmp") } else { std::env::temp_dir() };
    let dir = base.join(format!("zero2048-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if root {
        let status = Command::new("chown").arg("nobody").arg(&dir).status().unwrap();
        assert!(status.success(), "chown nobody {}", dir.display());
    }
    let data = dir.join("data");
    let out = command(&bin.join("initdb"), root)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let port = ports::free_port();
    // The watchdog: starts the server, waits for this process to end, then stops it (the
    // postmaster itself: `runuser` passes no signal on) and removes its files.
    let run_as = if root { "runuser -u nobody -- " } else { "" };
    let script = format!(
        "{run_as}'{postgres}' -D '{data}' -p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 > '{dir}/log' 2>&1 & \
         server=$!; while kill -0 {test} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done; \
         kill -INT $(head -n 1 '{data}/postmaster.pid') 2>/dev/null; wait $server; rm -rf '{dir}'",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        test = std::process::id(),
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if postgres::Client::connect(
            &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            postgres::NoTls,
        )
        .is_ok()
        {
            return Postgres { port, next: AtomicUsize::new(0), _watchdog: watchdog };
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PostgreSQL did not start on port {port}:\n{}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Postgres {
    /// A new, empty database on the one server, as a URL.
    pub fn database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(
            &format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            postgres::NoTls,
        )
        .unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// The test process's server, started on first use.
pub fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A new database on the test process's server.
pub fn new_database() -> String {
    server().database()
}
