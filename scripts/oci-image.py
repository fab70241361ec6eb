#!/usr/bin/env python3
"""Makes an OCI image archive (a tar of an OCI image layout) for the containerd tests:
two gzip layers, the Debian rootfs tar given and a small layer on top that adds
/etc/graphdriver-release, and an index naming the image for `ctr images import`.

    scripts/oci-image.py ROOTFS.tar OUT.tar NAME [LAYERS]

With LAYERS (at least 2), the image has that many layers: the rootfs, then LAYERS-2 small
ones each adding /layers/N and changing /layers/last (so each whites out or replaces a file
of the one below), then the top layer.

Deterministic: the same rootfs gives the same archive (gzip without name or time)."""
import gzip, hashlib, io, json, sys, tarfile

rootfs, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 2
assert count >= 2, "an image here has at least the rootfs and the top layer"
blobs = {}

def blob(data, media):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"mediaType": media, "digest": d, "size": len(data)}

def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=6) as g:
        g.write(data)
    return buf.getvalue()

def top_layer():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        body = b"graphdriver test image\n"
        i = tarfile.TarInfo("etc/graphdriver-release")
        i.size, i.mode, i.mtime = len(body), 0o644, 1700000000
        t.addfile(i, io.BytesIO(body))
    return buf.getvalue()

def small_layer(n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, body in ((f"layers/{n}", f"layer {n}\n".encode()),
                           ("layers/last", f"{n}\n".encode())):
            i = tarfile.TarInfo(path)
            i.size, i.mode, i.mtime = len(body), 0o644, 1700000000
            t.addfile(i, io.BytesIO(body))
    return buf.getvalue()

layers, diff_ids = [], []
raws = [open(rootfs, "rb").read()] + [small_layer(n) for n in range(1, count - 1)] + [top_layer()]
for raw in raws:
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    layers.append(blob(gz(raw), "application/vnd.oci.image.layer.v1.tar+gzip"))
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
}, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": config, "layers": layers,
}, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
manifest["annotations"] = {"io.containerd.image.name": name,
                           "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
manifest["platform"] = {"architecture": "amd64", "os": "linux"}
index = json.dumps({"schemaVersion": 2, "manifests": [manifest]}, sort_keys=True).encode()

with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    def add(path, data):
        i = tarfile.TarInfo(path)
        i.size, i.mode, i.mtime = len(data), 0o644, 0
        t.addfile(i, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    for d, data in sorted(blobs.items()):
        add("blobs/sha256/" + d.split(":", 1)[1], data)
