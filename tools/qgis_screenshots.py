"""Screenshots of the QGIS plugin for the README, taken headless under Xvfb.

Run with dsifn's Python, with a model from ``dsifn demo`` (which trains on the same kind of
synthetic scenes)::

    dsifn demo --out dsifn-demo
    python tools/qgis_screenshots.py --checkpoint dsifn-demo/run/best.pt --out docs/images

It writes a synthetic before/after pair (GeoTIFF, UTM, 0.5 m pixels), installs the plugin into
a throwaway QGIS profile with ``dsifn qgis install``'s code, and runs QGIS under ``xvfb-run``
with ``tools/qgis_screenshots_gui.py``, which grabs the algorithm's dialog, runs the algorithm
as the toolbox does and renders the styled change map over the before image. Needs QGIS and
``xvfb`` (``apt-get install qgis python3-qgis qgis-providers xvfb``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from dsifn.data.synthetic import SyntheticConfig, generate_pair
from dsifn.qgis.install import dsifn_executable, install_plugin

GUI_SCRIPT = Path(__file__).with_name("qgis_screenshots_gui.py")
SHOTS = ("qgis-dialog.png", "qgis-change-map.png")
# A neighbourhood of 192 m: the demo's objects (buildings of 5-11 m, roads) on a larger scene.
SCENE = SyntheticConfig(
    size=384, buildings=(35, 55), building_size=(0.03, 0.06), roads=(2, 3), illumination=0.15
)


def write_scene(folder: Path, seed: int) -> tuple[Path, Path]:
    """The before and after GeoTIFFs of one synthetic scene (RGB, EPSG:32633, 0.5 m)."""
    pair = generate_pair(SCENE, seed)
    paths = folder / "before.tif", folder / "after.tif"
    profile = {
        "driver": "GTiff",
        "width": SCENE.size,
        "height": SCENE.size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500000.0, 4600000.0, 0.5, 0.5),
        "photometric": "RGB",
    }
    for path, image in zip(paths, (pair.t1, pair.t2), strict=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
    return paths


def take(checkpoint: Path, out: Path, seed: int, qgis: str) -> list[Path]:
    """Make the scene, install the plugin, run QGIS headless; return the PNGs written."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dsifn-shots-") as tmp:
        work = Path(tmp)
        before, after = write_scene(work, seed)
        install_plugin(executable=dsifn_executable(), profiles=work / "config" / "profiles")
        spec = {"before": str(before), "after": str(after), "model": str(checkpoint.absolute())}
        spec["out"] = str(out.resolve())
        env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(work / "config"))
        env["DSIFN_SHOTS"] = json.dumps(spec)
        argv = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", qgis, "--nologo"]
        argv += ["--noversioncheck", "--code", str(GUI_SCRIPT)]
        subprocess.run(argv, env=env, timeout=600, check=True)
    shots = [out / name for name in SHOTS]
    missing = [str(p) for p in shots if not p.is_file()]
    if missing:
        raise SystemExit(f"QGIS wrote no {', '.join(missing)}")
    for shot in shots:  # Qt's PNGs, losslessly made smaller for the repository
        with Image.open(shot) as image:
            image.load()
        image.save(shot, optimize=True)
    return shots


def main() -> None:
    """Parse the command line and take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a model from dsifn demo")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="[docs/images]")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic scene [7]")
    parser.add_argument("--qgis", default="qgis", help="the QGIS program [qgis]")
    args = parser.parse_args()
    for path in take(args.checkpoint, args.out, args.seed, args.qgis):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
