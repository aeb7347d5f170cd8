//! The OCI image-layout archive `ctr images import -` reads: `oci-layout`, `index.json` naming the
//! one manifest, and `blobs/sha256/<hex>` for the manifest, its config and layers. Pure: bytes in,
//! tar bytes out (sandbox images are a few hundred KiB, so the archive is built in memory).
//!
//! The image is named by the `io.containerd.image.name` annotation of the index entry: containerd's
//! importer uses it as the full image name (`org.opencontainers.image.ref.name` would only be a
//! tag that `ctr` prefixes with `--base-name` or `import-<date>`). The index lists the node's
//! platform manifest only, so neither `--all-platforms` nor `--index-name` is needed.

use serde_json::json;

/// containerd's image-name annotation.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// One blob of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>` (already verified against `data`).
    pub digest: String,
    /// The content.
    pub data: Vec<u8>,
}

/// The tar archive of an OCI layout holding one image named `image_name`, whose manifest is
/// `manifest` (of `manifest_media_type`) and whose other blobs are `blobs`.
pub fn oci_archive(
    image_name: &str,
    manifest_media_type: &str,
    manifest: &Blob,
    blobs: &[Blob],
) -> std::io::Result<Vec<u8>> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": super::OCI_INDEX,
        "manifests": [{
            "mediaType": manifest_media_type,
            "digest": manifest.digest,
            "size": manifest.data.len(),
            "annotations": { IMAGE_NAME_ANNOTATION: image_name },
        }],
    });
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        out.append_data(&mut header, path, data)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", index.to_string().as_bytes())?;
    let mut seen = std::collections::BTreeSet::new();
    for b in std::iter::once(manifest).chain(blobs) {
        let hex = b.digest.strip_prefix("sha256:").ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "digest is not sha256")
        })?;
        if seen.insert(hex.to_string()) {
            add(&format!("blobs/sha256/{hex}"), &b.data)?;
        }
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_layout_names_the_image_and_holds_each_blob_once() {
        let blob = |d: &[u8]| Blob {
            digest: super::super::sha256_digest(d),
            data: d.to_vec(),
        };
        let manifest = blob(b"{\"manifest\":1}");
        let config = blob(b"{}");
        let layer = blob(b"layer bytes");
        let tar_bytes = oci_archive(
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5",
            super::super::DOCKER_MANIFEST,
            &manifest,
            &[config.clone(), layer.clone(), config.clone()],
        )
        .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = std::collections::BTreeMap::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert!(entries.insert(path, data).is_none(), "duplicate entry");
        }
        assert_eq!(entries.len(), 5, "{:?}", entries.keys());
        let index: serde_json::Value = serde_json::from_slice(&entries["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], manifest.digest.as_str());
        assert_eq!(m["size"], manifest.data.len());
        assert_eq!(m["mediaType"], super::super::DOCKER_MANIFEST);
        assert_eq!(
            m["annotations"][IMAGE_NAME_ANNOTATION],
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5"
        );
        for b in [&manifest, &config, &layer] {
            let key = format!("blobs/sha256/{}", &b.digest[7..]);
            assert_eq!(entries[&key], b.data);
        }
    }
}
