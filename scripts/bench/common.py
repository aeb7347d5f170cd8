"""Shared pieces of the benchmark helpers: the peers (moto, the Roles Anywhere endpoint, both
from tests/peers), timing of processes, peak RSS through GNU time, and summaries.

Everything listens on 127.0.0.1 and every process started here is stopped by PID on exit.
"""

from __future__ import annotations

import atexit
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "tests" / "peers"
PY = sys.executable  # the project venv's python (bench.sh runs us with it)
REGION = "us-east-1"
ACCOUNT = "123456789012"

_children: list[subprocess.Popen] = []


def _stop_children() -> None:
    for p in _children:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


atexit.register(_stop_children)


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


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
# Peers
# ---------------------------------------------------------------------------


def spawn_peer(script: str, args: list[str], log_file: Path) -> tuple[subprocess.Popen, dict]:
    """Starts a tests/peers server with --exit-on-stdin-eof; returns it and its ready line."""
    p = subprocess.Popen([PY, str(PEERS / script), *args, "--exit-on-stdin-eof", "--log-file", str(log_file)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log_file, "ab"), text=True)
    _children.append(p)
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"{script} did not start; see {log_file}")
    return p, json.loads(line)


def peer_script(script: str, args: list[str]) -> str:
    return subprocess.run([PY, str(PEERS / script), *args], check=True, stdout=subprocess.PIPE, text=True).stdout


class Moto:
    """moto with the signed-GET fix, populated by moto_setup.py, signature checking on."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.proc, ready = spawn_peer("moto_server.py", ["--port", "0"], work / "moto.log")
        self.endpoint = ready["endpoint"]
        self.setup_file = work / "moto-setup.json"
        self.setup = json.loads(peer_script("moto_setup.py", ["--endpoint", self.endpoint, "--out", str(self.setup_file)]))
        self.role_arn = self.setup["role_arn"]
        self.cluster = self.setup["cluster"]["name"]


class RolesAnywhere:
    """tests/peers/rolesanywhere.py over HTTPS (TLS certificate from mini_ca.py), credentials
    minted through moto's STS; the control API on its plain HTTP listener."""

    def __init__(self, work: Path, trust_anchor_ca: Path, moto: Moto):
        work.mkdir(parents=True, exist_ok=True)
        self.tls_ca = work / "ra-tls-ca.pem"
        ca_key = work / "ra-tls-ca.key"
        tls, tls_key = work / "tls.pem", work / "tls.key"
        peer_script("mini_ca.py", ["ca", str(self.tls_ca), str(ca_key), "bench Roles Anywhere TLS CA"])
        peer_script("mini_ca.py", ["tls", str(self.tls_ca), str(ca_key), str(tls), str(tls_key)])
        self.trust_anchor_arn = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/bench"
        self.profile_arn = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/bench"
        self.role_arn = moto.role_arn
        self.log_file = work / "ra.log"
        self.proc, ready = spawn_peer("rolesanywhere.py", [
            "--port", "0", "--http-port", "0", "--tls-cert", str(tls), "--tls-key", str(tls_key),
            "--region", REGION,
            "--trust-anchor", f"{self.trust_anchor_arn}={trust_anchor_ca}",
            "--profile", f"{self.profile_arn}={self.role_arn}",
            "--sts-credentials-file", str(moto.setup_file),
        ], self.log_file)
        self.https_port = ready["https_port"]
        self.http_port = ready["http_port"]
        self.host = f"127.0.0.1:{self.https_port}"
        self.endpoint = f"https://{self.host}"

    def control(self, op: str, body: dict | None = None) -> dict:
        url = f"http://127.0.0.1:{self.http_port}/_control/{op}"
        get = op in ("stats", "last")
        data = None if get else json.dumps(body or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="GET" if get else "POST"), timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self.control("stats")

    def flags(self) -> list[str]:
        """The flags of `credential-process` / `serve` for this endpoint."""
        return ["--trust-anchor-arn", self.trust_anchor_arn, "--profile-arn", self.profile_arn,
                "--role-arn", self.role_arn, "--endpoint", self.endpoint, "--ca-bundle", str(self.tls_ca)]


class Vault:
    """The OpenBao that bench.sh started (scripts/lib.sh start_openbao): address, node token."""

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
