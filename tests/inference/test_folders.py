"""Folders of pairs in one process: pairing by name, outputs planned and checked up front."""

import numpy as np
import pytest
import rasterio
from PIL import Image

from dsifn.errors import ConfigError, DataError, InputError, OutputExistsError
from dsifn.inference.folders import pair_folders, plan_outputs, predict_folders
from dsifn.inference.options import SceneOptions
from dsifn.inference.scene import predict_scene
from fixtures.rasters import uint16_scene, write_geotiff
from fixtures.runners import LocalRunner

OPTIONS = {"scale": 10000, "progress": False}


def _png(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(path)


def _folders(tmp_path, names, seed=0):
    before, after = tmp_path / "t1", tmp_path / "t2"
    before.mkdir(exist_ok=True), after.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        for k, folder in enumerate((before, after)):
            if name.endswith(".png"):
                _png(folder / name, seed + 2 * i + k)
            else:
                write_geotiff(folder / name, uint16_scene(seed + 2 * i + k, 20, 28))
    return before, after


def test_pairs_are_matched_by_name_and_get_a_map_of_their_kind(tmp_path):
    before, after = _folders(tmp_path, ["a.tif", "b.png"])
    write_geotiff(before / "only1.tif", uint16_scene(9, 20, 28))
    _png(after / "only2.png", 9)
    (before / "notes.txt").write_text("not an image")
    pairs = pair_folders(before, after)
    assert pairs.matched == ("a.tif", "b.png")
    assert (pairs.only_before, pairs.only_after) == (("only1.tif",), ("only2.png",))
    jobs = plan_outputs(pairs, tmp_path / "out", SceneOptions()).jobs
    assert [(j.before.name, j.after.parent.name, j.out.name) for j in jobs] == [
        ("a.tif", "t2", "a.tif"),
        ("b.png", "t2", "b.png"),
    ]


def test_planning_refuses_before_any_work(tmp_path):
    before, after = _folders(tmp_path, ["a.tif", "a.tiff", "c.png"])
    with pytest.raises(InputError, match=r"a.tif and a.tiff would both write .*a.tif"):
        plan_outputs(pair_folders(before, after), tmp_path / "out", SceneOptions())
    (before / "a.tiff").unlink()
    pairs = pair_folders(before, after)
    with pytest.raises(ConfigError, match="PNG holds one map"):
        plan_outputs(pairs, tmp_path / "out", SceneOptions(mode="both"))
    with pytest.raises(ConfigError, match="Cloud-Optimized"):
        plan_outputs(pairs, tmp_path / "out", SceneOptions(cog=True))
    with pytest.raises(InputError, match="is not a folder"):
        pair_folders(before, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no file names"):
        plan_outputs(pair_folders(before, empty), tmp_path / "out", SceneOptions())


def test_an_existing_map_stops_the_run_before_any_pair_is_predicted(tmp_path):
    before, after = _folders(tmp_path, ["a.tif", "b.tif", "c.tif"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.tif").write_bytes(b"an earlier map")
    runner = LocalRunner()
    with pytest.raises(OutputExistsError, match=r"c\.tif"):
        predict_folders(runner, before, after, out, **OPTIONS)
    assert runner.calls == 0
    assert sorted(p.name for p in out.iterdir()) == ["c.tif"]


def test_folders_give_the_maps_of_predict_scene_in_name_order(tmp_path):
    before, after = _folders(tmp_path, ["b.tif", "a.tif", "c.png"])
    seen, said = [], []
    done = predict_folders(
        LocalRunner(),
        before,
        after,
        tmp_path / "out",
        on_pairs=lambda pairs: said.append(pairs.matched),
        on_result=seen.append,
        **OPTIONS,
    )
    assert said == [("a.tif", "b.tif", "c.png")]
    assert [r.output.name for r in done.results] == ["a.tif", "b.tif", "c.png"]
    assert seen == list(done.results)
    assert (done.rank, done.world_size) == (0, 1)
    assert done.tiles == sum(r.tiles for r in done.results) == 3
    for name in ("a.tif", "b.tif"):
        alone = tmp_path / f"alone-{name}"
        predict_scene(LocalRunner(), before / name, after / name, alone, **OPTIONS)
        with rasterio.open(alone) as want, rasterio.open(tmp_path / "out" / name) as got:
            np.testing.assert_array_equal(got.read(), want.read())
            assert got.tags() == want.tags()


def test_one_file_outputs_are_refused_for_folders(tmp_path):
    before, after = _folders(tmp_path, ["a.tif"])
    for extra in ({"polygons": tmp_path / "p.gpkg"}, {"quicklook": tmp_path / "q.png"}):
        with pytest.raises(ConfigError, match="pair by pair"):
            predict_folders(LocalRunner(), before, after, tmp_path / "out", **extra, **OPTIONS)
    assert not (tmp_path / "out").exists()


def test_a_failing_pair_stops_the_folder_with_its_error(tmp_path):
    before, after = _folders(tmp_path, ["a.tif", "b.tif", "c.tif"])
    write_geotiff(after / "b.tif", uint16_scene(5, 12, 28))  # another extent
    with pytest.raises(DataError, match=r"extent.*align=True"):
        predict_folders(LocalRunner(), before, after, tmp_path / "out", **OPTIONS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif"]


def test_splits_cover_every_pair_once_for_any_count():
    from dsifn.inference.folders import Share

    names = tuple(f"p{i}.tif" for i in range(7))  # an odd number of pairs
    for count in (1, 2, 3):
        shares = [Share(count, index).of(names) for index in range(count)]
        assert sorted(n for share in shares for n in share) == sorted(names)
        assert sum(len(share) for share in shares) == len(names)  # disjoint
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert shares == [Share(count, index).of(names) for index in range(count)]  # fixed
    for count, index in ((0, 0), (3, 3), (2, -1)):
        with pytest.raises(ConfigError, match=r"num_splits|split_index"):
            Share(count, index)


def test_an_interrupted_folder_run_resumes_to_the_same_maps(tmp_path):
    names = [f"p{i}.tif" for i in range(5)]
    before, after = _folders(tmp_path, names)
    whole = tmp_path / "whole"
    predict_folders(LocalRunner(), before, after, whole, **OPTIONS)
    runner = LocalRunner()
    runner.fail_after = 2  # the third pair's tile fails: two maps are written, then it stops
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_folders(runner, before, after, cut, **OPTIONS)
    assert sorted(p.name for p in cut.glob("*.tif")) == ["p0.tif", "p1.tif"]
    (cut / "p2.tif").write_bytes(b"II*\x00 a partial map from elsewhere")
    with pytest.raises(OutputExistsError, match=r"p2\.tif exists"):  # partial: not complete
        predict_folders(LocalRunner(), before, after, cut, skip_existing=True, **OPTIONS)
    (cut / "p2.tif").unlink()
    resumed = LocalRunner()
    done = predict_folders(resumed, before, after, cut, skip_existing=True, **OPTIONS)
    assert done.skipped == ("p0.tif", "p1.tif") and len(done.results) == 3
    assert resumed.calls == 3  # one tile per pair, only the three missing pairs
    for name in names:
        with rasterio.open(whole / name) as a, rasterio.open(cut / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(ConfigError, match="not both"):
        predict_folders(LocalRunner(), before, after, cut, skip_existing=True, overwrite=True)


def test_array_jobs_predict_disjoint_shares_that_make_the_whole_run(tmp_path):
    from dsifn.inference.folders import Share

    names = [f"p{i}.tif" for i in range(5)]
    before, after = _folders(tmp_path, names)
    out = tmp_path / "out"
    written = []
    for index in range(3):
        done = predict_folders(LocalRunner(), before, after, out, share=Share(3, index), **OPTIONS)
        written.append([r.output.name for r in done.results])
    assert written == [["p0.tif"], ["p1.tif", "p2.tif"], ["p3.tif", "p4.tif"]]


def test_maps_at_another_thread_count_differ_by_rounding_only(tmp_path):
    # What the README promises of torchrun's maps against one process: byte for byte at the
    # same thread count, within 1e-5 at another (the reductions sum in another order).
    import torch

    from dsifn import DSIFN
    from dsifn.inference.runner import TorchRunner

    before, after = _folders(tmp_path, ["a.tif"])
    torch.manual_seed(0)
    runner = TorchRunner(DSIFN(encoder_weights=None), device="cpu", precision="fp32")
    maps = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 1):
            torch.set_num_threads(count)
            out = tmp_path / f"threads{count}-{len(maps)}"
            predict_folders(runner, before, after, out, **OPTIONS)
            with rasterio.open(out / "a.tif") as src:
                maps[(count, len(maps))] = src.read(1)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(maps[(1, 0)], maps[(1, 2)])  # same threads: identical
    assert np.abs(maps[(1, 0)] - maps[(2, 1)]).max() < 1e-5
