"""DataLoader batching, shuffling and determinism; TensorDataset; random_split."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.dataloader import DataLoader, Dataset, TensorDataset, random_split


def _data(n=10):
    X = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return TensorDataset(X, y)


def _epoch_labels(loader):
    return np.concatenate([yb.data for _, yb in loader])


def test_batches_are_tuples_of_stacked_tensors_in_order():
    batches = list(DataLoader(_data(10), batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    assert all(isinstance(b, tuple) and isinstance(b[0], tt.Tensor) for b in batches)
    np.testing.assert_array_equal(batches[1][1].data, [4, 5, 6, 7])
    np.testing.assert_array_equal(batches[1][0].data, np.arange(12, 24).reshape(4, 3))


def test_labels_keep_their_integer_dtype_and_features_are_float32():
    xb, yb = next(iter(DataLoader(_data(), batch_size=3)))
    assert yb.dtype == np.int64
    assert xb.dtype == np.float32


def test_len_is_the_number_of_batches():
    assert len(DataLoader(_data(10), batch_size=4)) == 3
    assert len(DataLoader(_data(10), batch_size=4, drop_last=True)) == 2
    assert len(DataLoader(_data(8), batch_size=4)) == 2
    assert len(DataLoader(_data(10), batch_size=20)) == 1
    assert len(DataLoader(_data(10), batch_size=20, drop_last=True)) == 0
    for loader in (DataLoader(_data(10), batch_size=4), DataLoader(_data(10), 4, drop_last=True)):
        assert len(list(loader)) == len(loader)


def test_drop_last_skips_the_short_final_batch():
    batches = list(DataLoader(_data(10), batch_size=4, drop_last=True))
    assert [len(b[1]) for b in batches] == [4, 4]


def test_shuffle_visits_every_sample_once_per_epoch_in_a_new_order():
    loader = DataLoader(_data(50), batch_size=8, shuffle=True, seed=0)
    first, second = _epoch_labels(loader), _epoch_labels(loader)
    np.testing.assert_array_equal(np.sort(first), np.arange(50))
    np.testing.assert_array_equal(np.sort(second), np.arange(50))
    assert not np.array_equal(first, second), "each epoch should draw a new order"
    assert not np.array_equal(first, np.arange(50))


def test_shuffle_keeps_features_and_labels_together():
    for xb, yb in DataLoader(_data(20), batch_size=6, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.data[:, 0], yb.data * 3)


def test_same_seed_gives_the_same_sequence_of_epochs():
    a = DataLoader(_data(40), batch_size=8, shuffle=True, seed=123)
    b = DataLoader(_data(40), batch_size=8, shuffle=True, seed=123)
    c = DataLoader(_data(40), batch_size=8, shuffle=True, seed=124)
    epochs_a = [_epoch_labels(a) for _ in range(3)]
    epochs_b = [_epoch_labels(b) for _ in range(3)]
    for x, y in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(epochs_a[0], _epoch_labels(c))


def test_without_shuffle_every_epoch_is_in_order():
    loader = DataLoader(_data(10), batch_size=3)
    np.testing.assert_array_equal(_epoch_labels(loader), np.arange(10))
    np.testing.assert_array_equal(_epoch_labels(loader), np.arange(10))


def test_invalid_batch_size_is_rejected():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader(_data(), batch_size=bad)


def test_tensor_dataset_checks_lengths_and_indexes_rows():
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(np.zeros((4, 2)), np.zeros(5))
    data = TensorDataset(tt.Tensor(np.eye(3)), np.array([7, 8, 9]))
    x, y = data[1]
    np.testing.assert_array_equal(x.data, [0, 1, 0])
    assert int(y.item()) == 8
    assert len(data) == 3


class Squares(Dataset):
    """A map-style dataset computed on the fly: sample i is (i, i^2)."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return np.float32(i), i * i


def test_custom_dataset_samples_are_collated():
    batches = list(DataLoader(Squares(), batch_size=3))
    np.testing.assert_array_equal(batches[2][0].data, [6.0])
    np.testing.assert_array_equal(batches[1][1].data, [9, 16, 25])
    assert batches[1][1].dtype.kind == "i"


def test_dataset_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        len(Dataset())
    with pytest.raises(NotImplementedError):
        Dataset()[0]


def test_random_split_partitions_the_dataset():
    parts = random_split(_data(20), [12, 5, 3], seed=0)
    assert [len(p) for p in parts] == [12, 5, 3]
    labels = np.concatenate([_epoch_labels(DataLoader(p, batch_size=4)) for p in parts])
    np.testing.assert_array_equal(np.sort(labels), np.arange(20))
    assert not np.array_equal(labels, np.arange(20)), "the split should be random"


def test_random_split_is_reproducible_with_a_seed():
    a = random_split(_data(30), [20, 10], seed=5)
    b = random_split(_data(30), [20, 10], seed=5)
    c = random_split(_data(30), [20, 10], seed=6)
    np.testing.assert_array_equal(a[1].indices, b[1].indices)
    assert not np.array_equal(a[1].indices, c[1].indices)


def test_random_split_accepts_fractions():
    parts = random_split(_data(10), [0.75, 0.25], seed=0)
    assert sum(len(p) for p in parts) == 10
    assert [len(p) for p in parts] == [8, 2]


def test_random_split_rejects_lengths_that_do_not_add_up():
    with pytest.raises(ValueError, match="add up"):
        random_split(_data(10), [5, 4])
    with pytest.raises(ValueError, match="add up"):
        random_split(_data(10), [0.5, 0.2])


def test_subset_items_and_batches_agree():
    data = _data(12)
    (part,) = random_split(data, [12], seed=3)
    x, y = part[4]
    assert int(y.item()) == part.indices[4]
    xb, yb = next(iter(DataLoader(part, batch_size=5)))
    np.testing.assert_array_equal(yb.data, part.indices[:5])


def test_shuffle_without_a_seed_follows_manual_seed():
    def epochs_after(seed):
        tt.manual_seed(seed)
        loader = DataLoader(_data(40), batch_size=8, shuffle=True)
        return [_epoch_labels(loader) for _ in range(3)]

    first, again, other = epochs_after(0), epochs_after(0), epochs_after(1)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], first[1]), "each epoch should get a new order"
    assert not np.array_equal(first[0], other[0])


def test_an_explicit_seed_ignores_manual_seed():
    tt.manual_seed(0)
    a = _epoch_labels(DataLoader(_data(40), batch_size=8, shuffle=True, seed=7))
    tt.manual_seed(1)
    b = _epoch_labels(DataLoader(_data(40), batch_size=8, shuffle=True, seed=7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        a, np.random.default_rng(7).permutation(40)), "seed=7 keeps its old orders"


def test_random_split_without_a_seed_follows_manual_seed():
    def split_after(seed):
        tt.manual_seed(seed)
        return random_split(_data(30), [20, 10])[1].indices

    np.testing.assert_array_equal(split_after(0), split_after(0))
    assert not np.array_equal(split_after(0), split_after(1))


def test_an_ordered_loader_leaves_the_library_generator_alone():
    tt.manual_seed(0)
    expected = tt.randn(3).data
    tt.manual_seed(0)
    DataLoader(_data(10), batch_size=4)
    np.testing.assert_array_equal(tt.randn(3).data, expected)
