//! The S3 test server harness on its own, without lifeboat: `weed mini` starts, serves
//! unsigned (anonymous) S3 requests in its own bucket, and is gone once its handle is dropped.

mod common;

use common::s3::S3Server;
use common::server::{http, TestStore};
use std::path::Path;
use std::time::Instant;

/// Is `pid` a live `weed` process? (Not a zombie: `S3Server` reaps its child.)
fn weed_running(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(4).any(|w| w == b"weed"))
}

#[test]
fn put_get_list_then_stopped_on_drop() {
    let t = Instant::now();
    let s3 = S3Server::start();
    eprintln!("weed mini ready with a bucket in {:?}", t.elapsed());

    assert!(
        s3.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        s3.endpoint
    );
    assert_eq!(
        s3.url("some/prefix"),
        format!("s3://{}/some/prefix", s3.bucket)
    );
    let env = s3.env();
    let var = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(var("AWS_ENDPOINT"), Some(s3.endpoint.as_str()));
    assert_eq!(var("AWS_ALLOW_HTTP"), Some("true"));
    assert_eq!(var("AWS_REGION"), Some("us-east-1"));
    assert!(var("AWS_ACCESS_KEY_ID").is_some() && var("AWS_SECRET_ACCESS_KEY").is_some());

    // The server runs without auth: no AWS_* in its environment.
    let environ = std::fs::read(format!("/proc/{}/environ", s3.pid())).expect("server environ");
    for var in environ.split(|&b| b == 0) {
        assert!(
            !var.starts_with(b"AWS_"),
            "server environment has {}",
            String::from_utf8_lossy(var)
        );
    }

    // Unsigned PUT and GET of an object (binary content, a key with a space and slashes).
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let key = "dir/sub/an object.bin";
    let put = s3.put(&s3.bucket, key, &body);
    assert_eq!(put.status, 200, "PUT: {}", put.text());
    assert!(
        put.header("ETag").is_some(),
        "PUT returned no ETag: {put:?}"
    );
    let got = s3.get(&s3.bucket, key);
    assert_eq!(got.status, 200, "GET: {}", got.text());
    assert!(
        got.body == body,
        "GET returned {} bytes, not what was put",
        got.body.len()
    );
    assert_eq!(s3.get(&s3.bucket, "dir/missing").status, 404);

    // The bucket is ours alone: it lists exactly that object.
    assert_eq!(s3.list(&s3.bucket, ""), vec![key.to_string()]);
    assert_eq!(s3.list(&s3.bucket, "dir/sub/"), vec![key.to_string()]);
    assert!(s3.list(&s3.bucket, "other/").is_empty());

    // Another bucket starts empty.
    let other = s3.new_bucket();
    assert_ne!(other, s3.bucket);
    assert!(s3.list(&other, "").is_empty());

    // Delete works too.
    assert_eq!(s3.delete(&s3.bucket, key).status, 204);
    assert!(s3.list(&s3.bucket, "").is_empty());

    // Dropping the handle stops the server and removes its data.
    let (pid, dir, addr) = (s3.pid(), s3.dir().to_path_buf(), s3.addr().to_string());
    assert!(weed_running(pid));
    let t = Instant::now();
    drop(s3);
    eprintln!("weed mini stopped in {:?}", t.elapsed());
    assert!(!weed_running(pid), "weed (pid {pid}) still runs after drop");
    assert!(!Path::new(&dir).exists(), "{} still exists", dir.display());
    assert!(
        http(&addr, "GET", "/", &[], b"").is_err(),
        "{addr} still answers"
    );
}

#[test]
fn parallel_servers_are_independent() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(S3Server::start);
        let b = s.spawn(S3Server::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.endpoint, b.endpoint);
    assert_eq!(a.put(&a.bucket, "only-in-a", b"a").status, 200);
    assert_eq!(a.list(&a.bucket, ""), vec!["only-in-a".to_string()]);
    // b has no bucket of a's name, so the object is nowhere in b.
    assert_eq!(b.get(&a.bucket, "only-in-a").status, 404);
    assert!(b.list(&b.bucket, "").is_empty());
    let pids = [a.pid(), b.pid()];
    drop((a, b));
    for pid in pids {
        assert!(!weed_running(pid), "weed (pid {pid}) still runs after drop");
    }
}
