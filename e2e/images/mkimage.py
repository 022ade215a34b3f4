#!/usr/bin/env python3
"""Packs a directory into an OCI image archive (an OCI image layout in a tar) that
`ctr images import` accepts, without a registry or a container engine.

    mkimage.py ROOTFS OUT.tar NAME [--entrypoint ARG ...] [--env K=V ...]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_of(rootfs):
    """(gzipped tar of rootfs, sha256 of the uncompressed tar), reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    uncompressed = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as z:
        z.write(uncompressed)
    return gz.getvalue(), digest(uncompressed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rootfs")
    ap.add_argument("out")
    ap.add_argument("name", help="image reference, e.g. spright.local/functions:latest")
    ap.add_argument("--entrypoint", nargs="*", default=[])
    ap.add_argument("--env", action="append", default=["PATH=/bin"])
    args = ap.parse_args()

    layer, diff_id = layer_of(args.rootfs)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": args.env, "Entrypoint": args.entrypoint or None, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "spright e2e/images/mkimage.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": args.name,
                            "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1]},
        }],
    }, sort_keys=True).encode()

    with tarfile.open(args.out, "w") as out:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", index)
        for blob in (layer, config, manifest):
            add("blobs/sha256/" + digest(blob).split(":")[1], blob)


if __name__ == "__main__":
    main()
