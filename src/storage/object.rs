//! A repository in an object store: S3 and S3-compatible stores (`s3://bucket/prefix`),
//! Google Cloud Storage (`gs://`) and Azure Blob Storage (`az://container/prefix`), through
//! the `object_store` crate (its clients, credential chains and retries with backoff).
//!
//! The repository format needs no rename and no append: objects are created once with a
//! create-only put (`If-None-Match: *` on S3 and Azure, generation 0 on GCS), so concurrent
//! writers never replace each other's objects, and listings that lag only delay garbage
//! collection, never correctness. Credentials come from each ecosystem's usual variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and never appear in messages: `describe` is the URL.

use super::{ObjectInfo, Storage};
use crate::error::{Error, ErrorKind, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// Objects live under this prefix inside the bucket (may be empty).
    prefix: String,
    url: String,
    runtime: tokio::runtime::Runtime,
    /// Local folder where packs are assembled before upload; removed on drop.
    staging: tempfile::TempDir,
}

/// Extra attempts Lifeboat makes at a create-only PUT that failed mid-transfer.
const PUT_ATTEMPTS: u32 = 4;

/// Whether a repository location names an object store rather than a local folder.
pub fn is_object_url(location: &str) -> bool {
    ["s3://", "gs://", "az://", "azure://"]
        .iter()
        .any(|s| location.starts_with(s))
}

/// Variables that carry credentials (or an emulator setting) for each kind of store.
fn credential_variables(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "s3" => &[
            "AWS_ACCESS_KEY_ID",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ],
        "gs" => &[
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
        ],
        _ => &[
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
            "AZURE_STORAGE_USE_EMULATOR",
        ],
    }
}

/// Without credentials the clients fall back to the cloud's instance-metadata service
/// (169.254.169.254), which off-cloud means a confusing network error. Lifeboat asks for it
/// explicitly instead (`LIFEBOAT_CLOUD_METADATA=1` on a VM with an instance role).
fn require_credentials(scheme: &str, env_prefix: &str) -> Result<()> {
    let vars: Vec<String> = credential_variables(scheme)
        .iter()
        .map(|v| format!("{env_prefix}{v}"))
        .collect();
    let have = vars.iter().any(|v| std::env::var_os(v).is_some());
    let metadata = std::env::var("LIFEBOAT_CLOUD_METADATA").is_ok_and(|v| v == "1");
    if have || metadata {
        return Ok(());
    }
    Err(
        Error::usage(format!("no credentials for {scheme}:// in the environment")).hint(format!(
            "set one of {} (or LIFEBOAT_CLOUD_METADATA=1 to use the VM's instance role)",
            vars.join(", ")
        )),
    )
}

/// A store builder from the usual variables (`from_env`), or, for a target with a variable
/// prefix, from the prefixed ones only. A macro: the three builders share no trait.
macro_rules! builder_from_env {
    ($builder:ty, $prefix:expr, $family:expr) => {{
        if $prefix.is_empty() {
            <$builder>::from_env()
        } else {
            let mut b = <$builder>::new();
            for (key, value) in settings($prefix, $family) {
                if let Ok(k) = key.parse() {
                    b = b.with_config(k, value);
                }
            }
            b
        }
    }};
}

/// Variable prefixes of particular targets (`[target."URL"] env_prefix` in the config), set
/// once at start-up by the caller that read them: storage does not read configuration.
static ENV_PREFIXES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Read target `url`'s settings from `<prefix>AWS_*` (…) instead of the plain variables.
pub fn set_env_prefixes(by_url: Vec<(String, String)>) {
    let _ = ENV_PREFIXES.set(
        by_url
            .into_iter()
            .map(|(url, prefix)| (normalize_url(&url), prefix))
            .collect(),
    );
}

fn env_prefix_for(url: &str) -> Option<String> {
    let url = normalize_url(url);
    ENV_PREFIXES
        .get()?
        .iter()
        .find(|(u, _)| *u == url)
        .map(|(_, p)| p.clone())
}

