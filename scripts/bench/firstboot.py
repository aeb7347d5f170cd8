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

from common import REGION, Moto, RolesAnywhere, Vault, alone_args, gnu_time, log, max_rss_kib, publish_alone, summary
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


def as_on_the_node(bin: str) -> list[str]:
    """First boot under --root acting as on the node: units through the recording systemctl
    (HYBRIDBOOT_SYSTEMCTL), the written lines naming the measured binary."""
    return ["--start", "--hybridboot-path", bin]


def one_run(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, work: Path, env: dict) -> dict:
    root, systemctl = work / "root", work / "systemctl"
    write_image(root, vault, moto, ra, env["HYBRIDBOOT_TCTI"], systemctl)
    notes = Notifications(work / "notify.sock")
    report = work / "firstboot.time"
    argv = gnu_time([bin, "firstboot", "--config-source", "file:///etc/hybridboot/config.yaml", "--root", str(root), *as_on_the_node(bin)], report)
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
                    bin, "-q", "firstboot", "--config-source", "file:///etc/hybridboot/config.yaml", "--root", str(root), *as_on_the_node(bin)],
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


# ---------------------------------------------------------------------------
# First boot over its floor on a busy machine (`firstboot.over_floor`)
# ---------------------------------------------------------------------------

# Busy-loop processes the loaded measurement starts (default: twice the CPUs, 4 on a 2-core
# machine: a run queue of 4-6 with what else runs) and how long they run before the first timed
# run, so that the 1-minute load average has risen towards them.
LOAD_PROCS = int(os.environ.get("BENCH_LOAD_PROCS", str(2 * (os.cpu_count() or 1))))
LOAD_WARMUP_S = float(os.environ.get("BENCH_LOAD_WARMUP", "45"))
REPO = Path(__file__).resolve().parents[2]


class BusyLoad:
    """A known background load: `procs` shell busy loops (`while :; do :; done`, same priority as
    everything else) for the life of the `with` block, stopped by PID at its end. While it runs,
    a thread samples the kernel's count of runnable tasks (`procs_running` in /proc/stat) every
    0.25 s: the instantaneous load, which the 1-minute load average only approaches."""

    def __init__(self, procs: int, warmup_s: float):
        self.procs, self.warmup_s = procs, warmup_s
        self.children: list[subprocess.Popen] = []
        self.samples: list[int] = []
        self.done = threading.Event()

    def __enter__(self) -> "BusyLoad":
        self.children = [subprocess.Popen(["sh", "-c", "while :; do :; done"], stdin=subprocess.DEVNULL)
                         for _ in range(self.procs)]
        log(f"load: {self.procs} busy loops, {self.warmup_s:.0f} s before measuring")
        time.sleep(self.warmup_s)
        self.loadavg_start = os.getloadavg()
        self.sampler = threading.Thread(target=self.sample, daemon=True)
        self.sampler.start()
        return self

    def sample(self) -> None:
        while not self.done.wait(0.25):
            with open("/proc/stat") as f:
                self.samples += [int(l.split()[1]) for l in f if l.startswith("procs_running")]

    def __exit__(self, *exc) -> None:
        self.loadavg_end = os.getloadavg()
        self.done.set()
        self.sampler.join()
        for c in self.children:
            c.kill()
            c.wait()

    def figures(self) -> dict:
        return {"busy_loops": self.procs, "warmup_s": self.warmup_s,
                "loadavg_start": [round(x, 2) for x in self.loadavg_start],
                "loadavg_end": [round(x, 2) for x in self.loadavg_end],
                "runnable": summary([float(s) for s in self.samples]) if self.samples else None}


