#!/usr/bin/env python3
"""Downloads over a link that drops (`install.*`): `hybridboot install` from an HTTPS mirror
(tests/peers/install_mirror.py, strong ETags on) through a loopback relay that cuts every
connection once it has passed BENCH_DROP_MIB (16) MiB towards the node, the way an edge link
drops. Three runs in one go, side by side:

- `install.drops`: install with resuming (Range/If-Range), through the cutting relay;
- `install.restart_baseline`: the same with resuming disabled (HYBRIDBOOT_BENCH_NO_RESUME=1,
  every retry starts the file from zero, as nodeadm does);
- `install.no_drops`: the resuming install through a relay that never cuts (what the install
  itself costs beyond the floor: parallel streams, verification, the CNI extraction, placing);
- the floor: the same artifact bytes fetched by `curl` into `sha256sum`, one after another,
  through a relay that never cuts.

Figures: bytes the relay passed towards the node / artifact bytes (`bytes_ratio`, TLS and
HTTP overhead and the manifest included; the largest of the runs), and install time / floor time
(`time_over_floor`, medians of BENCH_DOWNLOAD_RUNS (3) alternating runs of each; the baseline
runs once: it takes the retry policy's whole budget).

The artifact set stands for nodeadm's ~130 MB install: a 60 MiB kubelet stand-in (random, so
incompressible), the distribution's kubectl (55 MB), the CNI plugins tarball made from
/usr/lib/cni, runc, and the two small stand-ins the tests use (`--containerd-source distro`: the
mirror carries runc, containerd is the image's).

Run alone (without the rest of `make bench`):
    python scripts/bench/downloads.py --bin target/release/hybridboot --work DIR \
        --out target/bench/results.json [--readme README.md]
which merges `install` into results.json and, with --readme, replaces only the README's
downloads section of the bench table.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from common import alone_args, log, publish_alone

HERE = Path(__file__).resolve().parent
MIRROR = HERE.parents[1] / "tests" / "peers" / "install_mirror.py"
MIB = 1024 * 1024
DROP_MIB = float(os.environ.get("BENCH_DROP_MIB", "16"))
RUNS = int(os.environ.get("BENCH_DOWNLOAD_RUNS", "3"))


class Relay:
    """A TCP relay to the mirror; each connection is cut (both directions closed, no TLS
    close_notify) once `cut` bytes went towards the client. Counts what it passed."""

    def __init__(self, upstream: int, cut: int | None):
        self.upstream, self.cut = upstream, cut
        self.passed = 0
        self.cuts = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.upstream))

        def upward() -> None:
            try:
                while data := client.recv(65536):
                    up.sendall(data)
            except OSError:
                pass
            try:
                up.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=upward, daemon=True).start()
        sent = 0
        try:
            while data := up.recv(65536):
                if self.cut is not None and sent + len(data) >= self.cut:
                    data = data[: self.cut - sent]
                    client.sendall(data)
                    with self.lock:
                        self.passed += len(data)
                        self.cuts += 1
                    break
                client.sendall(data)
                sent += len(data)
                with self.lock:
                    self.passed += len(data)
        except OSError:
            pass
        for s in (client, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def reset(self) -> None:
        with self.lock:
            self.passed, self.cuts = 0, 0

    def close(self) -> None:
        self.sock.close()


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


def build_store(store: Path) -> dict[str, tuple[str, str, bool]]:
    """The artifacts: name -> (file under store, checksum of the content, gzip'd)."""
    store.mkdir(parents=True)
    kubelet = store / "kubelet"
    with open(kubelet, "wb") as f:
        for _ in range(60):
            f.write(os.urandom(MIB))
    shutil.copy("/usr/bin/kubectl", store / "kubectl")
    shutil.copy("/usr/sbin/runc", store / "runc")
    with tarfile.open(store / "cni-plugins.tgz", "w:gz", compresslevel=6) as t:
        for p in sorted(Path("/usr/lib/cni").iterdir()):
            t.add(p, arcname=f"./{p.name}")
    (store / "ecr-credential-provider").write_bytes(b"#!/bin/sh\necho ecr-credential-provider stand-in\n")
    auth = b"#!/bin/sh\necho aws-iam-authenticator stand-in\n" * 200
    (store / "aws-iam-authenticator").write_bytes(auth)
    (store / "aws-iam-authenticator.gz").write_bytes(gzip.compress(auth))
    out = {}
    for name, file, gz in (("kubelet", "kubelet", False), ("kubectl", "kubectl", False),
                           ("cni-plugins", "cni-plugins.tgz", False), ("runc", "runc", False),
                           ("ecr-credential-provider", "ecr-credential-provider", False),
                           ("aws-iam-authenticator", "aws-iam-authenticator", True)):
        digest = sha256(store / file)
        (store / f"{file}.sha256").write_text(f"{digest}  {file}\n")
        out[name] = (file, digest, gz)
    return out


def write_manifest(store: Path, artifacts: dict, port: int) -> str:
    base = f"https://127.0.0.1:{port}"
    lines = ["supported_eks_releases:", '- major_minor_version: "1.31"', '  latest_patch_version: "2"',
             "  patch_releases:", "  - version: 1.31.2", '    patch_version: "2"', '    release_date: "2026-11-01"',
             "    artifacts:"]
    for name, (file, _, gz) in artifacts.items():
        extra = f', gzip_uri: "{base}/{file}.gz"' if gz else ""
        lines.append(f'    - {{name: {name}, arch: amd64, os: linux, uri: "{base}/{file}", '
                     f'checksum_uri: "{base}/{file}.sha256"{extra}}}')
    lines += ["region_config:", "  us-east-1: {partition: aws}", "ssm_releases: null", ""]
    name = f"manifest-{port}.yaml"
    (store / name).write_text("\n".join(lines))
    return f"{base}/{name}"


def downloads(bin: str, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log("downloads: building the artifact set")
    store = work / "store"
    artifacts = build_store(store)
    served = {name: store / (f"{file}.gz" if gz else file) for name, (file, _, gz) in artifacts.items()}
    artifact_bytes = sum(p.stat().st_size for p in served.values())
    openssl(work, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench mirror CA")
    openssl(work, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (work / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(work, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")
    mirror = subprocess.Popen(["python3", str(MIRROR), "--cert", str(work / "server.pem"), "--key",
                               str(work / "server.key"), "--dir", str(store)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cut = int(DROP_MIB * MIB)
    load_start = os.getloadavg()
    try:
        port = int(mirror.stdout.readline().split()[1])
        subprocess.run(["curl", "-sf", "-X", "POST", "--cacert", str(work / "ca.pem"),
                        f"https://127.0.0.1:{port}/__validators?etag=1"], check=True, stdout=subprocess.DEVNULL)
        dropping, clean = Relay(port, cut), Relay(port, None)
        manifests = {r: write_manifest(store, artifacts, r.port) for r in (dropping, clean)}
        env = {k: v for k, v in os.environ.items() if k not in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"

        def install(name: str, extra_env: dict, relay: Relay = dropping) -> dict:
            root = work / name
            (root / "usr/sbin").mkdir(parents=True)
            (root / "usr/sbin/iptables").write_text("#!/bin/sh\n")
            relay.reset()
            how = f"cutting each connection after {DROP_MIB:g} MiB" if relay.cut else "that never cuts"
            log(f"downloads: {name}: install through a relay {how}")
            t0 = time.perf_counter()
            r = subprocess.run([bin, "install", "1.31.2", "--credential-provider", "iam-ra", "--manifest", manifests[relay],
                                "--ca-bundle", str(work / "ca.pem"), "--root", str(root), "--arch", "amd64",
                                "--containerd-source", "distro"],
                               env={**env, **extra_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - t0
            (work / f"{name}.log").write_text(r.stderr)
            ok = r.returncode == 0
            if ok:
                for rel, name_ in (("usr/bin/kubelet", "kubelet"), ("usr/local/bin/kubectl", "kubectl")):
                    if sha256(root / rel) != artifacts[name_][1]:
                        raise RuntimeError(f"downloads: {name}: {rel} differs from the artifact")
            shutil.rmtree(root)
            return {"seconds": round(seconds, 3), "relay_bytes": relay.passed, "drops": relay.cuts,
                    "bytes_ratio": round(relay.passed / artifact_bytes, 3), "completed": ok,
                    "exit": r.returncode, "resumed_lines": r.stderr.count("resuming")}

        digests = {name: sha256(path) for name, path in served.items()}

        def floor_once() -> float:
            clean.reset()
            t0 = time.perf_counter()
            for name, path in served.items():
                url = f"https://127.0.0.1:{clean.port}/{path.name}"
                got = subprocess.run(f"curl -sf --cacert {work / 'ca.pem'} {url} | sha256sum", shell=True, check=True,
                                     stdout=subprocess.PIPE, text=True, env=env).stdout.split()[0]
                if got != digests[name]:
                    raise RuntimeError(f"downloads: floor: {url} gave sha256 {got}")
            return time.perf_counter() - t0

        # Floor and resuming install alternate, RUNS times each (the machine's load moves).
        floors, runs, clean_runs = [], [], []
        for i in range(RUNS):
            log(f"downloads: floor {i + 1}/{RUNS}: curl into sha256sum, one artifact after another, no drops")
            floors.append(floor_once())
            runs.append(install("drops", {}))
            clean_runs.append(install("no_drops", {}, clean))
        floor = statistics.median(floors)
        drops = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
        drops["seconds"] = round(statistics.median(x["seconds"] for x in runs), 3)
        drops["runs_s"] = [x["seconds"] for x in runs]
        drops["runs_bytes_ratio"] = [x["bytes_ratio"] for x in runs]
        drops["bytes_ratio"] = max(drops["runs_bytes_ratio"])
        drops["completed"] = all(x["completed"] for x in runs)
        drops["time_over_floor"] = round(drops["seconds"] / floor, 3)
        baseline = install("restart_baseline", {"HYBRIDBOOT_BENCH_NO_RESUME": "1"})
        baseline["time_over_floor"] = round(baseline["seconds"] / floor, 3)
        rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, text=True).stdout.strip()
        no_drops = {"seconds": round(statistics.median(x["seconds"] for x in clean_runs), 3),
                    "runs_s": [x["seconds"] for x in clean_runs], "completed": all(x["completed"] for x in clean_runs),
                    "bytes_ratio": max(x["bytes_ratio"] for x in clean_runs), "drops": 0, "exit": 0}
        no_drops["time_over_floor"] = round(no_drops["seconds"] / floor, 3)
        return {"drops": drops, "restart_baseline": baseline, "no_drops": no_drops,
                "floor": {"seconds": round(floor, 3), "runs_s": [round(f, 3) for f in floors], "relay_bytes": clean.passed},
                "artifact_bytes": artifact_bytes, "artifacts": {n: p.stat().st_size for n, p in served.items()},
                "drop_mib": DROP_MIB, "commit": rev, "nproc": os.cpu_count(), "loadavg_start": load_start,
                "loadavg_end": os.getloadavg(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    finally:
        mirror.kill()
        mirror.wait()


def main() -> None:
    import report
    a = alone_args()
    result = downloads(a.bin, a.work / "downloads")
    publish_alone(a, "downloads", {"install": result}, report.render_downloads(result), "bench:downloads")


if __name__ == "__main__":
    main()
