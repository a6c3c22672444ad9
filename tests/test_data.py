"""Data loaders: exact subsets say so, ODIN's file order, checksums, noise recipe, deterministic subsets."""

from __future__ import annotations

import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from oodbench.data.archives import load_archive_set
from oodbench.data.base import ImageSet, protocol_subset
from oodbench.data.cifar import load_cifar
from oodbench.data.synthetic import load_tin_crop, make_noise
from oodbench.errors import DataNotAvailable, OodbenchError


def test_cifar_falls_back_to_exact_subset_and_says_so(shared_data, tmp_path):
    ds = load_cifar("cifar10", str(shared_data), subset="cifar10/cifar10-exact-subset.npz", root=str(tmp_path))
    assert len(ds) == 1017 and ds.n_total == 10000
    assert ds.describe().startswith("cifar10 1017/10000 (exact subset")
    assert ds.indices[:3].tolist() == [0, 1, 2]
    assert ds.labels[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane: the official test order
    train = load_cifar("cifar10", str(shared_data), split="train", subset="cifar10/cifar10-exact-subset.npz",
                       root=str(tmp_path))
    assert len(train) == 5085 and train.n_total == 50000 and train.labels is not None


def test_cifar_missing_everywhere_is_one_clear_line(tmp_path):
    with pytest.raises(DataNotAvailable, match=r"cifar10 test not available: put torchvision's files under"):
        load_cifar("cifar10", str(tmp_path), subset="cifar10/none.npz")


def _tiny_archive(tmp_path, names):
    src = tmp_path / "src" / "set"
    src.mkdir(parents=True)
    for i, n in enumerate(names):
        Image.fromarray(np.full((4, 4, 3), i * 10, np.uint8)).save(src / n)
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="set")
    return archive


def test_archive_order_is_imagefolders_string_sort(tmp_path):
    archive = _tiny_archive(tmp_path, ["0.png", "1.png", "2.png", "10.png"])  # pixel value = 10·(creation order)
    ds = load_archive_set("toy", archive.name, str(tmp_path), str(tmp_path / "cache"), member_glob="set/*")
    assert ds.images[:, 0, 0, 0].tolist() == [0, 10, 30, 20]  # 0, 1, 10, 2 as torchvision's ImageFolder sorts
    again = load_archive_set("toy", archive.name, str(tmp_path), str(tmp_path / "cache"), member_glob="set/*")
    assert again.content_id == ds.content_id and np.array_equal(again.images, ds.images)


def test_archive_checksum_and_missing_file(tmp_path):
    archive = _tiny_archive(tmp_path, ["0.png"])
    with pytest.raises(OodbenchError, match="checksum mismatch"):
        load_archive_set("toy", archive.name, str(tmp_path), str(tmp_path / "c"), sha256="0" * 64)
    with pytest.raises(DataNotAvailable, match=r"OOD set toy not available: put it at .*nope.tar.gz"):
        load_archive_set("toy", "nope.tar.gz", str(tmp_path), str(tmp_path / "c"), url="https://x")


def test_truncated_prepared_cache_is_rebuilt(tmp_path):
    archive = _tiny_archive(tmp_path, ["0.png", "1.png"])
    cache = tmp_path / "cache"
    ds = load_archive_set("toy", archive.name, str(tmp_path), str(cache), member_glob="set/*")
    assert not list((cache / "prepared").glob("*.npy"))  # nothing decoded until a pixel is needed
    first = np.asarray(ds.images)
    (npy,) = (cache / "prepared").glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:20])  # truncated
    again = load_archive_set("toy", archive.name, str(tmp_path), str(cache), member_glob="set/*")
    assert np.array_equal(np.asarray(again.images), first)


def test_noise_follows_odins_recipe_and_is_seeded():
    g = make_noise("gaussian", "gaussian", n=200, seed=3)
    assert g.images.dtype == np.float32 and g.images.min() == 0.0 and g.images.max() == 1.0
    # N(0.5, 1) clipped: P(x <= 0) = P(z <= -0.5) = 0.3085
    assert abs((np.asarray(g.images) == 0).mean() - 0.3085) < 0.01
    assert np.array_equal(g.images, make_noise("gaussian", "gaussian", n=200, seed=3).images)
    u = make_noise("uniform", "uniform", n=200, seed=3)
    assert 0 <= u.images.min() and u.images.max() <= 1 and abs(u.images.mean() - 0.5) < 0.01


