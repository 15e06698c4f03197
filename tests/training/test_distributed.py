"""Samplers for several processes, and a real 2-process DDP training on the CPU (gloo)."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from dsifn.distributed import EpochSampler, ShardSampler, setup_distributed
from fixtures.datasets import write_levir
from fixtures.processes import become_rank, free_port
from fixtures.training import tiny_config


def test_epoch_sampler_shards_cover_the_permutation_and_depend_on_seed_and_epoch():
    shards = [list(EpochSampler(10, rank=r, world_size=3, seed=5)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to 12 by repeating the start
    assert set().union(*shards) == set(range(10))
    again = [list(EpochSampler(10, rank=r, world_size=3, seed=5)) for r in range(3)]
    assert again == shards
    other_epoch = EpochSampler(10, seed=5)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != list(EpochSampler(10, seed=5))
    assert sorted(other_epoch) == list(range(10))
    assert list(EpochSampler(10, seed=6)) != list(EpochSampler(10, seed=5))


def test_epoch_sampler_skip_resumes_inside_the_epoch():
    sampler = EpochSampler(9, rank=1, world_size=2, seed=0)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, skip=2)
    assert list(sampler) == full[2:]
    assert len(sampler) == len(full) - 2


def test_shard_sampler_counts_every_item_once():
    shards = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))


def test_single_process_without_environment_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup_distributed(torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


def _worker(rank, world, port, root, run_dir, out_dir):
    become_rank(rank, world, port)
    from dsifn.training.engine import train

    result = train(tiny_config(root, "schedule.epochs=1"), run_dir, progress=False)
    torch.save(
        {
            "state": result.model.state_dict(),
            "history": result.history,
            "initialized": torch.distributed.is_initialized(),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


@pytest.mark.slow
def test_two_cpu_processes_train_together_and_only_rank0_writes(tmp_path):
    root = write_levir(tmp_path / "data", counts=(4, 3, 1))
    run_dir = tmp_path / "run"
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), root, run_dir, out), nprocs=2, join=True)

    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.yaml", "last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "curves.png"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out", "run"]
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert not any(r["initialized"] for r in results)  # the group was closed again
    first, second = (r["state"] for r in results)
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    # The ranks validated different shards (2 and 1 of the 3 pairs): equal scores on both mean
    # the counts were summed across ranks. Clocks are per process.
    histories = [
        [{k: v for k, v in e.items() if k not in ("time_s", "val_s")} for e in r["history"]]
        for r in results
    ]
    assert histories[0] == histories[1]
    assert results[0]["history"][-1]["step"] == 1
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    assert len(saved["resume"]["rng"]) == 2
    assert all(torch.equal(saved["state_dict"][k], first[k]) for k in first)


def _failing_worker(rank, world, port, root, run_dir, out_dir):
    become_rank(rank, world, port)
    from dsifn.training.engine import train

    try:
        train(tiny_config(root), run_dir, progress=False)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
    else:
        message = "no error"
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as file:
        file.write(message)


@pytest.mark.slow
def test_an_error_on_rank0_stops_every_rank_instead_of_hanging(tmp_path):
    root = write_levir(tmp_path / "data", counts=(2, 1, 1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("an earlier run")  # rank 0 refuses the folder
    out = tmp_path / "out"
    out.mkdir()
    context = mp.spawn(
        _failing_worker,
        args=(2, free_port(), root, run_dir, out),
        nprocs=2,
        join=False,
    )
    # join() returns as soon as one process ends; a generous deadline only guards against a
    # hang (which is the bug this test is about), it measures nothing.
    deadline = time.monotonic() + 300
    try:
        finished = False
        while not finished and time.monotonic() < deadline:
            finished = context.join(timeout=5)
        assert finished, "a rank is still waiting after the other failed"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    messages = [(out / f"rank{r}.txt").read_text() for r in range(2)]
    assert messages[0].startswith("OutputExistsError") and "`overwrite=True`" in messages[0]
    assert messages[1].startswith("DSIFNError: another training process failed")
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]
