"""Figure 1 of the benchmark: `hybridboot firstboot` from start to stamp, per step.

The steps are timed from outside: firstboot reports each step to systemd as `STATUS=...` through
$NOTIFY_SOCKET, and this harness timestamps every datagram as it arrives. A step lasts from its
STATUS to the next one (so it includes the state file write that ends it); `start` is exec +
configuration before the first, `exit` is after the last (the summary STATUS) until the process
is gone. The whole-millisecond durations firstboot records itself (`durations_ms` in
firstboot.json, the step's work without the state write) are kept next to them.

Each run starts from an empty root and a TPM without the node key (evicted after the run), so
every run creates the key, enrolls, makes a Roles Anywhere session and runs init: a real first
boot with the Kubernetes binaries baked in (a kubelet stand-in that answers --version) and
systemctl a recorder (as in scripts/run-main.sh).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from common import REGION, Moto, RolesAnywhere, Vault, gnu_time, log, max_rss_kib, summary
from latency import RUNS

HANDLE = "0x81000200"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux asm-generic; Python does not name it

# STATUS texts (src/firstboot) -> step names; a text not listed is used as it is.
STEPS = {
    "checking the system clock": "clock",
    "opening the node key": "key",
    "checking the clock against Vault": "clock-vault",
    "enrolling certificate with Vault": "enroll",
    "getting AWS credentials from IAM Roles Anywhere": "roles-anywhere",
    "installing Kubernetes binaries": "install",
    "configuring the node (init)": "init",
    "joined": "stamp",
}


def step_name(status: str) -> str:
    for prefix, name in STEPS.items():
        if status.startswith(prefix):
            return name
    return status


def write_image(root: Path, vault: Vault, moto: Moto, ra: RolesAnywhere, tcti: str, systemctl: Path) -> None:
    """The image's files: configuration, Vault token, the AWS endpoints' CA, a baked-in kubelet."""
    etc = root / "etc" / "hybridboot"
    etc.mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    kubelet = root / "usr" / "bin" / "kubelet"
    kubelet.write_text("#!/bin/sh\necho Kubernetes v1.31.2\n")
    kubelet.chmod(0o755)
    systemctl.write_text(f"#!/bin/sh\necho \"systemctl $*\" >>{systemctl}.log\n")
    systemctl.chmod(0o755)
    (etc / "aws-ca.pem").write_bytes(ra.tls_ca.read_bytes())
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
  aws:
    rolesAnywhereEndpoint: {ra.endpoint}
    eksEndpoint: {moto.endpoint}
    caBundle: /etc/hybridboot/aws-ca.pem
  timeouts:
    overall: 5m
    timeSync: 10s
""")


class Notifications:
    """A datagram socket standing in for systemd's, read by a thread (the kernel queues only a
    few datagrams before the sender blocks). Each datagram is stamped by the kernel when it
    arrives (SO_TIMESTAMPNS, wall clock), so the reader's own delays skew nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[int, str]] = []  # (arrival, ns since the epoch; text)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except socket.timeout:
                if self.done.is_set():
                    return
                continue
            sec, nsec = next(struct.unpack("qq", d[:16]) for lvl, typ, d in anc
                             if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS)
            self.messages.append((sec * 10**9 + nsec, data.decode(errors="replace")))

    def stop(self) -> list[tuple[int, str]]:
        """Every datagram received (the queue is read empty before the thread ends)."""
        self.done.set()
        self.thread.join()
        self.sock.close()
        return self.messages


def one_run(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    root, systemctl = work / "root", work / "systemctl"
    write_image(root, vault, moto, ra, env["HYBRIDBOOT_TCTI"], systemctl)
    notes = Notifications(work / "notify.sock")
    report = work / "firstboot.time"
    argv = gnu_time([bin, "firstboot", "--config-source", "file:///etc/hybridboot/config.yaml", "--root", str(root)], report)
    env = dict(env, NOTIFY_SOCKET=str(notes.path), HYBRIDBOOT_SYSTEMCTL=str(systemctl), RUNTIME_DIRECTORY=str(work / "run"))
    t0 = time.time_ns()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    # The log, each line with the milliseconds since start when it arrived (for reading only).
    lines = [f"{(time.time_ns() - t0) / 1e6:8.1f} {line}" for line in p.stderr]
    rc = p.wait()
    end = time.time_ns()
    messages = notes.stop()
    (work / "firstboot.log").write_text("".join(lines))
    if rc != 0 or not (root / "var/lib/hybridboot/joined").exists():
        raise RuntimeError(f"firstboot failed (exit {rc}): {''.join(lines[-8:])}")
    steps: dict[str, float] = {}
    last_t, last_name = t0, "start"
    for t, msg in messages:
        if msg.startswith("STATUS="):
            steps[last_name] = steps.get(last_name, 0.0) + (t - last_t) / 1e6
            last_t, last_name = t, step_name(msg[len("STATUS="):])
    steps["exit"] = (end - last_t) / 1e6
    state = json.loads((root / "var/lib/hybridboot/firstboot.json").read_text())
    return {"total_ms": (end - t0) / 1e6, "steps_ms": steps, "rss_kib": max_rss_kib(report), "state": state}


def fsync_cost(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    """One more first boot under strace, stopping only at the calls that make writes durable
    (fsync, fdatasync, syncfs; seccomp-bpf leaves every other call alone): how many, and the
    time spent in them (ms), a part of first boot no peer accounts for. Separate from the timed
    runs; how long an fsync takes depends on everything else the machine is writing."""
    root, systemctl = work / "root", work / "systemctl"
    write_image(root, vault, moto, ra, env["HYBRIDBOOT_TCTI"], systemctl)
    trace = work / "strace.txt"
    t0 = time.perf_counter()
    subprocess.run(["strace", "-f", "-qq", "--seccomp-bpf", "-T", "-e", "trace=fsync,fdatasync,syncfs", "-o", str(trace),
                    bin, "-q", "firstboot", "--config-source", "file:///etc/hybridboot/config.yaml", "--root", str(root)],
                   env=dict(env, HYBRIDBOOT_SYSTEMCTL=str(systemctl), RUNTIME_DIRECTORY=str(work / "run")),
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = (time.perf_counter() - t0) * 1e3
    times = [float(m) for m in re.findall(r"<([0-9.]+)>$", trace.read_text(), re.M)]
    return {"calls": len(times), "ms": sum(times) * 1e3, "wall_ms": wall}


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
    traced = []
    for i in range(RUNS):
        d = work / f"strace{i}"
        d.mkdir()
        evict(tcti)
        traced.append(fsync_cost(bin, vault, moto, ra, d, env))
    evict(tcti)
    fsyncs = {"calls": traced[0]["calls"], "ms": summary([t["ms"] for t in traced]),
              "wall_ms": summary([t["wall_ms"] for t in traced])}
    state = runs[0]["state"]
    recorded = list(dict.fromkeys(n for r in runs for n in r["state"].get("durations_ms", {})))
    names = list(dict.fromkeys(n for r in runs for n in r["steps_ms"]))
    return {
        "total": summary([r["total_ms"] for r in runs]),
        "steps": {n: summary([r["steps_ms"].get(n, 0.0) for r in runs]) for n in names},
        "rss_kib": summary([r["rss_kib"] for r in runs]),
        "recorded_ms": {n: summary([r["state"]["durations_ms"].get(n, 0) for r in runs]) for n in recorded},
        "state": {k: state.get(k) for k in ("completed", "skipped")},
        "fsync": fsyncs,
    }
