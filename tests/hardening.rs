//! Defects an independent review reproduced with crafted peers and inputs (issue 17): each test
//! here failed before its fix. Durations a peer or an operator sends, key references carrying a
//! PIN, what children inherit, a closed stdout, a state file from a newer release.
use crate::util;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use util::run;

/// A loopback "Vault" that answers every request with 503 and `Retry-After: <after[n]>` (the
/// last value repeats); returns its address.
fn refusing_peer(after: &'static [&'static str]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut c) = stream else { continue };
            let after = after[n.min(after.len() - 1)];
            let mut buf = [0u8; 65536];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {after}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
        }
    });
    addr
}

fn file_key(dir: &Path) -> String {
    let key = dir.join("node-key.pem").display().to_string();
    run(&["key", "create", "--key", &key], &[]).ok();
    key
}

fn enroll_args(dir: &Path, key: &str, addr: &str, timeout: &str) -> Vec<String> {
    let token = dir.join("token");
    std::fs::write(&token, "hvs.not-a-real-token").unwrap();
    [
        "enroll",
        "--vault-addr",
        addr,
        "--pki-role",
        "node",
        "--key",
        key,
        "--common-name",
        "node-1.example.com",
        "--certificate",
        dir.join("node.crt").to_str().unwrap(),
        "--vault-token-file",
        token.to_str().unwrap(),
        "--timeout",
        timeout,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `Retry-After: 18446744073709551615` (u64::MAX seconds) after a first short wait used to
/// overflow the retry arithmetic (elapsed + wait: exit 101, a panic). Now it is clamped to the
/// deadline: the peer is throttling beyond it, so the run gives up at once with exit 4.
#[test]
fn a_peer_asking_to_retry_after_u64_max_seconds_gets_exit_4_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let key = file_key(dir.path());
    let addr = refusing_peer(&["1", "18446744073709551615"]);
    let args = enroll_args(dir.path(), &key, &addr, "20s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let r = run(
        &args,
        &[("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")],
    );
    let took = started.elapsed();
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains("503"), "{}", r.stderr);
    assert!(
        took < Duration::from_secs(20),
        "took {} ms",
        took.as_millis()
    );
    assert!(!dir.path().join("node.crt").exists());
}