def tpm_floor(work: Path, env: dict) -> Path:
    """The TPM part of the floor (benches/tpm_floor.rs) into work/tpm-floor.json: the bench
    executable BENCH_TPM_FLOOR_BIN names (scripts/bench/firstboot.sh builds it first), else
    `cargo bench` as scripts/bench.sh runs it. Either way the bench times itself."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "tpm-floor.json"
    prebuilt = os.environ.get("BENCH_TPM_FLOOR_BIN")
    argv = [prebuilt, "--bench"] if prebuilt else ["cargo", "bench", "--locked", "-q", "--bench", "tpm_floor"]
    # cargo and rustup need the caller's HOME, which the bench environment replaces
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, HYBRIDBOOT_TCTI=env["HYBRIDBOOT_TCTI"], HYBRIDBOOT_BENCH_N=str(RUNS),
                            HYBRIDBOOT_BENCH_OUT=str(out)))
    return out


def over_floor(fl: dict, fb: dict) -> float:
    """First boot's median over its floor, the floor as the report defines it (report.step_floors:
    the pieces of the steps first boot did, each measured by a reference client)."""
    from report import step_floors
    return fb["total"]["median"] / step_floors(fl, fb)[1]


def floor_and_firstboot(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, ref_node, work: Path, env: dict,
                        tpm_json: Path | None = None) -> dict:
    """The floor and first boot, measured back to back under the same conditions."""
    import latency
    tpm_json = tpm_json or tpm_floor(work / "tpm", env)
    fl = latency.floor(bin, vault, moto, ra, ref_node, work / "floor", env, tpm_json)
    fb = firstboot(bin, vault, moto, ra, work / "firstboot", env)
    return {"floor": fl, "firstboot": fb, "over_floor": over_floor(fl, fb)}


def loaded(bin: str, vault: Vault, moto: Moto, ra: RolesAnywhere, ref_node, work: Path, env: dict) -> dict:
    """Floor and first boot again with BusyLoad running: `over_floor` and the load it ran at."""
    with BusyLoad(LOAD_PROCS, LOAD_WARMUP_S) as load:
        m = floor_and_firstboot(bin, vault, moto, ra, ref_node, work, env)
    m["load"] = load.figures()
    log(f"firstboot under load: {m['firstboot']['total']['median']:.1f} ms over a "
        f"{m['firstboot']['total']['median'] / m['over_floor']:.1f} ms floor = {m['over_floor']:.2f}x "
        f"(load average {load.loadavg_end[0]:.1f}, runnable median {m['load']['runnable']['median']:.0f})")
    return m


def figures(idle: dict, busy: dict) -> dict:
    """What results.json's `firstboot` gains: `over_floor` (loaded), `over_floor_idle`, and the
    loaded run's figures."""
    return {"over_floor": round(busy["over_floor"], 3), "over_floor_idle": round(idle["over_floor"], 3),
            "loaded": {"load": busy["load"], "total": busy["firstboot"]["total"], "steps": busy["firstboot"]["steps"],
                       "floor": busy["floor"], "fsync": busy["firstboot"]["fsync"]}}


def main() -> None:
    """Alone, without the rest of `make bench` (scripts/bench/firstboot.sh starts the peers):
    the floor and first boot idle, then both again under BusyLoad; merges them into results.json
    (`floor`, `firstboot` with `over_floor`, `over_floor_idle`, `loaded`)."""
    import latency
    import report
    a = alone_args()
    bin, work = a.bin, a.work
    env = latency.base_env(work)
    env["HYBRIDBOOT_TCTI"] = os.environ["HB_TCTI"]
    vault, moto, ra = Vault(work / "vault"), Moto(), RolesAnywhere()
    ref_node = latency.Node(bin, vault, work / "ref-node", f"file:{work / 'ref-node' / 'key.pem'}", "ref-node.example.com", env)
    log("firstboot and its floor, idle")
    idle = floor_and_firstboot(bin, vault, moto, ra, ref_node, work / "idle", env)
    idle_load = os.getloadavg()
    log(f"firstboot idle: {idle['over_floor']:.2f}x its floor (load average {idle_load[0]:.1f})")
    busy = loaded(bin, vault, moto, ra, ref_node, work / "loaded", env)
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, text=True).stdout.strip()
    measured = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit {rev} on {os.cpu_count()} CPU(s), release build"
    firstboot = dict(idle["firstboot"], **figures(idle, busy), loadavg_idle=[round(x, 2) for x in idle_load],
                     measured=measured)
    publish_alone(a, "firstboot", {"floor": idle["floor"], "firstboot": firstboot},
                  report.render_firstboot_load(firstboot), "bench:firstboot_load")


if __name__ == "__main__":
    main()
