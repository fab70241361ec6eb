#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/fuzz_targets), written to OUT/<target>/:
small real tars (slices of the Debian rootfs tar, re-written by Python's tarfile in GNU
and PAX form), the layer shapes the conformance suite uses (whiteouts, opaque directories,
hardlinks, symlinks, devices, xattrs, long names) and the hostile ones it refuses (`..`,
absolute names, links out of the layer), each gzip- and zstd-compressed for the
decompression target, and a small OCI layout tar and `docker save` tar for the image target.

    scripts/fuzz-seeds.py ROOTFS.tar OUT

Deterministic: the same rootfs gives the same seeds."""
import gzip, hashlib, io, json, os, shutil, subprocess, sys, tarfile

rootfs, out = sys.argv[1], sys.argv[2]
MAX = 60000  # under the targets' -max_len

def tar_bytes(members, fmt):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return b.getvalue()

def info(name, kind=tarfile.REGTYPE, size=0, mode=0o644, link="", pax=None):
    i = tarfile.TarInfo(name)
    i.type, i.size, i.mode, i.linkname, i.mtime = kind, size, mode, link, 1700000000
    if pax:
        i.pax_headers = pax
    return i

def f(name, data=b"x\n", mode=0o644, pax=None):
    return (info(name, size=len(data), mode=mode, pax=pax), data)

def d(name, mode=0o755):
    return (info(name, tarfile.DIRTYPE, mode=mode), None)

def ln(name, target, kind=tarfile.SYMTYPE):
    return (info(name, kind, link=target), None)

shapes = {
    "files": [d("etc"), f("etc/passwd", b"root:x:0:0\n"), d("usr/bin"), f("usr/bin/sh", b"#!", 0o755)],
    "whiteouts": [d("etc"), f("etc/.wh.passwd", b""), f(".wh.usr", b""), f("lib/.wh..wh..opq", b"")],
    "opaque": [d("usr"), f("usr/.wh..wh..opq", b""), f("usr/new", b"n")],
    "links": [f("a", b"data"), ln("b", "a", tarfile.LNKTYPE), ln("c", "a"), ln("bin/x", "../etc")],
    "through-symlinks": [f("bin/new", b"via symlink"), f("conf/x", b"c"), f("out-rel/evil", b"e"),
                         f("out-abs/evil", b"e"), f("etc/secret", b"overwrite")],
    "escapes": [f("../evil", b"e"), f("/abs", b"e"), ln("up", "../../.."), ln("h", "/etc/passwd", tarfile.LNKTYPE),
                ln("h2", "../outside/secret", tarfile.LNKTYPE)],
    "devices": [(info("dev/null", tarfile.CHRTYPE, mode=0o666), None),
                (info("dev/fifo", tarfile.FIFOTYPE), None), (info("dev/wh", tarfile.CHRTYPE), None)],
    "xattrs": [f("cap", b"\x7fELF", 0o755, {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\n"}),
               f("user", b"u", pax={"SCHILY.xattr.user.k": "v"})],
    "long-names": [d("a" * 100), f("a" * 100 + "/" + "b" * 150, b"long"), ln("l" * 120, "t" * 200)],
    "replace-kinds": [f("etc", b"file over a dir"), d("etc/passwd"), ln("usr", "/"), f("usr/bin/sh", b"x")],
    "staging-name": [f(".graphdriver-apply.x", b"s"), d("a/.graphdriver-apply.y")],
    "modes": [d("tmp", 0o1777), f("suid", b"s", 0o4755), f("ro", b"r", 0o400), d("locked", 0o000), f("locked/f", b"f")],
    "hardlink-then-whiteout": [f("x", b"1"), ln("y", "x", tarfile.LNKTYPE), f(".wh.x", b"")],
}

def rootfs_slices():
    """Small consecutive slices of the Debian rootfs (its real headers and files)."""
    out = []
    with tarfile.open(rootfs) as t:
        members, total = [], 0
        for m in t:
            data = t.extractfile(m).read() if m.isfile() and m.size < 4000 else None
            if m.isfile() and data is None:
                continue
            members.append((m, data))
            total += 512 + (m.size if data else 0)
            if total > 20000:
                out.append(members)
                members, total = [], 0
            if len(out) >= 12:
                break
    return out

tars = {}
for name, members in shapes.items():
    tars[f"{name}-gnu"] = tar_bytes(members, tarfile.GNU_FORMAT)
    tars[f"{name}-pax"] = tar_bytes(members, tarfile.PAX_FORMAT)
for i, members in enumerate(rootfs_slices()):
    tars[f"debian-{i:02}-gnu"] = tar_bytes(members, tarfile.GNU_FORMAT)
    tars[f"debian-{i:02}-pax"] = tar_bytes(members, tarfile.PAX_FORMAT)
tars = {k: v for k, v in tars.items() if len(v) <= MAX}

def write(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as fh:
        fh.write(data)

zstd = shutil.which("zstd")
for name, data in tars.items():
    write("tar_reader", name, data)
    write("apply", name + "-full", b"\x00" + data)
    write("apply", name + "-overlay", b"\x01" + data)
    write("layer_stream", name + ".tar", b"\x10" + data)
    write("layer_stream", name + ".gz", b"\x10" + gzip.compress(data, mtime=0))
    if zstd:
        z = subprocess.run([zstd, "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout
        write("layer_stream", name + ".zst", b"\x10" + z)
for name in ["a", "b/c", "./d/", "x/.wh.y", ".wh..wh..opq", "x/.wh..wh.plnk", "../z", "/abs", "a//b/./c", ".wh."]:
    write("entry_names", hashlib.sha256(name.encode()).hexdigest()[:16], name.encode())

# Image archives: an OCI layout tar and a `docker save` tar of two small layers.
def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

layers = [tars["files-pax"], tars["whiteouts-pax"]]
blobs = [gzip.compress(l, mtime=0) for l in layers]
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [sha(l) for l in layers]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(b), "size": len(b)} for b in blobs]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": sha(manifest), "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "seed:1"}}]}).encode()
oci = [f("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), f("index.json", index)]
for b in [config, manifest] + blobs:
    oci.append(f("blobs/sha256/" + sha(b)[7:], b))
write("image_archive", "oci", tar_bytes(oci, tarfile.GNU_FORMAT))
docker = [f("manifest.json", json.dumps([{"Config": sha(config)[7:] + ".json", "RepoTags": ["seed:2"],
    "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]).encode()), f(sha(config)[7:] + ".json", config)]
for i, l in enumerate(layers):
    docker.append(f(f"l{i}/layer.tar", l))
write("image_archive", "docker", tar_bytes(docker, tarfile.GNU_FORMAT))
print(f"fuzz-seeds: {sum(len(fs) for _, _, fs in os.walk(out))} seeds in {out}", file=sys.stderr)