/// A timeout too long for any clock (`9999999999999999d`) used to panic when added to now.
/// It is refused as a usage error naming the flag and the limit; in a BootstrapConfig, as a
/// configuration error (exit 3) naming the field.
#[test]
fn an_absurd_timeout_is_refused_naming_the_flag_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let key = file_key(dir.path());
    let addr = refusing_peer(&["1"]);
    let args = enroll_args(dir.path(), &key, &addr, "9999999999999999d");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(
        &args,
        &[("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(
        r.stderr.contains("--timeout") && r.stderr.contains("too long"),
        "{}",
        r.stderr
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn firstboot_in(root: &Path, env: &[(&str, &str)]) -> util::Run {
    let mut e = vec![("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")];
    e.extend_from_slice(env);
    let args = util::firstboot_args(root);
    run(&args.iter().map(String::as_str).collect::<Vec<_>>(), &e)
}

/// A PIN written into the BootstrapConfig's `spec.key.ref` (`?pin-value=`) used to be accepted
/// (the NodeConfig refuses it), then logged, stored in the state file as `lastError` and printed
/// by `status`. It is refused like the NodeConfig's, naming the field, and the PIN appears in no
/// output and no file.
#[test]
fn a_pin_in_the_bootstrap_key_ref_is_refused_and_never_shown_or_stored() {
    const PIN: &str = "SECRETPIN4271";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    let node_key = "pkcs11:token=edge;object=node?pin-source=file:/etc/hybridboot/pin";
    let boot_key = format!("\"pkcs11:token=edge;object=node?pin-value={PIN}\"");
    let mut boot =
        util::config::BootstrapConfig::new(&boot_key, "device:/dev/null", "http://127.0.0.1:1");
    boot.timeouts = Some(("30s".into(), "1s".into()));
    let text = util::config::firstboot_yaml(
        &util::config::NodeConfig::example("node-1.example.com", node_key),
        &boot,
    );
    std::fs::write(etc.join("config.yaml"), text).unwrap();
    let r = firstboot_in(
        root,
        &[("HYBRIDBOOT_PKCS11_LIB", "/nonexistent/libsofthsm2.so")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("spec.key.ref"), "{}", r.stderr);
    assert!(
        r.stderr.contains("pin-value would put the PIN")
            && r.stderr.contains("use ?pin-source=file:"),
        "says why and what to use: {}",
        r.stderr
    );
    let status = run(&["status", "--json", "--root", root.to_str().unwrap()], &[]);
    let status_text = run(&["status", "--root", root.to_str().unwrap()], &[]);
    for (what, text) in [
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
        ("status --json", &status.stdout),
        ("status --json stderr", &status.stderr),
        ("status", &status_text.stdout),
        ("status stderr", &status_text.stderr),
    ] {
        assert!(!text.contains(PIN), "the PIN in {what}: {text}");
    }
    for f in files_under(root) {
        if f.ends_with("etc/hybridboot/config.yaml") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PIN),
            "the PIN in {}",
            f.display()
        );
    }
}

/// First boot asks `timedatectl` whether the clock is synchronised (where timesyncd leaves no
/// flag). It used to get the whole environment, `VAULT_TOKEN` and the PKCS#11 PIN included;
/// now only the search path and locale. (init's `kubelet --version` and `systemctl`: in
/// `init_token::init_children_get_no_secret_from_the_environment`.)
#[test]
fn firstboot_gives_timedatectl_no_secret_from_the_environment() {
    assert!(
        !Path::new("/run/systemd/timesync").exists(),
        "this host runs timesyncd: first boot reads its flag and never asks timedatectl"
    );
    const VAULT_TOKEN: &str = "hvs.never-for-children-5821";
    const PIN: &str = "pin-never-for-children-5822";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    let key = "handle:0x81000001";
    let mut boot = util::config::BootstrapConfig::new(
        key,
        "swtpm:host=127.0.0.1,port=1",
        "http://127.0.0.1:1",
    );
    boot.timeouts = Some(("30s".into(), "5s".into()));
    let text = util::config::firstboot_yaml(
        &util::config::NodeConfig::example("node-1.example.com", key),
        &boot,
    );
    std::fs::write(etc.join("config.yaml"), text).unwrap();
    // The stand-in timedatectl, first on PATH: dumps its environment, says "synchronised".
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("timedatectl.env");
    std::fs::write(
        bin.join("timedatectl"),
        format!("#!/bin/sh\nenv >> {}\necho yes\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("timedatectl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The run stops at the key (no TPM there); the clock step ran before it.
    let r = firstboot_in(
        &root,
        &[
            ("PATH", &path),
            ("VAULT_TOKEN", VAULT_TOKEN),
            ("HYBRIDBOOT_PKCS11_PIN", PIN),
        ],
    );
    r.failed();
    let dumped = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("timedatectl never ran ({e}): {}", r.stderr));
    assert!(dumped.contains("PATH="), "{dumped}");
    for secret in [VAULT_TOKEN, PIN, "VAULT_TOKEN=", "HYBRIDBOOT_PKCS11_PIN="] {
        assert!(
            !dumped.contains(secret),
            "timedatectl saw {secret}:\n{dumped}"
        );
    }
}

/// A root with a first-boot state file holding `text`.
fn root_with_state(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("var/lib/hybridboot");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("firstboot.json"), text).unwrap();
    dir
}

/// `status --json | head -c1` used to panic on the closed pipe (exit 101). A reader that went
/// away wanted no more: the output stops quietly and the command succeeds.
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let dir = root_with_state(
        r#"{"version": 1, "node_name": "node-1.example.com", "completed": ["key", "enroll"]}"#,
    );
    for json in [true, false] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // the reader is gone before anything is written: EPIPE on the first write
        let mut cmd = std::process::Command::new(util::bin());
        cmd.args(["status", "--root", dir.path().to_str().unwrap()]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "json={json}: {stderr}");
        assert!(stderr.is_empty(), "json={json}: quietly: {stderr}");
    }
}

