"""One section of the GPU check (see gpu_check.sh): run it, print the table and the JSON.

Usage: python gpu_check.py SECTION [--dry-run]

Sections: env, infer, train, scene. Every case is wrapped: an error is printed with its
traceback and the next case runs. ``--dry-run`` runs the same code paths on the CPU at tiny
sizes (torch.compile included), to prove the script before the one GPU run.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import types
from pathlib import Path


def _ensure_tqdm() -> None:
    # The GPU machine may lack tqdm; the benchmark only needs a progress bar that does nothing.
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:

        class _Bar:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                pass

        auto = types.ModuleType("tqdm.auto")
        auto.tqdm = _Bar  # type: ignore[attr-defined]
        package = types.ModuleType("tqdm")
        package.auto = auto  # type: ignore[attr-defined]
        sys.modules["tqdm"], sys.modules["tqdm.auto"] = package, auto


def _env() -> None:
    import platform

    import torch

    print("python", platform.python_version(), "torch", torch.__version__)
    print("cuda available", torch.cuda.is_available(), "cuda", torch.version.cuda)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(
            "gpu",
            props.name,
            f"{props.total_memory / 2**30:.1f} GiB",
            "sm",
            props.major,
            props.minor,
        )
        print("bf16 supported", torch.cuda.is_bf16_supported())
        print(
            "cudnn", torch.backends.cudnn.version(), "allow_tf32", torch.backends.cudnn.allow_tf32
        )
    for module in ("numpy", "rasterio", "PIL", "tqdm", "yaml", "h5py", "triton"):
        try:
            mod = __import__(module)
            print(module, getattr(mod, "__version__", "?"))
        except Exception as exc:  # any import failure is information, not a stop
            print(module, "MISSING:", exc)


# Options that set sizes and lengths; a dry run keeps its own tiny ones.
SIZE_KEYS = {"size", "batch", "infer_batch", "scene_size", "steps", "warmup", "rounds"}


def _run(name: str, dry: bool, **overrides: object) -> None:
    from dsifn.benchmark import BenchmarkConfig, format_report, run_benchmark

    base: dict[str, object] = (
        dict(
            device="cpu",
            size=32,
            batch=1,
            infer_batch=1,
            steps=1,
            warmup=1,
            rounds=1,
            scene_size=96,
            accuracy_pairs=1,
        )
        if dry
        else dict(
            device="cuda",
            size=256,
            batch=16,
            infer_batch=32,
            steps=10,
            warmup=3,
            rounds=3,
            scene_size=3072,
            accuracy_pairs=8,
        )
    )
    if dry:  # keep the code paths, not the sizes
        overrides = {k: v for k, v in overrides.items() if k not in SIZE_KEYS}
    base.update(overrides)
    print(f"== {name}: {base}", flush=True)
    start = time.perf_counter()
    try:
        report = run_benchmark(BenchmarkConfig(**base))  # type: ignore[arg-type]
    except Exception:
        print(f"!! {name} FAILED after {time.perf_counter() - start:.1f}s:")
        traceback.print_exc(file=sys.stdout)
        return
    print(format_report(report))
    print(f"-- {name} took {time.perf_counter() - start:.1f}s")
    print(f"JSON {name} " + json.dumps(report.to_dict(), default=str))
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    section = argv[0] if argv else "env"
    dry = "--dry-run" in argv
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    _ensure_tqdm()
    if section == "env":
        _env()
    elif section == "infer":
        # Without torch.compile first (what one small prediction gets; quick, so it survives a
        # compilation that runs out of time), then as dsifn runs many tiles of one size.
        _run("infer (eager fast path)", dry, mode="infer", compile=False)
        _run("infer (compiled fast path)", dry, mode="infer", compile=True)
    elif section == "train":
        _run(
            "train (eager fast path)", dry, mode="train", compile=False, accuracy_pairs=0, rounds=2
        )
        _run("train (compiled fast path)", dry, mode="train", compile=True, accuracy_pairs=0)
    elif section == "scene":
        try:
            import rasterio  # noqa: F401
        except ImportError:
            print("rasterio is missing here; predict_scene needs it: scene benchmark skipped")
            return 0
        # Eager fast path: a scene's last batch is smaller, and a compiled model would
        # recompile for it in the middle of the timing.
        _run("scene", dry, mode="scene", compile=False, accuracy_pairs=0)
    else:
        print("unknown section", section)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
