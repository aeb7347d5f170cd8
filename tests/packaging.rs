//! Packaging checks: the shipped systemd units verify and are hardened, the Yocto layer lints
//! clean for every series it lists, its crates include matches Cargo.lock, and Cargo.toml's
//! rust-version is the minimum that the locked dependencies need.
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
    // Lint against every series the layer says it supports.
    let compat = bitbake_value(
        &layer.join("conf/layer.conf"),
        "LAYERSERIES_COMPAT_hybridboot",
    );
    let series: Vec<&str> = compat.split_whitespace().collect();
    assert!(!series.is_empty(), "LAYERSERIES_COMPAT_hybridboot is empty");
    for release in series {
        let mut args = vec![
            "--quiet",
            "--release",
            release,
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
            "oelint-adv --release {release} findings:\n{}",
            findings.join("\n")
        );
    }
}

#[test]
fn yocto_crates_include_matches_cargo_lock() {
    let script = repo().join("yocto/meta-hybridboot/scripts/update-crates.py");
    let r = util::tool("python3", &[script.to_str().unwrap(), "--check"], &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// The Rust each Yocto series' OE-Core builds with (its RUSTVERSION), oldest first.
const YOCTO_SERIES_RUST: &[(&str, &str)] = &[
    ("scarthgap", "1.75"),
    ("styhead", "1.79"),
    ("walnascar", "1.84.1"),
    ("whinlatter", "1.90"),
    ("wrynose", "1.94.1"),
];

fn version_tuple(v: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = v
        .split('.')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("unreadable version {v:?}"))
        })
        .collect();
    parts.resize(3, 0);
    parts
}

/// The oldest Rust whose cargo reads a manifest of this edition.
fn edition_rust(edition: &str) -> &'static str {
    match edition {
        "2015" => "1.0",
        "2018" => "1.31",
        "2021" => "1.56",
        "2024" => "1.85",
        other => panic!("unknown edition {other:?}: add the Rust release that stabilised it"),
    }
}

fn cargo_metadata(extra: &[&str]) -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = repo().join("Cargo.toml");
    let mut args = vec![
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--manifest-path",
        manifest.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = util::tool(&cargo, &args, &[]);
    assert_eq!(r.code, 0, "cargo metadata {extra:?} failed:\n{}", r.stderr);
    serde_json::from_str(&r.stdout).expect("cargo metadata printed no JSON")
}

/// The packages a build of the crate compiles (normal and build dependencies from the root,
/// never dev-dependencies) for one feature set on the given targets, as
/// (oldest Rust that builds it, "name version (why)"), newest requirement first.
fn build_closure_rust(features: &str, targets: &[&str]) -> Vec<(Vec<u64>, String)> {
    let mut out = std::collections::BTreeMap::new();
    for target in targets {
        let m = cargo_metadata(&[
            "--no-default-features",
            "--features",
            features,
            "--filter-platform",
            target,
        ]);
        let packages: std::collections::HashMap<&str, &serde_json::Value> = m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p))
            .collect();
        let nodes: std::collections::HashMap<&str, &serde_json::Value> = m["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_str().unwrap(), n))
            .collect();
        let root = m["resolve"]["root"].as_str().unwrap();
        let mut stack = vec![root];
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            for dep in nodes[id]["deps"].as_array().unwrap() {
                let built = dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build");
                if built {
                    stack.push(dep["pkg"].as_str().unwrap());
                }
            }
        }
        for id in seen {
            let p = packages[id];
            let edition = p["edition"].as_str().unwrap();
            let mut need = version_tuple(edition_rust(edition));
            let mut why = format!("edition {edition}");
            if let Some(rv) = p["rust_version"].as_str() {
                if version_tuple(rv) > need {
                    need = version_tuple(rv);
                    why = format!("rust-version {rv}");
                }
            }
            let label = format!(
                "{} {} ({why})",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            );
            out.insert(label, need);
        }
    }
    let mut rows: Vec<(Vec<u64>, String)> = out.into_iter().map(|(l, v)| (v, l)).collect();
    rows.sort_by(|a, b| b.cmp(a));
    rows
}

fn show(v: &[u64]) -> String {
    let mut v = v.to_vec();
    while v.len() > 2 && v.last() == Some(&0) {
        v.pop();
    }
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// `VAR = "value"` from a recipe or conf file.
fn bitbake_value(path: &Path, var: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("{var} = \"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{}: no {var} = \"...\" line", path.display()))
        .to_string()
}