/// `uninstall | head -c1` (or a closed stdout) used to panic after the files were gone (exit
/// 101 from `println!`): the report goes through the same quiet writer as every command's.
#[test]
fn uninstall_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in [
        "var/lib/kubelet/kubeconfig",
        "var/lib/kubelet/pki/kubelet.crt",
    ] {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "x").unwrap();
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(util::bin())
        .args(["uninstall", "--no-stop", "--root", root.to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!root.join("var/lib/kubelet/kubeconfig").exists());
    assert!(!root.join("var/lib/kubelet/pki").exists());
}

/// A CLI duration beyond the 100-year limit (or beyond any integer) is a usage error that
/// names the flag and the maximum, before anything runs.
#[test]
fn a_huge_timeout_is_a_usage_error_naming_the_flag_and_the_limit() {
    for (args, flag) in [
        (
            vec![
                "enroll",
                "--vault-addr",
                "http://127.0.0.1:1",
                "--pki-role",
                "r",
                "--key",
                "file:/nonexistent/k.pem",
                "--common-name",
                "n",
                "--certificate",
                "/nonexistent/c.pem",
                "--timeout",
            ],
            "--timeout",
        ),
        (
            vec!["sandbox-image", "--retry-deadline"],
            "--retry-deadline",
        ),
    ] {
        for huge in ["99999999999999999999", "99999999999999999999s", "36501d"] {
            let mut all = args.clone();
            all.push(huge);
            let r = run(&all, &[]);
            assert_eq!(r.code, 2, "{all:?}: {}", r.stderr);
            assert!(
                r.stderr.contains(flag) && r.stderr.contains("at most 36500d"),
                "{all:?}: {}",
                r.stderr
            );
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        }
    }
}

/// A state file from a newer release (an A/B rollback booted the older one) used to give "exit 3,
/// unreadable (unknown field)" with no hint. `status` and `firstboot` name the file, both
/// versions and what to do, and leave the file as it is.
#[test]
fn a_newer_state_file_needs_an_operator_and_says_which_and_what_to_do() {
    let newer = r#"{"version": 2, "completed": ["key"], "attestation": {"quote": "x"}}"#;
    let dir = root_with_state(newer);
    let root = dir.path();
    let etc = root.join("etc/hybridboot");
    std::fs::create_dir_all(&etc).unwrap();
    let key = "handle:0x81000001";
    let text = util::config::firstboot_yaml(
        &util::config::NodeConfig::example("node-1.example.com", key),
        &util::config::BootstrapConfig::new(
            key,
            "swtpm:host=127.0.0.1,port=1",
            "http://127.0.0.1:1",
        ),
    );
    std::fs::write(etc.join("config.yaml"), text).unwrap();
    let status = run(&["status", "--root", root.to_str().unwrap()], &[]);
    let fb = firstboot_in(root, &[]);
    for (what, r) in [("status", &status), ("firstboot", &fb)] {
        assert_eq!(r.code, 3, "{what}: {}", r.stderr);
        for want in [
            "var/lib/hybridboot/firstboot.json",
            "state version 2",
            "reads version 1",
            "newer hybridboot",
            "remove the file",
        ] {
            assert!(r.stderr.contains(want), "{what}: {want}: {}", r.stderr);
        }
    }
    let state = root.join("var/lib/hybridboot/firstboot.json");
    assert_eq!(std::fs::read_to_string(state).unwrap(), newer);
}
