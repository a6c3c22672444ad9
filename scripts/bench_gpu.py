"""GPU benchmark (``scripts/bench_gpu.sh`` runs it on a lent GPU machine; tested on the CPU with tiny sizes):

1. extraction (``oodbench.runner.forward.extract``: features + logits, batches decoded by DataLoader workers from an
   image folder of JPEGs) against the bare forward loop over pre-decoded tensors on the device, for DenseNet-BC-100 at
   32 px and ResNet-50 at 224 px (random weights), batch 256 and 512, in fp32, TF32 and bf16 autocast (the bare loop;
   extraction runs fp32 or TF32, its recorded numeric modes); target ≥ 0.9 of the bare loop's images/s;
2. the whole post-hoc table (every detector config of the post-hoc page but ODIN, through ``oodbench.evaluate``)
   against one bare forward pass over the same images.
Writes a Markdown report and a CSV of the rows next to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import csv  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _folder(root: Path, n: int, size: int) -> list[Path]:
    """``n`` JPEG files of ``size`` px (seeded noise): the decoding work a real image folder gives the workers."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p, quality=90)
        out.append(p)
    return out


def extraction(args: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]]) -> list[str]:
    from oodbench.data.base import ImageSet
    from oodbench.data.lazy import FolderImages
    from oodbench.models.normalized import Classifier
    from oodbench.models.registry import build_arch
    from oodbench.runner.forward import extract, set_tf32

    lines = ["## Extraction vs the bare forward loop", "",
             "| network | batch | mode | bare img/s | extract img/s (workers) | ratio |", "|---|---|---|---|---|---|"]
    nets = {"densenet100": (32, 36, args.n_images), "resnet50": (224, 256, args.resnet_images)}
    for arch, (size, resize, n) in nets.items():
        net = Classifier(build_arch(arch, 10 if arch == "densenet100" else 1000), (0.5,) * 3, (0.25,) * 3)
        net = net.to(device).eval()
        with tempfile.TemporaryDirectory() as tmp:
            files = _folder(Path(tmp), n, resize)
            folder = ImageSet("folder", FolderImages(files, size=size, resize=resize), None, "bench", n,
                              np.arange(n), "bench")
            x_all = torch.from_numpy(np.asarray(folder.images[0:n])).permute(0, 3, 1, 2).float().div(255).to(device)
            for bs in args.batches:
                for mode in ("fp32", "tf32", "bf16"):
                    set_tf32(mode == "tf32")
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                        net(x_all[:bs])
                        _sync(device)
                        t = time.perf_counter()
                        for i in range(0, n, bs):
                            net(x_all[i:i + bs])
                        _sync(device)
                        bare = n / (time.perf_counter() - t)
                    ours: float | str = "—"
                    if mode != "bf16":  # extraction's numeric modes: fp32 (default) and TF32 (tf32=true)
                        t = time.perf_counter()
                        extract(net, folder, device, bs, args.workers)
                        _sync(device)
                        ours = n / (time.perf_counter() - t)
                    ratio = f"{ours / bare:.2f}" if isinstance(ours, float) else ""
                    shown = f"{ours:.0f} ({args.workers})" if isinstance(ours, float) else "—"
                    lines.append(f"| {arch} {size} px | {bs} | {mode} | {bare:.0f} | {shown} | {ratio} |")
                    rows.append({"section": "extraction", "arch": arch, "batch": bs, "mode": mode, "bare": bare,
                                 "extract": ours if isinstance(ours, float) else ""})
            set_tf32(False)
    return lines + [""]


def table(args: argparse.Namespace, device: torch.device, rows: list[dict[str, Any]]) -> list[str]:
    import oodbench
    from oodbench.api import _builtin
    from oodbench.data.base import protocol_subset
    from oodbench.models.registry import load_classifier
    from oodbench.tables.engine import load_spec

    block = next(b for b in load_spec("posthoc_cifar")["blocks"] if b["kind"] == "grid")
    configs = [d for d in block["detectors"] if d not in ("odin", "temp_scaling")]
    sets = ["isun", "lsun_resize"]
    t = time.perf_counter()
    oodbench.evaluate("dice_densenet_cifar10", detectors=configs, ood=sets, max_id=args.table_n,
                      max_ood=args.table_n, max_fit=args.table_fit, device=str(device), cache=False,
                      batch_size=args.batches[-1])
    _sync(device)
    whole = time.perf_counter() - t
    m, _ = load_classifier("dice_densenet_cifar10")
    m = m.to(device).eval()
    images = [protocol_subset(_builtin("id", "cifar10", "cifar10"), max_images=args.table_n),
              protocol_subset(_builtin("id", "cifar10", "cifar10", split="train"), max_images=args.table_fit),
              *(protocol_subset(_builtin("ood", s, "cifar10"), max_images=args.table_n) for s in sets)]
    x = torch.cat([torch.cat(list(s.batches(len(s)))) for s in images]).to(device)
    with torch.no_grad():
        m(x[:8])
        _sync(device)
        t = time.perf_counter()
        for i in range(0, len(x), args.batches[-1]):
            m(x[i:i + args.batches[-1]])
        _sync(device)
    bare = time.perf_counter() - t
    rows.append({"section": "table", "configs": len(configs), "whole_s": whole, "bare_pass_s": bare,
                 "images": len(x)})
    return ["## The whole post-hoc table vs one bare forward pass", "",
            f"{len(configs)} detector configs (the post-hoc page's, ODIN left out) on {len(x)} images (ID "
            f"{args.table_n}, fit {args.table_fit}, {', '.join(sets)} {args.table_n} each), `oodbench.evaluate` "
            f"from an empty cache (process already started): {whole:.1f} s; the bare forward loop over the same "
            f"images on the device: {bare:.1f} s ({whole / bare:.1f}×: the table's decoding, fits, scores and "
            "metrics beside the forward).", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n-images", type=int, default=4096, help="DenseNet images")
    ap.add_argument("--resnet-images", type=int, default=1024)
    ap.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[256, 512])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--table-n", type=int, default=1000)
    ap.add_argument("--table-fit", type=int, default=5085)
    ap.add_argument("--out", type=Path, default=Path("results/bench_gpu.md"))
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    cmd = f"python scripts/bench_gpu.py {' '.join(sys.argv[1:])}"
    lines = [f"# oodbench GPU benchmark — {name}", "", f"Command: `{cmd}` (torch {torch.__version__}).", ""]
    lines += extraction(args, device, rows)
    lines += table(args, device, rows)
    lines.append(f"Whole run: {time.perf_counter() - t0:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
