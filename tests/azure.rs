//! The repository in Azure Blob Storage, on the Azurite emulator (started per test on
//! 127.0.0.1, Shared Key auth enforced): the same guarantees as on local disk — round trips,
//! dedup, encryption, concurrent writers, damage named, an unreachable endpoint a clear
//! storage error. The scenarios are shared with tests/s3.rs and tests/gcs.rs
//! (tests/common/store_scenarios.rs).

mod common;
use common::azure::AzuriteServer;
use common::server::TestStore;
use common::store_scenarios as scenario;
use std::time::Instant;

#[test]
fn emulator_harness_signs_requests_and_stops_on_drop() {
    let t = Instant::now();
    let az = AzuriteServer::start();
    eprintln!("Azurite ready with a container in {:?}", t.elapsed());
    assert_eq!(az.url("a/b"), format!("az://{}/a/b", az.container));
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let put = az.put(&az.container, "dir/sub/a blob.bin", &body);
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(az.get(&az.container, "dir/sub/a blob.bin").body == body);
    assert_eq!(az.get(&az.container, "dir/missing").status, 404);
    assert_eq!(
        az.list(&az.container, "dir/"),
        vec!["dir/sub/a blob.bin".to_string()]
    );
    assert!(az.list(&az.container, "other/").is_empty());
    assert!(az.list(&az.new_container(), "").is_empty());
    // Shared Key auth is enforced: an unsigned request is refused.
    let unsigned = common::server::http(
        az.addr(),
        "GET",
        &common::azure::blob_path(&az.container, "dir/sub/a blob.bin"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(unsigned.status, 403);
    assert_eq!(az.delete(&az.container, "dir/sub/a blob.bin").status, 202);
    assert!(az.list(&az.container, "").is_empty());

    let (pid, dir, addr) = (az.pid(), az.dir().to_path_buf(), az.addr().to_string());
    let t = Instant::now();
    drop(az);
    eprintln!("Azurite stopped in {:?}", t.elapsed());
    // Drop reaps the child, so its pid names no Azurite process any more.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("azurite"),
        "Azurite (pid {pid}) still runs after drop"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(common::server::http(&addr, "GET", "/", &[], b"").is_err());
}

#[test]
fn backup_verify_restore_and_dedup_on_azure() {
    scenario::backup_verify_restore_and_dedup::<AzuriteServer>();
}

#[test]
fn encrypted_repository_on_azure_and_nothing_readable_in_the_container() {
    scenario::encrypted_repository_and_nothing_readable::<AzuriteServer>();
}

/// Azurite serves requests concurrently and honours `If-None-Match: *` (409 on an existing
/// blob), so racing first backups exercise the create-only puts for real.
#[test]
fn concurrent_backups_into_one_container() {
    scenario::concurrent_backups_into_one_repository::<AzuriteServer>();
}

#[test]
fn a_lost_blob_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    scenario::lost_object_named_and_unreachable_endpoint_a_storage_error::<AzuriteServer>();
}