/// Cargo.toml's rust-version is the real minimum of what Cargo.lock resolves, derived from
/// every dependency a build compiles (their rust-version and edition); the recipe's minima
/// match it, and every Yocto series the layer lists ships a Rust that reaches it.
#[test]
fn rust_version_is_the_locked_dependencies_minimum() {
    // The shipped targets: Yocto's and the release binaries' architectures, all Linux.
    let targets = [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
    ];
    let root = cargo_metadata(&["--no-deps"]);
    let declared = root["packages"][0]["rust_version"]
        .as_str()
        .expect("Cargo.toml has no rust-version")
        .to_string();

    // Default features (tpm, pkcs11): the Yocto recipe's and the dynamic binary's build.
    let default = build_closure_rust("tpm,pkcs11", &targets);
    let (need, _) = &default[0];
    let top: Vec<&str> = default
        .iter()
        .take_while(|(v, _)| v == need)
        .map(|(_, l)| l.as_str())
        .collect();
    println!("tpm,pkcs11 needs Rust {}: {}", show(need), top.join(", "));
    assert_eq!(
        version_tuple(&declared),
        *need,
        "Cargo.toml says rust-version = {declared:?}, but Cargo.lock's dependencies of the \
         default build need Rust {}: {}. Set rust-version to that (and HYBRIDBOOT_RUST_MIN in \
         the Yocto recipe, and check LAYERSERIES_COMPAT), or lock older dependencies",
        show(need),
        top.join(", ")
    );

    // tpm-native adds tpm2-protocol, whose own rust-version cargo enforces.
    let native = build_closure_rust("tpm-native", &targets);
    let (need_native, label) = &native[0];
    println!("tpm-native needs Rust {}: {label}", show(need_native));

    let recipe = repo().join("yocto/meta-hybridboot/recipes-core/hybridboot/hybridboot_0.1.0.bb");
    let rmin = bitbake_value(&recipe, "HYBRIDBOOT_RUST_MIN");
    assert_eq!(
        version_tuple(&rmin),
        version_tuple(&declared),
        "HYBRIDBOOT_RUST_MIN in {} differs from Cargo.toml's rust-version",
        recipe.display()
    );
    let rmin_native = bitbake_value(&recipe, "HYBRIDBOOT_RUST_MIN_TPM_NATIVE");
    assert_eq!(
        version_tuple(&rmin_native),
        *need_native,
        "HYBRIDBOOT_RUST_MIN_TPM_NATIVE in {} is {rmin_native}, but tpm-native needs Rust {} ({label})",
        recipe.display(),
        show(need_native)
    );

    // Yocto vendors every crate of Cargo.lock (dev-dependencies and other platforms' crates
    // included) and cargo reads each vendored manifest: their editions bound the Rust too.
    let all = cargo_metadata(&[]);
    for p in all["packages"].as_array().unwrap() {
        let edition = p["edition"].as_str().unwrap();
        assert!(
            version_tuple(edition_rust(edition)) <= version_tuple(&rmin),
            "{} {} is edition {edition}: cargo below Rust {} cannot read its manifest, \
             and the Yocto build vendors it",
            p["name"],
            p["version"],
            edition_rust(edition)
        );
    }

    let layer_conf = repo().join("yocto/meta-hybridboot/conf/layer.conf");
    let compat = bitbake_value(&layer_conf, "LAYERSERIES_COMPAT_hybridboot");
    assert!(
        !compat.trim().is_empty(),
        "LAYERSERIES_COMPAT_hybridboot is empty"
    );
    for series in compat.split_whitespace() {
        let rust = YOCTO_SERIES_RUST
            .iter()
            .find(|(s, _)| *s == series)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| {
                panic!("layer.conf lists {series:?}: add its Rust to YOCTO_SERIES_RUST")
            });
        assert!(
            version_tuple(rust) >= version_tuple(&rmin),
            "layer.conf lists {series}, whose Rust {rust} is older than the {rmin} the crate needs"
        );
    }
}

/// The Yocto recipe builds from the files HYBRIDBOOT_BUILD_INPUTS names (not the whole tree,
/// which holds target/): each exists, and every file the sources embed with include_str! /
/// include_bytes! is among them, or under tests/ (fixtures that only unit tests embed).
#[test]
fn yocto_build_inputs_cover_the_build() {
    let recipe = repo().join("yocto/meta-hybridboot/recipes-core/hybridboot/hybridboot_0.1.0.bb");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let inputs: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("HYBRIDBOOT_BUILD_INPUTS ??= \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("recipe has no HYBRIDBOOT_BUILD_INPUTS ??= \"...\" line")
        .split_whitespace()
        .map(String::from)
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "LICENSE",
        "systemd",
    ] {
        assert!(
            inputs.iter().any(|i| i == needed),
            "HYBRIDBOOT_BUILD_INPUTS lacks {needed}"
        );
    }
    for input in &inputs {
        assert!(
            repo().join(input).exists(),
            "HYBRIDBOOT_BUILD_INPUTS names {input}, which does not exist"
        );
    }
    let mut stack = vec![repo().join("src")];
    let mut embedded = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for mac in ["include_str!(\"", "include_bytes!(\""] {
                for (i, _) in source.match_indices(mac) {
                    let rest = &source[i + mac.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    let target = path.parent().unwrap().join(&rest[..end]);
                    let target = target
                        .canonicalize()
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), &rest[..end]));
                    let rel = target.strip_prefix(repo().canonicalize().unwrap()).unwrap();
                    let top = rel
                        .components()
                        .next()
                        .unwrap()
                        .as_os_str()
                        .to_string_lossy();
                    embedded += 1;
                    assert!(
                        inputs.iter().any(|i| *i == top) || top == "tests",
                        "{} embeds {}, which the Yocto build does not unpack: add {top} to \
                         HYBRIDBOOT_BUILD_INPUTS in {}",
                        path.display(),
                        rel.display(),
                        recipe.display()
                    );
                }
            }
        }
    }
    assert!(
        embedded > 0,
        "found no include_str!/include_bytes! in src/ (scan broken?)"
    );
}
