//! The repository on a real S3-compatible server (SeaweedFS `weed mini`, started per test on
//! 127.0.0.1): the same guarantees as on local disk — round trips, dedup, encryption,
//! concurrent writers, damage named, an unreachable endpoint a clear storage error. The
//! scenarios are shared with tests/azure.rs and tests/gcs.rs (tests/common/store_scenarios.rs).

mod common;
use common::s3::S3Server;
use common::store_scenarios as scenario;

#[test]
fn backup_verify_restore_and_dedup_on_s3() {
    scenario::backup_verify_restore_and_dedup::<S3Server>();
}

#[test]
fn encrypted_repository_on_s3_and_nothing_readable_in_the_bucket() {
    scenario::encrypted_repository_and_nothing_readable::<S3Server>();
}

#[test]
fn concurrent_backups_into_one_bucket() {
    scenario::concurrent_backups_into_one_repository::<S3Server>();
}

#[test]
fn a_lost_object_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    scenario::lost_object_named_and_unreachable_endpoint_a_storage_error::<S3Server>();
}
