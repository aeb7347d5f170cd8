//! Downloads that survive a bad link (`hybridboot install` against tests/peers/install_mirror.py):
//! a download cut mid-body resumes with `Range` where it stopped and ends byte-identical; a
//! mirror that changes the file between the two halves is caught (by `If-Range` when it gives
//! an ETag, by the digest when it gives nothing) and the file downloaded again whole; artifacts
//! download side by side, at most four at once, each still under its own size cap.

use crate::install::{assert_installed, files_under, image_root, install};
use crate::util::mirror::{sha256_hex, store, Mirror};

/// The mirror's strong ETag for a file (install_mirror.py: the first 32 hex digits of its
/// SHA-256, quoted).
fn etag_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("\"{}\"", &hex::encode(Sha256::digest(bytes))[..32])
}

#[test]
fn a_dropped_download_resumes_where_it_stopped_and_is_byte_identical() {
    let m = Mirror::start();
    let root = image_root();
    m.control("/__validators?etag=1");
    // runc (8 MiB, plain) and aws-iam-authenticator (gzip'd: the decoder resumes too).
    let cut = 3_000_000;
    m.control(&format!(
        "/__fault?path=/common/runc&mode=cut-at&bytes={cut}&times=1"
    ));
    let gz = std::fs::read(store().join("common/aws-iam-authenticator.gz")).unwrap();
    let gz_cut = gz.len() / 2;
    m.control(&format!(
        "/__fault?path=/common/aws-iam-authenticator.gz&mode=cut-at&bytes={gz_cut}&times=1"
    ));
    let r = install(&m, root.path(), "1.31.2", &[]);
    r.ok();
    assert_installed(root.path(), "1.31.2");
    let runc = std::fs::read(store().join("common/runc")).unwrap();
    assert_eq!(
        m.requests_of("/common/runc"),
        vec![
            (None, None, 200),
            (Some(format!("bytes={cut}-")), Some(etag_of(&runc)), 206)
        ],
        "the second request continues at the cut"
    );
    assert_eq!(
        m.requests_of("/common/aws-iam-authenticator.gz"),
        vec![
            (None, None, 200),
            (Some(format!("bytes={gz_cut}-")), Some(etag_of(&gz)), 206)
        ]
    );
    assert!(
        r.stderr.contains("runc: downloaded and verified"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("resumed 1 times"), "{}", r.stderr);
    assert!(files_under(root.path())
        .iter()
        .all(|f| !f.contains(".hbtmp.")));
}

#[test]
fn a_file_changed_between_the_halves_is_detected_and_downloaded_again() {
    let m = Mirror::start();
    let cut = 2_000_000;
    let runc = std::fs::read(store().join("common/runc")).unwrap();
    let mut changed = runc.clone();
    changed[0] ^= 0xFF;

    // With an ETag: If-Range names the first half's tag, the mirror's tag changed, so it
    // answers the whole (current) file with 200.
    m.control("/__validators?etag=1");
    m.control(&format!(
        "/__fault?path=/common/runc&mode=changed-cut&bytes={cut}&times=1"
    ));
    let root = image_root();
    install(&m, root.path(), "1.31.2", &[]).ok();
    assert_installed(root.path(), "1.31.2");
    assert_eq!(
        m.requests_of("/common/runc"),
        vec![
            (None, None, 200),
            (Some(format!("bytes={cut}-")), Some(etag_of(&changed)), 200)
        ]
    );

    // Without validators the mirror answers the range from the new file: the spliced halves
    // do not match the digest, and the file is downloaded again from the start, once.
    let m = Mirror::start();
    m.control(&format!(
        "/__fault?path=/common/runc&mode=changed-cut&bytes={cut}&times=1"
    ));
    let root = image_root();
    let r = install(&m, root.path(), "1.31.2", &[]);
    r.ok();
    assert_installed(root.path(), "1.31.2");
    assert_eq!(
        m.requests_of("/common/runc"),
        vec![
            (None, None, 200),
            (Some(format!("bytes={cut}-")), None, 206),
            (None, None, 200)
        ]
    );
    assert!(
        r.stderr.contains("downloading it again from the start"),
        "{}",
        r.stderr
    );
    assert_eq!(sha256_hex(&root.path().join("usr/sbin/runc")), {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&runc))
    });
}

#[test]
fn parallel_downloads_keep_the_caps() {
    // Each artifact GET waits (up to 5 s) until four are in flight: an install that downloads
    // one at a time shows 1, one without a bound shows 7.
    let m = Mirror::start();
    m.control("/__hold?count=4&seconds=5");
    let root = image_root();
    install(&m, root.path(), "1.31.2", &[]).ok();
    assert_installed(root.path(), "1.31.2");
    assert_eq!(m.artifact_gets(), 7);
    assert_eq!(m.request_log()["max_active"], 4, "{}", m.request_log());

    // One artifact announces 600 MiB (over the 512 MiB cap) while the others download: it is
    // refused (exit 3, an operator's problem) and nothing at all is placed.
    let m = Mirror::start();
    m.control("/__hold?count=4&seconds=5");
    m.control("/__fault?path=/common/containerd&mode=huge");
    let root = image_root();
    let r = install(&m, root.path(), "1.31.2", &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("-byte limit"), "{}", r.stderr);
    assert_eq!(
        m.requests_of("/common/containerd").len(),
        1,
        "an oversized file is not retried"
    );
    assert!(m.request_log()["max_active"].as_u64().unwrap() >= 2);
    assert_eq!(files_under(root.path()).len(), 3, "nothing placed");
}
