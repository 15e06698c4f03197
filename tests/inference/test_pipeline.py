"""The tile loop's reader and writer threads: order, their own file handles, errors, masking."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from affine import Affine

from dsifn.inference.pipeline import RowWriter, TileReader
from dsifn.inference.tiling import StripBlender, TileGrid
from dsifn.io.image_source import ImageData, ImageSource, PixelGrid
from dsifn.io.pairs import ImagePair, PairData
from dsifn.scaling import Scaling


class ArrayDate(ImageSource):
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
        window = self.values[row : row + height, col : col + width]
        return ImageData(window[None].copy(), window > 0)

    def reopen(self):
        copy = ArrayDate(self.values, self.copies)
        self.copies.append(copy)
        return copy

    def close(self):
        self.closed = True


AS_IS = Scaling((0.0,), (1.0,), "as is", clip=False)


def _pair():
    values = np.arange(1, 1 + 40 * 30, dtype=np.float32).reshape(40, 30)
    return ImagePair(ArrayDate(values), ArrayDate(values + 2000), AS_IS)


def _stack(batch):
    return np.stack(batch).astype(np.float32)


def test_batches_come_in_order_read_on_threads_through_their_own_copies():
    pair = _pair()
    t1, t2 = pair.t1, pair.t2
    rng = np.random.default_rng(0)
    delays = iter(rng.uniform(0, 0.01, 100))  # readers finish out of order

    def read_tile(source, row):
        time.sleep(next(delays))
        return source.read(row, 0, 1, 30)

    jobs = [[r, r + 1] for r in range(0, 40, 2)]
    with TileReader(pair, read_tile, _stack, readers=3) as reader:
        got = list(reader.read(jobs))
    assert [job for job, _ in got] == jobs
    for job, (a, b, valid) in got:
        np.testing.assert_array_equal(a, t1.values[job][:, None, None])
        np.testing.assert_array_equal(b, a + 2000)
        assert valid.shape == (2, 1, 30) and valid.all()
    copies = t1.copies + t2.copies
    assert 2 <= len(copies) <= 6  # one copy of each date per reader thread that ran
    assert all(c.closed for c in copies) and not t1.closed and not t2.closed
    assert not t1.readers and not t2.readers  # the originals were never read by a reader
    assert {name for c in copies for name in c.readers} <= {f"dsifn-read_{i}" for i in range(3)}


def test_a_reader_error_is_raised_in_the_caller_and_the_copies_are_closed():
    pair = _pair()

    def read_tile(source, row):
        if row == 7:
            raise OSError("read failed")
        return source.read(row, 0, 1, 30)

    seen = []
    with (
        pytest.raises(OSError, match="read failed"),
        TileReader(pair, read_tile, _stack, readers=2) as reader,
    ):
        for job, _ in reader.read([[r] for r in range(20)]):
            seen.append(job[0])
    assert seen == list(range(7))
    copies = pair.t1.copies + pair.t2.copies
    assert copies and all(c.closed for c in copies)


def test_a_pair_read_zeroes_both_dates_where_either_has_no_data():
    pair = _pair()
    pair.t1.values[3, 4] = 0
    pair.t2.values[5, 6] = 0  # T2 alone has no data here: T1 is zeroed too
    read = pair.read(0, 0, 10, 10)
    assert isinstance(read, PairData) and read.values.shape == (2, 1, 10, 10)
    assert not read.valid[3, 4] and not read.valid[5, 6] and read.valid.sum() == 98
    assert (read.values[:, :, 3, 4] == 0).all() and (read.values[:, :, 5, 6] == 0).all()
    assert read.values[0, 0, 0, 0] == 1 and read.values[1, 0, 0, 0] == 2001


def test_rows_are_written_in_order_on_one_thread():
    written = []

    def write_rows(first, values):
        written.append((first, values.copy(), threading.current_thread().name))

    with RowWriter(write_rows) as writer:
        writer.put([(0, np.full((10, 30), 0.5, np.float32))])
        writer.put([])
        writer.put([(10, np.full((20, 30), 0.25, np.float32)), (30, np.ones((10, 30), "f4"))])
    assert [first for first, _, _ in written] == [0, 10, 30]
    assert {name for _, _, name in written} == {"dsifn-write_0"}


def test_blended_rows_are_nan_where_a_tile_said_there_is_no_data():
    grid = TileGrid.plan(40, 30, 16, 4)
    blender = StripBlender(grid)
    rows = []
    for row in grid.row_starts:
        rows += list(blender.start_row(row))
        for col in grid.col_starts:
            valid = np.ones((16, 16), bool)
            if row <= 3 < row + 16 and col <= 4 < col + 16:
                valid[3 - row, 4 - col] = False  # the one pixel without data, seen by its tiles
            blender.add(row, col, np.full((16, 16), 0.5, np.float32), valid)
    rows += list(blender.finish())
    values = np.concatenate([v for _, v in rows])
    assert values.shape == (40, 30) and np.isnan(values[3, 4]) and np.isnan(values).sum() == 1
    np.testing.assert_allclose(values[~np.isnan(values)], 0.5, rtol=1e-6)


def test_a_write_error_is_raised_by_the_next_put_or_on_leaving():

    def write_rows(first, values):
        raise OSError(f"disk full at row {first}")

    rows = np.zeros((10, 30), np.float32)
    with pytest.raises(OSError, match="row 0"), RowWriter(write_rows) as writer:
        writer.put([(0, rows.copy())])
        writer.put([(10, rows.copy())])  # waits for row 0's write: its error stops here
        pytest.fail("put did not raise the previous write's error")
    with pytest.raises(OSError, match="row 20"), RowWriter(write_rows) as writer:
        writer.put([(20, rows.copy())])
