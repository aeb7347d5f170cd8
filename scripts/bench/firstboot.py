"""Figure 1 of the benchmark: `hybridboot firstboot` from start to stamp, per step.

firstboot records no durations (neither the state file nor its log lines carry times), so the
steps are timed from outside: it reports each step to systemd as `STATUS=...` through
$NOTIFY_SOCKET, and this harness timestamps every datagram as it arrives. A step lasts from its
STATUS to the next one; `start` is exec + configuration before the first, `exit` is after the
last (the summary STATUS) until the process is gone.

Each run starts from an empty root and a TPM without the node key (evicted after the run), so
every run creates the key, enrolls and so on: a real first boot with the binaries baked in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from common import REGION, Moto, RolesAnywhere, Vault, gnu_time, log, max_rss_kib, summary
from latency import RUNS

HANDLE = "0x81000200"

# STATUS texts (src/firstboot) -> step names; a text not listed is used as it is.
STEPS = {
    "checking the system clock": "clock",
    "opening the node key": "key",
    "checking the clock against Vault": "clock-vault",
    "enrolling certificate with Vault": "enroll",
    "joined": "stamp",
}


def step_name(status: str) -> str:
    for prefix, name in STEPS.items():
        if status.startswith(prefix):
            return name
    return status


def write_config(root: Path, vault: Vault, moto: Moto, ra: RolesAnywhere, tcti: str) -> None:
    etc = root / "etc" / "hybridboot"
    etc.mkdir(parents=True)
    fd = os.open(etc / "vault-token", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.environ["HB_VAULT_TOKEN"] + "\n")
    (etc / "config.yaml").write_text(f"""\
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: {moto.cluster}
    region: {REGION}
  hybrid:
    iamRolesAnywhere:
      nodeName: bench-node.example.com
      roleArn: {ra.role_arn}
      profileArn: {ra.profile_arn}
      trustAnchorArn: {ra.trust_anchor_arn}
      privateKeyPath: handle:{HANDLE}
---
apiVersion: hybridboot/v1alpha1
kind: BootstrapConfig
spec:
  key:
    ref: handle:{HANDLE}
    tcti: {tcti}
  vault:
    address: {vault.addr}
    pkiMount: pki
    role: node
    ttl: 24h
    auth:
      tokenFile: /etc/hybridboot/vault-token
  timeouts:
    overall: 5m
    timeSync: 10s
""")


class Notifications:
    """A datagram socket standing in for systemd's: (seconds since start, message) per datagram."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.t0 = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.perf_counter() - self.t0, data.decode(errors="replace")))

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.thread.start()

    def stop(self) -> None:
        # Datagrams already queued are read before the loop sees `done`.
        time.sleep(0.05)
        self.done.set()
        self.thread.join()
        self.sock.close()


def one_run(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    root = work / "root"
    write_config(root, vault, moto, ra, env["HYBRIDBOOT_TCTI"])
    notes = Notifications(work / "notify.sock")
    report = work / "firstboot.time"
    argv = gnu_time([bin, "firstboot", "--config-source", "file:///etc/hybridboot/config.yaml", "--root", str(root)], report)
    notes.start()
    r = subprocess.run(argv, env=dict(env, NOTIFY_SOCKET=str(notes.path)), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    total = (time.perf_counter() - notes.t0) * 1e3
    notes.stop()
    (work / "firstboot.log").write_text(r.stderr)
    if r.returncode != 0 or not (root / "var/lib/hybridboot/joined").exists():
        raise RuntimeError(f"firstboot failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")
    steps: dict[str, float] = {}
    last_t, last_name = 0.0, "start"
    for t, msg in notes.messages:
        if not msg.startswith("STATUS="):
            continue
        steps[last_name] = steps.get(last_name, 0.0) + (t * 1e3 - last_t)
        last_t, last_name = t * 1e3, step_name(msg[len("STATUS="):])
    steps["exit"] = total - last_t
    return {"total_ms": total, "steps_ms": steps, "rss_kib": max_rss_kib(report)}


def evict(tcti: str) -> None:
    subprocess.run(["tpm2_evictcontrol", "-T", tcti, "-C", "o", "-c", HANDLE],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def firstboot(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    tcti = env["HYBRIDBOOT_TCTI"]
    runs = []
    for i in range(RUNS):
        d = work / f"run{i}"
        d.mkdir(parents=True)
        evict(tcti)
        runs.append(one_run(bin, vault, moto, ra, d, env))
        log(f"firstboot run {i + 1}: {runs[-1]['total_ms']:.0f} ms")
    evict(tcti)
    state = json.loads((work / "run0" / "root/var/lib/hybridboot/firstboot.json").read_text())
    names = list(dict.fromkeys(n for r in runs for n in r["steps_ms"]))
    return {
        "total": summary([r["total_ms"] for r in runs]),
        "steps": {n: summary([r["steps_ms"].get(n, 0.0) for r in runs]) for n in names},
        "rss_kib": summary([r["rss_kib"] for r in runs]),
        "state": {k: state.get(k) for k in ("completed", "skipped")},
    }
