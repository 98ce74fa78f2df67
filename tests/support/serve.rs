//! A real `cairn serve` on a test project: started as a child process on an
//! ephemeral port, found through the `.cairn/serve.json` it writes, and
//! stopped with SIGTERM (`stop`) or when dropped.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::guests::cairn_bin;
use super::project::Project;

/// A running server.
pub struct Served {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its bearer token.
    pub token: String,
    /// A client for its API.
    pub http: reqwest::Client,
}

/// The state directory of a project.
pub fn state_dir(project: &Project) -> std::path::PathBuf {
    project.path().join(".cairn")
}

impl Served {
    /// Starts `cairn serve --listen 127.0.0.1:0` on `project` with `extra` arguments.
    pub fn start(project: &Project, extra: &[&str]) -> Served {
        let info_file = state_dir(project).join("serve.json");
        let _ = std::fs::remove_file(&info_file);
        let child = Command::new(cairn_bin())
            .arg("--manifest")
            .arg(&project.manifest)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cairn serve starts");
        let started = Instant::now();
        let info: Value = loop {
            if let Some(info) = std::fs::read(&info_file).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                break info;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "cairn serve wrote no {}", info_file.display());
            std::thread::sleep(Duration::from_millis(20));
        };
        let token = std::fs::read_to_string(Path::new(info["token_file"].as_str().unwrap())).expect("the token file");
        Served {
            child: Some(child),
            url: info["url"].as_str().unwrap().to_owned(),
            token,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// A request to `path` (from `/`), with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token)
    }

    /// GETs `path` and returns (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.request(reqwest::Method::GET, path).send().await.expect("the server answers")).await
    }

    /// POSTs `body` to `path` and returns (status, JSON body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.request(reqwest::Method::POST, path).json(&body).send().await.expect("the server answers")).await
    }

    /// Sends SIGTERM and waits for the server to exit, up to `limit`.
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!("cairn serve did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Status and JSON body of a response (`null` if the body is not JSON).
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
