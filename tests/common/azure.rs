//! A real Azure Blob Storage emulator for integration tests: Azurite (npm `azurite`, pinned
//! 3.35.0, installed into `.ci/node` by scripts/test.sh), one per `AzuriteServer`, blob service
//! only, on 127.0.0.1 with a free port and its data in memory. It enforces Shared Key auth for
//! the fixed development account `devstoreaccount1`.
//!
//! ```ignore
//! let az = AzuriteServer::start();
//! env.cmd().envs(az.env()).args(["--repo", &az.url("repo"), "backup", ...])...
//! ```
//!
//! Dropping the `AzuriteServer` stops the emulator (SIGTERM, SIGKILL after 3 s) and removes its
//! temp dir. Keep it in a local of the test, not in a `static` (statics are never dropped).
//!
//! Also Shared Key signed requests (`request`, and `put`/`get`/`delete`/`list` on blobs) to look
//! at or change the container behind lifeboat's back without any Azure crate: HMAC-SHA256 comes
//! from `ring`, which lifeboat already depends on.

use super::server::{
    self, encode, encode_segments, find_executable, http, in_crate, port_free, random,
    server_command, unique_name, xml_elements, xml_unescape, PortPool, Response, ServerProcess,
    TestStore,
};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicU64;

/// Azurite's fixed development account and its well-known key (public, not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Any version works: the emulator runs with `--skipApiVersionCheck`.
const API_VERSION: &str = "2021-08-06";

/// Ports 30000..31000: above the S3 harness's ports (10001..29997), below the GCS harness's
/// (31000..32000) and below Linux's ephemeral range (32768..).
const PORT_MIN: u16 = 30000;
const PORT_SLOTS: u64 = 1000;
const LOG: &str = "azurite.log";

/// Ports in use by emulators of this test process (tests run in parallel threads).
static PORTS_IN_USE: PortPool = PortPool::new();
static CONTAINERS: AtomicU64 = AtomicU64::new(0);

pub struct AzuriteServer {
    /// `http://127.0.0.1:PORT`: the blob service; the account is the first path segment.
    pub endpoint: String,
    /// A container created for this emulator; `new_container` makes more.
    pub container: String,
    process: ServerProcess,
    /// `127.0.0.1:PORT`, for `http`.
    addr: String,
    port: u16,
}

impl AzuriteServer {
    /// Create another empty container with a unique name and return its name.
    pub fn new_container(&self) -> String {
        let name = unique_name(&CONTAINERS);
        let path = format!("/{ACCOUNT}/{name}");
        let r = self.request("PUT", &path, &[("restype", "container")], &[], b"");
        assert_eq!(
            r.status,
            201,
            "creating container {name} on {}: {}\nemulator log:\n{}",
            self.endpoint,
            r.text(),
            self.log()
        );
        name
    }

    /// `127.0.0.1:PORT` of the blob service, for `http`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Signed Put Blob (a block blob) of `body` at `container/name`.
    pub fn put(&self, container: &str, name: &str, body: &[u8]) -> Response {
        let headers = [("x-ms-blob-type", "BlockBlob")];
        self.request("PUT", &blob_path(container, name), &[], &headers, body)
    }

    /// Any request to the blob service, signed with the account key (Shared Key).
    /// `path` is percent-encoded and starts with `/devstoreaccount1`; `query` is not encoded.
    /// Panics on a connection error (with the emulator's log).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        let signature = sign(method, path, query, &all, body.len());
        all.push((
            "authorization".into(),
            format!("SharedKey {ACCOUNT}:{signature}"),
        ));
        let mut target = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&format!("{}={}", encode(k), encode(v)));
        }
        let header_refs: Vec<(&str, &str)> =
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(&self.addr, method, &target, &header_refs, body).unwrap_or_else(|e| {
            panic!(
                "{method} {target} on {}: {e}\nemulator log:\n{}",
                self.endpoint,
                self.log()
            )
        })
    }
}

impl TestStore for AzuriteServer {
    const NAME: &'static str = "az";
    const DELETED: u16 = 202;

    /// Start an emulator and create `self.container`. Panics (with its log) if it cannot.
    fn start() -> AzuriteServer {
        let azurite = find_azurite();
        let (process, addr, port) = server::start(server::Launch {
            name: "azurite-blob",
            dir_prefix: "lifeboat-azurite-",
            log_name: LOG,
            ports: &PORTS_IN_USE,
            candidate: &|| PORT_MIN + (random() % PORT_SLOTS) as u16,
            free: &port_free,
            addr: &|port| format!("127.0.0.1:{port}"),
            spawn: &mut |dir, port| spawn(&azurite, dir, port),
            // An unsigned request, answered (with 403) by an Azurite: ours if our process is
            // still alive then.
            ready: &|addr, _| {
                http(addr, "GET", &format!("/{ACCOUNT}?comp=list"), &[], b"").is_ok_and(|r| {
                    r.header("server")
                        .is_some_and(|s| s.starts_with("Azurite-Blob"))
                })
            },
        });
        let mut server = AzuriteServer {
            endpoint: format!("http://{addr}"),
            container: String::new(),
            process,
            addr,
            port,
        };
        server.container = server.new_container();
        server
    }

