"""What evaluate scores is the map predict writes, and a scene is decided the same on every road."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from dsifn.inference.folders import predict_folders
from dsifn.inference.options import SceneOptions
from dsifn.inference.scene import predict_scene
from fixtures.rasters import write_geotiff

SIZE = 96
THRESHOLD = "0.5"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A LEVIR-style test split of one GeoTIFF pair with no data on one date only, an alpha-like
    hole on the other, and a model whose probabilities spread on both sides of the threshold.
    """
    root = tmp_path_factory.mktemp("road")
    rng = np.random.default_rng(3)
    t1 = rng.integers(1, 4000, (3, SIZE, SIZE)).astype(np.uint16)
    t2 = t1.copy()
    t2[:, 30:60, 40:70] = 3900  # the change
    t2[:, 80:88, :] = 0  # T2 has no data on a strip that T1 covers
    t1[:, :, 5:9] = 0  # and T1 on a band of columns
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[30:60, 40:70] = 1
    data = root / "data"
    for split in ("train", "val", "test"):
        write_geotiff(data / split / "A" / "p.tif", t1)
        write_geotiff(data / split / "B" / "p.tif", t2)
        write_geotiff(data / split / "label" / "p.tif", label, nodata=None)
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None, dropout=0.0).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # spread the untrained logits around 0 so both decisions occur
        logits = model(x, x.flip(0)).stride1
        model.heads[-1].weight.mul_(4.0 / logits.std())
        model.heads[-1].bias.mul_(4.0 / logits.std())
        model.heads[-1].bias.sub_(model(x, x.flip(0)).stride1.median())
    checkpoint = save_checkpoint(root / "model.pt", model)
    return {"root": root, "data": data, "checkpoint": checkpoint}


COMMON = ["--device", "cpu", "--precision", "fp32", "--tile-size", "64"]


def test_evaluate_masks_equal_predict_masks_and_nodata_is_where_a_date_has_none(pair, capsys):
    out = pair["root"] / "eval"
    argv = ["evaluate", "--checkpoint", str(pair["checkpoint"]), "--data", str(pair["data"])]
    assert main([*argv, "--out", str(out), "--save-masks", "--threshold", THRESHOLD, *COMMON]) == 0
    test = pair["data"] / "test"
    change = pair["root"] / "change.tif"
    argv = ["predict", "--checkpoint", str(pair["checkpoint"]), "--before", str(test / "A/p.tif")]
    argv += ["--after", str(test / "B/p.tif"), "--out", str(change), "--mode", "mask", "--quiet"]
    assert main([*argv, "--threshold", THRESHOLD, *COMMON]) == 0
    with Image.open(out / "masks" / "p.png") as saved:
        grey, alpha = np.moveaxis(np.asarray(saved), -1, 0)
    with rasterio.open(change) as src:
        predicted, nodata = src.read(1), src.nodata
    has_data = np.ones((SIZE, SIZE), bool)
    has_data[80:88, :] = False
    has_data[:, 5:9] = False
    np.testing.assert_array_equal(predicted != nodata, has_data)  # nodata exactly there
    np.testing.assert_array_equal(alpha == 255, has_data)  # the saved mask agrees
    np.testing.assert_array_equal((grey == 255)[has_data], (predicted == 1)[has_data])
    assert 0 < (predicted == 1).sum() < has_data.sum()  # both decisions occur


def test_a_scene_is_the_same_through_the_cli_predict_scene_and_predict_folders(pair, tmp_path):
    test = pair["data"] / "test"
    before, after = test / "A" / "p.tif", test / "B" / "p.tif"
    argv = ["predict", "--checkpoint", str(pair["checkpoint"]), "--before", str(before)]
    argv += ["--after", str(after), "--out", str(tmp_path / "cli.tif"), "--mode", "both"]
    argv += ["--overlap", "16", "--dtype", "uint8", "--quiet", *COMMON]
    assert main(argv) == 0
    options = SceneOptions(
        tile_size=64,
        overlap=16,
        mode="both",
        dtype="uint8",
        progress=False,
        device="cpu",
        precision="fp32",
    )
    predict_scene(pair["checkpoint"], before, after, tmp_path / "api.tif", options)
    (tmp_path / "d1").mkdir(), (tmp_path / "d2").mkdir()
    (tmp_path / "d1" / "p.tif").symlink_to(before)
    (tmp_path / "d2" / "p.tif").symlink_to(after)
    predict_folders(pair["checkpoint"], tmp_path / "d1", tmp_path / "d2", tmp_path / "dir", options)
    maps = []
    for path in (tmp_path / "cli.tif", tmp_path / "api.tif", tmp_path / "dir" / "p.tif"):
        with rasterio.open(path) as src:
            tags = {k: v for k, v in src.tags().items() if k not in ("before", "after")}
            maps.append((src.read(), tags, src.profile))
    for pixels, tags, profile in maps[1:]:
        np.testing.assert_array_equal(pixels, maps[0][0])
        assert tags == maps[0][1] and profile == maps[0][2]
