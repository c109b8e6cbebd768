//! Repository locations: a path, `file://PATH`, or an object-store URL, opened as the
//! storage behind it; and the spellings of other tools refused with the one to use.

use super::Storage;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// Schemes of other backup tools' `scheme:rest` locations (restic, borg, kopia): a path that
/// starts with one is almost surely not meant as a local folder.
const FOREIGN_SCHEMES: [(&str, &str); 8] = [
    ("s3", "s3"),
    ("gs", "gs"),
    ("gcs", "gs"),
    ("az", "az"),
    ("azure", "az"),
    ("b2", ""),
    ("sftp", ""),
    ("rest", ""),
];

/// Turn a location (`PATH` or `file://PATH`) into a local path.
pub fn local_path(location: &str) -> Result<PathBuf> {
    if let Some(p) = location.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if let Some((scheme, rest)) = location.split_once(':') {
        let scheme_l = scheme.to_ascii_lowercase();
        if let Some((_, ours)) = FOREIGN_SCHEMES.iter().find(|(s, _)| *s == scheme_l) {
            if !rest.starts_with("//") {
                let hint = if ours.is_empty() {
                    "Lifeboat stores on local paths, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX and \
                     az://CONTAINER/PREFIX; to use a folder with this name, write ./"
                        .to_string()
                        + location
                } else {
                    format!(
                        "did you mean {ours}://{}? (Lifeboat writes URLs as {ours}://BUCKET/PREFIX; \
                         an endpoint goes in AWS_ENDPOINT or the target's settings). For a local \
                         folder with this name, write ./{location}",
                        rest.trim_start_matches('/')
                    )
                };
                return Err(Error::usage(format!(
                    "repository location '{location}' looks like another tool's {scheme}: URL"
                ))
                .hint(hint));
            }
        }
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(Error::usage(format!(
            "repository location '{scheme}://…' is not supported"
        ))
        .hint("use a path, file://PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"));
    }
    Ok(PathBuf::from(location))
}

/// The storage at a repository location. `create` makes a missing local folder (0700);
/// buckets must exist already.
pub fn open(location: &str, create: bool) -> Result<Box<dyn Storage>> {
    if super::object::is_object_url(location) {
        return Ok(Box::new(super::ObjectStorage::open(location)?));
    }
    let path = local_path(location)?;
    if path.is_file() {
        return Err(Error::usage(format!(
            "repository location {} is a file, not a repository folder",
            path.display()
        ))
        .hint("--repo (LIFEBOAT_REPO) names the repository's folder; the database goes after `backup`"));
    }
    if create {
        super::local::create_private_dir(&path)?;
    }
    Ok(Box::new(super::LocalStorage::new(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(local_path("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert!(local_path("s3://bucket/x").is_err());
        let e = local_path("s3:primary/app").unwrap_err();
        assert_eq!(
            e.hint.as_deref().map(|h| h.contains("s3://primary/app")),
            Some(true)
        );
        assert!(local_path("b2:bucket").is_err());
        assert_eq!(local_path("./s3:x").unwrap(), PathBuf::from("./s3:x"));
        assert_eq!(
            local_path("backup:2026").unwrap(),
            PathBuf::from("backup:2026")
        );
    }
}
