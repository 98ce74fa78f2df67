//! A small WebDriver client for the dashboard's browser tests: Debian's
//! `chromedriver` driving headless Chromium (both installed by `./x setup`),
//! spoken to over reqwest.
//!
//! ```ignore
//! let browser = Browser::start("my_test").await;
//! browser.goto(&format!("{url}/#token={token}")).await;
//! browser.click("#nav-submit").await;
//! browser.type_into("#submit-input", r#"{"mode": "echo"}"#).await;
//! browser.wait_text("#run-status", "succeeded", Duration::from_secs(30)).await;
//! ```
//!
//! Elements are found afresh by CSS selector on every call (the dashboard
//! redraws parts of the page as events arrive, so held references go stale).
//! When a test panics while a [`Browser`] is alive, dropping it saves a
//! screenshot, the page's HTML, the browser console and chromedriver's log under
//! `target/browser-screenshots/`; dropping it always ends the session and
//! kills chromedriver.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::guests::repo_root;

/// Chromium as Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// chromedriver as Debian's `chromium-driver` installs it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The flags every test browser runs with: headless, and nothing that reaches
/// for the network on its own (the test network is closed).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
];

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take (starting Chromium on a busy
/// machine is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// A WebDriver error answer (`{"value": {"error", "message"}}`) or a transport failure.
#[derive(Debug)]
pub struct WebDriverError {
    /// The W3C error code, e.g. `no such element`; `transport` when no answer came.
    pub error: String,
    /// Its message.
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first_line = self.message.lines().next().unwrap_or_default();
        write!(f, "{}: {first_line}", self.error)
    }
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Child,
    /// The profile (`--user-data-dir`) and chromedriver's log; removed on drop.
    scratch: tempfile::TempDir,
    /// Names the files saved when the test fails.
    name: String,
}

/// Whether Chromium and chromedriver are installed.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// Where failing tests leave their screenshots.
pub fn screenshot_dir() -> PathBuf {
    repo_root().join("target/browser-screenshots")
}

