"""Byte-level corpus, deterministic sharded batches, fixed validation set, clear errors."""

import numpy as np
import pytest

from asprof.errors import AsprofError
from asprof.train.data import check_fits, load_corpus, shard_rows, train_batch, val_batches


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(max_bytes=200_000)


def test_default_corpus_is_the_stdlib_source(corpus):
    assert "python-stdlib" in corpus.source
    assert corpus.train.dtype == np.uint8 and corpus.train.size > 150_000
    assert corpus.val.size == int(200_000 * 0.05)
    text = bytes(corpus.train[:20000]).decode("utf-8", "replace")
    assert "def " in text or "import " in text
    assert load_corpus(max_bytes=200_000).fingerprint == corpus.fingerprint


def test_batches_are_deterministic_and_shift_by_one(corpus):
    x, y = train_batch(corpus, step=3, seed=7, global_batch=4, seq=32)
    x2, y2 = train_batch(corpus, step=3, seed=7, global_batch=4, seq=32)
    assert x.shape == y.shape == (4, 32) and x.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    x3, _ = train_batch(corpus, step=4, seed=7, global_batch=4, seq=32)
    assert not np.array_equal(x, x3)


def test_rank_shards_concatenate_to_the_global_batch(corpus):
    full_x, full_y = train_batch(corpus, 5, 1, 6, 16)
    parts = [train_batch(corpus, 5, 1, 6, 16, rank=r, world=3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full_x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full_y)
    with pytest.raises(AsprofError, match="not divisible by 4"):
        shard_rows(6, 0, 4)


def test_validation_set_is_fixed_and_sharded(corpus):
    a = list(val_batches(corpus, 2, 4, 16))
    b = list(val_batches(corpus, 2, 4, 16))
    assert len(a) == 2 and a[0][0].shape == (4, 16)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    halves = [list(val_batches(corpus, 2, 4, 16, rank=r, world=2)) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate([halves[0][0][0], halves[1][0][0]]), a[0][0])


def test_user_data_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_bytes(b"hello world. " * 1000)
    c = load_corpus(str(p))
    assert c.source == str(p) and c.train.size + c.val.size == 13000
    with pytest.raises(AsprofError, match="--data .*missing.txt: cannot read"):
        load_corpus(str(tmp_path / "missing.txt"))
    small = tmp_path / "small.txt"
    small.write_bytes(b"tiny")
    with pytest.raises(AsprofError, match="fewer than one sequence"):
        check_fits(load_corpus(str(small)), 64)
