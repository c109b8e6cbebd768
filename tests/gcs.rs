//! The repository in Google Cloud Storage, on gcp-storage-emulator (started per test on
//! 127.0.0.1, with the XML API routes object_store needs added by tests/common/gcs_xml_api.py):
//! round trips, dedup, encryption, damage named, an unreachable endpoint a clear storage error.
//! The scenarios are shared with tests/s3.rs and tests/azure.rs (tests/common/store_scenarios.rs).
//!
//! No concurrent-writer test here, unlike tests/s3.rs and tests/azure.rs: the emulator is a
//! single-threaded HTTP/1.0 server that handles one request at a time, and it has no
//! conditional writes of its own (create-only puts come from the launcher's check), so racing
//! writers would only be serialized and would prove nothing about GCS.

mod common;
use common::gcs::GcsServer;
use common::server::TestStore;
use common::store_scenarios as scenario;
use std::time::Instant;

#[test]
fn emulator_harness_serves_both_apis_and_stops_on_drop() {
    let t = Instant::now();
    let gcs = GcsServer::start();
    eprintln!("GCS emulator ready with a bucket in {:?}", t.elapsed());
    assert_eq!(gcs.url("a/b"), format!("gs://{}/a/b", gcs.bucket));
    let sa: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gcs.service_account_path()).unwrap()).unwrap();
    assert_eq!(sa["gcs_base_url"], gcs.endpoint.as_str());
    assert_eq!(sa["disable_oauth"], true);

    // JSON API (the harness's helpers).
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let name = "dir/sub/an object.bin";
    let put = gcs.put(&gcs.bucket, name, &body);
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(gcs.get(&gcs.bucket, name).body == body);
    assert_eq!(gcs.get(&gcs.bucket, "dir/missing").status, 404);
    assert_eq!(gcs.list(&gcs.bucket, "dir/"), vec![name.to_string()]);
    assert!(gcs.list(&gcs.bucket, "other/").is_empty());
    assert!(gcs.list(&gcs.new_bucket(), "").is_empty());

    // XML API as object_store speaks it (the launcher's routes): HEAD and ranged GET with the
    // metadata headers, ListObjectsV2, create-only PUT, DELETE.
    let xml_path = format!("/{}/{}", gcs.bucket, common::server::encode(name));
    let head = gcs.request("HEAD", &xml_path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("70000"));
    assert!(head.header("etag").is_some() && head.header("last-modified").is_some());
    assert!(head.header("x-goog-generation").is_some());
    let range = gcs.request("GET", &xml_path, &[("Range", "bytes=10-19")], b"");
    assert_eq!(range.status, 206);
    assert!(range.body == body[10..20]);
    let list = gcs.request(
        "GET",
        &format!("/{}?list-type=2&prefix=dir%2F", gcs.bucket),
        &[],
        b"",
    );
    assert!(
        list.text()
            .contains("<Key>dir/sub/an object.bin</Key><Generation>"),
        "{}",
        list.text()
    );
    let create_only = [("x-goog-if-generation-match", "0")];
    assert_eq!(
        gcs.request("PUT", &xml_path, &create_only, b"x").status,
        412
    );
    let new_path = format!("/{}/dir%2Fnew", gcs.bucket);
    assert_eq!(gcs.request("PUT", &new_path, &create_only, b"").status, 200);
    assert_eq!(gcs.request("DELETE", &xml_path, &[], b"").status, 204);
    assert_eq!(gcs.request("HEAD", &xml_path, &[], b"").status, 404);
    assert_eq!(gcs.list(&gcs.bucket, ""), vec!["dir/new".to_string()]);

    let (pid, dir, addr) = (gcs.pid(), gcs.dir().to_path_buf(), gcs.addr().to_string());
    let t = Instant::now();
    drop(gcs);
    eprintln!("GCS emulator stopped in {:?}", t.elapsed());
    // Drop reaps the child, so its pid names no emulator process any more.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("gcs_xml_api"),
        "the GCS emulator (pid {pid}) still runs after drop"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(common::server::http(&addr, "GET", "/", &[], b"").is_err());
}

#[test]
fn backup_verify_restore_and_dedup_on_gcs() {
    scenario::backup_verify_restore_and_dedup::<GcsServer>();
}

#[test]
fn encrypted_repository_on_gcs_and_nothing_readable_in_the_bucket() {
    scenario::encrypted_repository_and_nothing_readable::<GcsServer>();
}

#[test]
fn a_lost_object_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    scenario::lost_object_named_and_unreachable_endpoint_a_storage_error::<GcsServer>();
}
