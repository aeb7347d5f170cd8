#!/usr/bin/env python3
"""Figure 5 of the benchmark: a fleet of node processes (BENCH_FLEET_NODES, 1,000), each with
its own file key and certificate, all released at once as a site's appliances are when the
power comes back. Three runs:

- free: key create + enroll with OpenBao, then credential-process against the Roles Anywhere
  test endpoint, nothing throttled;
- throttled: the enrolled fleet calls credential-process again with the endpoint throttled to
  THROTTLE_RPS (10) CreateSession/s, answering 429 ThrottlingException without Retry-After as
  the real service does;
- vault_quota: a fresh fleet (new keys) enrolls with an OpenBao behind its own rate-limit quota
  (`sys/quotas/rate-limit`, VAULT_RPS = 10/s on `pki/sign/node`, answering 429), with the quota's
  response headers and the audit of rejected requests turned on.

Requests are counted at each peer: the endpoint's own counters (sampled every 0.1 s) and
OpenBao's audit log (one `request` entry per request, rejected ones included). The floor is
nodes / rate; requests per success is what the peer saw over what it granted.

Alone, without the rest of `make bench` (peers started by scripts/bench.sh):
    BENCH_ONLY=fleet bash scripts/bench.sh
which merges `fleet` into target/bench/results.json and replaces only the README's fleet part
of the bench table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import RolesAnywhere, Vault, alone_args, bao_bin, free_port, log, publish_alone

NODES = int(os.environ.get("BENCH_FLEET_NODES", "1000"))
THROTTLE_RPS = 10
VAULT_RPS = 10
# How long a node keeps waiting out a rate limit: well past the floor (nodes / rate) so that a
# slow schedule shows as time, not as failures.
RETRY_DEADLINE = "10m"
ATTEMPT = re.compile(r"attempt (\d+)")


def retries_in(stderr: str) -> int:
    return sum(1 for m in ATTEMPT.finditer(stderr) if int(m.group(1)) >= 2)


def run_fleet(commands: list[list[list[str]]], env_of) -> dict:
    """Runs node i's commands one after the other in its own thread, all nodes released at
    once; returns completion time (s), failures (and how many nodes gave up: exit 4) and the
    retries the nodes logged."""
    barrier = threading.Barrier(len(commands) + 1)
    results: list[dict] = [{} for _ in commands]

    def node(i: int) -> None:
        barrier.wait()
        t0 = time.monotonic()
        retries, err, code = 0, None, 0
        for argv in commands[i]:
            r = subprocess.run(argv, env=env_of(i), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            retries += retries_in(r.stderr)
            if r.returncode != 0:
                code = r.returncode
                err = f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}"
                break
        results[i] = {"seconds": time.monotonic() - t0, "retries": retries, "error": err, "code": code}

    threads = [threading.Thread(target=node, args=(i,)) for i in range(len(commands))]
    for t in threads:
        t.start()
    barrier.wait()
    t0, wall0 = time.monotonic(), time.time()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    failures = [r["error"] for r in results if r["error"]]
    secs = sorted(r["seconds"] for r in results)
    return {
        "nodes": len(commands),
        "completion_s": round(wall, 3),
        "node_median_s": round(secs[len(secs) // 2], 3),
        "failures": len(failures),
        "gave_up": sum(1 for r in results if r["code"] == 4),
        "failure_examples": sorted(set(failures))[:3],
        "retries_logged": sum(r["retries"] for r in results),
        "max_retries_one_node": max(r["retries"] for r in results),
        "released_at": t0,
        "released_at_wall": wall0,
    }


def rates(requests: list[int], ok: list[int]) -> dict:
    while requests and requests[-1] == 0:
        requests, ok = requests[:-1], ok[:-1]
    return {
        "requests_per_s": requests,
        "ok_per_s": ok,
        "peak_rps": max(requests, default=0),
        "peak_rps_after_first_s": max(requests[1:], default=0),
    }


class RateSampler:
    """Samples the endpoint's counters ten times a second; per_second(t0) bins the requests
    that arrived into whole seconds after t0 (when the nodes were released)."""

    def __init__(self, ra: RolesAnywhere):
        self.ra, self.samples, self.stop = ra, [], threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def sample(self) -> None:
        s = self.ra.stats()
        self.samples.append((time.monotonic(), s["total"], s["ok"], s["throttled"]))

    def loop(self) -> None:
        while not self.stop.wait(0.1):
            self.sample()

    def __enter__(self):
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()

    def per_second(self, t0: float) -> dict:
        def at(t: float) -> tuple:  # the counters as last sampled at or before t
            return max((x for x in self.samples if x[0] <= t), default=self.samples[0], key=lambda x: x[0])

        seconds = int(self.samples[-1][0] - t0) + 1
        bins = [tuple(b - a for a, b in zip(at(t0 + k)[1:], at(t0 + k + 1)[1:])) for k in range(seconds)]
        return rates([b[0] for b in bins], [b[1] for b in bins])


def at_peer(res: dict, total: int, ok: int, rate: float) -> None:
    """The peer's own figures and the ratios against the floor (nodes / rate)."""
    floor = res["nodes"] / rate if rate else None
    res["peer"] = {"requests": total, "ok": ok, "refused": total - ok}
    res["requests_per_success"] = round(total / ok, 3) if ok else None
    if floor:
        res["floor_s"] = floor
        res["completion_over_floor"] = round(res["completion_s"] / floor, 3)


