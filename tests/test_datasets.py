"""The bundled digits, the Shakespeare text and the 2-D generators: shapes, dtypes, classes,
contents, reproducibility."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

import tinytorch.datasets as datasets
from tinytorch.datasets import (
    load_dataset, load_digits, load_shakespeare, make_moons, make_spirals, make_xor,
)

GENERATORS = [make_moons, make_spirals, make_xor]


def test_digits_shape_dtype_and_range():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0


def test_digits_has_ten_balanced_classes():
    _, y = load_digits()
    counts = np.bincount(y)
    assert len(counts) == 10
    assert counts.min() >= 170 and counts.max() <= 190


def test_digits_pixels_are_the_original_counts_over_16():
    X, _ = load_digits()
    np.testing.assert_allclose(X * 16, np.round(X * 16), atol=1e-5)


def test_digits_file_and_licence_ship_inside_the_package():
    data = Path(datasets.__file__).parent / "data"
    assert (data / "digits.npz").is_file()
    licence = (data / "LICENSE-digits.txt").read_text()
    assert "CC BY 4.0" in licence and "Optical Recognition of Handwritten Digits" in licence


def test_digits_can_be_learned_by_a_nearest_centroid_rule():
    X, y = load_digits()
    centroids = np.stack([X[y == k].mean(axis=0) for k in range(10)])
    predicted = np.argmin(((X[:, None, :] - centroids) ** 2).sum(axis=2), axis=1)
    assert (predicted == y).mean() > 0.85, "images and labels should correspond"


@pytest.mark.parametrize("make", GENERATORS)
def test_generators_shape_dtype_and_reproducibility(make):
    X, y = make(n_samples=101, noise=0.1, seed=0)
    assert X.shape == (101, 2) and X.dtype == np.float32
    assert y.shape == (101,) and y.dtype == np.int64
    X2, y2 = make(n_samples=101, noise=0.1, seed=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = make(n_samples=101, noise=0.1, seed=1)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize("make", GENERATORS)
def test_generators_noise_moves_points(make):
    clean, labels = make(n_samples=200, noise=0.0, seed=0)
    noisy, labels_noisy = make(n_samples=200, noise=0.3, seed=0)
    assert not np.allclose(clean, noisy)
    assert np.isfinite(noisy).all()


@pytest.mark.parametrize("make", GENERATORS)
def test_generators_reject_bad_arguments(make):
    with pytest.raises(ValueError, match="n_samples"):
        make(n_samples=0)
    with pytest.raises(ValueError, match="noise"):
        make(noise=-1.0)


def test_moons_classes_are_the_two_half_circles():
    X, y = make_moons(n_samples=200, noise=0.0, seed=0)
    assert np.bincount(y).tolist() == [100, 100]
    np.testing.assert_allclose(np.hypot(X[y == 0, 0], X[y == 0, 1]), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5), 1.0, atol=1e-5)


def test_spirals_have_one_class_per_arm():
    X, y = make_spirals(n_samples=300, noise=0.0, seed=0, n_classes=3)
    assert np.bincount(y).tolist() == [100, 100, 100]
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 1.0 + 1e-6)


def test_xor_labels_follow_the_quadrants_without_noise():
    X, y = make_xor(n_samples=500, noise=0.0, seed=0)
    np.testing.assert_array_equal(y, (X[:, 0] > 0) != (X[:, 1] > 0))
    assert 0.4 < y.mean() < 0.6


def test_load_dataset_by_name():
    X, y = load_dataset("moons", n_samples=50, seed=0)
    assert X.shape == (50, 2)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")


# ----- tiny Shakespeare -------------------------------------------------------------------------------
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"     # /work/shared/data/README.md


def test_shakespeare_is_the_documented_text():
    text = load_shakespeare()
    assert hashlib.md5(text.encode("utf-8")).hexdigest() == SHAKESPEARE_MD5
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_shakespeare_split_is_the_first_90_and_last_10_percent_of_characters():
    text, train, val = load_shakespeare(), load_shakespeare("train"), load_shakespeare("val")
    assert train + val == text
    assert len(train) == 1_003_854 == int(0.9 * 1_115_394)
    assert len(val) == 111_540


def test_shakespeare_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="'test'"):
        load_shakespeare("test")


def test_shakespeare_ships_compressed_with_its_public_domain_note():
    data = Path(datasets.__file__).parent / "data"
    assert (data / "tinyshakespeare.txt.gz").stat().st_size < 450_000, "gzip -9: about 434 kB"
    note = (data / "LICENSE-shakespeare.txt").read_text()
    assert "public domain" in note and SHAKESPEARE_MD5 in note
