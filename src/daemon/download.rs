//! `GET /api/v1/backups/{id}/download`: the backup restored into a private temporary
//! file (a file tree as a tar), checked, its SHA-256 computed, then streamed with its size
//! and checksum in the headers. The file is unlinked before streaming starts, so nothing
//! is left behind whatever happens to the connection.

use super::Daemon;
use crate::error::{Error, Result};
use std::io::{Read, Seek};
use std::sync::Arc;

pub struct Prepared {
    pub file: std::fs::File,
    pub size: u64,
    pub sha256: String,
    pub name: String,
}

pub fn prepare(d: &Arc<Daemon>, id: &str) -> Result<Prepared> {
    let repo = super::work::open(d)?;
    let m = repo.resolve(id, None)?;
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-download-")
        .tempdir_in(crate::ops::verify::temp_dir())
        .map_err(|e| {
            Error::io(
                "cannot create a folder for the download",
                &crate::ops::verify::temp_dir(),
                e,
            )
            .hint("set LIFEBOAT_TEMP_DIR to a folder with room for one copy of the database")
        })?;
    let restored = dir.path().join("restored");
    let out = crate::engine::restore(
        &repo,
        &m,
        crate::ops::restore::Destination::New {
            path: restored.clone(),
            overwrite: false,
        },
        &crate::progress::Progress::hidden(),
    )?;
    let base = std::path::Path::new(&m.source.path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        })
        .unwrap_or("backup")
        .to_string();
    let (path, name) = if out.path.is_dir() {
        let tar_path = dir.path().join("restored.tar");
        let f = std::fs::File::create(&tar_path)
            .map_err(|e| Error::io("cannot write", &tar_path, e))?;
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        b.append_dir_all(&base, &out.path)
            .map_err(|e| Error::io("cannot write", &tar_path, e))?;
        b.into_inner()
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("cannot write", &tar_path, e))?;
        (tar_path, format!("{}-{}.tar", base, m.id))
    } else {
        let ext = match m.source.kind.as_str() {
            "postgres" => ".dump",
            _ => "",
        };
        (out.path.clone(), format!("{}-{}{ext}", base, m.id))
    };
    let mut file = std::fs::File::open(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", &path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    file.rewind()
        .map_err(|e| Error::io("cannot read", &path, e))?;
    if let Some(expected) = m.image_sha256() {
        let got = hex::encode(ctx.clone().finish().as_ref());
        if !expected.eq_ignore_ascii_case(&got) {
            return Err(Error::integrity(format!(
                "the restored image of {} does not match its recorded SHA-256",
                m.id
            )));
        }
    }
    // The open file outlives its name: the folder goes now.
    drop(dir);
    Ok(Prepared {
        file,
        size,
        sha256: hex::encode(ctx.finish().as_ref()),
        name,
    })
}

/// The file's bytes as a stream of 256 KiB chunks.
pub fn stream(
    file: std::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let file = tokio::fs::File::from_std(file);
    futures::stream::unfold(Some(file), |state| async move {
        use tokio::io::AsyncReadExt;
        let mut file = state?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}
