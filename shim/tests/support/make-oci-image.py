#!/usr/bin/env python3
"""Builds an OCI image-layout tarball from a root directory, offline.

usage: make-oci-image.py ROOTFS OUTPUT.tar IMAGE-NAME [CMD-JSON]

One gzip layer holding ROOTFS, a config naming it, a manifest, and an
index.json whose manifest carries `io.containerd.image.name=IMAGE-NAME`
(what `ctr images import` names the image after). CMD-JSON, a JSON list,
is the image's Cmd (default ["/bin/sh"]).
"""

import gzip
import hashlib
import io
import json
import platform
import sys
import tarfile


def blob(layout, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1])
    info.size = len(data)
    info.mode = 0o644
    layout.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def layer_tar(rootfs):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer:
        layer.add(rootfs, arcname=".", recursive=True)
    return raw.getvalue()


def main():
    rootfs, output, name = sys.argv[1:4]
    cmd = json.loads(sys.argv[4]) if len(sys.argv) > 4 else ["/bin/sh"]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    layer = layer_tar(rootfs)
    compressed = gzip.compress(layer, mtime=0)
    with tarfile.open(output, mode="w") as layout:
        layer_desc = blob(layout, compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        }
        config_desc = blob(
            layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = blob(
            layout, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
        )
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
        }
        manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
        for path, content in [
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", {"schemaVersion": 2, "manifests": [manifest_desc]}),
        ]:
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            layout.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
