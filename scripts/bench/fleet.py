"""Figure 5 of the benchmark: a fleet of simulated nodes, each a separate process chain with its
own file key and certificate, all at once against the same OpenBao and the same Roles Anywhere
endpoint; then again with the endpoint throttled, to show that jittered backoff gets everyone
through without a synchronised retry storm.

Retries are counted twice: by the endpoint (requests it answered beyond one per node) and by
the nodes' own log lines (`... (attempt N)` / `...: attempt N`, N >= 2).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

from common import RolesAnywhere, Vault, log

NODES = int(os.environ.get("BENCH_FLEET_NODES", "200"))
THROTTLE_RPS = 10
ATTEMPT = re.compile(r"attempt (\d+)")


def retries_in(stderr: str) -> int:
    return sum(1 for m in ATTEMPT.finditer(stderr) if int(m.group(1)) >= 2)


def run_fleet(commands: list[list[list[str]]], env_of) -> dict:
    """Runs node i's commands one after the other in its own thread, all nodes released at
    once; returns completion time (s), failures and the retries the nodes logged."""
    barrier = threading.Barrier(len(commands) + 1)
    results: list[dict] = [{} for _ in commands]

    def node(i: int) -> None:
        barrier.wait()
        t0 = time.monotonic()
        retries, err = 0, None
        for argv in commands[i]:
            r = subprocess.run(argv, env=env_of(i), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            retries += retries_in(r.stderr)
            if r.returncode != 0:
                err = f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}"
                break
        results[i] = {"seconds": time.monotonic() - t0, "retries": retries, "error": err}

    threads = [threading.Thread(target=node, args=(i,)) for i in range(len(commands))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
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
        "failure_examples": sorted(set(failures))[:3],
        "retries_logged": sum(r["retries"] for r in results),
        "max_retries_one_node": max(r["retries"] for r in results),
        "released_at": t0,
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
        while bins and bins[-1][0] == 0:
            bins.pop()
        requests = [b[0] for b in bins]
        return {
            "requests_per_s": requests,
            "ok_per_s": [b[1] for b in bins],
            "throttled_per_s": [b[2] for b in bins],
            "peak_rps": max(requests, default=0),
            "peak_rps_after_first_s": max(requests[1:], default=0),
        }


def fleet(bin: str, vault: Vault, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    dirs = [work / f"node{i:03d}" for i in range(NODES)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    def env_of(i: int) -> dict:
        return dict(env, RUNTIME_DIRECTORY=str(dirs[i] / "run"))

    out: dict = {}
    log(f"fleet: {NODES} nodes create their keys and enroll with OpenBao at once")
    out["enroll"] = enroll = run_fleet([[
        [bin, "key", "create", "--key", f"file:{d / 'key.pem'}"],
        [bin, *vault.enroll_args(f"file:{d / 'key.pem'}", f"node{i:03d}.example.com", d / "cert.pem")],
    ] for i, d in enumerate(dirs)], env_of)
    enroll.pop("released_at")

    def cred(i: int) -> list[list[str]]:
        d = dirs[i]
        return [[bin, "credential-process", "--no-cache", "--certificate", str(d / "cert.pem"),
                 "--private-key", f"file:{d / 'key.pem'}", *ra.flags()]]

    for name, rps in (("credential_process", 0), ("credential_process_throttled", THROTTLE_RPS)):
        ra.control("reset")
        if rps:
            ra.control("throttle", {"rps": rps})
        log(f"fleet: {NODES} nodes call credential-process at once" + (f" (endpoint throttled at {rps} req/s)" if rps else ""))
        with RateSampler(ra) as sampler:
            res = run_fleet([cred(i) for i in range(NODES)], env_of)
        st = ra.stats()
        res.update(sampler.per_second(res.pop("released_at")))
        res["throttle_rps"] = rps
        res["endpoint"] = {k: st[k] for k in ("total", "ok", "throttled", "rejected", "faulted")}
        res["retries_seen_by_endpoint"] = st["total"] - st["ok"]
        out[name] = res
        ra.control("throttle", {"rps": 0})
    return out
