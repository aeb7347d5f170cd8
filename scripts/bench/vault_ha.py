"""The fleet against Vault as operators run it: a three-node OpenBao HA cluster (integrated raft
storage, default raft timing, TLS on every listener) behind one load-balanced address (a TCP round-robin balancer
here, skipping nodes that refuse connections, as a health-checked one would). The same fleet as
fleet.py enrolls twice on the same cluster: once undisturbed, once with the active node killed
(SIGKILL) when half the fleet holds its certificate. The difference in completion time is what
the failover costs: leader election plus the nodes' backoff while no node is active.

Run alone (without the rest of `make bench`):
    python scripts/bench/vault_ha.py --bin target/release/hybridboot --work DIR \
        --out target/bench/results.json [--readme README.md]
which merges `vault_ha` into results.json and, with --readme, replaces only the README's
vault_ha section of the bench table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from common import alone_args, bao_bin, free_port, log, publish_alone
from fleet import run_fleet

# Its own size (the plain fleet's BENCH_FLEET_NODES grew to 1,000): 200 nodes through a TLS raft cluster.
NODES = int(os.environ.get("BENCH_VAULT_HA_NODES", "200"))


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Balancer:
    """One loopback address; each connection to the next backend that accepts it."""

    def __init__(self, backends: list[int]):
        self.backends, self.next = backends, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            start, self.next = self.next, self.next + 1
            threading.Thread(target=self.serve, args=(client, start), daemon=True).start()

    def serve(self, client: socket.socket, start: int) -> None:
        for k in range(len(self.backends)):
            try:
                up = socket.create_connection(("127.0.0.1", self.backends[(start + k) % len(self.backends)]))
                break
            except OSError:
                continue
        else:
            client.close()
            return

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=pipe, args=(client, up), daemon=True)
        t.start()
        pipe(up, client)
        t.join()
        client.close()
        up.close()

    def close(self) -> None:
        self.sock.close()


class Cluster:
    """Three `bao server` processes in one raft cluster, initialised, unsealed, PKI role `node`
    on mount `pki` and a token that may sign with it."""

    def __init__(self, work: Path):
        self.work, self.bao = work, bao_bin()
        work.mkdir(parents=True, exist_ok=True)
        openssl(work, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench OpenBao listener CA")
        openssl(work, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "listener.key", "-out", "listener.csr", "-subj", "/CN=localhost")
        (work / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        openssl(work, "x509", "-req", "-in", "listener.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "listener.pem", "-days", "2", "-extfile", "ext")
        self.ca = work / "ca.pem"
        self.ports = [(free_port(), free_port()) for _ in range(3)]
        self.procs: list[subprocess.Popen | None] = [None] * 3
        for i, (api, cluster) in enumerate(self.ports):
            joins = "".join(
                f'  retry_join {{\n    leader_api_addr = "https://127.0.0.1:{p}"\n    leader_ca_cert_file = "{self.ca}"\n  }}\n'
                for j, (p, _) in enumerate(self.ports) if j != i)
            (work / f"n{i}").mkdir()
            (work / f"n{i}.hcl").write_text(f'''storage "raft" {{
  path = "{work / f"n{i}"}"
  node_id = "n{i}"
{joins}}}
listener "tcp" {{
  address = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_cert_file = "{work / "listener.pem"}"
  tls_key_file = "{work / "listener.key"}"
}}
api_addr = "https://127.0.0.1:{api}"
cluster_addr = "https://127.0.0.1:{cluster}"
log_level = "warn"
''')
        self.token = ""
        self.spawn(0)
        init = json.loads(self.run(0, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"))
        self.key, self.root = init["unseal_keys_b64"][0], init["root_token"]
        self.run(0, "operator", "unseal", self.key)
        self.wait("node 0 active", lambda: self.active() == 0)
        self.run(0, "operator", "raft", "autopilot", "set-config", "-server-stabilization-time=1s")
        for i in (1, 2):
            self.spawn(i)
        for i in (1, 2):
            self.wait(f"node {i} unsealed", lambda i=i: self.unsealed_after_unseal(i))
        self.wait("three raft voters", lambda: self.voters() == 3)
        a = self.active()
        self.run(a, "secrets", "enable", "pki")
        self.run(a, "secrets", "tune", "-max-lease-ttl=87600h", "pki")
        (work / "pki-root.pem").write_text(self.run(a, "write", "-field=certificate", "pki/root/generate/internal",
                                                    "common_name=bench HA root CA", "key_type=ec", "ttl=87600h"))
        self.run(a, "write", "pki/roles/node", "allowed_domains=example.com", "allow_subdomains=true",
                 "max_ttl=72h", "ttl=24h", "key_type=any")
        self.run(a, "policy", "write", "node", "-", stdin='path "pki/sign/node" { capabilities = ["create", "update"] }\n')
        self.token = self.run(a, "token", "create", "-policy=node", "-ttl=2h", "-field=token").strip()

    def spawn(self, i: int) -> None:
        log_file = open(self.work / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen([self.bao, "server", "-config", str(self.work / f"n{i}.hcl")],
                                         stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        self.wait(f"node {i} listening", lambda: self.listening(i))

    def listening(self, i: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.ports[i][0]), timeout=1).close()
            return True
        except OSError:
            return False

    def run(self, i: int, *args: str, stdin: str | None = None, check: bool = True) -> str:
        env = dict(os.environ, BAO_ADDR=f"https://127.0.0.1:{self.ports[i][0]}", BAO_CACERT=str(self.ca),
                   BAO_TOKEN=getattr(self, "root", ""))
        env.pop("VAULT_ADDR", None)
        env.pop("VAULT_TOKEN", None)
        r = subprocess.run([self.bao, *args], env=env, input=stdin, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            raise RuntimeError(f"bao {args[:3]} at node {i}: {r.stderr.strip()}")
        return r.stdout

    def status(self, i: int) -> dict:
        try:
            return json.loads(self.run(i, "status", "-format=json", check=False))
        except json.JSONDecodeError:
            return {}

    def unsealed_after_unseal(self, i: int) -> bool:
        self.run(i, "operator", "unseal", self.key, check=False)
        return self.status(i).get("sealed") is False

    def voters(self) -> int:
        try:
            v = json.loads(self.run(self.active() or 0, "operator", "raft", "list-peers", "-format=json", check=False))
            return sum(1 for s in v["data"]["config"]["servers"] if s["voter"])
        except (json.JSONDecodeError, KeyError, TypeError):
            return 0

    def active(self) -> int | None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                s = self.status(i)
                if s.get("is_self") and s.get("sealed") is False:
                    return i
        return None

    def wait(self, what: str, done, timeout: float = 120) -> None:
        until = time.monotonic() + timeout
        while not done():
            if time.monotonic() > until:
                raise RuntimeError(f"OpenBao cluster: timed out waiting for {what} (logs in {self.work})")
            time.sleep(0.25)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.procs[i] = None

    def stop(self) -> None:
        for i in range(3):
            p = self.procs[i]
            if p is not None:
                p.terminate()
                p.wait()
                self.procs[i] = None


def vault_ha(bin: str, work: Path, env: dict, nodes: int = NODES) -> dict:
    if work.exists():
        shutil.rmtree(work)
    log("vault_ha: starting a three-node OpenBao raft cluster (TLS) behind a TCP balancer")
    cluster = Cluster(work / "openbao")
    lb = Balancer([api for api, _ in cluster.ports])
    token_file = work / "vault-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cluster.token + "\n")
    try:
        rev = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, text=True).stdout.strip()
        out: dict = {"nodes": nodes, "commit": rev, "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(),
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        for name in ("steady", "failover"):
            dirs = [work / name / f"node{i:03d}" for i in range(nodes)]
            for d in dirs:
                d.mkdir(parents=True)
            killed: dict = {}

            def enroll(i: int, d: Path) -> list[list[str]]:
                key = f"file:{d / 'key.pem'}"
                return [[bin, "key", "create", "--key", key],
                        [bin, "enroll", "--vault-addr", f"https://127.0.0.1:{lb.port}", "--vault-ca", str(cluster.ca),
                         "--pki-role", "node", "--key", key, "--common-name", f"node{i:03d}.example.com",
                         "--certificate", str(d / "cert.pem"), "--vault-token-file", str(token_file),
                         "--ttl", "24h", "--timeout", "10m"]]

            active = cluster.active()  # asked before the release: under load `bao status` is slow

            def killer() -> None:
                while sum(1 for d in dirs if (d / "cert.pem").exists()) < nodes // 2:
                    time.sleep(0.02)
                t = time.monotonic()
                cluster.kill(active)
                killed.update(node=active, at=t)
                cluster.wait("a new active node", lambda: cluster.active() is not None)
                killed["new_active_after_s"] = round(time.monotonic() - t, 3)

            log(f"vault_ha: {nodes} nodes enroll through the balancer" + (", the active node killed mid-way" if name == "failover" else ""))
            k = threading.Thread(target=killer) if name == "failover" else None
            if k:
                k.start()
            res = run_fleet([enroll(i, d) for i, d in enumerate(dirs)], lambda i: dict(env, RUNTIME_DIRECTORY=str(dirs[i] / "run")))
            if k:
                k.join()
                res["killed_after_s"] = round(killed["at"] - res["released_at"], 3)
                res["new_active_after_s"] = killed["new_active_after_s"]
                if killed["at"] - res["released_at"] > res["completion_s"]:
                    raise RuntimeError("vault_ha: the active node was killed after the fleet had finished (machine too loaded?)")
            res.pop("released_at")
            res.pop("released_at_wall", None)
            res["certificates"] = sum(1 for d in dirs if (d / "cert.pem").exists())
            out[name] = res
        out["failover_extra_s"] = round(out["failover"]["completion_s"] - out["steady"]["completion_s"], 3)
        return out
    finally:
        lb.close()
        cluster.stop()


def main() -> None:
    import latency
    import report
    a = alone_args()
    result = vault_ha(a.bin, a.work / "vault-ha", latency.base_env(a.work))
    publish_alone(a, "vault_ha", {"vault_ha": result}, report.render_vault_ha(result), "bench:vault_ha")


if __name__ == "__main__":
    main()
