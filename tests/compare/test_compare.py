"""``dsifn compare`` end to end on a tiny synthetic dataset: the table, the page, a resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from dsifn.cli.main import main
from dsifn.compare import OUTPUTS, CompareSettings, run_compare
from dsifn.data.synthetic import SyntheticConfig, write_synthetic_dataset
from dsifn.errors import DataError
from dsifn.inference.loading import load_runner
from dsifn.training.config import load_config
from fixtures.processes import become_rank, free_port
from fixtures.training import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

# A recipe that trains in seconds on a CPU (whole 32-pixel images, batch 2, fp32), validating
# after every step. TINY's DSIFN key sets the base config's model section, which the
# baselines' runs replace.
RECIPE = [*TINY, "validation.every_steps=1", "optim.lr=1e-3"]
MODELS = "fc_ef,fc_siam_diff"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(size=32, train=4, val=2, test=3)
    return write_synthetic_dataset(tmp_path_factory.mktemp("d") / "data", config, progress=False)


def _compare(data: Path, out: Path, *extra: str) -> int:
    argv = ["compare", "--data", str(data), "--out", str(out), "--models", MODELS]
    return main([*argv, "--no-progress", *extra, *RECIPE])


def _runs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "runs").iterdir())


@pytest.mark.slow  # four short trainings, each scored and timed: 10 to 30 s on 2 shared cores
def test_two_networks_two_seeds_write_a_complete_table_and_page(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert _compare(synthetic, out, "--seeds", "0,1", "--steps", "2", "--pairs", "2") == 0
    printed = capsys.readouterr().out
    assert "[4/4] fc_siam_diff-s1: FC-Siam-diff, seed 1: training" in printed
    assert _runs(out) == ["fc_ef-s0", "fc_ef-s1", "fc_siam_diff-s0", "fc_siam_diff-s1"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name

    # The table: one row per network, mean ± spread over the two seeds, size, cost, speeds.
    table = (out / "compare.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| FC-")]
    assert [r.split(" | ")[0] for r in rows] == ["| FC-EF", "| FC-Siam-diff"]
    assert "| 1.35 M |" in rows[0] and rows[0].count("±") == 6  # the six scores
    with (out / "compare.csv").open() as file:
        lines = list(csv.DictReader(file))
    assert [r["model"] for r in lines] == ["fc_ef", "fc_siam_diff"]
    assert lines[1]["seeds"] == "0 1" and int(lines[1]["parameters"]) == 1_350_001
    assert float(lines[0]["f1_std"]) >= 0 and float(lines[0]["inference_pairs_per_second"]) > 0
    data = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in data["runs"]] == ["fc_ef", "fc_siam_diff"] * 2
    assert data["models"][0]["steps"] == {"mean": 2.0, "std": 0.0}
    curve = data["models"][0]["pr_curve"]
    assert len(curve["recall"]) == len(curve["precision"]) > 1
    with Image.open(out / "compare.png") as picture:
        assert picture.format == "PNG" and picture.width > 800

    # Every run: an ordinary run directory, its threshold tuned on val and stored in best.pt.
    for run in out.glob("runs/*"):
        result = json.loads((run / "result.json").read_text())
        assert load_runner(run / "best.pt").contract.threshold == result["threshold"]
        assert result["training"]["steps"] == 2 and result["flops_size"] == 32
    # The same data, recipe and budget: the configs differ in their model sections only.
    configs = [load_config(out / "runs" / f"{m}-s1" / "config.yaml") for m in MODELS.split(",")]
    assert configs[0].data == configs[1].data and configs[0].run == configs[1].run
    assert configs[0].schedule == configs[1].schedule and configs[0].run.seed == 1

    # The page: the table, the picture, the same pairs predicted by both networks.
    page = (out / "compare.html").read_text()
    assert '<img src="compare.png"' in page and page.count('<tr><td class="name">FC-') == 2
    shown = sorted(p.name for p in (out / "pairs").iterdir())
    assert len(shown) == 2 * 5  # two pairs: before, after, reference and two error maps
    assert all(f'src="pairs/{name}"' in page for name in shown)

    # Again: refused without --overwrite; with it, the finished runs are kept as they are.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/last.pt")}
    assert _compare(synthetic, out, "--seeds", "0,1", "--steps", "2", "--pairs", "2") == 2
    assert "compare.html exists; pass --overwrite to replace it" in capsys.readouterr().err
    argv = ("--seeds", "0,1", "--steps", "2", "--pairs", "2", "--overwrite")
    assert _compare(synthetic, out, *argv) == 0
    assert "[1/4] fc_ef-s0: FC-EF, seed 0: finished before, kept" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/last.pt")} == stamps


class _Interrupt:
    """A training callback that stops the comparison at the ``at``-th validation round."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.rounds = 0

    def __call__(self, entry: dict[str, Any]) -> None:
        self.rounds += 1
        if self.rounds == self.at:
            raise KeyboardInterrupt


