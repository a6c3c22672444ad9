"""OOD test sets distributed as image archives (ODIN's iSUN, LSUN, TinyImageNet; Tiny-ImageNet test).

``load_archive_set`` verifies the archive's sha256 (remembered under the file's stat signature, so a warm run does
not re-read it), lists its members once in ODIN's order (torchvision ``ImageFolder`` sorts file names as strings, so
``10.jpg`` precedes ``2.jpg``; the listing is cached with the image size) and returns a set whose pixels are deferred
(:mod:`oodbench.data.deferred`): the images a run scores are decoded in one pass over the archive and cached under
the cache dir, keyed by the archive digest and the exact member positions, with the digest of their bytes.
``prepare`` decodes the whole archive (the training outlier pool, TinyImageNet-crop's source images). ``n``: a seeded
sample of the archive's images (e.g. a stand-in for a benchmark's image list that is not available), recorded in the
set's notes; only the sampled images are ever decoded.

``decoder``: ``pillow`` (default: Pillow's bundled libjpeg-turbo, which decodes these files bit-identically to IJG
libjpeg 6b) or ``libjpeg<version>`` (e.g. ``libjpeg9b``: IJG libjpeg 9b, which
upsamples 4:2:0 chroma in the DCT domain, so pixels differ) through the optional ``jpeglib`` package
(``pip install -e ".[jpeg]"``), for experiments on how the decoder moves a published comparison.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from oodbench.data.base import ImageSet
from oodbench.data.deferred import DeferredImages
from oodbench.data.files import cached_array, read_verified, require_file, verify_sha256, write_verified
from oodbench.errors import OodbenchError

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def _jpeg_decoder(decoder: str) -> Callable[[bytes], Image.Image]:
    """``pillow`` or ``libjpeg<version>`` (any version the ``jpeglib`` package bundles: 6b, 7, 8d, 9b, 9e, ...)."""
    if decoder == "pillow":
        return lambda raw: Image.open(io.BytesIO(raw)).convert("RGB")
    version = decoder.removeprefix("libjpeg")
    try:
        import jpeglib
    except ImportError:
        raise OodbenchError(f"decoder={decoder} needs the jpeglib package: pip install -e '.[jpeg]'") from None
    if not decoder.startswith("libjpeg") or version not in jpeglib.version.versions():
        raise OodbenchError(f"unknown decoder {decoder!r}; use pillow or libjpeg<v> with v one of "
                            f"{', '.join(sorted(jpeglib.version.versions()))}")

    def decode(raw: bytes) -> Image.Image:
        if raw[:2] != b"\xff\xd8":  # not a JPEG (a PNG in the archive): Pillow
            return Image.open(io.BytesIO(raw)).convert("RGB")
        with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
            f.write(raw)
            f.flush()
            with jpeglib.version(version):
                pixels = jpeglib.read_spatial(f.name).spatial
        return Image.fromarray(np.repeat(pixels, 3, -1) if pixels.shape[-1] == 1 else pixels)

    return decode


def _members(m: tarfile.TarInfo, member_glob: str) -> bool:
    return m.isfile() and m.name.lower().endswith(_IMAGE_EXT) and fnmatch.fnmatch(m.name, member_glob)


_IN_MEMORY = 256 << 20  # archives up to this size are inflated in one call, then walked in memory


def _open_tar(archive: Path) -> tarfile.TarFile:
    """The archive for one sequential walk: a gzip archive up to 256 MB is inflated in one ``zlib`` call and read
    from memory (the streaming walk measured 1.8× slower on the 14 MB Tiny-ImageNet test archive); larger ones or
    other compressions stream."""
    if archive.stat().st_size <= _IN_MEMORY:
        data = archive.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                return tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:")
            except (OSError, EOFError, zlib.error):  # damaged: the streaming reader reports it as before
                pass
    return tarfile.open(archive, "r:*")


def _scan(archive: Path, member_glob: str, keep: set[str] | None = None) -> dict[str, bytes]:
    """The raw bytes of the image members (those in ``keep``, all when None), in one sequential pass over the
    archive (no gzip re-seeks; a name stored twice gives its last copy, as extraction would)."""
    raw: dict[str, bytes] = {}
    with _open_tar(archive) as tar:
        for m in tar:
            if not _members(m, member_glob) or (keep is not None and m.name not in keep):
                continue
            raw[m.name] = tar.extractfile(m).read()
    return raw


def _decode_one(raw: bytes, decode: Callable[[bytes], Image.Image], size: int | None) -> np.ndarray:
    img = decode(raw)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _decode_archive(archive: Path, member_glob: str, size: int | None, decoder: str = "pillow",
                    wanted: list[str] | None = None, raw: dict[str, bytes] | None = None) -> np.ndarray:
    """Decode the members ``wanted`` (all when None), returned in the order of ``wanted`` (else sorted by file
    name), from ``raw`` (member bytes already read) or from one pass over the archive."""
    if raw is None or (wanted is not None and not set(wanted) <= raw.keys()):
        raw = _scan(archive, member_glob, None if wanted is None else set(wanted))
    if not raw:
        raise OodbenchError(f"{archive} holds no images matching {member_glob!r}; is it the right archive?")
    names = sorted(raw) if wanted is None else wanted
    missing = [n for n in names if n not in raw]
    if missing:
        raise OodbenchError(f"{archive}: {len(missing)} listed members are missing (e.g. {missing[0]}); the archive "
                            "changed while being read")
    decode = _jpeg_decoder(decoder)
    decoded = [_decode_one(raw[name], decode, size) for name in names]
    shapes = {a.shape for a in decoded}
    if len(shapes) != 1:
        raise OodbenchError(f"{archive}: images of several sizes {sorted(shapes)[:3]}; set `size` to resize")
    return np.stack(decoded)


def listing(archive: Path, digest: str, member_glob: str, cache_dir: Path, size: int | None,
            decoder: str = "pillow") -> tuple[list[str], tuple[int, int], dict[str, bytes] | None]:
    """The image members of ``archive`` in ODIN's (sorted-name) order and the image size after ``size``, cached
    with the digest of its bytes. Read from the archive when not cached: one pass, which also returns every
    member's bytes (third item; None when the listing came from the cache) so the caller decodes without a
    second pass."""
    tag = "" if decoder == "pillow" else f".{decoder}"
    glob = hashlib.sha256(member_glob.encode()).hexdigest()[:8]
    target = cache_dir / "prepared" / f"{archive.name}.{digest[:16]}.{glob}.{size or 'orig'}{tag}.listing.json"
    if read_verified(target):
        try:
            rec = json.loads(target.read_text())
            return list(rec["names"]), (int(rec["hw"][0]), int(rec["hw"][1])), None
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            target.unlink(missing_ok=True)
    raw = _scan(archive, member_glob)
    if not raw:
        raise OodbenchError(f"{archive} holds no images matching {member_glob!r}; is it the right archive?")
    names = sorted(raw)
    first = _decode_one(raw[names[0]], _jpeg_decoder(decoder), size)
    write_verified(target, lambda tmp: tmp.write_text(json.dumps({"names": names, "hw": list(first.shape[:2])})))
    return names, (int(first.shape[0]), int(first.shape[1])), raw


def deferred_archive(archive: Path, digest: str, member_glob: str, cache_dir: Path, size: int | None,
                     decoder: str = "pillow") -> DeferredImages:
    """The archive's images as a :class:`DeferredImages`: a view decodes exactly its members (one pass), cached as
    ``prepared/<archive>.<digest16>.<size>.<positions digest>.npy`` with the digest of its bytes."""
    names, hw, raw = listing(archive, digest, member_glob, cache_dir, size, decoder)
    tag = "" if decoder == "pillow" else f".{decoder}"
    held = {"raw": raw}  # the listing pass's member bytes serve the first decode, then are let go

    def make(positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64)
        every = len(pos) == len(names) and bool((pos == np.arange(len(names))).all())
        key = "all" if every else hashlib.sha256(pos.tobytes()).hexdigest()[:16]
        target = cache_dir / "prepared" / f"{archive.name}.{digest[:16]}.{size or 'orig'}{tag}.{key}.npy"
        wanted = [names[i] for i in pos]
        raw_now, held["raw"] = held["raw"], None
        return cached_array(target, lambda: _decode_archive(archive, member_glob, size, decoder, wanted, raw_now))

    return DeferredImages(make, len(names), hw, np.uint8, what=archive.name)


def prepare(
    archive: Path, sha256: str | None, member_glob: str, cache_dir: Path, size: int | None, decoder: str = "pillow"
) -> tuple[np.ndarray, str]:
    """Verify and decode the whole ``archive`` into the cache; return (images, archive sha256)."""
    _jpeg_decoder(decoder)  # an unknown decoder fails before any work
    digest = verify_sha256(archive, sha256, archive.name)
    return deferred_archive(archive, digest, member_glob, cache_dir, size, decoder).materialize(), digest


def load_archive_set(
    name: str,
    archive: str,
    data_dir: str,
    cache_dir: str,
    sha256: str | None = None,
    member_glob: str = "*",
    size: int | None = None,
    url: str = "",
    exact: str = "",
    decoder: str = "pillow",
    n: int | None = None,
    seed: int = 0,
) -> ImageSet:
    """Load an image archive found at ``data_dir/archive`` (see module docstring).

    ``n``: keep a seeded sample of ``n`` images — the first ``n`` of ``numpy.random.default_rng(seed).permutation``
    over the archive's members in sorted-name order, kept in that order (so a smaller ``n`` with the same seed is a
    subset of a larger one); None keeps every image. ``indices`` are the sampled positions in the full listing.
    """
    path = require_file(Path(data_dir) / archive, f"OOD set {name}", f"download from {url or 'its source'}")
    _jpeg_decoder(decoder)  # an unknown decoder fails before any work
    digest = verify_sha256(path, sha256, path.name)
    images = deferred_archive(path, digest, member_glob, Path(cache_dir), size, decoder)
    tag = "" if decoder == "pillow" else f":{decoder}"  # the default keeps the ids of every stored row
    full = ImageSet(
        name=name,
        images=images,
        labels=None,
        source=(exact or f"archive {archive}") + (f", decoded with {decoder}" if tag else ""),
        n_total=len(images),
        indices=np.arange(len(images)),
        content_id=f"archive:{digest}:{member_glob}:{size}{tag}",
    )
    if n is None:
        return full
    if not 0 < n <= len(full):
        raise OodbenchError(f"ood.{name}.n={n}: the archive {archive} has {len(full)} images matching "
                            f"{member_glob!r}; n must be between 1 and {len(full)}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(full))[:n])
    return full.select(keep, note=f"seeded sample of {n} of the archive's {len(full)} images (seed {seed})")
