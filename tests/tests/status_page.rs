//! The status page as a person sees it: `converge serve` on a demo workspace, the page
//! and its JSON over real HTTP, and the page in a real browser — headless Chromium from
//! Debian's packages, driven through ChromeDriver (`make browser` installs both): it
//! loads without a console message (Chromium's console log, which a probe page proves
//! is read), shows every tenant and the charts, is kept as a screenshot at a laptop's
//! and a phone's width (`tests/artifacts/status/`), and shows the drift a reconcile
//! found after it ran. Nothing here depends on pixels.
//!
//! Without them the browser half says so loudly and is skipped — unless
//! `CONVERGE_REQUIRE_BROWSER=1` (set by `make test` once they are installed), when their
//! absence fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use converge_e2e::{binary, bounded, converge_ok as converge, data_dir};


/// `converge serve` on a free port, and the status page's address it prints.
struct Served {
    child: Child,
    status_url: String,
}

impl Served {
    fn start(data_dir: &Path) -> Served {
        let mut child = Command::new(binary("converge"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .env_remove("CONVERGE_CONFIG")
            .env("CONVERGE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start converge serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("serve's first line");
        let status_url = line.trim().strip_prefix("status page: ").unwrap_or_else(|| panic!("serve printed {line:?}")).to_owned();
        Served { child, status_url }
    }

    fn json_url(&self) -> String {
        self.status_url.replace("/status", "/status.json")
    }

    /// SIGTERM, then the exit: DuckDB's file is free for the next command.
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve ended with {status:?}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Headless Chromium and its ChromeDriver, if installed (see the module docs).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CONVERGE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let driver = std::env::var_os("CONVERGE_CHROMEDRIVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    if chromium.is_file() && driver.is_file() {
        return Some((chromium, driver));
    }
    if std::env::var("CONVERGE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("CONVERGE_REQUIRE_BROWSER=1 but Chromium ({}) or ChromeDriver ({}) is missing", chromium.display(), driver.display());
    }
    eprintln!("!!!!! SKIPPED the status page's browser checks: no Chromium at {} or ChromeDriver at {} (Debian's chromium and chromium-driver; `make browser`)", chromium.display(), driver.display());
    None
}

/// A headless Chromium session driven over the W3C WebDriver protocol (ChromeDriver
/// on a loopback port), with the browser's console log kept.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// What the browser made of a page: the DOM after load and every console message.
struct Loaded {
    dom: String,
    console: Vec<String>,
}

impl Browser {
    async fn start(chromium: &Path, driver: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Its output is not read (a closed pipe would end it at its next line).
        let driver = Command::new(driver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start chromedriver");
        let (base, http) = (format!("http://127.0.0.1:{port}"), reqwest::Client::new());
        // The flags the machine's notes give for a closed network: no background
        // connections, no first-run work.
        let args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut session = None;
        for _ in 0..50 {
            // Until ChromeDriver listens.
            match http.post(format!("{base}/session")).json(&capabilities).send().await {
                Ok(response) => {
                    let body: serde_json::Value = response.json().await.unwrap();
                    session = Some(body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_owned());
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        Browser { driver, base, session: session.expect("chromedriver answered"), http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let mut request = self.http.request(method, format!("{}/session/{}{path}", self.base, self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let value: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
        assert!(value["value"].get("error").is_none(), "webdriver {path}: {value}");
        value["value"].clone()
    }

    async fn load(&self, url: &str, width: u32, height: u32) -> Loaded {
        self.call(reqwest::Method::POST, "/window/rect", Some(serde_json::json!({"width": width, "height": height}))).await;
        self.call(reqwest::Method::POST, "/url", Some(serde_json::json!({"url": url}))).await;
        let dom = self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap().to_owned();
        let log = self.call(reqwest::Method::POST, "/se/log", Some(serde_json::json!({"type": "browser"}))).await;
        let console = log.as_array().unwrap().iter().map(|entry| format!("{} {}", entry["level"], entry["message"])).collect();
        Loaded { dom, console }
    }

    /// The page as it shows at the window's size, kept as a PNG.
    async fn screenshot(&self, file: &Path) {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "not a picture of a page ({} bytes)", png.len());
        std::fs::write(file, png).unwrap();
    }

    async fn quit(mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts").join("status");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn status_json(served: &Served) -> serde_json::Value {
    let response = reqwest::get(served.json_url()).await.expect("GET /status.json");
    assert_eq!(response.status(), 200);
    response.json().await.expect("status.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_tenant_equal_then_the_drift_a_reconcile_found() {
    bounded(600, "status page", async {
        let (_dir, path) = data_dir();
        let demo: serde_json::Value = serde_json::from_str(converge(&path, &["demo", "--records", "2000", "--json"]).trim()).unwrap();
        let tenants: Vec<String> = demo["tenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap().to_owned()).collect();
        assert_eq!(tenants.len(), 4, "{demo}");

        // Over HTTP: every tenant, equal to its source, with its last reconcile.
        let served = Served::start(&path);
        let report = status_json(&served).await;
        let listed: Vec<&str> = report["tenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
        assert_eq!(listed, tenants.iter().map(String::as_str).collect::<Vec<_>>());
        for tenant in report["tenants"].as_array().unwrap() {
            assert_eq!(tenant["source_docs"], tenant["current_rows"], "{tenant}");
            assert!(tenant["source_docs"].as_u64().unwrap() > 0, "{tenant}");
            assert_eq!(tenant["equal"], true, "{tenant}");
            assert!(tenant["last_reconcile"].is_object(), "the demo reconciles: {tenant}");
        }
        let html = reqwest::get(&served.status_url).await.unwrap().text().await.unwrap();
        assert!(html.contains("<svg"));
        for tenant in &tenants {
            assert!(html.contains(&format!("data-tenant=\"{tenant}\"")), "{tenant} not on the page");
        }

        let browser = match browser() {
            Some((chromium, driver)) => Some(Browser::start(&chromium, &driver).await),
            None => None,
        };
        if let Some(browser) = &browser {
            // The console check can fail: a page that logs is caught.
            let probe = browser.load("data:text/html,<script>console.error('converge-probe')</script>", 800, 600).await;
            assert!(probe.console.iter().any(|line| line.contains("converge-probe")), "the browser's console is not captured: {:?}", probe.console);

            let page = browser.load(&served.status_url, 1280, 900).await;
            assert!(page.console.is_empty(), "the page logged to the console: {:?}", page.console);
            for tenant in &tenants {
                assert!(page.dom.contains(&format!("data-tenant=\"{tenant}\"")), "{tenant} not rendered");
            }
            assert!(page.dom.contains("<svg") && page.dom.contains("Every tenant's copy equals its source"), "{}", page.dom);
            browser.screenshot(&artifacts().join("status-laptop.png")).await;
            let phone = browser.load(&served.status_url, 390, 844).await;
            assert!(phone.console.is_empty(), "{:?}", phone.console);
            browser.screenshot(&artifacts().join("status-phone.png")).await;
        }
        served.stop();

        // Rows of two documents the source never had, appended behind the sync's back:
        // the next reconcile finds them as silent orphans and tombstones them.
        converge(
            &path,
            &[
                "sql",
                "INSERT INTO records BY NAME SELECT * EXCLUDE (path_hash) REPLACE (doc_path || '-ghost' AS doc_path, doc_id || '-ghost' AS doc_id, \
                 'ghost-' || event_id AS event_id, (now() AT TIME ZONE 'UTC') AS ingested_at) \
                 FROM records_current WHERE tenant = 'acme' ORDER BY doc_path LIMIT 2 RETURNING doc_path",
            ],
        );
        let run: serde_json::Value = serde_json::from_str(converge(&path, &["reconcile", "--json"]).trim()).unwrap();
        assert_eq!((run["orphan"].as_u64(), run["silent"].as_u64(), run["repaired"].as_u64()), (Some(2), Some(2), Some(2)), "{run}");

        let served = Served::start(&path);
        let report = status_json(&served).await;
        let acme = report["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "acme").unwrap().clone();
        assert_eq!((acme["last_reconcile"]["orphan"].as_u64(), acme["last_reconcile"]["silent"].as_u64()), (Some(2), Some(2)), "{acme}");
        let last = report["reconciles"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["orphan"], 2, "the drift chart's newest bar: {last}");
        if let Some(browser) = browser {
            let page = browser.load(&served.status_url, 1280, 900).await;
            assert!(page.console.is_empty(), "{:?}", page.console);
            let row = page.dom.split("data-tenant=\"acme\"").nth(1).expect("acme's row").split("</tr>").next().unwrap().to_owned();
            assert!(row.contains(">0 / 2<"), "acme's row shows its two silent orphans (known / silent): {row}");
            assert!(page.dom.contains("class=\"orphan\""), "the chart draws the orphans");
            browser.screenshot(&artifacts().join("status-after-drift.png")).await;
            browser.quit().await;
        }
        served.stop();
    })
    .await;
}