/// One spelling of an object URL: `scheme://bucket/prefix` without the slashes around the
/// prefix (it is opened without them).
pub fn normalize_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                format!("{scheme}://{bucket}")
            } else {
                format!("{scheme}://{bucket}/{prefix}")
            }
        }
        None => url.to_string(),
    }
}

/// Whether boolean variable `name` is set on (`1`, `true`, `yes`, `on`), as the object
/// store clients read their `*_ALLOW_*` switches.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// A plain-http endpoint is refused by the HTTP client unless `*_ALLOW_HTTP` is set, with a
/// bare "builder error" at the first request; say which variable to set, before any request.
fn require_http_allowed(url: &str, scheme: &str, env_prefix: &str) -> Result<()> {
    let family = match scheme {
        "s3" => "AWS_",
        "az" | "azure" => "AZURE_",
        _ => return Ok(()),
    };
    let var = |name: &str| std::env::var(format!("{env_prefix}{family}{name}")).ok();
    let flag = |name: &str| env_flag(&format!("{env_prefix}{family}{name}"));
    let endpoint = ["ENDPOINT", "ENDPOINT_URL", "STORAGE_ENDPOINT"]
        .iter()
        .find_map(|n| var(n).map(|v| (format!("{env_prefix}{family}{n}"), v)));
    let Some((endpoint_var, endpoint)) = endpoint else {
        return Ok(());
    };
    if !endpoint.trim().to_ascii_lowercase().starts_with("http://")
        || flag("ALLOW_HTTP")
        || (family == "AZURE_" && flag("STORAGE_USE_EMULATOR"))
    {
        return Ok(());
    }
    Err(Error::usage(format!(
        "{url}: the endpoint {endpoint_var}={endpoint} is plain http, which is refused unless \
         {env_prefix}{family}ALLOW_HTTP is set"
    ))
    .hint(format!(
        "set {env_prefix}{family}ALLOW_HTTP=true to allow it (only on a network you trust: \
         requests and, in an unencrypted repository, data travel in clear), or use an https:// \
         endpoint"
    )))
}

/// Say so, every time, when TLS certificates are not checked: anyone on the network path
/// could then read and change what is stored (the data stays encrypted and authenticated
/// in an encrypted repository, but deletions and replays become easy).
fn warn_insecure(url: &str, env_prefix: &str) {
    for family in ["AWS_", "GOOGLE_", "AZURE_"] {
        let var = format!("{env_prefix}{family}ALLOW_INVALID_CERTIFICATES");
        if env_flag(&var) {
            tracing::warn!(
                "{var} is set: TLS certificates of {url} are not checked, so anyone on the network \
                 path can impersonate the store; unset it unless this is a test"
            );
        }
    }
}

/// `<env_prefix><family>*` variables as object_store config keys (`aws_endpoint`, ...), the
/// way the builders' `from_env` reads the unprefixed ones.
fn settings(env_prefix: &str, family: &str) -> Vec<(String, String)> {
    let start = format!("{env_prefix}{family}");
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter_map(|(k, v)| {
            k.strip_prefix(env_prefix)
                .filter(|_| k.starts_with(&start))
                .map(|rest| (rest.to_ascii_lowercase(), v))
        })
        .collect()
}

/// How transient errors (5xx, throttling, dropped connections) are retried, with exponential
/// backoff. object_store's defaults (10 retries, none started later than 180 s after the first
/// attempt) suit unattended backups; two optional variables override them, say for a job that
/// must give up quickly when the store is down (and for tests):
/// `LIFEBOAT_RETRIES` (retries per request, 0 = none) and `LIFEBOAT_RETRY_TIMEOUT_SECS`
/// (seconds after the first attempt when no further retry starts).
fn retry_config() -> Result<object_store::RetryConfig> {
    let mut retry = object_store::RetryConfig::default();
    let number = |var: &str| -> Result<Option<u64>> {
        match std::env::var(var) {
            Err(_) => Ok(None),
            Ok(v) => v.trim().parse().map(Some).map_err(|_| {
                Error::usage(format!("{var}={v} is not a whole number"))
                    .hint(format!("unset {var} to use the default"))
            }),
        }
    };
    if let Some(n) = number("LIFEBOAT_RETRIES")? {
        retry.max_retries = n as usize;
    }
    if let Some(s) = number("LIFEBOAT_RETRY_TIMEOUT_SECS")? {
        retry.retry_timeout = std::time::Duration::from_secs(s);
    }
    Ok(retry)
}