@pytest.mark.slow  # two short trainings, one interrupted and resumed: 5 to 15 s on 2 shared cores
def test_an_interrupted_comparison_resumes_and_keeps_finished_runs(
    synthetic: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    base = load_config("default", [f"data.root={synthetic}", *RECIPE])
    settings = CompareSettings(models=("fc_ef", "fc_siam_diff"), steps=2, pairs=1)
    # Each run validates after steps 1 and 2: the third round is the second run's first.
    with pytest.raises(KeyboardInterrupt):
        run_compare(
            base, settings, out, progress=False, log=lambda _: None, callbacks=[_Interrupt(3)]
        )
    first, second = out / "runs" / "fc_ef-s0", out / "runs" / "fc_siam_diff-s0"
    assert (first / "result.json").is_file() and not (second / "result.json").exists()
    interrupted = torch.load(second / "last.pt", weights_only=True)["resume"]["progress"]
    assert interrupted["step"] == 1
    assert not any((out / name).exists() for name in OUTPUTS)
    finished = (first / "result.json").read_bytes(), (first / "last.pt").stat().st_mtime_ns

    # Another budget is another comparison: refused before any training.
    longer = CompareSettings(models=("fc_ef", "fc_siam_diff"), steps=3, pairs=1)
    with pytest.raises(FileExistsError, match="holds a run of another configuration"):
        run_compare(base, longer, out, progress=False, log=lambda _: None)

    said: list[str] = []
    result = run_compare(base, settings, out, progress=False, log=said.append)
    assert said[0] == "[1/2] fc_ef-s0: FC-EF, seed 0: finished before, kept"
    assert said[2] == "[2/2] fc_siam_diff-s0: FC-Siam-diff, seed 0: resuming"
    assert (
        (first / "result.json").read_bytes(),
        (first / "last.pt").stat().st_mtime_ns,
    ) == finished
    rounds = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rounds] == [1, 2]  # the first round kept, the second added
    # Resumed, not started again: the first round is last.pt's record, clock included.
    assert rounds[0]["time_s"] == interrupted["history"][0]["time_s"]
    assert [s.model for s in result.summaries] == ["fc_ef", "fc_siam_diff"]
    assert all((out / name).is_file() for name in OUTPUTS)


