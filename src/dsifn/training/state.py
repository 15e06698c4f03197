"""Random-number-generator states as plain values, for resume state that loads ``weights_only``.

``torch.load(weights_only=True)`` accepts tensors, numbers, strings, lists, tuples and dicts
only, so NumPy's and Python's generator states (which hold a NumPy array and a tuple) are
converted to such values and back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dsifn.errors import CheckpointError

__all__ = ["capture_rng", "restore_rng", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The global generators' states as plain values (see :func:`restore_rng`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put the global generators back in a state from :func:`capture_rng`.

    Raises:
        CheckpointError: If the state is incomplete.
    """
    try:
        torch.set_rng_state(state["torch"])
        np_state = state["numpy"]
        np.random.set_state(
            (
                np_state["kind"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        cuda = list(state.get("cuda", []))
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"the resume state's random-generator states are incomplete: {exc}"
        ) from exc
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