# ---------------------------------------------------------------------------
# OpenBao behind a rate-limit quota, with an audit log that counts every request
# ---------------------------------------------------------------------------


class QuotaVault:
    """An OpenBao dev server of its own (the shared one cannot get an audit device: OpenBao
    only takes them from its configuration file): PKI role `node`, a token for it, the audit
    log in a file, and `sys/quotas/config` with the quota's response headers and the audit of
    rejected requests on. The quota itself is set by quota(rate)."""

    ROOT = "hb-fleet-root"

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.bao, self.audit = work, bao_bin(), work / "audit.log"
        (work / "audit.hcl").write_text(f'audit "file" "fleet" {{\n  options {{\n    file_path = "{self.audit}"\n  }}\n}}\n')
        port = free_port()
        self.addr = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([self.bao, "server", "-dev", f"-dev-root-token-id={self.ROOT}",
                                      f"-dev-listen-address=127.0.0.1:{port}", f"-config={work / 'audit.hcl'}"],
                                     stdin=subprocess.DEVNULL, stdout=open(work / "bao.log", "ab"), stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.run("status", check=False) is not None:
                break
            time.sleep(0.1)
        self.run("secrets", "enable", "pki")
        self.run("secrets", "tune", "-max-lease-ttl=87600h", "pki")
        self.run("write", "-field=certificate", "pki/root/generate/internal",
                 "common_name=bench fleet quota root CA", "key_type=ec", "ttl=87600h")
        self.run("write", "pki/roles/node", "allowed_domains=example.com", "allow_subdomains=true",
                 "max_ttl=72h", "ttl=24h", "key_type=any")
        self.run("policy", "write", "node", "-", stdin='path "pki/sign/node" { capabilities = ["create", "update"] }\n')
        self.token_file = work / "vault-token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.run("token", "create", "-policy=node", "-ttl=2h", "-field=token").strip() + "\n")
        self.run("write", "sys/quotas/config", "enable_rate_limit_response_headers=true",
                 "enable_rate_limit_audit_logging=true")

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str | None:
        env = dict(os.environ, BAO_ADDR=self.addr, BAO_TOKEN=self.ROOT)
        for k in ("VAULT_ADDR", "VAULT_TOKEN", "BAO_CACERT"):
            env.pop(k, None)
        r = subprocess.run([self.bao, *args], env=env, input=stdin, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            if check:
                raise RuntimeError(f"bao {args[:3]}: {r.stderr.strip()}")
            return None
        return r.stdout

    def quota(self, rate: float) -> None:
        self.run("write", "sys/quotas/rate-limit/fleet", f"rate={rate}", "interval=1s", "path=pki/sign/node")

    def enroll_args(self, key: str, cn: str, cert: Path) -> list[str]:
        return ["enroll", "--vault-addr", self.addr, "--pki-role", "node", "--key", key, "--common-name", cn,
                "--certificate", str(cert), "--vault-token-file", str(self.token_file), "--ttl", "24h",
                "--timeout", RETRY_DEADLINE]

    def refused_headers(self) -> dict:
        """The headers of one refused `pki/sign/node` (what OpenBao tells a throttled client)."""
        token = self.token_file.read_text().strip()
        for _ in range(4 * VAULT_RPS):
            req = urllib.request.Request(f"{self.addr}/v1/pki/sign/node", data=b"{}", method="POST",
                                         headers={"X-Vault-Token": token})
            try:
                urllib.request.urlopen(req, timeout=10).close()
            except urllib.error.HTTPError as e:
                if e.code == 429:
                    return {k: v for k, v in e.headers.items() if k.lower() in ("retry-after", "x-ratelimit-limit",
                                                                                "x-ratelimit-remaining", "x-ratelimit-reset")}
        return {}

    def count(self, path: str, since: float, until: float) -> tuple[int, int, list[float]]:
        """Requests to `path` the audit log holds between two wall-clock times: (all, granted,
        arrival times). A refused request has only its `request` entry, with the quota's error."""
        total, ok, times = 0, 0, []
        for line in self.audit.read_text().splitlines():
            e = json.loads(line)
            if e.get("type") != "request" or (e.get("request") or {}).get("path") != path:
                continue
            t = dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", e["time"]).replace("Z", "+00:00")).timestamp()
            if not since <= t <= until:
                continue
            total += 1
            times.append(t)
            if "rate limit quota exceeded" not in (e.get("error") or ""):
                ok += 1
        return total, ok, times

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def per_second_of(times: list[float], t0: float) -> dict:
    n = int(max(times, default=t0) - t0) + 1
    bins = [0] * n
    for t in times:
        bins[max(0, int(t - t0))] += 1
    return {"requests_per_s": bins, "peak_rps": max(bins, default=0), "peak_rps_after_first_s": max(bins[1:], default=0)}


# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------


def fleet(bin: str, vault: Vault, ra: RolesAnywhere, work: Path, env: dict, nodes: int = NODES) -> dict:
    dirs = [work / f"node{i:04d}" for i in range(nodes)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    def env_of(i: int) -> dict:
        return dict(env, RUNTIME_DIRECTORY=str(dirs[i] / "run"))

    rev = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    out: dict = {"nodes": nodes, "throttle_rps": THROTTLE_RPS, "vault_rps": VAULT_RPS, "loadavg_start": os.getloadavg(),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": rev, "nproc": os.cpu_count()}
    log(f"fleet: {nodes} nodes create their keys and enroll with OpenBao at once")
    out["enroll"] = enroll = run_fleet([[
        [bin, "key", "create", "--key", f"file:{d / 'key.pem'}"],
        [bin, *vault.enroll_args(f"file:{d / 'key.pem'}", f"node{i:04d}.example.com", d / "cert.pem"), "--timeout", RETRY_DEADLINE],
    ] for i, d in enumerate(dirs)], env_of)
    enroll.pop("released_at")
    enroll.pop("released_at_wall")

    def cred(i: int) -> list[list[str]]:
        d = dirs[i]
        return [[bin, "credential-process", "--no-cache", "--retry-deadline", RETRY_DEADLINE,
                 "--certificate", str(d / "cert.pem"), "--private-key", f"file:{d / 'key.pem'}", *ra.flags()]]

    for name, rps in (("credential_process", 0), ("credential_process_throttled", THROTTLE_RPS)):
        ra.control("reset")
        if rps:
            ra.control("throttle", {"rps": rps})
        log(f"fleet: {nodes} nodes call credential-process at once" + (f" (endpoint throttled at {rps} req/s)" if rps else ""))
        with RateSampler(ra) as sampler:
            res = run_fleet([cred(i) for i in range(nodes)], env_of)
        st = ra.stats()
        res.update(sampler.per_second(res.pop("released_at")))
        res.pop("released_at_wall")
        res["throttle_rps"] = rps
        res["endpoint"] = {k: st[k] for k in ("total", "ok", "throttled", "rejected", "faulted")}
        res["retries_seen_by_endpoint"] = st["total"] - st["ok"]
        at_peer(res, st["total"], st["ok"], rps)
        out[name] = res
        ra.control("throttle", {"rps": 0})

    log(f"fleet: {nodes} fresh nodes enroll with an OpenBao behind a {VAULT_RPS}/s rate-limit quota")
    qv = QuotaVault(work / "quota-openbao")
    try:
        qv.quota(VAULT_RPS)
        qdirs = [work / "quota" / f"node{i:04d}" for i in range(nodes)]
        for d in qdirs:
            d.mkdir(parents=True, exist_ok=True)
        res = run_fleet([[
            [bin, "key", "create", "--key", f"file:{d / 'key.pem'}"],
            [bin, *qv.enroll_args(f"file:{d / 'key.pem'}", f"node{i:04d}.example.com", d / "cert.pem")],
        ] for i, d in enumerate(qdirs)], lambda i: dict(env, RUNTIME_DIRECTORY=str(qdirs[i] / "run")))
        res.pop("released_at")
        since = res.pop("released_at_wall")
        total, ok, times = qv.count("pki/sign/node", since - 1, time.time() + 1)
        res.update(per_second_of(times, since))
        res["certificates"] = sum(1 for d in qdirs if (d / "cert.pem").exists())
        at_peer(res, total, ok, VAULT_RPS)
        res["headers_on_429"] = qv.refused_headers()
        out["vault_quota"] = res
    finally:
        qv.stop()
    out["loadavg_end"] = os.getloadavg()
    return out


def figures(f: dict) -> dict:
    """The named figures of issue 20 (and a few more), flat, for results.json."""
    th, vq = f["credential_process_throttled"], f["vault_quota"]
    return {
        "fleet.nodes": f["nodes"],
        "fleet.free.failures": f["enroll"]["failures"] + f["credential_process"]["failures"],
        "fleet.throttled.failures": th["failures"],
        "fleet.throttled.gave_up": th["gave_up"],
        "fleet.throttled.requests_per_success": th["requests_per_success"],
        "fleet.throttled.completion_over_floor": th["completion_over_floor"],
        "fleet.throttled.peak_rps_after_first_s": th["peak_rps_after_first_s"],
        "fleet.vault_quota.failures": vq["failures"],
        "fleet.vault_quota.gave_up": vq["gave_up"],
        "fleet.vault_quota.requests_per_success": vq["requests_per_success"],
        "fleet.vault_quota.completion_over_floor": vq["completion_over_floor"],
        "fleet.vault_quota.peak_rps_after_first_s": vq["peak_rps_after_first_s"],
    }


def main() -> None:
    import latency
    import report
    a = alone_args()
    result = fleet(a.bin, Vault(a.work / "vault"), RolesAnywhere(), a.work / "fleet", latency.base_env(a.work))
    publish_alone(a, "fleet", {"fleet": result, **figures(result)}, report.render_fleet(result), "bench:fleet")


if __name__ == "__main__":
    main()
