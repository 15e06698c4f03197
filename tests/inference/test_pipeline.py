"""The tile loop's reader and writer threads: order, their own file handles, errors, masking."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from affine import Affine

from dsifn.inference.pipeline import RowWriter, TileReader
from dsifn.inference.sources import SceneSource
from dsifn.io.images import PixelGrid


class ArrayDate(SceneSource):
    """One band held in memory; 0 is invalid. Its copies (reopen) record their thread."""

    def __init__(self, values, copies=None):
        self.values = values
        self.grid = PixelGrid(None, Affine.identity(), values.shape[1], values.shape[0])
        self.count, self.dtype, self.name = 1, "float32", "date"
        self.copies = [] if copies is None else copies
        self.readers = set()  # threads that read through this object
        self.closed = False

    def read(self, row, col, height, width):
        self.readers.add(threading.current_thread().name)
        return self.values[None, row : row + height, col : col + width].copy()

    def read_mask(self, row, col, height, width):
        self.readers.add(threading.current_thread().name)
        return self.values[row : row + height, col : col + width] > 0

    def reopen(self):
        copy = ArrayDate(self.values, self.copies)
        self.copies.append(copy)
        return copy

    def close(self):
        self.closed = True


def _dates():
    values = np.arange(1, 1 + 40 * 30, dtype=np.float32).reshape(40, 30)
    return ArrayDate(values), ArrayDate(values + 2000)


def _stack(batch):
    return np.stack(batch).astype(np.float32)


def test_batches_come_in_order_read_on_threads_through_their_own_copies():
    t1, t2 = _dates()
    rng = np.random.default_rng(0)
    delays = iter(rng.uniform(0, 0.01, 100))  # readers finish out of order

    def read_tile(source, row):
        time.sleep(next(delays))
        return source.read(row, 0, 1, 30)

    jobs = [[r, r + 1] for r in range(0, 40, 2)]
    with TileReader(t1, t2, read_tile, _stack, readers=3) as reader:
        got = list(reader.read(jobs))
    assert [job for job, _ in got] == jobs
    for job, (a, b) in got:
        np.testing.assert_array_equal(a, t1.values[job][:, None, None])
        np.testing.assert_array_equal(b, a + 2000)
    copies = t1.copies + t2.copies
    assert 2 <= len(copies) <= 6  # one copy of each date per reader thread that ran
    assert all(c.closed for c in copies) and not t1.closed and not t2.closed
    assert not t1.readers and not t2.readers  # the originals were never read by a reader
    assert {name for c in copies for name in c.readers} <= {f"dsifn-read_{i}" for i in range(3)}


def test_a_reader_error_is_raised_in_the_caller_and_the_copies_are_closed():
    t1, t2 = _dates()

    def read_tile(source, row):
        if row == 7:
            raise OSError("read failed")
        return source.read(row, 0, 1, 30)

    seen = []
    with (
        pytest.raises(OSError, match="read failed"),
        TileReader(t1, t2, read_tile, _stack, readers=2) as reader,
    ):
        for job, _ in reader.read([[r] for r in range(20)]):
            seen.append(job[0])
    assert seen == list(range(7))
    assert t1.copies and all(c.closed for c in t1.copies + t2.copies)


def test_rows_are_written_in_order_nan_where_either_date_is_invalid():
    t1, t2 = _dates()
    t1.values[3, 4] = 0
    t2.values[12, 20:25] = 0
    written = []

    def write_rows(first, values):
        written.append((first, values.copy(), threading.current_thread().name))

    with RowWriter(t1, t2, write_rows) as writer:
        writer.put([(0, np.full((10, 30), 0.5, np.float32))])
        writer.put([])
        writer.put([(10, np.full((20, 30), 0.25, np.float32)), (30, np.ones((10, 30), "f4"))])
    assert [first for first, _, _ in written] == [0, 10, 30]
    assert {name for _, _, name in written} == {"dsifn-write_0"}
    rows = np.concatenate([values for _, values, _ in written])
    assert np.isnan(rows[3, 4]) and np.isnan(rows[12, 20:25]).all()
    assert np.isnan(rows).sum() == 6 and rows[3, 5] == 0.5 and rows[35, 0] == 1.0


def test_a_write_error_is_raised_by_the_next_put_or_on_leaving():
    t1, t2 = _dates()

    def write_rows(first, values):
        raise OSError(f"disk full at row {first}")

    rows = np.zeros((10, 30), np.float32)
    with pytest.raises(OSError, match="row 0"), RowWriter(t1, t2, write_rows) as writer:
        writer.put([(0, rows.copy())])
        writer.put([(10, rows.copy())])  # waits for row 0's write: its error stops here
        pytest.fail("put did not raise the previous write's error")
    with pytest.raises(OSError, match="row 20"), RowWriter(t1, t2, write_rows) as writer:
        writer.put([(20, rows.copy())])