    /// What a lifeboat process needs to reach this emulator: add with `cmd.envs(az.env())`.
    /// object_store's Azure builder reads `AZURE_STORAGE_USE_EMULATOR` (then the service URL
    /// from `AZURITE_BLOB_STORAGE_URL`, path-style, with plain HTTP allowed) and the account
    /// from `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY` (which default to the
    /// development account; set here explicitly).
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_string()),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.to_string()),
        ]
    }

    /// `az://<container>/<prefix>`: a repository location in this emulator's container.
    fn url(&self, prefix: &str) -> String {
        format!("az://{}/{}", self.container, prefix)
    }

    /// Signed Get Blob.
    fn get(&self, container: &str, name: &str) -> Response {
        self.request("GET", &blob_path(container, name), &[], &[], b"")
    }

    /// Signed Delete Blob.
    fn delete(&self, container: &str, name: &str) -> Response {
        self.request("DELETE", &blob_path(container, name), &[], &[], b"")
    }

    /// Every blob name in `container` that starts with `prefix`, in the service's order
    /// (List Blobs, following markers).
    fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let path = format!("/{ACCOUNT}/{}", encode(container));
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
            ];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let r = self.request("GET", &path, &query, &[], b"");
            assert_eq!(r.status, 200, "list {container}/{prefix}: {}", r.text());
            let xml = r.text();
            for blob in xml_elements(&xml, "Blob") {
                names.extend(xml_elements(blob, "Name").into_iter().map(xml_unescape));
            }
            marker = xml_elements(&xml, "NextMarker")
                .first()
                .map(|m| xml_unescape(m))
                .unwrap_or_default();
            if marker.is_empty() {
                return names;
            }
        }
    }

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn bucket(&self) -> &str {
        &self.container
    }

    fn unreachable_env(&self) -> (&'static str, &'static str) {
        ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
    }

    fn secrets(&self) -> Vec<&'static str> {
        vec![ACCOUNT_KEY, &ACCOUNT_KEY[..16]]
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        self.process.stop();
        PORTS_IN_USE.release(self.port);
        // `dir` is removed after this, when the fields are dropped.
    }
}

/// `/devstoreaccount1/<container>/<name>`, each segment of `name` percent-encoded.
pub fn blob_path(container: &str, name: &str) -> String {
    format!("/{ACCOUNT}/{}/{}", encode(container), encode_segments(name))
}

/// The Shared Key signature of a request (the headers given in lowercase, with x-ms-date).
/// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>
fn sign(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    body_len: usize,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let content_length = if body_len == 0 {
        String::new()
    } else {
        body_len.to_string()
    };
    let mut ms: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    ms.sort();
    let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    // Path-style (emulator) URLs already start with the account, which is prefixed once more.
    let mut resource = format!("/{ACCOUNT}{path}");
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (k, v) in params {
        resource.push_str(&format!("\n{k}:{v}"));
    }
    let to_sign = format!(
        "{method}\n{}\n{}\n{content_length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(ACCOUNT_KEY).expect("account key is base64");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref())
}

/// `azurite-blob`: $LIFEBOAT_AZURITE, else on PATH, else in this crate's `.ci/node`.
fn find_azurite() -> PathBuf {
    let local = in_crate(".ci/node/node_modules/.bin/azurite-blob");
    if let Some(p) = find_executable("LIFEBOAT_AZURITE", "azurite-blob", &local) {
        return p;
    }
    let ci = if std::env::var_os("CI").is_some() {
        "CI must run the tests through scripts/test.sh, which installs it. "
    } else {
        ""
    };
    panic!(
        "the Azure test server `azurite-blob` (npm azurite) is not installed: neither \
         $LIFEBOAT_AZURITE, nor `azurite-blob` on PATH, nor {}. {ci}Run scripts/test.sh once \
         (it installs it into .ci/node), or: mkdir -p .ci/node && cd .ci/node && npm install \
         --no-audit --no-fund azurite@3.35.0",
        local.display()
    );
}

fn spawn(azurite: &Path, dir: &Path, port: u16) -> Child {
    // PATH for `#!/usr/bin/env node`; nothing else of ours (no AZURE_*).
    server_command(azurite, dir, LOG)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--inMemoryPersistence",
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", azurite.display()))
}