@pytest.mark.slow  # one short training, scored, its outputs written twice: 4 to 10 s on 2 cores
def test_a_failed_final_write_leaves_no_pictures_and_overwrite_replaces_them(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    base = load_config("default", [f"data.root={synthetic}", *RECIPE])
    settings = CompareSettings(models=("fc_siam_diff",), steps=2, pairs=1)

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError("no space left on device")

    # The picture is the last output written: the page's pictures were made before it.
    with monkeypatch.context() as patch:
        patch.setattr("dsifn.compare.workflow.plot_comparison", full_disk)
        with pytest.raises(OSError, match="no space left"):
            run_compare(base, settings, out, progress=False, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["runs"]  # no pictures, nothing staged
    assert (out / "runs" / "fc_siam_diff-s0" / "result.json").is_file()

    # An earlier comparison's picture of another pair: replaced with the rest on overwriting.
    (out / "pairs").mkdir()
    (out / "pairs" / "other_pair_fc_ef.png").write_bytes(b"")
    run_compare(base, settings, out, overwrite=True, progress=False, log=lambda _: None)
    assert all((out / name).is_file() for name in OUTPUTS)
    page = (out / "compare.html").read_text()
    shown = sorted(p.name for p in (out / "pairs").iterdir())
    assert len(shown) == 4  # one pair: before, after, reference and the one error map
    assert all(f'src="pairs/{name}"' in page for name in shown)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "2", "--models", "fc_ef,unet"], "--models must be one of 'dsifn', 'fc_ef'"),
        (["--steps", "2", "--models", "fc_ef,fc_ef"], "--models names one twice: fc_ef,fc_ef"),
        ([], "give each run the same budget: --minutes M of training or --steps N"),
        (["--minutes", "-1"], "--minutes must be positive; got -1.0"),
        (["--steps", "2", "--seeds", "1,1"], "--seeds names one twice: 1,1"),
        (["--steps", "2", "model.name=cdnet", "model.freeze_encoder=true"], "model.name=cdnet"),
    ],
)
def test_bad_options_are_one_line_before_any_work(
    synthetic: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "cmp"
    assert _compare(synthetic, out, *args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dsifn compare: error: ") and message in line
    assert not out.exists()


def test_a_dataset_without_a_test_split_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic_dataset(
        tmp_path / "d", SyntheticConfig(size=32, train=2, val=1, test=1), progress=False
    )
    for pair in (data / "test").rglob("*.png"):
        pair.unlink()
    for folder in sorted((data / "test").rglob("*"), reverse=True):
        folder.rmdir()
    (data / "test").rmdir()
    assert _compare(data, tmp_path / "cmp", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "has no 'test' split (found: train, val); a comparison trains on train" in err
    assert not (tmp_path / "cmp" / "runs").exists()


def _rank(rank: int, world: int, port: int, data: Path, out: Path, said: Path) -> None:
    become_rank(rank, world, port)
    base = load_config("default", [f"data.root={data}", *RECIPE])
    settings = CompareSettings(models=("fc_siam_diff",), steps=2, pairs=1)
    lines: list[str] = []
    result = run_compare(base, settings, out, progress=False, log=lines.append)
    said.joinpath(f"rank{rank}.json").write_text(
        json.dumps({"lines": lines, "summaries": len(result.summaries)})
    )


@pytest.mark.slow  # two processes, one short DDP run: 7 to 15 s on 2 shared cores
def test_under_two_processes_every_run_is_ddp_and_only_rank_0_writes(
    synthetic: Path, tmp_path: Path
) -> None:
    out, said = tmp_path / "cmp", tmp_path / "said"
    said.mkdir()
    mp.spawn(_rank, args=(2, free_port(), synthetic, out, said), nprocs=2, join=True)
    first, second = (json.loads((said / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first["summaries"] == 1 and first["lines"][0].startswith("[1/1] fc_siam_diff-s0")
    assert second == {"lines": [], "summaries": 1}  # every process returns the comparison
    assert all((out / name).is_file() for name in OUTPUTS)
    result = json.loads((out / "runs" / "fc_siam_diff-s0" / "result.json").read_text())
    # Two processes of batch 2: four pairs per optimiser step.
    assert result["training"]["steps"] == 2 and result["training"]["pairs"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "said"]


def test_the_parser_compares_every_registered_network_by_default() -> None:
    from dsifn.cli.main import build_parser
    from dsifn.models import MODEL_NAMES

    assert build_parser().parse_args(["compare", "--out", "x"]).models == MODEL_NAMES


def test_missing_pretrained_weights_are_refused_before_any_run(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DSIFN's recipe asks for ImageNet weights, which a test cannot download: the comparison
    # stops before the baseline that comes first trains.
    argv = ["compare", "--data", str(synthetic), "--out", str(tmp_path / "cmp"), "--steps", "1"]
    assert main([*argv, "--models", "fc_ef,dsifn", "run.device=cpu"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dsifn compare: error: ") and "vgg16-397923af.pth" in line
    assert not (tmp_path / "cmp" / "runs").exists()


def test_pretrained_weights_are_fetched_once_for_all_the_runs_that_start_from_them(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []

    def stop(data: Any) -> None:  # the check after the weights': no run trains
        raise DataError("checked the weights")

    monkeypatch.setattr("dsifn.compare.workflow.fetch_encoder_weights", fetched.append)
    monkeypatch.setattr("dsifn.compare.workflow.resolve_layout", stop)
    base = load_config("default", [f"data.root={synthetic}", "run.device=cpu"])
    settings = CompareSettings(models=("dsifn", "fc_ef"), seeds=(0, 1, 2), steps=1)
    with pytest.raises(DataError, match="checked the weights"):
        run_compare(base, settings, tmp_path / "cmp", progress=False, log=lambda _: None)
    assert fetched == ["imagenet"]  # three DSIFN runs, one file
    assert not (tmp_path / "cmp" / "runs").exists()
