"""Tiny LEVIR-style datasets for the training tests, generated with a fixed seed.

Run as a script to write one: ``python tests/training/train_fixtures.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dsifn.training.config import TrainConfig, load_config


def write_levir(root: Path, *, size: int = 32, counts=(4, 2, 2), seed: int = 0) -> Path:
    """Write {train,val,test}/{A,B,label}/*.png: T2 gains a bright square that is the label."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        for sub in ("A", "B", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            t1 = rng.integers(40, 120, size=(size, size, 3), dtype=np.uint8)
            t2 = np.clip(t1.astype(int) + rng.integers(-10, 10, size=t1.shape), 0, 255)
            t2 = t2.astype(np.uint8)
            label = np.zeros((size, size), dtype=np.uint8)
            side = int(rng.integers(size // 4, size // 2))
            y, x = rng.integers(0, size - side, size=2)
            t2[y : y + side, x : x + side] = 230
            label[y : y + side, x : x + side] = 255
            name = f"{split}_{i}.png"
            Image.fromarray(t1).save(root / split / "A" / name)
            Image.fromarray(t2).save(root / split / "B" / name)
            Image.fromarray(label).save(root / split / "label" / name)
    return root


def tiny_config(root: Path, *overrides: str) -> TrainConfig:
    """A config that trains in seconds on the CPU: no pretrained weights, batch 2, fp32."""
    return load_config(
        "default",
        [
            f"data.root={root}",
            "data.crop_size=null",
            "model.encoder_weights=null",
            "run.device=cpu",
            "run.precision=fp32",
            "run.num_workers=0",
            "run.batch_size=2",
            "run.deterministic=true",
            "run.tensorboard=false",
            "schedule.epochs=2",
            "optim.lr=1e-3",
            *overrides,
        ],
    )


if __name__ == "__main__":
    print(write_levir(Path(sys.argv[1])))
