//! Starting the real `dataserver` binary on port 0 and talking to it with real clients: curl
//! for ordinary requests, raw TCP for requests no polite client sends.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test: `DATASERVER_BIN`, or the one Cargo built for this package.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("DATASERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dataserver-under-test")))
}

/// The `ds` command under test: `DS_BIN`, or the one Cargo built for this package.
pub fn ds_bin() -> PathBuf {
    std::env::var_os("DS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ds-under-test")))
}

/// What a `ds` run printed and how it ended.
#[derive(Debug)]
pub struct DsRun {
    /// Exit code.
    pub code: i32,
    /// Standard output, as text.
    pub stdout: String,
    /// Standard output, as bytes.
    pub stdout_bytes: Vec<u8>,
    /// Standard error.
    pub stderr: String,
}

impl DsRun {
    /// Each line of stdout as JSON (`--json` output).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
            })
            .collect()
    }
}

/// A running daemon with its own directory.
pub struct TestDaemon {
    child: Option<Child>,
    /// Bound address of the native API.
    pub http: SocketAddr,
    /// `http` or `https`.
    pub scheme: String,
    /// Bound address of the S3 API.
    pub s3: SocketAddr,
    /// The S3 admin key pair (access key ID, secret), created on first start.
    pub s3_key: (String, String),
    /// Arguments given to every curl call (e.g. `--cacert`).
    pub curl_args: Vec<String>,
    /// Holds `data/`, the log and the config.
    pub dir: TempDir,
    /// The admin token (created on first start).
    pub token: String,
    config: Option<String>,
    /// Log lines containing this are expected (a test that provokes an error says so).
    pub expected_errors: Vec<&'static str>,
}

/// The access key ID and secret of an `s3-credentials` file (two TOML string fields).
fn parse_s3_credentials(text: &str) -> (String, String) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .trim()
                    .strip_prefix('=')?
                    .trim()
                    .strip_prefix('"')?
                    .strip_suffix('"')
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{name} in s3-credentials:\n{text}"))
    };
    (field("access_key_id"), field("secret_access_key"))
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Starts a daemon with default settings.
pub fn start() -> TestDaemon {
    start_with_config(None)
}

/// Starts a daemon with `config` as its TOML file (`{dir}` is replaced by its directory).
pub fn start_with_config(config: Option<&str>) -> TestDaemon {
    start_with_config_and_files(config.unwrap_or_default(), &[])
}

/// Starts a daemon with `tokens` (name, secret, scopes as TOML, optional prefix) and `extra`
/// configuration; the admin token, if any, becomes `token`.
pub fn start_with_tokens(tokens: &[(&str, &str, &str, Option<&str>)], extra: &str) -> TestDaemon {
    let mut config = extra.to_owned();
    let mut files = Vec::new();
    for (name, secret, scopes, prefix) in tokens {
        config += &format!(
            "[[tokens]]\nname = \"{name}\"\ntoken_file = \"{{dir}}/{name}-token\"\nscopes = {scopes}\n"
        );
        if let Some(prefix) = prefix {
            config += &format!("prefix = \"{prefix}\"\n");
        }
        files.push((format!("{name}-token"), format!("{secret}\n")));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_str()))
        .collect();
    let mut daemon = start_with_config_and_files(&config, &files);
    if let Some((_, secret, _, _)) = tokens.iter().find(|token| token.2.contains("admin")) {
        daemon.token = (*secret).to_owned();
    }
    daemon
}

