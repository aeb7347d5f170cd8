#!/usr/bin/env python3
"""Write a small pause-like multi-platform OCI image layout (no Docker, standard library only).

Usage:

    python3 tests/peers/oci_image.py --out <dir> [--tag 3.5]

Writes an OCI image layout at ``<dir>`` (``oci-layout``, ``index.json``, ``blobs/sha256/...``)
whose tag ``--tag`` is an image index with one manifest for linux/amd64 and one for
linux/arm64/v8. Each manifest has a config and one gzip layer holding ``/pause`` (a shell
script) and ``/platform`` (the platform string, so a test can tell which one was imported).
Push it with ``skopeo copy --all oci:<dir>:<tag> docker://host/repo:tag``.

Prints ONE JSON line: {"index": digest, "manifests": {"amd64": digest, "arm64": digest},
"layers": {"amd64": digest, "arm64": digest}}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(root: str, data: bytes) -> dict:
    d = _digest(data)
    with open(os.path.join(root, "blobs", "sha256", d[7:]), "wb") as f:
        f.write(data)
    return {"digest": d, "size": len(data)}


def _layer(platform: str) -> tuple[bytes, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data, mode in (
            ("pause", b"#!/bin/sh\nexec sleep infinity\n", 0o755),
            ("platform", platform.encode() + b"\n", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return tar, gzip.compress(tar, mtime=0)


def build(root: str, tag: str) -> dict:
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    entries, out = [], {"manifests": {}, "layers": {}}
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        tar, gz = _layer("linux/" + arch + ("/" + variant if variant else ""))
        layer = _blob(root, gz)
        config = _blob(
            root,
            json.dumps(
                {
                    "architecture": arch,
                    "os": "linux",
                    **({"variant": variant} if variant else {}),
                    "config": {"Entrypoint": ["/pause"]},
                    "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
                },
                sort_keys=True,
            ).encode(),
        )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
            },
            sort_keys=True,
        ).encode()
        m = _blob(root, manifest)
        entries.append(
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", **m, "platform": platform}
        )
        out["manifests"][arch] = m["digest"]
        out["layers"][arch] = layer["digest"]
    index = _blob(
        root,
        json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries},
            sort_keys=True,
        ).encode(),
    )
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        **index,
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            },
            f,
        )
    out["index"] = index["digest"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tag", default="3.5")
    a = p.parse_args()
    print(json.dumps(build(a.out, a.tag)), flush=True)


if __name__ == "__main__":
    main()
