//! A small HTTP/1.1 server for guests' outbound requests: fixed routes, and a
//! record of every request it got (method, path, headers, body).
//!
//! Routes: `/hello` (JSON), `/echo-auth` (the `authorization` header back as
//! the body), `/post` (the body's length), `/redirect?to=URL` (302 to URL),
//! `/flaky` (503 the first time, then 200), `/big?bytes=N` (N bytes),
//! `/slow?ms=N` (answers after N ms). Anything else is 404.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The server; it stops with the test process.
pub struct WebServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl WebServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the web server");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &log);
                });
            }
        });
        WebServer { addr, received }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests had path `path` (query included).
    pub fn hits(&self, path: &str) -> usize {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).count()
    }
}

fn answer(stream: TcpStream, log: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let query = |key: &str| {
        path.split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}="))))
            .unwrap_or_default()
            .to_owned()
    };
    let route = path.split('?').next().unwrap_or_default().to_owned();
    let earlier = {
        let mut log = log.lock().unwrap();
        let earlier = log.iter().filter(|r| r.path == path).count();
        log.push(Received { method, path: path.clone(), headers: headers.clone(), body: body.clone() });
        earlier
    };
    let (status, extra, body): (&str, String, Vec<u8>) = match route.as_str() {
        "/hello" => ("200 OK", "content-type: application/json\r\n".into(), br#"{"hello":"world"}"#.to_vec()),
        "/echo-auth" => ("200 OK", String::new(), header("authorization").into_bytes()),
        "/post" => ("200 OK", String::new(), format!("got {} bytes", body.len()).into_bytes()),
        "/redirect" => ("302 Found", format!("location: {}\r\n", query("to")), Vec::new()),
        "/flaky" if earlier == 0 => ("503 Service Unavailable", String::new(), b"try again".to_vec()),
        "/flaky" => ("200 OK", String::new(), b"recovered".to_vec()),
        "/big" => ("200 OK", String::new(), vec![b'x'; query("bytes").parse().unwrap_or(0)]),
        "/slow" => {
            std::thread::sleep(Duration::from_millis(query("ms").parse().unwrap_or(0)));
            ("200 OK", String::new(), b"slow".to_vec())
        }
        _ => ("404 Not Found", String::new(), Vec::new()),
    };
    let mut stream = stream;
    write!(stream, "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n", body.len())?;
    stream.write_all(&body)?;
    stream.flush()
}
