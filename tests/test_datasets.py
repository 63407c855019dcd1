import gzip
import struct

import numpy as np
import pytest
import torch

from tasks import datasets


def test_digits_offline_default():
    d = datasets.load({"name": "digits"})
    assert d.dim == 64 and d.size("train") == 1257 and d.size("valid") == 180
    assert d.size("test") == 360
    for x in d.splits.values():
        assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    assert d.labels["train"].shape == (1257,)


def test_dynamic_binarisation_is_bernoulli():
    """binarize(p) is a Bernoulli(p) sample: per-pixel frequencies over many draws
    match p within a z-score bound, and p = 0 / 1 give 0 / 1 exactly."""
    p = torch.tensor([[0.0, 0.05, 0.3, 0.5], [0.7, 0.95, 1.0, 0.13]], dtype=torch.float64)
    n = 20000
    draws = datasets.binarize(p.expand(n, 2, 4).contiguous())
    assert draws.shape == (n, 2, 4) and set(torch.unique(draws).tolist()) <= {0.0, 1.0}
    freq = draws.mean(0)
    se = (p * (1 - p) / n).sqrt().clamp_min(1e-12)
    assert ((freq - p).abs() <= 4.5 * se).all(), (freq, p)
    assert freq[0, 0] == 0 and freq[1, 2] == 1


def test_binarized_mnist_npz(shared_data):
    d = datasets.load({"name": "binarized_mnist"}, shared_data)
    assert [d.size(s) for s in ("train", "valid", "test")] == [50000, 10000, 10000]
    # fingerprints from ../shared/data/README.md
    assert int(d.splits["train"].sum()) == 5118041
    assert int(d.splits["valid"].sum()) == 1028036
    assert int(d.splits["test"].sum()) == 1038896


def test_binarized_mnist_amat(tmp_path):
    rng = np.random.RandomState(0)
    arrays = {s: (rng.rand(n, 784) > 0.5).astype(np.uint8) for s, n in
              (("train", 5), ("valid", 3), ("test", 4))}
    for s, a in arrays.items():
        np.savetxt(tmp_path / f"binarized_mnist_{s}.amat", a, fmt="%d")
    d = datasets.load({"name": "binarized_mnist"}, tmp_path)
    for s, a in arrays.items():
        assert torch.equal(d.splits[s], torch.from_numpy(a.astype(np.float32)))


def _write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())


def test_idx_reader_and_dynamic_binarisation(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.full((50010, 28, 28), 128, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(50010) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", imgs[:7])
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    d = datasets.load({"name": "mnist"}, tmp_path)
    assert d.size("train") == 50000 and d.size("valid") == 10 and d.size("test") == 7
    assert d.labels["valid"].tolist() == [v % 10 for v in range(50000, 50010)]
    b1 = d.train_batch(torch.arange(1000))
    assert set(torch.unique(b1).tolist()) == {0.0, 1.0}
    assert abs(b1.mean().item() - 128 / 255) < 0.01
    assert not torch.equal(b1, d.train_batch(torch.arange(1000)))  # fresh each draw
    assert torch.equal(d.eval_split("test"), d.eval_split("test"))  # fixed for evaluation
    grey = datasets.load({"name": "mnist", "binarize": "none"}, tmp_path)
    assert torch.allclose(grey.train_batch(torch.arange(3)), torch.tensor(128 / 255))


def test_mnist_from_shared(shared_data):
    d = datasets.load({"name": "mnist"}, shared_data)
    assert d.size("train") == 50000 and d.size("test") == 10000 and d.dim == 784


@pytest.mark.parametrize("name", ["binarized_mnist", "mnist", "fashion_mnist"])
def test_missing_data_says_where_it_looked(tmp_path, name):
    with pytest.raises(datasets.DataError) as e:
        datasets.check_available({"name": name}, tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "data_dir" in msg and "\n" not in msg
