"""Peak memory of `predict_scene` on a large synthetic GeoTIFF pair, and tiled-vs-whole drift.

Usage:
    python benchmarks/scene_memory.py                 # 4096 x 4096, cheap local stand-in model
    python benchmarks/scene_memory.py --full          # 20000 x 20000 (the issue's target)
    python benchmarks/scene_memory.py --dsifn         # 1024 x 1024 with the real DSIFN
    python benchmarks/scene_memory.py --compare-whole # real DSIFN: tiled vs whole-image output
        [--size 768 --tile 384 --overlap 96]
    python benchmarks/scene_memory.py --write-pair DIR --size 1024 --dtype uint8
        # only write DIR/t1.tif and DIR/t2.tif, the scene of the README's `dsifn predict` timings

The pair is a compressed, tiled, 3-band uint16 GeoTIFF in UTM 33N, generated window by window
(never whole). Scene inference runs at default settings (512 tiles, 64 overlap, batch 1) on
the CPU. The stand-in is a purely local two-layer convolution: it measures what the tiler,
blender and windowed I/O hold, independent of the network; ``--dsifn`` adds the network's
activations for one batch. Peak RSS is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from dsifn import DSIFN
from dsifn.inference.runner import TorchRunner
from dsifn.inference.scene import predict_scene
from dsifn.testing import StandInRunner, write_pair


def rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calibrated_dsifn(t1: Path, t2: Path, runs: int = 4) -> DSIFN:
    # Random weights give near-constant outputs (every probability about 0.45), which would
    # hide any tiling drift: estimate BatchNorm statistics from the scene (no gradients, no
    # labels) so that the outputs spread out as a trained network's do.
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None, dropout=0.0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    norm = model.config.input_normalization
    with rasterio.open(t1) as a, rasterio.open(t2) as b, torch.no_grad():
        model.train()
        for i in range(runs):
            window = Window(64 * i, 64 * i, 128, 128)
            x1 = torch.from_numpy(np.clip(a.read(window=window) / 10000, 0, 1).astype(np.float32))
            x2 = torch.from_numpy(np.clip(b.read(window=window) / 10000, 0, 1).astype(np.float32))
            model(norm(x1)[None], norm(x2)[None])
    return model.eval()


def compare_whole(size: int, tile: int, overlap: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t1, t2 = write_pair(folder, size)
        runner = TorchRunner(calibrated_dsifn(t1, t2), device="cpu", precision="fp32")
        predict_scene(
            runner,
            t1,
            t2,
            folder / "c.tif",
            tile_size=tile,
            overlap=overlap,
            scale=10000,
        )
        with rasterio.open(folder / "c.tif") as src:
            tiled = src.read(1)

        def load(path: Path) -> np.ndarray:
            with rasterio.open(path) as src:
                x = np.clip(src.read().astype(np.float32) / 10000, 0, 1)
            return runner.normalization(torch.from_numpy(x)).numpy()[None]

        whole = runner(load(t1), load(t2))[0, 0]
    diff = np.abs(tiled - whole)
    inner = diff[16:-16, 16:-16]
    print(
        f"real DSIFN (random weights, BatchNorm calibrated on the scene, eval), {size}x{size}, "
        f"tiles {tile}, overlap {overlap}"
    )
    print(
        f"  whole-image probabilities: mean {whole.mean():.4f}, std {whole.std():.4f}, "
        f"range {whole.min():.4f}..{whole.max():.4f}"
    )
    print(
        f"  |tiled - whole|: max {diff.max():.5f}, mean {diff.mean():.6f}; away from the "
        f"border (16 px): max {inner.max():.5f}, mean {inner.mean():.6f}, 99th percentile "
        f"{np.percentile(inner, 99):.5f}; pixels whose 0.5 decision differs: "
        f"{np.mean((tiled >= 0.5) != (whole >= 0.5)) * 100:.3f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="scene side [4096; 20000 with --full]")
    parser.add_argument("--full", action="store_true", help="the 20000 x 20000 target scene")
    parser.add_argument("--dsifn", action="store_true", help="run the real DSIFN (slow on CPU)")
    parser.add_argument("--compare-whole", action="store_true", help="tiled vs whole drift")
    parser.add_argument("--folder", help="where to write the scene [a temporary folder]")
    parser.add_argument("--tile", type=int, default=128, help="tile side for --compare-whole")
    parser.add_argument("--overlap", type=int, default=32, help="overlap for --compare-whole")
    parser.add_argument("--write-pair", help="only write DIR/t1.tif and DIR/t2.tif, then stop")
    parser.add_argument("--dtype", default="uint16", choices=("uint8", "uint16"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.write_pair:
        folder, size = Path(args.write_pair), args.size or 1024
        t1, t2 = write_pair(folder, size, dtype=args.dtype)
        print(f"wrote {t1} and {t2} ({size} x {size}, {args.dtype})")
        return
    if args.compare_whole:
        compare_whole(args.size or 384, args.tile, args.overlap)
        return
    size = args.size or (20000 if args.full else 1024 if args.dsifn else 4096)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        t1, t2 = write_pair(folder, size)
        made = time.perf_counter() - start
        print(
            f"scene {size} x {size} x 3 uint16 pair written window by window in {made:.0f} s; "
            f"raw size per date {3 * 2 * size * size / 2**30:.2f} GiB; "
            f"peak RSS so far {rss_mib():.0f} MiB"
        )
        if args.dsifn:
            torch.manual_seed(0)
            runner: Any = TorchRunner(DSIFN(encoder_weights=None), device="cpu", precision="fp32")
        else:
            runner = StandInRunner(3, "difference")
        before = rss_mib()
        start = time.perf_counter()
        result = predict_scene(
            runner,
            t1,
            t2,
            folder / "change.tif",
            polygons=folder / "change.gpkg",
            quicklook=folder / "look.png",
        )
        took = time.perf_counter() - start
        print(
            f"model: {'DSIFN' if args.dsifn else 'local stand-in'}; {result.tiles} tiles of 512 "
            f"(overlap 64, batch 1) in {took:.0f} s; {result.polygon_count} polygons"
        )
        print(
            f"peak RSS before predict {before:.0f} MiB, after {rss_mib():.0f} MiB "
            f"({rss_mib() / 1024:.2f} GiB)"
        )


if __name__ == "__main__":
    main()
