//! The dashboard in a real browser (headless Chromium driven over WebDriver) on a server with real
//! data: charts with points, a workers table with rows, a game viewer that steps through a game;
//! screenshots are saved as test artifacts. And the export command.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use support::*;

fn artifact(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> (Driver, u16) {
    let found = Command::new("chromedriver").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromedriver is not installed: run scripts/test, which installs Debian's chromium and chromium-driver"
    );
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), port)
}

async fn js(client: &fantoccini::Client, script: &str) -> serde_json::Value {
    client.execute(script, vec![]).await.unwrap()
}

async fn wait_js(client: &fantoccini::Client, what: &str, script: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let value = js(client, script).await;
        if value.as_bool() == Some(true) || (value.is_string() && !value.as_str().unwrap().is_empty()) {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what} ({value})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_dashboard_shows_a_real_run_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fast.yaml"), "api:\n  sample_seconds: 0.3\n").unwrap();
    let port = free_port();
    let _server = server(dir.path(), port, &["--config", "fast.yaml", "--revision-every-games", "300"]);
    let token = token(dir.path(), "painter");
    let w = worker(dir.path(), port, &token, "painter", &["--games", "1500", "--upload-interval", "100ms"]);
    let (code, _, log) = w.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    wait_for(Duration::from_secs(60), "evaluations and samples", || {
        let s = status(port);
        let history: serde_json::Value =
            http().get(format!("http://127.0.0.1:{port}/api/v1/history")).send().unwrap().json().unwrap();
        s["evaluations"].as_array().unwrap().len() >= 3 && history["samples"].as_array().unwrap().len() >= 4
    });
    let best: serde_json::Value =
        http().get(format!("http://127.0.0.1:{port}/api/v1/games/best")).send().unwrap().json().unwrap();

    let (_driver, driver_port) = chromedriver();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--window-size=1280,1800"]
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("a TLS configuration")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("a WebDriver session");
        client.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
        wait_js(&client, "the status", "return document.body.dataset.ready === 'status'").await;
        for chart in ["strength-chart", "reach-chart", "throughput-chart", "backlog-chart"] {
            wait_js(
                &client,
                chart,
                &format!(
                    "const el = document.getElementById('{chart}');
                     return Number(el.dataset.points) >= 2 && el.querySelector('canvas') !== null"
                ),
            )
            .await;
        }
        let rows = client.find_all(Locator::Css("#workers tbody tr")).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].text().await.unwrap().contains("painter"));
        let storage = client.find(Locator::Css("#storage")).await.unwrap().text().await.unwrap();
        assert!(storage.contains("local") && storage.contains("http"), "{storage}");

        // The viewer loads the best game of the latest revision with games, and steps through it.
        let moves = best["moves"].as_u64().unwrap();
        wait_js(&client, "the game viewer", &format!("return document.querySelector('#viewer-move').textContent === '0 / {moves}'")).await;
        let board_at_start = client.find(Locator::Css("#board")).await.unwrap().text().await.unwrap();
        client.find(Locator::Css("#viewer-next")).await.unwrap().click().await.unwrap();
        client.find(Locator::Css("#viewer-next")).await.unwrap().click().await.unwrap();
        let position = client.find(Locator::Css("#viewer-move")).await.unwrap().text().await.unwrap();
        assert_eq!(position, format!("2 / {moves}"));
        let board_later = client.find(Locator::Css("#board")).await.unwrap().text().await.unwrap();
        assert_ne!(board_at_start, board_later, "the board did not change");
        let score = js(
            &client,
            "const s = document.querySelector('#viewer-slider'); s.value = s.max;
             s.dispatchEvent(new Event('input'));
             return document.querySelector('#viewer-score').textContent",
        )
        .await;
        assert_eq!(score, format!("score {}", best["score"]));
        let cells = client.find_all(Locator::Css("#board .cell")).await.unwrap();
        assert_eq!(cells.len(), 16);

        // The x axis switches; the charts keep their points.
        js(&client, "const x = document.querySelector('#x-axis'); x.value = 'games'; x.dispatchEvent(new Event('change')); return true").await;
        wait_js(&client, "the games axis", "return Number(document.getElementById('strength-chart').dataset.points) >= 2").await;
        let png = client.screenshot().await.unwrap();
        std::fs::write(artifact("dashboard.png"), &png).unwrap();
        assert!(png.starts_with(b"\x89PNG"));

        // A phone-sized window: nothing wider than the screen but the scrollable table.
        client.set_window_size(390, 844).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let overflow = js(&client, "return document.documentElement.scrollWidth - window.innerWidth").await;
        assert!(overflow.as_i64().unwrap() <= 1, "the page is wider than a phone by {overflow} px");
        std::fs::write(artifact("dashboard-phone.png"), client.screenshot().await.unwrap()).unwrap();
        client.close().await.unwrap();
    });
    eprintln!("screenshots: {} and dashboard-phone.png", artifact("dashboard.png").display());

    // The export command, on the same database, agrees with the server.
    let out = zero2048(
        dir.path(),
        &["export", "games", "--revision", &best["revision"].to_string(), "--format", "csv"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("uuid,worker,revision,score,moves,max_tile,parent,branch_step,record_hex\n"));
    assert!(csv.contains(best["uuid"].as_str().unwrap()));
    let jsonl = zero2048(dir.path(), &["export", "games", "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(jsonl.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), stored_games(&dir.path().join("zero2048.db")).len());
    assert!(
        lines
            .iter()
            .all(|l| l["record"]["steps"].as_array().unwrap().len() as u64 == l["moves"].as_u64().unwrap())
    );
    let download = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/games/export?revision={}&format=csv", best["revision"]))
        .send()
        .unwrap();
    assert!(download.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    assert_eq!(download.text().unwrap(), csv);
    let missing = zero2048(dir.path(), &["export", "games", "--db", "nope.db"]);
    assert_eq!(missing.status.code(), Some(2));
}