impl ObjectStorage {
    pub fn open(url: &str) -> Result<ObjectStorage> {
        // One TLS provider for the whole process (ring: no C build); a second install fails
        // harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::usage(format!("'{url}' is not a repository URL")))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(Error::usage(format!("'{url}' names no bucket"))
                .hint("write it as s3://BUCKET/PREFIX (gs://, az:// likewise)"));
        }
        // A `[target."URL"]` section may name a variable prefix for this target's settings.
        let env_prefix = env_prefix_for(url).unwrap_or_default();
        require_credentials(scheme, &env_prefix)?;
        require_http_allowed(url, scheme, &env_prefix)?;
        warn_insecure(url, &env_prefix);
        let retry = retry_config()?;
        let built: std::result::Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
            "s3" => builder_from_env!(object_store::aws::AmazonS3Builder, &env_prefix, "AWS_")
                .with_bucket_name(bucket)
                .with_retry(retry.clone())
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "gs" => builder_from_env!(
                object_store::gcp::GoogleCloudStorageBuilder,
                &env_prefix,
                "GOOGLE_"
            )
            .with_bucket_name(bucket)
            .with_retry(retry.clone())
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            "az" | "azure" => builder_from_env!(
                object_store::azure::MicrosoftAzureBuilder,
                &env_prefix,
                "AZURE_"
            )
            .with_container_name(bucket)
            .with_retry(retry)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            other => {
                return Err(
                    Error::usage(format!("unknown repository scheme '{other}://'"))
                        .hint("use a path, file://, s3://, gs:// or az://"),
                )
            }
        };
        let store = built.map_err(|e| {
            Error::usage(format!("cannot set up {url}: {e}")).hint(match scheme {
                "s3" => "set AWS_REGION (and AWS_ENDPOINT for S3-compatible stores)",
                "gs" => "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT",
                _ => "set AZURE_STORAGE_ACCOUNT_NAME and a key, SAS or connection settings",
            })
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the I/O runtime: {e}")))?;
        let staging = super::staging_tempdir("lifeboat-staging-")?;
        Ok(ObjectStorage {
            store,
            prefix: prefix.to_string(),
            url: url.trim_end_matches('/').to_string(),
            runtime,
            staging,
        })
    }

    fn path(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Turn a store error into ours, naming the object and never the credentials.
    fn error(&self, action: &str, name: &str, e: object_store::Error) -> Error {
        let what = format!("cannot {action} {}/{name}", self.url);
        match e {
            object_store::Error::NotFound { .. } => Error::not_found(format!("{what}: not found")),
            object_store::Error::Unauthenticated { .. }
            | object_store::Error::PermissionDenied { .. } => {
                Error::new(ErrorKind::Storage, format!("{what}: access denied ({e})"))
                    .hint("check the credentials and that they may write to this bucket")
            }
            other => Error::storage(format!("{what}: {other}")).hint(
                "check the endpoint, the network and that the bucket exists; transient errors were \
                 already retried",
            ),
        }
    }

    /// A failed ranged read. Stores answer a range past the end of an object with an error
    /// (416) rather than short data, and a short object is damage, not a storage problem.
    fn range_error(&self, name: &str, offset: u64, len: u64, e: object_store::Error) -> Error {
        match e {
            object_store::Error::Generic { .. } if offset > 0 => Error::integrity(format!(
                "{}/{name} is truncated or unreadable at {offset}+{len}: {e}",
                self.url
            )),
            e => self.error("read", name, e),
        }
    }

    fn truncated(&self, name: &str, offset: u64, wanted: u64, got: u64) -> Error {
        Error::integrity(format!(
            "{}/{name} is truncated: wanted {wanted} bytes at offset {offset}, got {got}",
            self.url
        ))
    }

    fn put(&self, name: &str, payload: PutPayload) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = self.path(name);
        // object_store does not repeat a create-only PUT whose connection broke mid-body (it
        // cannot know whether it landed). Repeating it is safe here: if the first attempt did
        // land, the repeat answers "already exists", and callers compare the bytes.
        let mut attempt = 0u32;
        loop {
            match self
                .runtime
                .block_on(self.store.put_opts(&path, payload.clone(), opts.clone()))
            {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => return Ok(false),
                Err(e @ object_store::Error::Generic { .. }) if attempt < PUT_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!("retrying {name} after: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(
                        200 * 2u64.pow(attempt) + u64::from(rand::random::<u8>()),
                    ));
                }
                Err(e) => return Err(self.error("store", name, e)),
            }
        }
    }
}