def test_tin_crop_is_seeded_crops_of_the_test_images(shared_data, tmp_path):
    kw = dict(archive="tinyimagenet/tiny-imagenet-200-test.tar.gz", data_dir=str(shared_data),
              cache_dir=str(tmp_path), member_glob="tiny-imagenet-200/test/images/*")
    a = load_tin_crop("tin_crop", seed=0, **kw)
    assert a.images.shape == (10000, 32, 32, 3) and "approximates ODIN" in a.source
    b = load_tin_crop("tin_crop", seed=1, **kw)
    assert not np.array_equal(a.images, b.images) and a.content_id != b.content_id
    q = load_tin_crop("tin_crop", seed=0, jpeg_quality=75, **kw)  # ODIN's other sets: 32x32 q75 4:2:0 JPEGs
    diff = np.abs(q.images.astype(int) - a.images.astype(int))
    assert q.content_id == a.content_id + ":jpeg75" and "stored as JPEG q75" in q.source
    assert 0 < diff.mean() < 10 and diff.max() > 0  # the same crops, with JPEG artefacts
    with pytest.raises(OodbenchError, match="jpeg_quality must be in 1..100"):
        load_tin_crop("tin_crop", seed=0, jpeg_quality=0, **kw)


def test_protocol_subset_is_deterministic_and_recorded():
    ds = ImageSet("x", np.zeros((50, 2, 2, 3), np.uint8), None, "toy", 50, np.arange(50), "toy")
    a = protocol_subset(ds, holdout=10, max_images=20, seed=0)
    b = protocol_subset(ds, holdout=10, max_images=20, seed=0)
    assert np.array_equal(a.indices, b.indices) and len(a) == 20 and a.indices.min() >= 10
    assert list(a.indices) == sorted(a.indices) and "first 10 held out" in a.notes[0]
    assert not np.array_equal(a.indices, protocol_subset(ds, holdout=10, max_images=20, seed=1).indices)
    with pytest.raises(OodbenchError, match="empty"):
        protocol_subset(ds.select(np.arange(0)))
    with pytest.raises(OodbenchError, match="leaves no images"):
        protocol_subset(ds, holdout=50)




# --- one folder loader, torchvision-exact --------------------------------------------------------------------


def _random_images(root, n, seed=0, ext=".png"):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(33, 120, 2))  # non-square, both up- and down-scaled sides
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i:03d}{ext}")
        sizes.append((w, h))
    return sizes


@pytest.mark.parametrize("size,resize", [(32, None), (32, 36), (64, 73)])
def test_folder_loader_matches_torchvision_transforms(tmp_path, size, resize):
    from torchvision import transforms

    from oodbench.data.folders import load_image_folder

    _random_images(tmp_path / "imgs", 50)
    ds = load_image_folder("mine", str(tmp_path), str(tmp_path / "cache"), path="imgs", size=size, resize=resize)
    tv = transforms.Compose([transforms.Resize(resize or size), transforms.CenterCrop(size)])
    expected = np.stack([np.asarray(tv(Image.open(tmp_path / "imgs" / f"{i:03d}.png").convert("RGB")))
                         for i in range(50)])
    assert ds.images.shape == (50, size, size, 3)
    np.testing.assert_array_equal(ds.images, expected)  # every pixel of every image
    again = load_image_folder("mine", str(tmp_path), str(tmp_path / "cache"), path=str(tmp_path / "imgs"),
                              size=size, resize=resize)  # absolute path, from the cache
    np.testing.assert_array_equal(again.images, expected)
    assert again.content_id == ds.content_id and "50 files, listing sha256" in ds.source


def test_one_image_extension_list():
    import oodbench.data.folders as folders
    import oodbench.data.imagenet as imagenet
    from oodbench.data.lazy import IMAGE_EXTENSIONS, list_images

    assert not hasattr(folders, "_IMAGE_EXT") and folders.list_images is imagenet.list_images is list_images
    assert {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)


def _with_bad_files(root, n_bad):
    _random_images(root, 6)
    for i in range(n_bad):
        (root / f"bad{i}.jpg").write_bytes(b"not an image at all")
    return root


def test_bad_images_are_all_listed_then_fail_or_skip(tmp_path):
    from oodbench.data.folders import load_image_folder

    _with_bad_files(tmp_path / "imgs", 5)
    cache = tmp_path / "cache"
    with pytest.raises(OodbenchError) as err:
        load_image_folder("mine", str(tmp_path), str(cache), path="imgs")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("5 unreadable image file(s) in OOD set mine under")
    assert "bad0.jpg, bad1.jpg, bad2.jpg, ..." in msg and "on_bad_image=skip" in msg
    listing = re.search(r"full list: (\S+)\)", msg).group(1)
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in open(listing).read().splitlines()) == [
        f"bad{i}.jpg" for i in range(5)]
    ds = load_image_folder("mine", str(tmp_path), str(cache), path="imgs", on_bad_image="skip")
    assert len(ds) == 6 and ds.n_total == 11 and ds.notes == ("5 unreadable file(s) skipped",)
    assert ds.indices.tolist() == [0, 1, 2, 3, 4, 5]  # positions in the sorted listing (bad* sort last)
    with pytest.raises(OodbenchError, match="on_bad_image='ignore': choose from fail, skip"):
        load_image_folder("mine", str(tmp_path), str(cache), path="imgs", on_bad_image="ignore")


