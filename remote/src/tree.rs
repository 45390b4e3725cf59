//! REAPI directory trees: an input root built from paths, and the files of
//! an output `Tree`.

use std::collections::{BTreeMap, HashMap};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use kflow_cache::cas::sha256;
use prost::Message as _;

/// Files by path, as a tree of directories to encode.
#[derive(Default)]
pub struct InputTree {
    files: BTreeMap<String, (reapi::Digest, bool)>,
    dirs: BTreeMap<String, InputTree>,
}

impl InputTree {
    /// Adds the file at `path` (relative, `/`-separated).
    pub fn add(&mut self, path: &str, digest: reapi::Digest, executable: bool) {
        match path.split_once('/') {
            Some((dir, rest)) => self
                .dirs
                .entry(dir.to_owned())
                .or_default()
                .add(rest, digest, executable),
            None => {
                self.files.insert(path.to_owned(), (digest, executable));
            }
        }
    }

    /// The root's digest and every directory message, by digest. Names are
    /// sorted (BTreeMap order), as REAPI requires.
    pub fn encode(&self) -> (reapi::Digest, Vec<(reapi::Digest, Vec<u8>)>) {
        let mut blobs = Vec::new();
        let digest = self.encode_into(&mut blobs);
        (digest, blobs)
    }

    fn encode_into(&self, blobs: &mut Vec<(reapi::Digest, Vec<u8>)>) -> reapi::Digest {
        let directories = self
            .dirs
            .iter()
            .map(|(name, dir)| reapi::DirectoryNode {
                name: name.clone(),
                digest: Some(dir.encode_into(blobs)),
            })
            .collect();
        let files = self
            .files
            .iter()
            .map(|(name, (digest, executable))| reapi::FileNode {
                name: name.clone(),
                digest: Some(digest.clone()),
                is_executable: *executable,
                ..Default::default()
            })
            .collect();
        let bytes = reapi::Directory {
            files,
            directories,
            ..Default::default()
        }
        .encode_to_vec();
        let digest = sha256(&bytes);
        blobs.push((digest.clone(), bytes));
        digest
    }
}

/// Every file of an output tree with its path relative to the tree's root.
pub fn files_of(tree: &reapi::Tree) -> Result<Vec<(String, reapi::Digest)>, String> {
    let children: HashMap<String, &reapi::Directory> = tree
        .children
        .iter()
        .map(|d| (sha256(&d.encode_to_vec()).hash, d))
        .collect();
    let root = tree.root.as_ref().ok_or("the output tree has no root")?;
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), root)];
    while let Some((prefix, dir)) = pending.pop() {
        for file in &dir.files {
            check_name(&file.name)?;
            let digest = file
                .digest
                .clone()
                .ok_or_else(|| format!("`{}` has no digest", file.name))?;
            files.push((format!("{prefix}{}", file.name), digest));
        }
        for sub in &dir.directories {
            check_name(&sub.name)?;
            let digest = sub
                .digest
                .as_ref()
                .ok_or_else(|| format!("`{}` has no digest", sub.name))?;
            let child = children
                .get(&digest.hash)
                .ok_or_else(|| format!("the output tree lacks directory `{prefix}{}`", sub.name))?;
            if pending.len() + files.len() > 1_000_000 {
                return Err("the output tree is too large".to_owned());
            }
            pending.push((format!("{prefix}{}/", sub.name), child));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A name a server sends must stay inside the tree.
fn check_name(name: &str) -> Result<(), String> {
    if !is_component(name) {
        return Err(format!("the output tree has an invalid name `{name}`"));
    }
    Ok(())
}

/// Whether `name` is one path component, all a name in a Directory message
/// may be: joined to a path, it cannot leave it.
pub(crate) fn is_component(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_round_trips_through_its_messages() {
        let mut root = InputTree::default();
        root.add("kflow", sha256(b"bin"), true);
        root.add("in/1", sha256(b"one"), false);
        root.add("in/0", sha256(b"zero"), false);
        root.add("in/deep/x", sha256(b"x"), false);
        let (digest, blobs) = root.encode();
        let by_hash: HashMap<_, _> = blobs
            .iter()
            .map(|(d, b)| (d.hash.clone(), reapi::Directory::decode(b.as_slice()).unwrap()))
            .collect();
        let tree = reapi::Tree {
            root: Some(by_hash[&digest.hash].clone()),
            children: blobs
                .iter()
                .filter(|(d, _)| d.hash != digest.hash)
                .map(|(d, _)| by_hash[&d.hash].clone())
                .collect(),
        };
        let names: Vec<String> = files_of(&tree).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["in/0", "in/1", "in/deep/x", "kflow"]);
        assert!(by_hash[&digest.hash].files[0].is_executable);
    }

    #[test]
    fn a_tree_cannot_name_a_file_outside_itself() {
        for name in ["..", ".", "", "a/b", "nul\0"] {
            let root = reapi::Directory {
                files: vec![reapi::FileNode {
                    name: name.to_owned(),
                    digest: Some(sha256(b"")),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let tree = reapi::Tree {
                root: Some(root),
                children: vec![],
            };
            assert!(files_of(&tree).unwrap_err().contains("invalid name"), "{name:?}");
        }
    }
}