impl Storage for ObjectStorage {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn read_parallelism(&self) -> usize {
        // Restores read frames with few, long requests (`read_ranges`); a few readers keep
        // requests in flight while others decompress.
        4
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.put(name, PutPayload::from(data.to_vec()))
    }

    fn put_new_within(&self, name: &str, data: &[u8], within: std::time::Duration) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = self.path(name);
        let put = self
            .store
            .put_opts(&path, PutPayload::from(data.to_vec()), opts);
        match self
            .runtime
            .block_on(async { tokio::time::timeout(within, put).await })
        {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(object_store::Error::AlreadyExists { .. }))
            | Ok(Err(object_store::Error::Precondition { .. })) => Ok(false),
            Ok(Err(e)) => Err(self.error("store", name, e)),
            Err(_) => Err(Error::new(
                crate::error::ErrorKind::Storage,
                format!(
                    "storing {}/{name} took more than {} s (the target does not answer)",
                    self.describe(),
                    within.as_secs()
                ),
            )),
        }
    }

    fn put_file_new(&self, name: &str, staged: &Path) -> Result<bool> {
        let data = std::fs::read(staged).map_err(|e| Error::io("cannot read", staged, e));
        let _ = std::fs::remove_file(staged);
        self.put(name, PutPayload::from(data?))
    }

    fn put_replace(&self, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(name);
        let payload = PutPayload::from(data.to_vec());
        self.runtime
            .block_on(self.store.put(&path, payload))
            .map(|_| ())
            .map_err(|e| self.error("store", name, e))
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        Ok(self.staging.path().to_path_buf())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.path(name);
        self.runtime
            .block_on(async {
                let r = self.store.get(&path).await?;
                r.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| self.error("read", name, e))
    }

    fn get_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(name);
        // The size is known before the body is read: a larger object is refused unread.
        let got = self
            .runtime
            .block_on(async {
                let r = self.store.get(&path).await?;
                if r.meta.size > max {
                    return Ok(Err(r.meta.size));
                }
                r.bytes().await.map(Ok)
            })
            .map_err(|e| self.error("read", name, e))?;
        let size = match &got {
            Ok(b) => b.len() as u64,
            Err(size) => *size,
        };
        super::check_small(self, name, size, max)?;
        Ok(got.map(|b| b.to_vec()).unwrap_or_default())
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(name);
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, offset..offset + len as u64))
            .map_err(|e| self.range_error(name, offset, len as u64, e))?;
        if bytes.len() != len {
            return Err(self.truncated(name, offset, len as u64, bytes.len() as u64));
        }
        Ok(bytes.to_vec())
    }

    fn read_ranges(
        &self,
        name: &str,
        ranges: &[(u64, usize)],
        part: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let (Some(&(start, _)), Some(&(last, last_len))) = (ranges.first(), ranges.last()) else {
            return Ok(());
        };
        let span = start..last + last_len as u64;
        let total = span.end - span.start;
        let opts = object_store::GetOptions::new().with_range(Some(span.clone()));
        let got = self
            .runtime
            .block_on(self.store.get_opts(&self.path(name), opts))
            .map_err(|e| self.range_error(name, start, total, e))?;
        if got.range != span {
            return Err(self.truncated(name, start, total, got.range.end - got.range.start));
        }
        tracing::debug!(
            "reading {name} {}..{} for {} ranges",
            span.start,
            span.end,
            ranges.len()
        );
        let mut body = got.into_stream();
        let mut parts = RangeSplitter::new(start, ranges);
        // Ranges are handed over between polls of the body: meanwhile the connection keeps
        // receiving into the socket buffer, so decompressing one frame overlaps fetching the
        // next.
        while !parts.done() {
            let chunk = self
                .runtime
                .block_on(body.try_next())
                .map_err(|e| self.error("read", name, e))?
                .ok_or_else(|| self.truncated(name, start, total, parts.received()))?;
            parts.feed(&chunk, part)?;
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = self.path(prefix.trim_end_matches('/'));
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&base)).try_collect())
            .map_err(|e| self.error("list", prefix, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.to_string();
                full.strip_prefix(&strip).map(|rel| ObjectInfo {
                    name: rel.to_string(),
                    size: m.size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("check", name, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }
}

/// Cuts the bytes of a span of an object, as they arrive, into the ranges wanted from it.
struct RangeSplitter<'a> {
    ranges: &'a [(u64, usize)],
    /// Offset in the object of the next byte to arrive.
    at: u64,
    /// Index of the range being filled.
    next: usize,
    buf: Vec<u8>,
    received: u64,
}

impl<'a> RangeSplitter<'a> {
    /// `start`: where the span begins; `ranges`: increasing, not overlapping, inside it.
    fn new(start: u64, ranges: &'a [(u64, usize)]) -> Self {
        RangeSplitter {
            ranges,
            at: start,
            next: 0,
            buf: Vec::with_capacity(ranges.first().map_or(0, |r| r.1)),
            received: 0,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.ranges.len()
    }

    fn received(&self) -> u64 {
        self.received
    }

    /// Take in the next `chunk` of the span, handing each range it completes to `part`.
    fn feed(
        &mut self,
        mut chunk: &[u8],
        part: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.received += chunk.len() as u64;
        while let Some(&(offset, len)) = self.ranges.get(self.next) {
            // Skip what lies before the range (a gap between two ranges).
            let skip = offset.saturating_sub(self.at).min(chunk.len() as u64);
            chunk = &chunk[skip as usize..];
            self.at += skip;
            if self.at < offset {
                break;
            }
            let take = (len - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            self.at += take as u64;
            if self.buf.len() < len {
                break;
            }
            let after = self.ranges.get(self.next + 1).map_or(0, |r| r.1);
            part(
                self.next,
                std::mem::replace(&mut self.buf, Vec::with_capacity(after)),
            )?;
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSplitter;

    #[test]
    fn ranges_are_cut_across_chunks_and_gaps_skipped() {
        let data: Vec<u8> = (0..=255).collect();
        // The span starts at object offset 1000; ranges with gaps, one empty, one at the end.
        let ranges = [(1000, 10), (1010, 0), (1030, 100), (1130, 1), (1200, 56)];
        for chunk in [1, 7, 64, 256] {
            let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
            let mut split = RangeSplitter::new(1000, &ranges);
            for c in data.chunks(chunk) {
                split
                    .feed(c, &mut |i, p| {
                        got.push((i, p));
                        Ok(())
                    })
                    .unwrap();
            }
            assert!(split.done());
            assert_eq!(got.len(), ranges.len());
            for (i, (n, p)) in got.iter().enumerate() {
                let (offset, len) = ranges[i];
                let from = (offset - 1000) as usize;
                assert_eq!(i, *n);
                assert_eq!(p[..], data[from..from + len]);
            }
        }
    }
}
