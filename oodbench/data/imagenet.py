"""ImageNet-1k as ID set and the large-scale OOD sets of MOS (Huang & Li, CVPR 2021), decoded lazily.

* ImageNet val (50,000 images) as class folders ``<data>/imagenet/val/<wnid>/*.JPEG`` -- the layout of
  ``torchvision.datasets.ImageFolder``: label = index of the wnid among the sorted class folders, images in
  sorted path order within a class. The train split (``imagenet/train/<wnid>/``) is read the same way when a
  detector fits on ID training features.
* OOD: iNaturalist, SUN, Places (``iNaturalist/images``, ``SUN/images``, ``Places/images``: 10,000 images each,
  as MOS distributes them) and Textures (DTD, ``dtd/images/<category>/``, 5,640 images).

Every image goes through torchvision's evaluation transform (Resize(256) + CenterCrop(224)) when its batch is
needed (:class:`~oodbench.data.lazy.FolderImages`); nothing is decoded when a set is loaded. None of these sets
is available in the development environment: a missing one gives one line saying where to put it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from oodbench.data.archives import load_archive_set
from oodbench.data.base import ImageSet
from oodbench.data.files import require_file, verify_sha256
from oodbench.data.folders import BAD_IMAGE_POLICIES, report_bad
from oodbench.data.lazy import FolderImages, ResampledImages, list_images, listing_digest
from oodbench.errors import DataNotAvailable, OodbenchError

log = logging.getLogger("oodbench")

IMAGENET_URL = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
IMAGENET_CLASSES = 1000
IMAGENET_VAL_N = 50000
# ImageNet-1k class index of the 10 Imagenette wnids (index = position among the 1000 sorted wnids; e.g. tench
# 0, English springer 217, cassette player 482, chain saw 491, church 497, French horn 566, garbage truck 569,
# gas pump 571, golf ball 574, parachute 701). Always available; the full list comes from timm when installed.
IMAGENETTE = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
              "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701}


def imagenet1k_wnids() -> list[str] | None:
    """The 1000 ImageNet-1k wnids in class-index order, from an installed package (timm ships them); None if
    unavailable. Never downloaded."""
    try:
        from importlib.resources import files

        text = (files("timm") / "data" / "_info" / "imagenet_synsets.txt").read_text()
    except (ImportError, OSError):
        return None
    wnids = text.split()
    return wnids if len(wnids) == IMAGENET_CLASSES and wnids == sorted(wnids) else None


def imagenet1k_labels(classes: list[str]) -> list[int]:
    """ImageNet-1k class index of each wnid folder: all 1000 folders present → their sorted position (the
    ImageFolder convention, which is ImageNet-1k's); else the installed wnid list, else the Imagenette table."""
    if len(classes) == IMAGENET_CLASSES:
        return list(range(IMAGENET_CLASSES))
    table = {w: i for i, w in enumerate(imagenet1k_wnids() or [])} or IMAGENETTE
    unknown = [c for c in classes if c not in table]
    if unknown:
        how = "" if len(table) == IMAGENET_CLASSES else " (pip install timm for the full 1000-class list)"
        raise OodbenchError(f"class folders {unknown[:5]} are not known ImageNet-1k wnids{how}; "
                            "use id.label_map=folders to label by folder position")
    return [table[c] for c in classes]


def extract_archive(archive: Path, sha256: str | None, cache_dir: Path) -> Path:
    """Verify ``archive`` and unpack it once into ``<cache>/extracted/<name>.<sha16>/`` (unpacked to a temp
    folder, then renamed: concurrent workers never see a half-extracted tree). Returns that folder."""
    import shutil
    import tarfile
    import tempfile

    digest = verify_sha256(archive, sha256, archive.name)
    target = cache_dir / "extracted" / f"{archive.name}.{digest[:16]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _transform(size: int, resize: int | None) -> tuple[int, int]:
    return size, int(resize) if resize is not None else int(round(size / 0.875))


def load_imagenet_val(
    name: str, data_dir: str, folder: str = "imagenet/val", cache_dir: str = "", size: int = 224,
    resize: int | None = None, split: str = "val", train_folder: str = "imagenet/train", url: str = IMAGENET_URL,
    threads: int | None = None, archive: str | None = None, sha256: str | None = None,
    label_map: str = "imagenet1k",
) -> ImageSet:
    """ImageNet-1k ``split`` (val, alias test; or train) from class folders.

    Labels (``label_map``): ``imagenet1k`` = the wnid's ImageNet-1k class index (:func:`imagenet1k_labels`; with
    all 1000 folders this is the sorted-folder index), ``folders`` = index among the folders present.
    ``archive`` (e.g. ``imagenet/imagenet-val-sample-250.tar.gz``): read the val images from that tarball
    instead, unpacked once into ``cache_dir``; it has no train split, so ``split=train`` (detectors that fit on
    ID features) gets the same images, recorded as an in-sample fit in the set's notes.
    ``resize`` defaults to ``size / 0.875`` (256 for 224); nothing is decoded up front.
    """
    if split not in ("val", "test", "train"):
        raise ValueError(f"ImageNet split must be val (or test) or train, got {split!r}")
    if label_map not in ("imagenet1k", "folders"):
        raise OodbenchError(f"id.label_map={label_map!r}: choose imagenet1k or folders")
    root = Path(data_dir) / (train_folder if split == "train" else folder)
    fit_note: tuple[str, ...] = ()
    if archive:
        path = require_file(Path(data_dir) / archive, f"ImageNet sample {name}", "see shared/data/README.md")
        unpacked = extract_archive(path, sha256, Path(cache_dir))
        root = unpacked / folder
        if split == "train":
            fit_note = (f"no train split in {archive}: fit on these same val images (in-sample)",)
            log.warning("%s", fit_note[0])
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else []
    per_class = [list_images(root / c) for c in classes]
    files = [p for group in per_class for p in group]
    if not files:
        sample = "" if archive else " (or the 250-image sample: id=imagenet_sample)"
        raise DataNotAvailable(f"ImageNet {split} not available: put the ILSVRC2012 {split} images as class "
                               f"folders <wnid>/*.JPEG under {root} (from {url}){sample}")
    index = imagenet1k_labels(classes) if label_map == "imagenet1k" else list(range(len(classes)))
    labels = np.concatenate([np.full(len(g), k, dtype=np.int64) for k, g in zip(index, per_class)])
    size, resize = _transform(size, resize)
    digest = listing_digest(root, files, "classes", resize, size)  # labels do not change the pixels
    notes: tuple[str, ...] = fit_note
    if len(classes) != IMAGENET_CLASSES:
        how = ("labels are ImageNet-1k class indices of the wnids" if label_map == "imagenet1k" else
               "labels are indices into the folders present, so ID accuracy is not meaningful")
        msg = f"{len(classes)} class folders under {root.name}, ImageNet-1k has {IMAGENET_CLASSES}: {how}"
        log.warning(msg)
        notes += (msg,)
    elif split != "train" and len(files) != IMAGENET_VAL_N:
        notes += (f"{len(files)} images, the official val set has {IMAGENET_VAL_N}",)
    where = f"archive {archive} (sha256-checked), class folders {folder}" if archive else f"class folders {root}"
    return ImageSet(
        name=name, images=FolderImages(files, size, resize, threads), labels=labels,
        source=f"{where} (resize {resize} + center-crop {size}, labels {label_map}){'; '.join(('',) + fit_note)}",
        n_total=len(files), indices=np.arange(len(files)), notes=notes,
        content_id=f"imagefolder:{name}:{'val' if archive else split}:{digest}",
    )


def _header_error(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as err:  # PIL raises many types for foreign / damaged files
        return f"{type(err).__name__}: {err}"
    return ""


def _drop_bad(name: str, root: Path, files: list[Path], cache_dir: str, policy: str) -> list[Path]:

    if policy not in BAD_IMAGE_POLICIES:
        raise OodbenchError(f"ood.{name}.on_bad_image={policy!r}: choose from {', '.join(BAD_IMAGE_POLICIES)}")
    bad = [(p, e) for p in files if (e := _header_error(p))]
    if not bad:
        return files
    line = report_bad(name, root, bad, cache_dir or str(root), policy)
    if policy == "fail" or len(bad) == len(files):
        raise OodbenchError(line)
    log.warning("%s", line)
    drop = {p for p, _ in bad}
    return [p for p in files if p not in drop]


def load_archive_upsampled(
    name: str, archive: str, data_dir: str, cache_dir: str, sha256: str | None = None, member_glob: str = "*",
    size: int = 224, resize: int | None = None, url: str = "", exact: str = "", threads: int | None = None,
) -> ImageSet:
    """A small-image OOD archive (e.g. ODIN's 32-px iSUN) for a 224-px network: decoded once at its own size,
    then each batch resized (shorter side → ``resize``, bilinear, upsampling) and center-cropped to ``size``,
    exactly as torchvision's evaluation transform would treat those files."""
    base = load_archive_set(name, archive, data_dir, cache_dir, sha256, member_glob, None, url, exact)
    size, resize = _transform(size, resize)
    return ImageSet(
        name=name, images=ResampledImages(np.asarray(base.images), size, resize, threads), labels=None,
        source=f"{base.source}, upsampled: resize {resize} + center-crop {size}", n_total=base.n_total,
        indices=base.indices, content_id=f"{base.content_id}:resampled:{resize}:{size}",
    )


def load_ood_folder(
    name: str, folder: str, data_dir: str, cache_dir: str = "", url: str = "", size: int = 224,
    resize: int | None = None, n_expected: int | None = None, threads: int | None = None,
    on_bad_image: str = "fail",
) -> ImageSet:
    """Every image below ``data_dir/folder`` (sorted relative paths), lazily resized + center-cropped.

    ``n_expected`` (the published size of the set) only adds a note when the folder holds another count.
    Every file's header is checked when the set is loaded (cheap; a file truncated after its header still
    fails later, at decode, naming the file): unreadable ones are all listed, then fail the set or are
    skipped (``on_bad_image``), as :func:`oodbench.data.folders.load_image_folder` does.
    """
    root = Path(data_dir) / folder
    files = list_images(root) if root.is_dir() else []
    if not files:
        raise DataNotAvailable(f"OOD set {name} not available: put its images under {root} (from {url})")
    n_found = len(files)
    files = _drop_bad(name, root, files, cache_dir, on_bad_image)
    size, resize = _transform(size, resize)
    digest = listing_digest(root, files, resize, size)
    notes: tuple[str, ...] = (f"{n_found - len(files)} unreadable file(s) skipped",) if n_found > len(files) else ()
    if n_expected is not None and len(files) != n_expected:
        notes += (f"{len(files)} images found, the published set has {n_expected}",)
        log.warning("OOD set %s: %s under %s", name, notes[-1], root)
    return ImageSet(
        name=name, images=FolderImages(files, size, resize, threads), labels=None,
        source=f"image folder {root} (resize {resize} + center-crop {size})", n_total=len(files),
        indices=np.arange(len(files)), content_id=f"folder:{name}:{digest}", notes=notes,
    )
