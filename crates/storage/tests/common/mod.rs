//! A real S3-compatible server for the tests: Garage, on loopback, one per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zero2048_storage::{Config, Secret};

// The includer provides `ports` (common/ports.rs) at its root: a binary that also includes the
// distributed tests' support must hold one copy of it, the one list of ports handed out.
use crate::ports::free_ports;

/// A running (or stopped) Garage with its own ports and data directory.
pub struct Garage {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub s3_port: u16,
    rpc_port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
}

impl Garage {
    /// Starts Garage, or fails with what to do when it is not installed.
    pub fn start() -> Garage {
        let found =
            Command::new("garage").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "the `garage` S3 server is not on PATH: run scripts/test, which installs it \
             (cargo install garage --version 2.5.0 --locked)"
        );
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let [s3_port, rpc_port] = free_ports();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"auto\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let suffix: String = (0..12).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
        let mut garage = Garage {
            child: None,
            dir,
            s3_port,
            rpc_port,
            access_key: format!("GK{suffix}{suffix}"),
            secret_key: format!("s3cr3t-{suffix}-{suffix}-never-printed"),
            bucket: "zero2048-test".into(),
        };
        garage.restart();
        garage
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the server again on the same ports and data (after [`Garage::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("garage starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        // Ready when an unauthenticated request to the bucket gets an S3 answer (403).
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.s3_port)) {
                use std::io::{Read, Write};
                let request = format!("GET /{}/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", self.bucket);
                let mut reply = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut reply).is_ok()
                    && reply.starts_with("HTTP/1.")
                {
                    std::thread::sleep(Duration::from_millis(300));
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default();
        panic!("garage did not come up within 30 s; its log:\n{log}");
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); data stays for [`Garage::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A configuration publishing to this Garage under `prefix`, with local weights in `weights_dir`.
    pub fn config(&self, weights_dir: &Path, prefix: &str) -> Config {
        let mut config = Config::default();
        config.storage.weights_dir = weights_dir.to_path_buf();
        config.storage.use_r2 = true;
        config.storage.r2_bucket = Some(self.bucket.clone());
        config.storage.r2_access_key = Some(Secret::new(&self.access_key));
        config.storage.r2_secret_key = Some(Secret::new(&self.secret_key));
        config.storage.r2_endpoint_url = Some(self.endpoint());
        config.storage.r2_prefix = prefix.to_string();
        config.storage.r2_connect_timeout_seconds = 1.0;
        config.storage.r2_request_timeout_seconds = 10.0;
        config.storage.r2_max_retries = 1;
        config
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A file of `size` pseudo-random bytes (deterministic per seed).
pub fn random_file(dir: &Path, name: &str, size: usize, seed: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut block = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        out.write_all(&block[..n]).unwrap();
        left -= n;
    }
    out.flush().unwrap();
    path
}
