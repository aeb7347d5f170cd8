#!/usr/bin/env python3
"""Renders the benchmark's results.json as Markdown: the machine, the figures (median, min, max
of n runs) and one PASS/FAIL line per target (by how much a missed one misses). Never fails
because of a result.

    report.py results.json results.md [--readme README.md]

With --readme the table replaces what stands between the README's `<!-- bench:begin -->` and
`<!-- bench:end -->` markers.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

MIB = 1024 * 1024


def ms(s: dict) -> str:
    return f"{s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {s['n']}"


def load(m: dict) -> str:
    a, b = m.get("loadavg_start"), m.get("loadavg_end")
    return f"{a[0]:.1f} at the start, {b[0]:.1f} at the end" if a and b else "not recorded"


def mib_kib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


class Targets:
    def __init__(self):
        self.rows: list[str] = []

    def at_most(self, name: str, value: float | None, limit: float, fmt) -> None:
        self._row(name, value, limit, fmt, value is not None and value <= limit, f"<= {fmt(limit)}")

    def at_least(self, name: str, value: float | None, limit: float, fmt) -> None:
        self._row(name, value, limit, fmt, value is not None and value >= limit, f">= {fmt(limit)}")

    def _row(self, name, value, limit, fmt, ok, rule) -> None:
        if value is None:
            self.rows.append(f"| {name} {rule} | not measured | n/a |")
            return
        by = f"off by {fmt(abs(value - limit))}" + (f", {abs(value / limit - 1) * 100:.0f} %" if limit else "")
        verdict = "PASS" if ok else f"FAIL ({by})"
        self.rows.append(f"| {name} {rule} | {fmt(value)} | {verdict} |")


def step_floors(fl: dict, fb: dict) -> tuple[dict, float]:
    """The floor of each firstboot step (medians of the pieces that step needs at least), and
    their sum over the steps firstboot completed: a step it skipped adds nothing to its time,
    so its pieces leave the floor too."""
    tpm = {op: s["median"] for op, s in fl["tpm"].items()}
    floor_of = {
        "key": sum(tpm[op] for op in ("connect", "create_primary", "create", "load", "evict_control")),
        "enroll": tpm["sign_csr"] + fl["vault_sign_curl"]["median"],
        "roles-anywhere": tpm["sign_create_session"] + fl["create_session_reference"]["median"],
        "init": fl["describe_cluster_boto3"]["median"],
    }
    done = set(fb["state"]["completed"])
    return floor_of, sum(v for k, v in floor_of.items() if k in done)


def render(r: dict) -> str:
    m = r["machine"]
    out = [
        f"Measured {m['date']} at commit {m['commit']} on {m['nproc']} CPU(s) `{m['cpu']}`, "
        f"{m['ram_gib']} GiB RAM, Linux {m['kernel']}, load average {load(m)} (the machine is shared); "
        f"release build; each figure the median of n runs (min, max); peers on loopback (swtpm, OpenBao dev "
        f"server, moto, tests/peers/rolesanywhere.py).",
    ]
    fl, fb = r["floor"], r["firstboot"]
    floor_of, floor_total = step_floors(fl, fb)
    skipped = ", ".join(f"`{x['step']}`" for x in fb["state"]["skipped"]) or "none"
    recorded = fb.get("recorded_ms", {})
    out += ["", "| first boot | median ms | min | max | n | floor ms | firstboot.json ms |",
            "|---|---|---|---|---|---|---|",
            f"| **firstboot**, start to stamp | {ms(fb['total'])} | {floor_total:.1f} | |"]
    for step, s in fb["steps"].items():
        floor = f"{floor_of[step]:.1f}" if step in floor_of else ""
        rec = f"{recorded[step]['median']:.0f}" if step in recorded else ""
        out.append(f"| &nbsp;&nbsp;step `{step}` | {ms(s)} | {floor} | {rec} |")
    if "fsync" in fb:
        fs = fb["fsync"]
        out.append(f"| &nbsp;&nbsp;time in {fs['calls']} fsync calls per first boot (separate runs under strace, "
                   f"{fs['wall_ms']['median']:.0f} ms each) | {ms(fs['ms'])} | 0 | |")
    out.append(f"| **floor**: the pieces below for the steps firstboot did (skipped: {skipped}) | | | | | {floor_total:.1f} | |")
    piece = lambda name, s: out.append(f"| {name} | {ms(s)} | | |")
    tpm = fl["tpm"]
    piece("&nbsp;&nbsp;TPM via tss-esapi: connect, SRK, create, load, persist, 2 signatures", tpm["total_ms"])
    for op in ("connect", "create_primary", "create", "load", "evict_control", "sign_csr", "sign_create_session"):
        piece(f"&nbsp;&nbsp;&nbsp;&nbsp;{op}", tpm[op])
    piece("&nbsp;&nbsp;Vault `pki/sign` by curl (process)", fl["vault_sign_curl"])
    piece("&nbsp;&nbsp;CreateSession by iam-rolesanywhere-session (in-process)", fl["create_session_reference"])
    piece("&nbsp;&nbsp;DescribeCluster by boto3 (in-process)", fl["describe_cluster_boto3"])

    out += ["", "| latency | median ms | min | max | n |", "|---|---|---|---|---|"]
    row = lambda name, s: out.append(f"| {name} | {ms(s)} |")
    cp = r["credential_process"]
    row("credential-process cold, TPM key (process)", cp["cold_tpm"])
    row("credential-process cold, file key (process)", cp["cold_file"])
    row("credential-process warm, cache hit (process)", cp["warm"])
    row("reference client CreateSession (in-process)", cp["reference_create_session"])
    row("token warm (process)", r["token"]["warm"])
    st = r.get("static_host")
    if st:
        name = st["file"].rsplit("/", 1)[-1]
        row(f"credential-process cold, TPM key, {name}", st["credential_process"]["cold_tpm"])
        row(f"credential-process warm, {name}", st["credential_process"]["warm"])
    row("spawning `/bin/true` from the harness (included above, not subtracted)", cp["spawn_overhead"])
    out += ["", f"CreateSession calls for 100 sequential `credential-process` invocations: "
                f"**{cp['create_sessions_for_100']}**.", ""]

    out += ["| footprint | value |", "|---|---|"]
    for name, s in r["size"].items():
        b = s.get("stripped_bytes", s.get("bytes"))
        what = "stripped" if "stripped_bytes" in s else "as built (dist profile, stripped)"
        out.append(f"| {name} size, {what} | {b / MIB:.2f} MiB |")
    out.append(f"| peak RSS firstboot (max of {fb['rss_kib']['n']}) | {mib_kib(fb['rss_kib']['max'])} |")
    out.append(f"| peak RSS credential-process cold TPM (max of {cp['cold_tpm_rss_kib']['n']}) | {mib_kib(cp['cold_tpm_rss_kib']['max'])} |")
    out.append(f"| peak RSS credential-process warm (max of {cp['warm_rss_kib']['n']}) | {mib_kib(cp['warm_rss_kib']['max'])} |")
    sv = r["serve"]
    out.append(f"| peak RSS serve (1 session, {sv['imds_requests']} IMDS requests) | {mib_kib(sv['rss_kib'])} |")
    if "rssanon_kib" in sv:
        out.append(f"| &nbsp;&nbsp;serve at the end: file-backed (code of binary and libraries) / anonymous | "
                   f"{mib_kib(sv['rssfile_kib'])} / {mib_kib(sv['rssanon_kib'])} |")
    st = r.get("static_host")
    if st:
        name = st["file"].rsplit("/", 1)[-1]
        out.append(f"| peak RSS serve, {name} | {mib_kib(st['serve']['rss_kib'])} |")
        if "rssanon_kib" in st["serve"]:
            out.append(f"| &nbsp;&nbsp;file-backed / anonymous | {mib_kib(st['serve']['rssfile_kib'])} / {mib_kib(st['serve']['rssanon_kib'])} |")
        scp = st["credential_process"]
        out.append(f"| peak RSS credential-process cold TPM, {name} | {mib_kib(scp['cold_tpm_rss_kib']['max'])} |")

    out += ["", "<!-- bench:fleet:begin -->", render_fleet(r["fleet"]).rstrip("\n"), "<!-- bench:fleet:end -->"]

    if r.get("sign"):
        out += ["", "Signing latency per key backend (benches/sign.rs, as every CSR, TLS handshake and CreateSession pays it):", "",
                "| key | algorithm | sign median ms | min | max | n |", "|---|---|---|---|---|---|"]
        for k in r["sign"]:
            key = re.sub(r"file:.*/", "file:", k["key"])  # not the run's temporary directory
            out.append(f"| `{key}` | {k['algorithm']} | {k['sign_median_ms']:.2f} | {k['sign_min_ms']:.2f} | {k['sign_max_ms']:.2f} | {k['n']} |")

    vms = r.get("vm") or []
    out += ["", "VM guests under QEMU (TCG, no KVM) with swtpm, from the last `make vm-test` (BENCH_VM=1 runs it first):", "",
            "| guest | boot to joined s | first boot s | whole run s | measured | what |", "|---|---|---|---|---|---|"]
    sec = lambda v: f"{v:.1f}" if isinstance(v, (int, float)) else "n/a"
    for g in vms:
        first = g.get("firstboot_unit_s", g.get("firstboot_s"))
        what = "firstboot unit's own time (ExecMainStart to ExecMainExit)" if "firstboot_unit_s" in g else "hybridboot's `first boot done in`"
        out.append(f"| {g.get('guest', '?')} | {sec(g.get('boot_to_joined_s'))} | {sec(first)} ({what}) | "
                   f"{sec(g.get('whole_run_s'))} | {g.get('measured', '?')} | {g.get('note', '')} |")
    if not vms:
        out.append("| (none: run `make vm-test`) | | | | | |")

    t = Targets()
    ratio = fb["total"]["median"] / floor_total
    t.at_most("firstboot / floor", ratio, 1.5, lambda v: f"{v:.2f}")
    t.at_most("warm credential-process (host release build)", cp["warm"]["median"], 5.0, lambda v: f"{v:.1f} ms")
    t.at_least("reference CreateSession / warm credential-process (host release build)", cp["reference_create_session"]["median"] / cp["warm"]["median"], 20, lambda v: f"{v:.1f}x")
    t.at_most("warm token (host release build)", r["token"]["warm"]["median"], 5.0, lambda v: f"{v:.1f} ms")
    statics = {k: v for k, v in r["size"].items() if k.endswith("-static")}
    for name, s in statics.items() or {"static binary": None}.items():
        t.at_most(f"{name} size", s["bytes"] / MIB if s else None, 6.0, lambda v: f"{v:.2f} MiB")
    t.at_most("peak RSS firstboot (host release build)", fb["rss_kib"]["max"] / 1024, 16.0, lambda v: f"{v:.1f} MiB")
    t.at_most("peak RSS serve (host release build)", r["serve"]["rss_kib"] / 1024, 8.0, lambda v: f"{v:.1f} MiB")
    if st:
        swarm = st["credential_process"]["warm"]["median"]
        t.at_most(f"warm credential-process ({name})", swarm, 5.0, lambda v: f"{v:.1f} ms")
        t.at_least(f"reference CreateSession / warm credential-process ({name})",
                   cp["reference_create_session"]["median"] / swarm, 20, lambda v: f"{v:.1f}x")
        t.at_most(f"peak RSS serve ({name})", st["serve"]["rss_kib"] / 1024, 8.0, lambda v: f"{v:.1f} MiB")
    if r.get("vault_ha"):
        for name in ("steady", "failover"):
            t.at_most(f"vault_ha.{name} enrollment failures", r["vault_ha"][name]["failures"], 0, lambda v: f"{v:.0f}")
    out += ["", "| target | measured | result |", "|---|---|---|", *t.rows]
    if "over_floor" in fb:
        out += ["", "<!-- bench:firstboot_load:begin -->", render_firstboot_load(fb).rstrip("\n"), "<!-- bench:firstboot_load:end -->"]
    if r.get("install"):
        out += ["", "<!-- bench:downloads:begin -->", render_downloads(r["install"]).rstrip("\n"), "<!-- bench:downloads:end -->"]
    if r.get("vault_ha"):
        out += ["", "<!-- bench:vault_ha:begin -->", render_vault_ha(r["vault_ha"]).rstrip("\n"), "<!-- bench:vault_ha:end -->"]
    return "\n".join(out) + "\n"


def render_fleet(f: dict) -> str:
    """The fleet (fleet.py): free, the Roles Anywhere endpoint throttled, OpenBao behind a quota;
    with its own targets (issue 20's goals)."""
    th, vq = f["credential_process_throttled"], f["vault_quota"]
    load = f"{f['loadavg_start'][0]:.1f} at the start, {f['loadavg_end'][0]:.1f} at the end" if "loadavg_end" in f else "not recorded"
    out = [f"Fleet (`fleet.*`), measured {f.get('date', '?')} at commit {f.get('commit', '?')}, load average {load}: "
           f"**{f['nodes']}** node processes released at once, each with its own file key and certificate "
           f"(`fleet.nodes`). Requests are counted at the peer: the endpoint's own counters, OpenBao's audit log. "
           f"Floor = nodes / rate.", "",
           "| fleet run | completion s | floor s | completion / floor | node median s | failures | gave up (exit 4) | "
           "requests at the peer | granted | requests / success | peak req/s (after 1st s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    num = lambda v, fmt="{:.1f}": fmt.format(v) if isinstance(v, (int, float)) else ""
    for name, label in (("enroll", "free: key create + enroll (OpenBao)"),
                        ("credential_process", "free: credential-process"),
                        ("credential_process_throttled", f"credential-process, endpoint throttled to {f.get('throttle_rps', 10)}/s"),
                        ("vault_quota", f"key create + enroll, OpenBao quota {f.get('vault_rps', 10)}/s")):
        p = f[name]
        peer = p.get("peer", {})
        peak = f"{p['peak_rps']} ({p['peak_rps_after_first_s']})" if "peak_rps" in p else ""
        out.append(f"| {label} | {p['completion_s']:.1f} | {num(p.get('floor_s'))} | {num(p.get('completion_over_floor'), '{:.2f}')} | "
                   f"{p['node_median_s']:.1f} | {p['failures']} | {p.get('gave_up', '')} | {peer.get('requests', '')} | "
                   f"{peer.get('ok', '')} | {num(p.get('requests_per_success'), '{:.2f}')} | {peak} |")
    out += ["", "Requests per second at the throttled endpoint: " + " ".join(str(x) for x in th["requests_per_s"]),
            "", "Of which granted: " + " ".join(str(x) for x in th["ok_per_s"]),
            "", "Requests per second at OpenBao's quota: " + " ".join(str(x) for x in vq["requests_per_s"])]
    hdr = vq.get("headers_on_429") or {}
    out += ["", "OpenBao's 429 carried: " + (", ".join(f"`{k}: {v}`" for k, v in sorted(hdr.items())) or "no rate-limit headers") +
            " (with `enable_rate_limit_response_headers`; without it, none)."]
    t = Targets()
    count = lambda v: f"{v:.0f}"
    t.at_most("`fleet.free.failures`", f["enroll"]["failures"] + f["credential_process"]["failures"], 0, count)
    t.at_most("`fleet.throttled.failures`", th["failures"], 0, count)
    t.at_most("`fleet.vault_quota.failures`", vq["failures"], 0, count)
    ratio = lambda v: f"{v:.2f}"
    t.at_most("`fleet.throttled.requests_per_success`", th.get("requests_per_success"), 1.5, ratio)
    t.at_most("`fleet.vault_quota.requests_per_success`", vq.get("requests_per_success"), 1.5, ratio)
    t.at_most("`fleet.throttled.completion_over_floor`", th.get("completion_over_floor"), 1.25, ratio)
    t.at_most("`fleet.vault_quota.completion_over_floor`", vq.get("completion_over_floor"), 1.25, ratio)
    out += ["", "| fleet target | measured | result |", "|---|---|---|", *t.rows]
    return "\n".join(out) + "\n"


def render_firstboot_load(fb: dict) -> str:
    """First boot over its floor with the machine loaded (scripts/bench/firstboot.py BusyLoad):
    floor and first boot measured back to back while busy loops run, next to the idle figure."""
    b, ld = fb["loaded"], fb["loaded"]["load"]
    run = ld.get("runnable") or {}
    floor_ms = b["total"]["median"] / fb["over_floor"]
    when = f"measured {fb['measured']}: " if fb.get("measured") else ""
    out = [f"First boot on a busy machine (`firstboot.over_floor`), {when}{ld['busy_loops']} busy-loop processes "
           f"(`while :; do :; done`) started {ld['warmup_s']:.0f} s before the first timed run; load average "
           f"{ld['loadavg_start'][0]:.1f} at the start, {ld['loadavg_end'][0]:.1f} at the end, runnable tasks "
           f"median {run.get('median', 0):.0f} (min {run.get('min', 0):.0f}, max {run.get('max', 0):.0f}); the floor is "
           f"measured again under the same load.", "",
           "| first boot, loaded | median ms | min | max | n |", "|---|---|---|---|---|",
           f"| **firstboot**, start to stamp | {ms(b['total'])} |",
           f"| &nbsp;&nbsp;its floor (same pieces as above, measured loaded) | {floor_ms:.1f} | | | |"]
    for step, s in b["steps"].items():
        out.append(f"| &nbsp;&nbsp;step `{step}` | {ms(s)} |")
    fs = b.get("fsync")
    if fs:
        out.append(f"| &nbsp;&nbsp;time in {fs['calls']} fsync calls (separate runs under strace) | {ms(fs['ms'])} |")
    idle_load = fb.get("loadavg_idle")
    idle = f" (load average {idle_load[0]:.1f})" if idle_load else ""
    out += ["", f"`firstboot.over_floor` loaded: **{fb['over_floor']:.2f}x**; idle{idle}: "
                f"**{fb['over_floor_idle']:.2f}x**.", ""]
    t = Targets()
    t.at_most("`firstboot.over_floor` (loaded)", fb["over_floor"], 1.5, lambda v: f"{v:.2f}")
    out += ["| target | measured | result |", "|---|---|---|", *t.rows]
    return "\n".join(out) + "\n"


def render_vault_ha(v: dict) -> str:
    """The HA-failover fleet (vault_ha.py): the same fleet with and without losing the active node."""
    f = v["failover"]
    out = [f"Vault HA (`vault_ha.*`), measured {v['date']} at commit {v['commit']} on {v['nproc']} CPU(s), load "
           f"average {v['loadavg_start'][0]:.1f} at the start; release build: {v['nodes']} nodes (key create + enroll) through one load-balanced address "
           f"in front of a three-node OpenBao raft cluster (TLS); in the failover run the active node is killed "
           f"(SIGKILL) {f['killed_after_s']:.1f} s after the release, once half the fleet holds its certificate; "
           f"a new active node answered {f['new_active_after_s']:.1f} s later.", "",
           "| vault_ha run | completion s | node median s | failures | certificates | retries (nodes' logs) | max retries one node |",
           "|---|---|---|---|---|---|---|"]
    for name, label in (("steady", "`vault_ha.steady`: no failover"), ("failover", "`vault_ha.failover`: active node killed mid-way")):
        p = v[name]
        out.append(f"| {label} | {p['completion_s']:.1f} | {p['node_median_s']:.1f} | {p['failures']} | {p['certificates']} | "
                   f"{p['retries_logged']} | {p['max_retries_one_node']} |")
    out += ["", f"Extra time the failover costs the fleet (`vault_ha.failover_extra_s`): **{v['failover_extra_s']:.1f} s**."]
    return "\n".join(out) + "\n"


def render_downloads(d: dict) -> str:
    """Downloads through a link that drops (downloads.py): resuming, the restart baseline, the floor."""
    sizes = ", ".join(f"{n} {b / MIB:.1f}" for n, b in d["artifacts"].items())
    out = [f"Downloads (`install.*`), measured {d['date']} at commit {d['commit']} on {d['nproc']} CPU(s), load average "
           f"{d['loadavg_start'][0]:.1f} at the start, {d.get('loadavg_end', [0])[0]:.1f} at the end; release build: `install` of {d['artifact_bytes'] / MIB:.1f} MiB "
           f"({sizes} MiB) from an HTTPS mirror (ETags on) through a relay that cuts every connection after "
           f"{d['drop_mib']:g} MiB; floor: the same files by `curl` into `sha256sum`, one after another, without cuts "
           f"(median {d['floor']['seconds']:.2f} s of {' '.join(f'{x:.2f}' for x in d['floor'].get('runs_s', []))}; "
           f"the resuming install's runs: {' '.join(f'{x:.2f}' for x in d['drops'].get('runs_s', []))} s).", "",
           "| install run | completed | s | relay bytes / artifact bytes | time / floor | connections cut |",
           "|---|---|---|---|---|---|"]
    for name, label in (("drops", "`install.drops`: resuming (Range, If-Range)"),
                        ("restart_baseline", "`install.restart_baseline`: every retry from zero"),
                        ("no_drops", "`install.no_drops`: resuming install, relay never cuts")):
        x = d.get(name)
        if x is None:
            continue
        done = "yes" if x["completed"] else f"no (exit {x['exit']})"
        out.append(f"| {label} | {done} | {x['seconds']:.2f} | {x['bytes_ratio']:.3f} | {x['time_over_floor']:.2f} | {x['drops']} |")
    t = Targets()
    t.at_most("install.drops.bytes_ratio", d["drops"]["bytes_ratio"], 1.1, lambda v: f"{v:.3f}")
    t.at_most("install.drops.time_over_floor", d["drops"]["time_over_floor"], 1.5, lambda v: f"{v:.2f}")
    out += ["", "| target | measured | result |", "|---|---|---|", *t.rows]
    return "\n".join(out) + "\n"


def replace_section(readme: Path, name: str, md: str) -> None:
    """Replaces what stands between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `readme`."""
    text = readme.read_text()
    pattern = re.compile(rf"(<!-- {re.escape(name)}:begin[^>]*-->\n).*?(<!-- {re.escape(name)}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no <!-- {name}:begin --> ... <!-- {name}:end --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + md + m.group(2), text))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results", type=Path)
    p.add_argument("markdown", type=Path)
    p.add_argument("--readme", type=Path)
    a = p.parse_args()
    md = render(json.loads(a.results.read_text()))
    a.markdown.write_text(md)
    if a.readme:
        replace_section(a.readme, "bench", md)


if __name__ == "__main__":
    main()
