//! Packaging checks: the shipped systemd units verify and are hardened, the Yocto layer lints
//! clean and its crates include matches Cargo.lock.
use crate::util;

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the shipped units into `dir` with ExecStart pointing at the built binary
/// (systemd-analyze verify requires the executable to exist).
fn units_pointing_at_build(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/bin/hybridboot", util::bin().to_str().unwrap());
        std::fs::write(dir.join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    names
}

#[test]
fn shipped_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let names = units_pointing_at_build(dir.path());
    assert!(names.contains(&"hybridboot-firstboot.service".to_string()));
    let mut args = vec!["verify".to_string()];
    args.extend(
        names
            .iter()
            .map(|n| dir.path().join(n).to_string_lossy().into_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = util::tool("systemd-analyze", &args, &[]);
    assert_eq!(
        r.code, 0,
        "systemd-analyze verify failed:\n{}{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{}",
        r.stderr
    );
}

#[test]
fn firstboot_unit_exposure_is_at_most_4() {
    let dir = tempfile::tempdir().unwrap();
    units_pointing_at_build(dir.path());
    for unit in ["hybridboot-firstboot.service", "hybridboot-renew.service"] {
        let path = dir.path().join(unit);
        let r = util::tool(
            "systemd-analyze",
            &["security", "--offline=true", path.to_str().unwrap()],
            &[],
        );
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure line:\n{}{}", r.stdout, r.stderr));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"));
        println!("{unit}: exposure {score}");
        assert!(score <= 4.0, "{unit} exposure {score} > 4.0");
    }
}

#[test]
fn yocto_layer_lints_clean() {
    let layer = repo().join("yocto/meta-hybridboot");
    let mut files = Vec::new();
    for sub in ["recipes-core/hybridboot", "recipes-core/images"] {
        for e in std::fs::read_dir(layer.join(sub)).unwrap() {
            let p = e.unwrap().path();
            let ext = p.extension().map(|e| e.to_string_lossy().into_owned());
            if matches!(ext.as_deref(), Some("bb") | Some("bbappend")) {
                files.push(p.to_string_lossy().into_owned());
            }
        }
    }
    assert!(files.len() >= 3, "recipes missing: {files:?}");
    let mut args = vec![
        "--quiet",
        "--release",
        "scarthgap",
        // That rule opens a network connection to HOMEPAGE.
        "--suppress",
        "oelint.vars.homepageping",
    ];
    args.extend(files.iter().map(String::as_str));
    let lint = util::venv_bin("oelint-adv");
    let r = util::tool(lint.to_str().unwrap(), &args, &[]);
    let findings: Vec<&str> = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .filter(|l| l.contains(":warning:") || l.contains(":error:"))
        .collect();
    assert!(
        findings.is_empty(),
        "oelint-adv findings:\n{}",
        findings.join("\n")
    );
}

#[test]
fn yocto_crates_include_matches_cargo_lock() {
    let script = repo().join("yocto/meta-hybridboot/scripts/update-crates.py");
    let r = util::tool("python3", &[script.to_str().unwrap(), "--check"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