/// The same, with `files` (name, content) written into its directory before it starts.
pub fn start_with_config_and_files(config: &str, files: &[(&str, &str)]) -> TestDaemon {
    let dir = TempDir::new().expect("create temp dir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    let config = (!config.is_empty()).then_some(config);
    let mut daemon = TestDaemon {
        child: None,
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        scheme: "http".into(),
        s3: SocketAddr::from(([127, 0, 0, 1], 0)),
        s3_key: (String::new(), String::new()),
        curl_args: Vec::new(),
        dir,
        token: String::new(),
        config: config.map(str::to_owned),
        expected_errors: Vec::new(),
    };
    daemon.launch();
    daemon
}

impl TestDaemon {
    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let addr_file = self.dir.path().join("listening");
        let _ = std::fs::remove_file(&addr_file);
        let mut command = Command::new(daemon_bin());
        command
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--s3-listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.append_log());
        if let Some(config) = &self.config {
            let path = self.dir.path().join("config.toml");
            // `{dir}` in a test's config stands for its temporary directory.
            let text = config.replace("{dir}", self.dir.path().to_str().expect("utf-8 temp path"));
            std::fs::write(&path, text).expect("write config");
            command.arg("--config").arg(path);
        }
        let child = command.spawn().expect("spawn dataserver");
        self.child = Some(child);
        let (http, scheme, s3) = self.wait_for_address(&addr_file);
        self.http = http;
        self.scheme = scheme;
        self.s3 = s3;
        if let Ok(text) = std::fs::read_to_string(self.data_dir().join("s3-credentials")) {
            self.s3_key = parse_s3_credentials(&text);
        }
        let token_path = self.data_dir().join("admin-token");
        if let Ok(token) = std::fs::read_to_string(token_path) {
            self.token = token.trim().to_owned();
        }
    }

    fn append_log(&self) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log")
    }

    /// The daemon's stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits for the address file (written by rename, so never half a line); fails early if
    /// the daemon exits.
    fn wait_for_address(&mut self, path: &Path) -> (SocketAddr, String, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                let json: serde_json::Value =
                    serde_json::from_str(&text).expect("address file is JSON");
                let address = json["http"].as_str().expect("http address");
                let scheme = json["scheme"].as_str().unwrap_or("http").to_owned();
                let s3 = json["s3"].as_str().expect("s3 address");
                return (
                    address.parse().expect("socket address"),
                    scheme,
                    s3.parse().expect("socket address"),
                );
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "dataserver exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dataserver did not listen within 20 s:\n{}",
                self.log()
            );
            // Polling the file the daemon writes once it listens, not guessing at readiness.
            pause(5);
        }
    }

    /// Sends SIGTERM and waits for the process to end; answers whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        child.wait().expect("wait for dataserver").success()
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().expect("daemon running"))
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `ds ARGS` in `dir` against this daemon, with no config file and `token` (if any) as
    /// `DS_TOKEN`, ready to run.
    pub fn ds_command(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(ds_bin());
        command
            .args(args)
            .current_dir(dir)
            .env("DS_URL", self.url(""))
            .env("DS_CONFIG", dir.join("no-such-config.toml"))
            .env_remove("DS_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("DS_TOKEN", token);
        }
        command
    }

    /// Runs `ds` with `args` against this daemon (`DS_URL` set, no token unless `token`),
    /// in `dir`, with no config file.
    pub fn ds(&self, dir: &Path, token: Option<&str>, args: &[&str]) -> DsRun {
        let output = self.ds_command(dir, token, args).output().expect("run ds");
        DsRun {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stdout_bytes: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Waits for a daemon already told to stop; answers whether it exited cleanly.
    pub fn wait_exit(&mut self) -> bool {
        let mut child = self.child.take().expect("daemon running");
        child.wait().expect("wait for dataserver").success()
    }

    /// Starts the daemon again on the same directory (a new port).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert!(
                self.terminate(),
                "daemon did not stop cleanly:\n{}",
                self.log()
            );
        }
        self.launch();
    }

    /// Runs curl, unsigned, against `path` on the S3 listener.
    pub fn curl_s3(&self, path: &str, args: &[&str]) -> Reply {
        let url = format!("http://{}{path}", self.s3);
        self.curl_url(&url, args)
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.http, path)
    }

    /// Runs curl with `args` against `path` and parses what it received.
    pub fn curl(&self, path: &str, args: &[&str]) -> Reply {
        self.curl_url(&self.url(path), args)
    }

    fn curl_url(&self, url: &str, args: &[&str]) -> Reply {
        let path = url;
        let headers_file = tempfile::NamedTempFile::new().expect("temp file");
        let body_file = tempfile::NamedTempFile::new().expect("temp file");
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "60", "-H", "Expect:", "--path-as-is"])
            .args(&self.curl_args)
            .arg("-D")
            .arg(headers_file.path())
            .arg("-o")
            .arg(body_file.path())
            .args(args)
            .arg(url)
            .output()
            .expect("run curl");
        assert!(
            output.status.success(),
            "curl {args:?} {path} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let head = std::fs::read_to_string(headers_file.path()).expect("read headers");
        parse_head(&head, std::fs::read(body_file.path()).expect("read body"))
    }

    /// The same with the admin token.
    pub fn curl_admin(&self, path: &str, args: &[&str]) -> Reply {
        let authorization = format!("Authorization: Bearer {}", self.token);
        let mut all = vec!["-H", authorization.as_str()];
        all.extend_from_slice(args);
        self.curl(path, &all)
    }

    /// PUTs `bytes` under `path` with the admin token.
    pub fn put(&self, path: &str, bytes: &[u8]) -> Reply {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), bytes).expect("write body");
        let file_path = file.path().to_str().expect("utf-8 temp path").to_owned();
        self.curl_admin(path, &["-T", &file_path])
    }

    /// Opens a raw connection.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.http).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream
    }

    /// Sends `request` as is and reads until the server closes (requests should say
    /// `Connection: close`).
    pub fn raw(&self, request: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(request).expect("send");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Opens a raw connection and sends the head of an admin PUT of `length` bytes to `path`
    /// plus the first `sent` of `body`; the test decides what happens to the rest.
    pub fn begin_put(&self, path: &str, body: &[u8], length: usize, sent: usize) -> TcpStream {
        let mut stream = self.connect();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
            self.token
        );
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(&body[..sent]).expect("send body");
        stream
    }

    /// Flips bits `mask` of byte `offset` of the stored blob holding `content`, as disk rot
    /// would.
    pub fn damage_blob(&self, content: &[u8], offset: usize, mask: u8) {
        let hex = b3(content);
        let blob = self
            .data_dir()
            .join("blobs")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex);
        let mut stored = std::fs::read(&blob).expect("read blob");
        stored[offset] ^= mask;
        std::fs::write(&blob, stored).expect("damage the blob");
    }

    /// Files in a directory of the data directory.
    pub fn files_in(&self, area: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![self.data_dir().join(area)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    dirs.push(entry.path());
                } else {
                    found.push(entry.path());
                }
            }
        }
        found
    }

    /// The staging files left once the daemon has removed, in the background, those of
    /// refused, aborted and deduplicated bodies (a bounded wait: 4 s at most).
    pub fn staging_after_cleanup(&self) -> Vec<PathBuf> {
        for _ in 0..200 {
            if self.files_in("staging").is_empty() {
                break;
            }
            pause(20);
        }
        self.files_in("staging")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first, so the daemon flushes its log before the check below; kill it if
            // it has not stopped within 5 s.
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            for _ in 0..500 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                pause(10);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log();
        if std::thread::panicking() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- daemon log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            return;
        }
        let unexpected: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(" ERROR "))
            .filter(|line| {
                !self
                    .expected_errors
                    .iter()
                    .any(|expected| line.contains(expected))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "unexpected errors in the daemon log:\n{}",
            unexpected.join("\n")
        );
    }
}

/// Parses curl's `-D` dump (the last response head, after any interim ones).
fn parse_head(head: &str, body: Vec<u8>) -> Reply {
    let last = head
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default();
    let mut lines = last.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body,
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed, made with
/// openssl in `dir`: answers the authority's certificate (what clients trust) and the daemon
/// configuration that serves TLS with the server certificate. Two levels, because rustls (as
/// the web PKI rules say) refuses a CA certificate used as a server's own.
pub fn tls_config(dir: &Path) -> (PathBuf, String) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=dataserver test CA",
    ];
    ca.extend(new_key);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    openssl(&ca);
    let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
    request.extend(new_key);
    request.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&request);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    let config = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    (dir.join("ca.pem"), config)
}

/// Deterministic incompressible bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// BLAKE3 hex, the value `b3sum` prints.
pub fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Waits a little inside a bounded polling loop (for work the daemon finishes in the
/// background); never used to guess at readiness.
pub fn pause(milliseconds: u64) {
    #[allow(clippy::disallowed_methods)] // a test thread, not an async task
    std::thread::sleep(Duration::from_millis(milliseconds));
}
