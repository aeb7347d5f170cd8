"""Figures 1-4 of the benchmark (see scripts/bench.sh): the first-boot floor from the peers
themselves, first boot per step, credential-process cold/warm next to the reference client,
token warm, and the footprint (sizes, peak RSS).

Each function returns a dict for results.json; timings are milliseconds, each a summary()
(median, min, max, n, runs) of BENCH_RUNS runs.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from common import REGION, Moto, RolesAnywhere, Vault, free_port, gnu_time, max_rss_kib, run_timed, summary

RUNS = int(os.environ.get("BENCH_RUNS", "7"))
WARM_RUNS = int(os.environ.get("BENCH_WARM_RUNS", "31"))


class Node:
    """One node's identity for the benchmarks: a key (TPM handle or file) and a certificate
    enrolled with OpenBao through hybridboot itself (not timed here)."""

    def __init__(self, bin: str, vault: Vault, work: Path, key: str, cn: str, env: dict):
        work.mkdir(parents=True, exist_ok=True)
        self.key, self.cn, self.cert = key, cn, work / "cert.pem"
        run_timed([bin, "-q", "key", "create", "--key", key], env=env)
        run_timed([bin, "-q", *vault.enroll_args(key, cn, self.cert)], env=env)
        self.key_file = Path(key.removeprefix("file:")) if key.startswith("file:") else None


def base_env(work: Path) -> dict:
    """A clean environment: no AWS variables or files from the caller's account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
               AWS_CONFIG_FILE=str(home / "no-config"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


# ---------------------------------------------------------------------------
# Reference client and floor pieces (in-process: no interpreter start-up counted)
# ---------------------------------------------------------------------------


def reference_create_session(ra: RolesAnywhere, node: Node) -> tuple[float, dict]:
    """One CreateSession by iam-rolesanywhere-session on a fresh session object (so a fresh
    TLS connection, as a process would make); only the request is timed."""
    from iam_rolesanywhere_session import IAMRolesAnywhereSession

    s = IAMRolesAnywhereSession(
        profile_arn=ra.profile_arn, role_arn=ra.role_arn, trust_anchor_arn=ra.trust_anchor_arn,
        certificate=node.cert.read_bytes(), private_key=node.key_file.read_bytes(),
        region=REGION, endpoint=ra.host, verify=str(ra.tls_ca),
    )
    creds = s.get_refreshable_credentials()
    t0 = time.perf_counter()
    frozen = creds.get_frozen_credentials()
    ms = (time.perf_counter() - t0) * 1e3
    return ms, {"access_key": frozen.access_key, "secret_key": frozen.secret_key, "token": frozen.token}


def describe_cluster(moto: Moto, creds: dict) -> float:
    """One DescribeCluster by boto3 against moto with a fresh client (fresh connection); the
    client's construction is not timed, only the call."""
    import boto3

    c = boto3.client("eks", endpoint_url=moto.endpoint, region_name=REGION,
                     aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"],
                     aws_session_token=creds["token"])
    t0 = time.perf_counter()
    c.describe_cluster(name=moto.cluster)
    return (time.perf_counter() - t0) * 1e3


def vault_sign_with_curl(bin: str, vault: Vault, work: Path, env: dict) -> float:
    """One `POST pki/sign/node` by curl (a process, like the agent's own request would be)."""
    work.mkdir(parents=True, exist_ok=True)
    key = f"file:{work / 'curl-key.pem'}"
    csr = work / "curl.csr"
    run_timed([bin, "-q", "key", "create", "--key", key], env=env)
    run_timed([bin, "-q", "csr", "--key", key, "--common-name", "floor.example.com", "--out", str(csr)], env=env)
    (work / "curl-body.json").write_text(json.dumps({"csr": csr.read_text(), "common_name": "floor.example.com", "ttl": "24h"}))
    headers = work / "curl-headers"
    fd = os.open(headers, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"X-Vault-Token: {os.environ['HB_VAULT_TOKEN']}\n")
    ms, r = run_timed(["curl", "-sS", "--fail", "-H", f"@{headers}", "--data", f"@{work / 'curl-body.json'}",
                       f"{vault.addr}/v1/pki/sign/node"])
    if "certificate" not in json.loads(r.stdout).get("data", {}):
        raise RuntimeError("Vault sign by curl returned no certificate")
    return ms


def floor(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, ref_node: Node, work: Path, env: dict, tpm_floor_json: Path) -> dict:
    tpm_runs = json.loads(tpm_floor_json.read_text())
    out = {"tpm": {op: summary([r[op] for r in tpm_runs]) for op in tpm_runs[0]}}
    out["vault_sign_curl"] = summary([vault_sign_with_curl(bin, vault, work / f"curl{i}", env) for i in range(RUNS)])
    ref, describe = [], []
    for _ in range(RUNS):
        ms, creds = reference_create_session(ra, ref_node)
        ref.append(ms)
        describe.append(describe_cluster(moto, creds))
    out["create_session_reference"] = summary(ref)
    out["describe_cluster_boto3"] = summary(describe)
    medians = [out["tpm"]["total_ms"]["median"], out["vault_sign_curl"]["median"],
               out["create_session_reference"]["median"], out["describe_cluster_boto3"]["median"]]
    out["total_ms"] = sum(medians)
    return out


# ---------------------------------------------------------------------------
# credential-process, token
# ---------------------------------------------------------------------------


def cred_argv(bin: str, ra: RolesAnywhere, node: Node, *extra: str) -> list[str]:
    return [bin, "-q", "credential-process", "--certificate", str(node.cert), "--private-key", node.key,
            *ra.flags(), *extra]


def spawn_overhead() -> dict:
    """What spawning and reaping a trivial process costs this harness (not subtracted)."""
    return summary([run_timed(["/bin/true"])[0] for _ in range(WARM_RUNS)])


def credential_process(bin: str, ra: RolesAnywhere, tpm_node: Node, file_node: Node, ref_node: Node, work: Path, env: dict,
                       sequential: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    for name, node in (("cold_tpm", tpm_node), ("cold_file", file_node)):
        runs, rss = [], []
        for i in range(RUNS):
            e = dict(env, RUNTIME_DIRECTORY=str(work / f"{name}-cache-{i}"))
            report = work / f"{name}-{i}.time"
            ms, r = run_timed(gnu_time(cred_argv(bin, ra, node), report), env=e)
            json.loads(r.stdout)  # credential_process JSON, else this raises
            runs.append(ms)
            rss.append(max_rss_kib(report))
        out[name] = summary(runs)
        out[name + "_rss_kib"] = summary(rss)
    # Warm: the cache of the last cold TPM run holds a fresh session.
    e = dict(env, RUNTIME_DIRECTORY=str(work / f"cold_tpm-cache-{RUNS - 1}"))
    before = ra.stats()["total"]
    warm, rss = [], []
    for i in range(WARM_RUNS):
        report = work / f"warm-{i}.time"
        warm.append(run_timed(cred_argv(bin, ra, tpm_node), env=e)[0])
        if i < 3:
            run_timed(gnu_time(cred_argv(bin, ra, tpm_node), report), env=e)
            rss.append(max_rss_kib(report))
    if ra.stats()["total"] != before:
        raise RuntimeError("a warm credential-process made a CreateSession")
    out["warm"] = summary(warm)
    out["warm_rss_kib"] = summary(rss)
    out["reference_create_session"] = summary([reference_create_session(ra, ref_node)[0] for _ in range(RUNS)])
    out["spawn_overhead"] = spawn_overhead()
    if not sequential:
        return out
    # 100 sequential invocations from an empty cache: how many CreateSession calls.
    ra.control("reset")
    e = dict(env, RUNTIME_DIRECTORY=str(work / "seq100-cache"))
    for _ in range(100):
        run_timed(cred_argv(bin, ra, tpm_node), env=e)
    out["create_sessions_for_100"] = ra.stats()["total"]
    return out


def token(bin: str, moto: Moto, ra: RolesAnywhere, node: Node, work: Path, env: dict) -> dict:
    """`hybridboot token` with the node's AWS config naming hybridboot credential-process (how
    init configures kubelet): warm = the session cache already holds credentials."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "aws-config"
    process = " ".join(shlex.quote(a) for a in [bin, "credential-process", "--certificate", str(node.cert),
                                                 "--private-key", node.key, *ra.flags()])
    config.write_text(f"[default]\nregion = {REGION}\ncredential_process = {process}\n")
    e = dict(env, AWS_CONFIG_FILE=str(config), RUNTIME_DIRECTORY=str(work / "token-cache"))
    argv = [bin, "-q", "token", "--cluster-name", moto.cluster, "--region", REGION]
    cold, r = run_timed(argv, env=e)
    if json.loads(r.stdout).get("kind") != "ExecCredential":
        raise RuntimeError("token printed no ExecCredential")
    before = ra.stats()["total"]
    warm = [run_timed(argv, env=e)[0] for _ in range(WARM_RUNS)]
    if ra.stats()["total"] != before:
        raise RuntimeError("a warm token made a CreateSession")
    return {"cold": cold, "warm": summary(warm)}


# ---------------------------------------------------------------------------
# Footprint
# ---------------------------------------------------------------------------


def stripped_size(path: Path, work: Path) -> int:
    out = work / (path.name + ".stripped")
    subprocess.run(["strip", "-o", str(out), str(path)], check=True)
    return out.stat().st_size


def dist_dir(bin: str) -> Path:
    """Where `make static` / `make dynamic` put their binaries (BENCH_DIST_DIR overrides)."""
    return Path(os.environ.get("BENCH_DIST_DIR") or Path(bin).resolve().parents[2] / "target" / "dist")


def host_static(bin: str) -> str | None:
    """The static binary for this machine's architecture, if `make static` built it."""
    f = dist_dir(bin) / f"hybridboot-{platform.machine()}-static"
    return str(f) if f.exists() else None


def sizes(bin: str, work: Path) -> dict:
    """The host release binary stripped, and the dist binaries as built (the dist profile
    strips them already)."""
    work.mkdir(parents=True, exist_ok=True)
    out = {"host_release": {"file": bin, "stripped_bytes": stripped_size(Path(bin), work)}}
    for f in sorted(glob.glob(str(dist_dir(bin) / "hybridboot-*-static"))):
        out[Path(f).name] = {"file": f, "bytes": Path(f).stat().st_size}
    return out




def serve_rss(bin: str, ra: RolesAnywhere, node: Node, work: Path, env: dict, requests: int = 200) -> dict:
    """Peak RSS of `serve` after it made a session and answered `requests` IMDS requests."""
    port = free_port()
    report = work / "serve.time"
    argv = [bin, "-q", "serve", "--port", str(port), "--certificate", str(node.cert),
            "--private-key", node.key, *ra.flags()]
    work.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(gnu_time(argv, report), env=dict(env, RUNTIME_DIRECTORY=str(work / "serve-cache")),
                         stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        answered, deadline = 0, time.monotonic() + 30
        while answered < requests:
            try:
                req = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
                tok = urllib.request.urlopen(req, timeout=5).read().decode()
                h = {"X-aws-ec2-metadata-token": tok}
                role = urllib.request.urlopen(urllib.request.Request(
                    f"{base}/latest/meta-data/iam/security-credentials/", headers=h), timeout=5).read().decode().strip()
                doc = json.loads(urllib.request.urlopen(urllib.request.Request(
                    f"{base}/latest/meta-data/iam/security-credentials/{role}", headers=h), timeout=5).read())
                if doc.get("Code") == "Success":
                    answered += 1
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not answer; see {work / 'serve.log'}")
                time.sleep(0.05)
    finally:
        # GNU time's child is the server: stop that one so that time writes its report.
        children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        status = {}
        for c in children:
            # What the resident memory is made of: file-backed pages (the binary's and the
            # shared libraries' code, clean and shared) versus the process's own (anonymous).
            for line in Path(f"/proc/{c}/status").read_text().splitlines():
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    status[k.lower() + "_kib"] = int(v.split()[0])
            os.kill(int(c), signal.SIGTERM)
        p.wait(timeout=10)
    return {"rss_kib": max_rss_kib(report), "imds_requests": requests, **status}
