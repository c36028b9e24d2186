#!/usr/bin/env python3
"""Edits of an OCI image layout that umoci cannot make, for the system tier's test images.

    oci_edit.py healthcheck LAYOUT TAG JSON        LAYOUT:TAG's config gets a Docker Healthcheck (durations in ns)
    oci_edit.py hardlinks LAYOUT FROM TO PATH=TARGET…
                                                   LAYOUT:TO = LAYOUT:FROM plus one layer of tar hard-link entries
                                                   (umoci's repack stores a link to an unchanged lower file as a copy)

Each edit writes new config/manifest blobs and points the index entry at them.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

REF = "org.opencontainers.image.ref.name"


class Layout:
    def __init__(self, path):
        self.path = path
        self.index = json.load(open(os.path.join(path, "index.json")))

    def blob(self, digest):
        return os.path.join(self.path, "blobs", *digest.split(":"))

    def put(self, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(self.blob(digest), "wb") as f:
            f.write(data)
        return digest, len(data)

    def entry(self, tag):
        return next(m for m in self.index["manifests"] if m.get("annotations", {}).get(REF) == tag)

    def read(self, digest):
        return json.load(open(self.blob(digest)))

    def save(self, entry, manifest, config):
        """Writes config and manifest as blobs and points `entry` (in the index) at the manifest."""
        manifest["config"]["digest"], manifest["config"]["size"] = self.put(json.dumps(config).encode())
        entry["digest"], entry["size"] = self.put(json.dumps(manifest).encode())
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump(self.index, f)


def healthcheck(layout, tag, check):
    entry = layout.entry(tag)
    manifest = layout.read(entry["digest"])
    config = layout.read(manifest["config"]["digest"])
    config.setdefault("config", {})["Healthcheck"] = json.loads(check)
    layout.save(entry, manifest, config)


def hardlinks(layout, src, dst, *links):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for link in links:
            path, target = link.split("=", 1)
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, 0o644
            t.addfile(info)
    base = layout.entry(src)
    manifest = layout.read(base["digest"])
    config = layout.read(manifest["config"]["digest"])
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    digest, size = layout.put(gzip.compress(raw.getvalue(), mtime=0))
    manifest["layers"].append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
    )
    entry = dict(base, annotations={REF: dst})
    layout.index["manifests"] = [
        m for m in layout.index["manifests"] if m.get("annotations", {}).get(REF) != dst
    ] + [entry]
    layout.save(entry, manifest, config)


if __name__ == "__main__":
    edit, path, *args = sys.argv[1:]
    {"healthcheck": healthcheck, "hardlinks": hardlinks}[edit](Layout(path), *args)
