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

async fn browser(driver_port: u16) -> fantoccini::Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1400,1800"]
        }),
    );
    ClientBuilder::rustls()
        .expect("a TLS configuration")
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session")
}

/// What the page draws, read back from the page: every y-axis's tick labels must differ from their
/// neighbours (no "1 0 0 0" for small rates), and no legend value may read "--".
const AXES_AND_LEGENDS: &str = "
    const problems = [];
    for (const id in charts) {
      const u = charts[id].plot;
      u.axes.forEach((axis, i) => {
        if (i === 0 || !axis._values) return;
        const labels = axis._values.filter((v) => v !== '' && v != null);
        if (new Set(labels).size !== labels.length) problems.push(id + ' axis ' + i + ': ' + labels.join(' '));
      });
    }
    document.querySelectorAll('.u-legend .u-label').forEach((l) => { if (l.textContent === 'Value') problems.push('a legend says Value'); });
    document.querySelectorAll('.u-legend .u-value').forEach((v) => { if (v.textContent.trim() === '--') problems.push('a legend value says --'); });
    return problems.join('; ')";

#[test]
fn the_dashboard_shows_a_real_run_in_a_real_browser() {
    // Before the first evaluation the strength charts say why they are empty.
    let quiet = tempfile::tempdir().unwrap();
    std::fs::write(quiet.path().join("quiet.yaml"), "train:\n  evaluate_every_revisions: 0\n").unwrap();
    let quiet_port = free_port();
    let quiet_server = server(quiet.path(), quiet_port, &["--config", "quiet.yaml"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fast.yaml"), "api:\n  sample_seconds: 0.3\n").unwrap();
    let port = free_port();
    let mut server_proc =
        server(dir.path(), port, &["--config", "fast.yaml", "--revision-every-games", "300"]);
    let token = token(dir.path(), "painter");
    // The worker plays until three revisions are evaluated: a revision published while the one
    // before is still being evaluated is not evaluated, so a fixed number of games may not do.
    let w = worker(dir.path(), port, &token, "painter", &["--upload-interval", "100ms"]);
    wait_for(Duration::from_secs(180), "evaluations and samples", || {
        let s = status(port);
        let history: serde_json::Value =
            http().get(format!("http://127.0.0.1:{port}/api/v1/history")).send().unwrap().json().unwrap();
        s["evaluations"].as_array().unwrap().len() >= 3 && history["samples"].as_array().unwrap().len() >= 4
    });
    w.interrupt();
    let (code, _, log) = w.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{log}");
    let best: serde_json::Value =
        http().get(format!("http://127.0.0.1:{port}/api/v1/games/best")).send().unwrap().json().unwrap();

    let (_driver, driver_port) = chromedriver();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = browser(driver_port).await;
        client.goto(&format!("http://127.0.0.1:{quiet_port}/")).await.unwrap();
        wait_js(&client, "the status", "return document.body.dataset.ready === 'status'").await;
        for chart in ["strength-chart", "reach-chart"] {
            let message = client.find(Locator::Id(chart)).await.unwrap().text().await.unwrap();
            assert!(message.contains("no evaluation yet"), "{chart} says {message:?}");
        }
        client.close().await.unwrap();
    });
    drop(quiet_server);

    runtime.block_on(async {
        let client = browser(driver_port).await;
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
        assert!(storage.contains("weights on disk"), "{storage}");
        let database = if on_postgres() { "PostgreSQL" } else { "SQLite" };
        assert!(storage.contains("run database") && storage.contains(database), "{storage}");
        assert!(storage.contains("game chunks") && storage.contains("on local disk"), "{storage}");

        // At 1400 px: the workers table is whole, no storage value (hash, timestamp) runs over two
        // lines, the axes and legends read as numbers.
        let cut = js(&client, "const s = document.querySelector('#workers').parentElement; return s.scrollWidth - s.clientWidth").await;
        assert!(cut.as_i64().unwrap() <= 0, "the workers table is cut by {cut} px at 1400 px");
        let wrapped = js(
            &client,
            "const dds = [...document.querySelectorAll('#storage dd')];
             const line = parseFloat(getComputedStyle(dds[0]).lineHeight);
             return dds.filter((d) => d.getBoundingClientRect().height > 1.5 * line)
                       .map((d) => d.previousSibling.textContent + ': ' + d.textContent).join('; ')",
        )
        .await;
        assert_eq!(wrapped, "", "storage values wrap over several lines");
        let deadline = js(&client, "return [...document.querySelectorAll('#storage dt')].find((d) => d.textContent === 'record valid until').nextSibling.textContent").await;
        assert!(deadline.as_str().unwrap().ends_with(" UTC") && deadline.as_str().unwrap().len() == 23, "{deadline}");
        let problems = js(&client, AXES_AND_LEGENDS).await;
        assert_eq!(problems, "", "the charts read badly");

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

        client.close().await.unwrap();
    });

    // The server goes away for a while and comes back: the throughput charts show a gap there, not a
    // rate of zero.
    server_proc.kill9();
    std::thread::sleep(Duration::from_secs(2));
    let down_since = port_closed(port);
    let _server = server(dir.path(), port, &["--config", "fast.yaml", "--revision-every-games", "300"]);
    wait_for(Duration::from_secs(30), "samples after the restart", || samples_after(port, down_since) >= 2);
    runtime.block_on(async {
        let client = browser(driver_port).await;
        client.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
        wait_js(
            &client,
            "the throughput chart",
            "return Number(document.getElementById('throughput-chart').dataset.points) >= 2",
        )
        .await;
        let gap = js(
            &client,
            "const data = charts['throughput-chart'].plot.data;
             return data.slice(1).every((series) => series.some((v) => v === null))",
        )
        .await;
        assert_eq!(gap, true, "the outage is not drawn as a gap");
        let problems = js(&client, AXES_AND_LEGENDS).await;
        assert_eq!(problems, "", "the charts read badly after the restart");

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
    let missing =
        zero2048(dir.path(), &["export", "games", "--db", "nope.db", "--database", "sqlite://nope.db"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no run database"));
}

/// Waits until nothing listens on `port` any more; returns the time (ms since the epoch).
fn port_closed(port: u16) -> u64 {
    wait_for(Duration::from_secs(10), "the port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// How many throughput samples the server at `port` took after `since` (ms since the epoch).
fn samples_after(port: u16, since: u64) -> usize {
    let Ok(response) = http().get(format!("http://127.0.0.1:{port}/api/v1/history")).send() else { return 0 };
    let Ok(history) = response.json::<serde_json::Value>() else { return 0 };
    history["samples"].as_array().unwrap().iter().filter(|s| s["at"].as_u64().unwrap() > since).count()
}