def test_lazy_folder_sets_check_headers_too(tmp_path):
    from oodbench.data.imagenet import load_ood_folder

    _with_bad_files(tmp_path / "ood", 2)
    with pytest.raises(OodbenchError, match=r"^2 unreadable image file\(s\) in OOD set big .*bad0.jpg, bad1.jpg "):
        load_ood_folder("big", "ood", str(tmp_path), str(tmp_path / "cache"))
    ds = load_ood_folder("big", "ood", str(tmp_path), str(tmp_path / "cache"), on_bad_image="skip")
    assert len(ds) == 6 and ds.notes == ("2 unreadable file(s) skipped",)


def test_folder_ood_set_bad_image_exits_2_with_one_line(run_cli, tmp_path):
    _with_bad_files(tmp_path / "imgs", 3)
    args = ["arch.weights=dice", "ood=folder", f"ood.folder.path={tmp_path / 'imgs'}", "protocol.max_id=20",
            "protocol.bootstrap=0"]
    proc = run_cli(*args, results=tmp_path / "res")
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("oodbench: error:")]
    assert len(err) == 1 and "3 unreadable image file(s) in OOD set folder" in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    proc = run_cli(*args, "ood.folder.on_bad_image=skip", results=tmp_path / "res")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "folder      6" in proc.stdout or " 6 " in proc.stdout


def test_archive_decoder_option(tmp_path):
    """decoder=libjpeg<v> decodes the archive's JPEGs with that IJG build: 6b is Pillow's libjpeg-turbo bit for
    bit; 9b upsamples 4:2:0 chroma otherwise; the default keeps the content id of every stored row."""
    pytest.importorskip("jpeglib", reason="optional extra: pip install -e .[jpeg]")
    from PIL import Image

    rng = np.random.default_rng(0)
    src = tmp_path / "src" / "set"
    src.mkdir(parents=True)
    for i in range(6):  # smooth colour gradients with noise, saved as q75 4:2:0 JPEGs like ODIN's sets
        base = np.linspace(0, 255, 32)[None, :, None] * rng.uniform(0.3, 1, (1, 1, 3))
        img = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(src / f"{i}.jpg", quality=75, subsampling=2)
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="set")
    kw = dict(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), member_glob="set/*")
    pil = load_archive_set("toy", archive.name, **kw)
    v6 = load_archive_set("toy", archive.name, decoder="libjpeg6b", **kw)
    v9 = load_archive_set("toy", archive.name, decoder="libjpeg9b", **kw)
    assert np.array_equal(pil.images, v6.images) and not np.array_equal(pil.images, v9.images)
    assert pil.content_id.endswith(":None") and v9.content_id.endswith(":None:libjpeg9b")
    assert "decoded with libjpeg9b" in v9.source
    with pytest.raises(OodbenchError, match="unknown decoder 'libjpeg99'; use pillow or libjpeg<v>"):
        load_archive_set("toy", archive.name, decoder="libjpeg99", **kw)


def test_an_archive_subset_decodes_only_its_images(shared_data, tmp_path):
    """Issue 22: the protocol's subset is known before decoding; an empty cache decodes only the images a run
    scores (one pass over the archive), and the set is described — count, size, content id — decoding nothing."""
    from oodbench.data.base import protocol_subset
    from oodbench.data.deferred import DeferredImages

    kw = dict(archive="ood/iSUN.tar.gz", data_dir=str(shared_data), cache_dir=str(tmp_path),
              member_glob="iSUN/iSUN_patches/*")
    full = load_archive_set("isun", **kw)
    assert isinstance(full.images, DeferredImages) and full.images.shape == (8925, 32, 32, 3)
    sub = protocol_subset(full, max_images=50, seed=0)
    assert not list((tmp_path / "prepared").glob("*.npy")) and not sub.images.made
    pixels = np.asarray(sub.images)
    (npy,) = (tmp_path / "prepared").glob("*.npy")
    assert np.load(npy).shape == (50, 32, 32, 3) and pixels.shape == (50, 32, 32, 3)
    every = np.asarray(load_archive_set("isun", **{**kw, "cache_dir": str(tmp_path / "all")}).images)
    assert np.array_equal(every[sub.indices], pixels)  # the same pixels as decoding every image
