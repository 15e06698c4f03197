from __future__ import annotations

import numpy as np
import yaml

from dsifn.cli.main import main
from fixtures.datasets import FOLDERS, build_layout
from fixtures.rasters import write_image


def run(capsys, *argv):
    status = main(["stats", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return status, out, err


def test_stats_prints_layout_numbers_and_a_yaml_snippet(tmp_path, capsys):
    written = build_layout(tmp_path, "sysu", {"train": 3, "val": 1})
    status, out, err = run(capsys, "--data", str(tmp_path))
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"found SYSU-CD layout (time1/time2/label) in {tmp_path} with splits train (3 pairs), "
        "val (1)"
    )
    assert lines[1] == "split train: 3 of 3 pairs, both dates, values scaled to [0, 1]"
    table = [line.split() for line in lines[3:6]]
    pixels = (
        np.concatenate([np.stack([t1, t2]) for t1, t2, _ in written["train"].values()]).astype(
            np.float64
        )
        / 255.0
    )
    expected_mean = pixels.mean(axis=(0, 2, 3))
    expected_std = pixels.std(axis=(0, 2, 3))
    for band, (number, mean, std) in enumerate(table):
        assert int(number) == band + 1
        assert abs(float(mean) - expected_mean[band]) < 1e-6
        assert abs(float(std) - expected_std[band]) < 1e-6
    snippet = yaml.safe_load(out[out.index("model:") :])
    np.testing.assert_allclose(snippet["model"]["normalization"]["mean"], expected_mean, atol=1e-6)
    np.testing.assert_allclose(snippet["model"]["normalization"]["std"], expected_std, atol=1e-6)


def test_stats_with_bands_scale_and_split(tmp_path, capsys):
    rng = np.random.default_rng(5)
    folders = tuple(tmp_path / "test" / n for n in FOLDERS["levir"])
    t1 = rng.integers(0, 10000, (4, 16, 16), dtype=np.uint16)
    t2 = rng.integers(0, 10000, (4, 16, 16), dtype=np.uint16)
    write_image(folders[0] / "a.tif", t1)
    write_image(folders[1] / "a.tif", t2)
    write_image(folders[2] / "a.tif", np.zeros((16, 16), np.uint8))
    status, out, err = run(
        capsys, "--data", str(tmp_path), "--split", "test", "--bands", "4,3,2", "--scale", "10000"
    )
    assert status == 0, err
    rows = [line.split() for line in out.splitlines()[3:6]]
    values = np.stack([t1, t2])[:, [3, 2, 1]] / 10000.0
    assert [int(r[0]) for r in rows] == [4, 3, 2]
    np.testing.assert_allclose([float(r[1]) for r in rows], values.mean(axis=(0, 2, 3)), atol=1e-6)


def test_stats_on_a_bad_path_is_one_line_and_status_2(tmp_path, capsys):
    status, out, err = run(capsys, "--data", str(tmp_path / "nowhere"))
    assert status == 2
    assert out == ""
    assert err.strip() == f"dsifn stats: error: data folder not found: {tmp_path / 'nowhere'}"
    assert "Traceback" not in err


def test_stats_on_a_folder_without_a_dataset_or_split(tmp_path, capsys):
    status, _, err = run(capsys, "--data", str(tmp_path))
    assert status == 2
    assert err.startswith("dsifn stats: error: no dataset layout found") and err.count("\n") == 1
    build_layout(tmp_path, "levir", {"train": 1})
    status, _, err = run(capsys, "--data", str(tmp_path), "--split", "val")
    assert status == 2 and "split 'val' not found" in err and err.count("\n") == 1


def test_stats_on_broken_files_is_one_line(tmp_path, capsys):
    build_layout(tmp_path, "levir", {"train": 2})
    (tmp_path / "train" / "A" / "tile_1.png").write_bytes(b"not an image")
    status, _, err = run(capsys, "--data", str(tmp_path))
    assert status == 2
    assert "is not a readable image" in err and "tile_1.png" in err and err.count("\n") == 1


def test_stats_bad_band_list_is_a_usage_error(tmp_path, capsys):
    try:
        main(["stats", "--data", str(tmp_path), "--bands", "0,1"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("argparse accepted band 0")
    assert "takes 1-based band numbers" in capsys.readouterr().err
