//! Image map: which local executable stands for which container image.
//!
//! Format (YAML), in the main map file and in every `images.d/*.yaml` beside it:
//!
//! ```yaml
//! images:
//!   testprog:dev: ../target/debug/testprog    # relative paths: against this file's directory
//!   ghcr.io/example/worker:v1: /abs/path/to/worker
//! ```
//!
//! Lookup: the exact image reference first, then the reference without its tag or digest.
//! The files are re-read on each container start, so a suite can register its binaries by
//! dropping a file into `images.d/` while the kubelet runs.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

#[derive(Deserialize, Default)]
struct MapFile {
    #[serde(default)]
    images: BTreeMap<String, String>,
}

/// Every image → executable entry from `main` and `<main's dir>/images.d/*.yaml` (later files
/// win; files are read in name order).
fn load(main: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = vec![main.to_path_buf()];
    if let Some(dir) = main.parent()
        && let Ok(rd) = std::fs::read_dir(dir.join("images.d"))
    {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut out = BTreeMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file == main => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let parsed: MapFile = if text.trim().is_empty() {
            MapFile::default()
        } else {
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", file.display()))?
        };
        let base = file.parent().unwrap_or(Path::new("."));
        for (image, path) in parsed.images {
            out.insert(image, base.join(path));
        }
    }
    Ok(out)
}

/// Strips a tag (`:v1`) or digest (`@sha256:…`) from an image reference; a `:` before the last
/// `/` is a registry port, not a tag.
fn without_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match (image.rfind(':'), image.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &image[..colon],
        (Some(colon), None) => &image[..colon],
        _ => image,
    }
}

/// Resolves `image` to an executable through the map files.
pub fn resolve(main: &Path, image: &str) -> Result<PathBuf> {
    let map = load(main)?;
    let found = map.get(image).or_else(|| map.get(without_tag(image)));
    match found {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => bail!(
            "image {image} maps to {}, which does not exist (not built?)",
            p.display()
        ),
        None => bail!(
            "image {image} is not in the image map {} (or images.d/ beside it)",
            main.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::without_tag;

    #[test]
    fn tags_and_ports() {
        assert_eq!(without_tag("testprog:dev"), "testprog");
        assert_eq!(without_tag("reg:5000/a/b:1"), "reg:5000/a/b");
        assert_eq!(without_tag("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(without_tag("a/b@sha256:00"), "a/b");
    }
}
