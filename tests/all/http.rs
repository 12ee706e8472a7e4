//! A spawned `sluice serve` and the tests' HTTP client: `ureq` over a real
//! loopback socket for well-formed requests; raw `TcpStream`s (`connect`,
//! `request_via`, `read_response`) for requests that must be malformed,
//! slow, cut off or sent from a chosen source address.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running server; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    stderr: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    agent: ureq::Agent,
}

/// How long a test waits for any one response (a run can take a while
/// on a loaded machine).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(180);

impl Server {
    /// Starts `sluice serve` on a free loopback port with `home` and, when
    /// given, `config`; returns once it prints its address.
    pub fn start(home: &Path, config: Option<&Path>, cwd: &Path) -> Server {
        Server::start_with_env(home, config, cwd, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(
        home: &Path,
        config: Option<&Path>,
        cwd: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--home"])
            .arg(home)
            .current_dir(cwd)
            .env_remove("SLUICE_HOME")
            .env(
                "SLUICE_COMPILE_CACHE",
                crate::harness::repo().join("target/sluice-test-compile-cache"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("spawn sluice serve");
        let (tx, stderr) = std::sync::mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let agent = ureq::Agent::config_builder()
            // Error statuses are what many tests are about: return them.
            .http_status_as_error(false)
            .timeout_global(Some(RESPONSE_TIMEOUT))
            // A connection per request, as `request` promises: a pooled one
            // the server has since closed failed a GET with "Peer
            // disconnected" once in CI.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into();
        Server {
            child,
            addr,
            stderr: std::sync::Mutex::new(stderr),
            agent,
        }
    }

    /// One request; `Connection: close`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        self.request_with(method, path, token, body, &[])
    }

    /// One request with extra headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let sent = match body {
            Some(b) => self.agent.run(request.body(b).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let response = match sent {
            Ok(r) => r,
            // A server may answer (413) before reading all of a big body,
            // which ureq reports as a failed send: read that answer raw.
            Err(ureq::Error::Io(_)) if body.is_some() => {
                return self.request_via(self.connect(), method, path, token, body, headers);
            }
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        Response {
            status,
            headers,
            body,
        }
    }

    /// One request over the connection `s` (e.g. from [`Server::connect_from`]).
    pub fn request_via(
        &self,
        mut s: TcpStream,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        if let Some(b) = body {
            // A server may answer (413) before reading all of a big body.
            let _ = s.write_all(b);
        }
        read_response(BufReader::new(s))
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        s
    }

    /// A connection whose source address is `ip` (any of 127.0.0.0/8 on
    /// Linux): a distinct client to the server's per-address limits.
    pub fn connect_from(&self, ip: &str) -> TcpStream {
        let source: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
        let target: std::net::SocketAddr = self.addr.parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let s = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(source).unwrap();
            socket.connect(target).await.unwrap()
        });
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, None)
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request_with(
            "POST",
            path,
            token,
            Some(body.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        )
    }

    /// Reads the run's event stream to its end; returns `(event, data)`.
    pub fn events(&self, id: &str, token: Option<&str>) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        self.each_event(id, token, |e, d| {
            events.push((e.to_string(), d.clone()));
            true
        });
        events
    }

    /// Calls `f` for each event until it returns false or the stream ends.
    pub fn each_event(
        &self,
        id: &str,
        token: Option<&str>,
        mut f: impl FnMut(&str, &Value) -> bool,
    ) {
        let mut request = ureq::http::Request::builder()
            .uri(format!("http://{}/v1/runs/{id}/events", self.addr))
            .header("Accept", "text/event-stream");
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let response = self
            .agent
            .run(request.body(()).unwrap())
            .unwrap_or_else(|e| panic!("events of {id}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "events of {id}");
        let chunked = response
            .headers()
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("chunked"));
        assert!(chunked, "events of {id}: not a chunked stream");
        // ureq decodes the chunks; lines are read as they arrive.
        let mut event = String::new();
        for line in BufReader::new(response.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            let line = line.trim_end_matches('\r');
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(d).unwrap();
                if !f(&event, &data) {
                    return;
                }
            }
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    pub fn stderr_line(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.lock().unwrap().recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?} within {within:?}: {e}"),
            }
        }
    }

    /// Every stderr line printed so far and not yet consumed (no waiting).
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.lock().unwrap().try_iter().collect()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    /// Asserts the error shape, status and code; returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size_line = String::new();
    if r.read_line(&mut size_line).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    r.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

pub fn read_response(mut r: impl BufRead) -> Response {
    let (status, headers) = read_head(&mut r);
    let body = if header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        while let Some(c) = read_chunk(&mut r) {
            body.extend(c);
        }
        body
    } else if let Some(n) = header(&headers, "content-length") {
        let mut body = vec![0; n.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body).unwrap();
        body
    };
    Response {
        status,
        headers,
        body,
    }
}