impl Browser {
    /// Starts chromedriver on a free port and opens a fresh headless session;
    /// `name` (the test's) names the screenshot if the test fails.
    pub async fn start(name: &str) -> Browser {
        assert!(
            available(),
            "{CHROMIUM} or {CHROMEDRIVER} is missing: `./x setup` installs Debian's chromium and chromium-driver"
        );
        let scratch = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", scratch.path().join("chromedriver.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let http = reqwest::Client::builder().timeout(COMMAND_TIMEOUT).build().expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { http, session: String::new(), driver, scratch, name: name.to_owned() };

        let started = Instant::now();
        loop {
            let ready = async { browser.http.get(format!("{base}/status")).send().await?.json::<Value>().await };
            if let Ok(status) = ready.await
                && status["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!("chromedriver exited at start: {exit}");
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not get ready on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = browser.scratch.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let answer = browser
            .call(reqwest::Method::POST, &format!("{base}/session"), Some(capabilities))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        let id = answer["sessionId"].as_str().expect("a session id");
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// Sends one command; the answer's `value`.
    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        command(&self.http, method, url, body).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, WebDriverError> {
        self.call(reqwest::Method::POST, &format!("{}{path}", self.session), Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, WebDriverError> {
        self.call(reqwest::Method::GET, &format!("{}{path}", self.session), None).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The page's current URL.
    pub async fn url(&self) -> String {
        self.get("/url").await.expect("current url").as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`, or `None`.
    pub async fn find(&self, css: &str) -> Option<String> {
        match self.post("/element", json!({ "using": "css selector", "value": css })).await {
            Ok(value) => Some(element_id(&value)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {e}"),
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        let found = self
            .post("/elements", json!({ "using": "css selector", "value": css }))
            .await
            .unwrap_or_else(|e| panic!("finding {css:?}: {e}"));
        found.as_array().map_or(0, Vec::len)
    }

    /// The element matching `css`, waiting up to ten seconds for it.
    async fn element(&self, css: &str) -> String {
        self.wait_until(&format!("an element matching {css:?}"), Duration::from_secs(10), async || self.find(css).await)
            .await
    }

    /// Clicks the element matching `css` (waiting for it to appear), retrying
    /// while the page redraws it under the click.
    pub async fn click(&self, css: &str) {
        self.retrying(css, Duration::from_secs(10), async |id| {
            self.post(&format!("/element/{id}/click"), json!({})).await
        })
        .await;
    }

    /// Replaces the text of the input or textarea matching `css` with `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.retrying(css, Duration::from_secs(10), async |id| {
            self.post(&format!("/element/{id}/clear"), json!({})).await?;
            self.post(&format!("/element/{id}/value"), json!({ "text": text })).await
        })
        .await;
    }

    /// Chooses the option with `value` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let option = format!("{css} option[value=\"{}\"]", value.replace('\\', "\\\\").replace('"', "\\\""));
        self.click(&option).await;
    }

    /// The visible text of the element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        let value = self
            .retrying(css, Duration::from_secs(10), async |id| self.get(&format!("/element/{id}/text")).await)
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The visible text of the element matching `css`, or `None` if there is none now.
    pub async fn try_text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        let value = self.get(&format!("/element/{id}/text")).await.ok()?;
        value.as_str().map(str::to_owned)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its return value.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    /// Waits until `check` gives `Some`, polling every 100 ms; panics naming
    /// `what` after `limit`.
    pub async fn wait_until<T>(&self, what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = check().await {
                return found;
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what} (page {})",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for(&self, css: &str, limit: Duration) {
        self.wait_until(&format!("an element matching {css:?}"), limit, async || self.find(css).await).await;
    }

    /// Waits until no element matches `css`.
    pub async fn wait_gone(&self, css: &str, limit: Duration) {
        self.wait_until(&format!("no element matching {css:?}"), limit, async || {
            (self.count(css).await == 0).then_some(())
        })
        .await;
    }

    /// Waits until the element matching `css` shows exactly `expected`.
    pub async fn wait_text(&self, css: &str, expected: &str, limit: Duration) {
        let mut last = None;
        let found = self
            .wait_until_or(limit, async || {
                last = self.try_text(css).await;
                (last.as_deref().map(str::trim) == Some(expected)).then_some(())
            })
            .await;
        assert!(
            found.is_some(),
            "timed out after {limit:?} waiting for {css:?} to show {expected:?}; it shows {last:?}"
        );
    }

    /// Waits until `count(css)` is `n`.
    pub async fn wait_count(&self, css: &str, n: usize, limit: Duration) {
        let mut last = 0;
        let found = self
            .wait_until_or(limit, async || {
                last = self.count(css).await;
                (last == n).then_some(())
            })
            .await;
        assert!(
            found.is_some(),
            "timed out after {limit:?} waiting for {n} elements matching {css:?}; there are {last}"
        );
    }

    /// Like [`Browser::wait_until`], but `None` at the limit instead of a panic.
    async fn wait_until_or<T>(&self, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
        let started = Instant::now();
        loop {
            if let Some(found) = check().await {
                return Some(found);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `act` on the element matching `css`, finding it again when it went
    /// stale or was not there yet, until `limit`.
    async fn retrying(
        &self,
        css: &str,
        limit: Duration,
        mut act: impl AsyncFnMut(&str) -> Result<Value, WebDriverError>,
    ) -> Value {
        let started = Instant::now();
        loop {
            let id = self.element(css).await;
            match act(&id).await {
                Ok(value) => return value,
                Err(e)
                    if started.elapsed() < limit
                        && matches!(
                            e.error.as_str(),
                            "stale element reference" | "element click intercepted" | "element not interactable"
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{css:?}: {e}"),
            }
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.get("/screenshot").await.expect("screenshot");
        std::fs::write(path, decode_base64(png.as_str().unwrap_or_default())).expect("write screenshot");
    }

    /// What the page wrote to the browser console since the last call.
    pub async fn console(&self) -> Vec<String> {
        console_lines(&self.http, &self.session).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let session = std::mem::take(&mut self.session);
        let name = self.name.clone();
        let label = name.clone();
        let driver_log = self.scratch.path().join("chromedriver.log");
        // Drop cannot await: talk to chromedriver from a thread with its own runtime.
        let saved = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().ok()?;
                let saved = if failed && !session.is_empty() {
                    save_failure(&http, &session, &name, &driver_log).await
                } else {
                    None
                };
                if !session.is_empty() {
                    let _ = command(&http, reqwest::Method::DELETE, &session, None).await;
                }
                saved
            })
        })
        .join()
        .ok()
        .flatten();
        if let Some(path) = saved {
            eprintln!("browser test {label} failed: screenshot, page and console saved as {}.*", path.display());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Saves a screenshot, the page's HTML, the console and chromedriver's log;
/// the path they share without extension.
async fn save_failure(http: &reqwest::Client, session: &str, name: &str, driver_log: &Path) -> Option<PathBuf> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).ok()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    let base = dir.join(format!("{name}-{stamp}"));
    let png = command(http, reqwest::Method::GET, &format!("{session}/screenshot"), None).await.ok()?;
    std::fs::write(base.with_extension("png"), decode_base64(png.as_str().unwrap_or_default())).ok()?;
    if let Ok(html) = command(http, reqwest::Method::GET, &format!("{session}/source"), None).await {
        let _ = std::fs::write(base.with_extension("html"), html.as_str().unwrap_or_default());
    }
    let mut log = console_lines(http, session).await.join("\n");
    if let Ok(url) = command(http, reqwest::Method::GET, &format!("{session}/url"), None).await {
        log = format!("url: {}\n{log}", url.as_str().unwrap_or_default());
    }
    let _ = std::fs::write(base.with_extension("console.log"), log);
    let _ = std::fs::copy(driver_log, base.with_extension("chromedriver.log"));
    Some(base)
}

/// The browser console's entries (chromedriver's `goog:loggingPrefs` log).
async fn console_lines(http: &reqwest::Client, session: &str) -> Vec<String> {
    let Ok(entries) =
        command(http, reqwest::Method::POST, &format!("{session}/se/log"), Some(json!({ "type": "browser" }))).await
    else {
        return Vec::new();
    };
    entries
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!("{} {}", e["level"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One WebDriver command: the answer's `value`, or its error.
async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let transport = |e: reqwest::Error| WebDriverError { error: "transport".into(), message: e.to_string() };
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    let ok = response.status().is_success();
    let answer: Value = response.json().await.map_err(transport)?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if ok {
        return Ok(value);
    }
    Err(WebDriverError {
        error: value["error"].as_str().unwrap_or("unknown error").to_owned(),
        message: value["message"].as_str().unwrap_or_default().to_owned(),
    })
}

fn element_id(value: &Value) -> String {
    value[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("not an element reference: {value}")).to_owned()
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Standard base64 (screenshots), ignoring anything outside the alphabet.
fn decode_base64(text: &str) -> Vec<u8> {
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for value in text.bytes().filter_map(sextet) {
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8="), b"hello");
        assert_eq!(super::decode_base64("aGk="), b"hi");
        assert_eq!(super::decode_base64("YWJj"), b"abc");
    }
}
