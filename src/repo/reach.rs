//! Reachability: what a backup needs, from its manifest (the root) through the blobs that
//! list other blobs (page lists) to the data blobs. Prune, sync, `repo check` and `repo
//! repair` all walk it here, so a new content kind declares its children in one place; each
//! caller decides what a missing or unreadable blob means for it.

use super::index::Index;
use super::manifest::{Content, Manifest, CONTENT_KINDS};
use super::tree::decode_node;
use super::{FrameCache, Repository};
use crate::error::{Error, Result};
use crate::id::Hash;

/// What the walk meets, in order: each list, then the blobs it names.
pub enum Reached<'a> {
    /// A blob that names other blobs (a page list). The visitor says whether to read it.
    List(Hash),
    /// That list could not be read (missing from the index, damaged, …): its children are
    /// unknown.
    Unreadable(Hash, Error),
    /// The manifest names a list by something that is not an id.
    BadId(&'a str),
    /// A data blob the backup needs, by its full id.
    Blob(Hash),
}

/// What the visitor wants after a `List`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the list and visit what it names.
    Descend,
    /// Go on without reading it (already visited, or not locatable).
    Skip,
}

/// The content kinds this version can walk. A backup of another kind was written by a newer
/// Lifeboat: what it references is unknown, so nothing may be deleted on its account.
pub fn known_kind(m: &Manifest) -> Result<()> {
    if let Content::Unknown(_) = &m.content {
        let kind = m.content.kind();
        if CONTENT_KINDS.contains(&kind) {
            return Err(Error::integrity(format!(
                "backup {} describes its '{kind}' content with missing or malformed fields",
                m.id
            ))
            .hint("the manifest is damaged: `lifeboat repo repair` replaces it with a replica's intact copy"));
        }
        return Err(Error::usage(format!(
            "backup {} stores its content as '{kind}', which this version of Lifeboat does not know",
            m.id
        ))
        .hint("use the Lifeboat version that wrote that backup, or a newer one"));
    }
    Ok(())
}

/// Walk backup `m`: an image's lists and the pages or chunks they name, or a tree's blobs
/// and the chunks of its files. A visitor's error stops the walk and is returned as it is.
pub fn walk(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    cache: &mut FrameCache,
    visit: &mut dyn FnMut(Reached) -> Result<Next>,
) -> Result<()> {
    known_kind(m)?;
    let (roots, tree) = match &m.content {
        Content::Tree { nodes, .. } => (nodes.as_slice(), true),
        other => (other.lists(), false),
    };
    for hex in roots {
        let Ok(id) = Hash::from_hex(hex) else {
            visit(Reached::BadId(hex))?;
            continue;
        };
        if visit(Reached::List(id))? == Next::Skip {
            continue;
        }
        let list = match repo.read_blob_cached(index, &id, cache) {
            Ok(list) => list,
            Err(e) => {
                visit(Reached::Unreadable(id, e))?;
                continue;
            }
        };
        if tree {
            let entries = match decode_node(&list, &id) {
                Ok(entries) => entries,
                Err(e) => {
                    visit(Reached::Unreadable(id, e))?;
                    continue;
                }
            };
            for entry in &entries {
                for hex in &entry.chunks {
                    match Hash::from_hex(hex) {
                        Ok(chunk) => visit(Reached::Blob(chunk))?,
                        Err(_) => visit(Reached::BadId(hex))?,
                    };
                }
            }
            continue;
        }
        for chunk in list.chunks_exact(32) {
            let mut h = [0u8; 32];
            h.copy_from_slice(chunk);
            visit(Reached::Blob(Hash(h)))?;
        }
    }
    Ok(())
}
