#!/usr/bin/env python3
"""The benchmark suite behind `make bench` (scripts/bench.sh starts swtpm and OpenBao, runs the
Rust benches, then this, then report.py). Measures figures 1-5 against the peers bench.sh
started and writes the raw results as JSON.

    suite.py --bin target/release/hybridboot --work DIR --out target/bench/results.json \
        --tpm-floor DIR/tpm-floor.json [--sign target/bench/sign.json]

Environment: the peers' variables from scripts/lib.sh (HB_TCTI, HB_VAULT_*, HB_MOTO, HB_ROLE_ARN,
HB_RA_*) and bench.sh (BENCH_REGION, BENCH_CLUSTER, BENCH_TA_ARN, BENCH_PROFILE_ARN); knobs
BENCH_RUNS, BENCH_WARM_RUNS, BENCH_FLEET_NODES.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import downloads
import fleet
import firstboot
import latency
import vault_ha
from common import Moto, RolesAnywhere, Vault, log, name_figures


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    rev = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "commit": rev, "loadavg_start": os.getloadavg(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def vm_guests(artifacts: Path) -> list[dict]:
    """The VM guests' timings as the last `make vm-test` wrote them (target/vm-artifacts/*.json):
    booting guests under TCG takes minutes, so the bench reports the test's figures (with their
    age) instead of booting them again; BENCH_VM=1 makes bench.sh run `make vm-test` first."""
    out = []
    for f in sorted(artifacts.glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        d["measured"] = dt.datetime.fromtimestamp(f.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out.append(d)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tpm-floor", required=True, type=Path)
    p.add_argument("--sign", type=Path)
    a = p.parse_args()
    bin, work = str(Path(a.bin).resolve()), a.work
    started = time.monotonic()
    env = latency.base_env(work)
    env["HYBRIDBOOT_TCTI"] = os.environ["HB_TCTI"]

    vault = Vault(work / "vault")
    moto, ra = Moto(), RolesAnywhere()

    log("enrolling the benchmark nodes (TPM key and file keys)")
    tpm_node = latency.Node(bin, vault, work / "tpm-node", "handle:0x81000001", "tpm-node.example.com", env)
    file_node = latency.Node(bin, vault, work / "file-node", f"file:{work / 'file-node' / 'key.pem'}", "file-node.example.com", env)
    ref_node = latency.Node(bin, vault, work / "ref-node", f"file:{work / 'ref-node' / 'key.pem'}", "ref-node.example.com", env)

    results: dict = {"machine": machine(), "runs": latency.RUNS, "warm_runs": latency.WARM_RUNS}
    log("floor: TPM (tss-esapi), Vault sign (curl), CreateSession (reference client), DescribeCluster (boto3)")
    results["floor"] = latency.floor(bin, vault, moto, ra, ref_node, work / "floor", env, a.tpm_floor)
    log("firstboot")
    results["firstboot"] = firstboot.firstboot(bin, vault, moto, ra, work / "firstboot", env)
    log("firstboot and its floor again, under a known load (firstboot.over_floor)")
    idle = {"over_floor": firstboot.over_floor(results["floor"], results["firstboot"])}
    results["firstboot"]["loadavg_idle"] = [round(x, 2) for x in os.getloadavg()]
    busy = firstboot.loaded(bin, vault, moto, ra, ref_node, work / "firstboot-loaded", env)
    results["firstboot"].update(firstboot.figures(idle, busy))
    log("credential-process cold / warm, reference client, 100 sequential calls")
    results["credential_process"] = latency.credential_process(bin, ra, tpm_node, file_node, ref_node, work / "cp", env)
    log("token warm")
    results["token"] = latency.token(bin, moto, ra, tpm_node, work / "token", env)
    log("footprint: sizes, serve RSS")
    results["size"] = latency.sizes(bin, work / "size")
    results["serve"] = latency.serve_rss(bin, ra, tpm_node, work / "serve", env)
    static = latency.host_static(bin)
    if static:
        log(f"the same with the static binary {static} (native TPM stack)")
        results["static_host"] = {
            "file": static,
            "serve": latency.serve_rss(static, ra, tpm_node, work / "serve-static", env),
            "credential_process": latency.credential_process(static, ra, tpm_node, file_node, ref_node, work / "cp-static", env, sequential=False),
        }
    results["fleet"] = fleet.fleet(bin, vault, ra, work / "fleet", env)
    results.update(fleet.figures(results["fleet"]))
    results["vault_ha"] = vault_ha.vault_ha(bin, work / "vault-ha", env)
    results["install"] = downloads.downloads(bin, work / "downloads")
    if a.sign and a.sign.exists():
        results["sign"] = json.loads(a.sign.read_text())
    results["vm"] = vm_guests(Path(__file__).resolve().parents[2] / "target" / "vm-artifacts")
    results["suite_seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["loadavg_end"] = os.getloadavg()
    name_figures(results)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"raw results in {a.out} ({results['suite_seconds']} s)")


if __name__ == "__main__":
    main()
