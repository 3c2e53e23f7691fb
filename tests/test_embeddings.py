"""Embeddings (module 11): lookups, their scatter-add gradient, positions, index validation."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.autograd import gradcheck, gradgradcheck
from tinytorch.core.embeddings import (
    Embedding, EmbeddingLayer, PositionalEncoding, create_sinusoidal_embeddings,
)

RNG = np.random.default_rng(11)


def f64(array, requires_grad=True):
    return tt.Tensor(np.array(array, dtype=np.float64), dtype=np.float64, requires_grad=requires_grad)


def embedding64(vocab, dim):
    emb = Embedding(vocab, dim)
    emb.weight = f64(RNG.standard_normal((vocab, dim)))
    return emb


# ----- Embedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("indices", [
    np.array([[1, 4, 1], [0, 0, 0]]),                   # (B, T), repeated ids
    np.array([3]),
    np.array(2),                                        # a single id: 0-d
    np.zeros((0, 3), dtype=np.int64),                   # no ids at all
    np.array([[[0, 1], [1, 2]], [[4, 4], [3, 0]]]),     # any number of axes
])
def test_embedding_matches_torch_values_and_gradients(torch, indices):
    emb = embedding64(5, 3)
    out = emb(tt.Tensor(indices, dtype=np.int64))
    assert out.shape == indices.shape + (3,)
    upstream = RNG.standard_normal(out.shape)
    out.backward(upstream)
    weight = torch.tensor(emb.weight.data, requires_grad=True)
    expected = torch.nn.functional.embedding(torch.tensor(indices), weight)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(out.data, expected.detach().numpy())
    np.testing.assert_allclose(emb.weight.grad.data, weight.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_repeated_indices_accumulate_their_gradients():
    emb = embedding64(4, 2)
    emb(np.array([2, 2, 2, 0])).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.data, [[1, 1], [0, 0], [3, 3], [0, 0]])


def test_embedding_accepts_the_curriculum_index_forms():
    emb = embedding64(6, 2)
    expected = emb.weight.data[[5, 0, 5]]
    for indices in (tt.Tensor([5.0, 0.0, 5.0]),                 # float32 tensor of whole numbers
                    tt.Tensor([5, 0, 5], dtype=np.int32), np.array([5, 0, 5], dtype=np.uint8),
                    [5, 0, 5]):
        np.testing.assert_array_equal(emb(indices).data, expected)


def test_embedding_gradients_pass_gradcheck_and_gradgradcheck():
    emb = embedding64(4, 3)
    indices = np.array([[0, 3, 3], [1, 0, 3]])
    # emb reads emb.weight, the tensor the checks perturb
    assert gradcheck(lambda w: (emb(indices) ** 2).sum(axis=-1), [emb.weight])
    assert gradgradcheck(lambda w: (emb(indices) ** 3).sum(), [emb.weight])


def test_embedding_backward_class_keeps_the_curriculum_constructor():
    weight = f64(RNG.standard_normal((4, 2)))
    node = tt.autograd.EmbeddingBackward(weight, tt.Tensor([1, 1, 3], dtype=np.int64))
    (grad_weight,) = node.apply(np.ones((3, 2)))
    np.testing.assert_array_equal(grad_weight, [[0, 0], [2, 2], [0, 0], [1, 1]])


@pytest.mark.parametrize("bad", [7, -1, 100])
def test_an_index_outside_the_vocabulary_is_an_index_error_naming_it(bad):
    emb = Embedding(7, 2)
    with pytest.raises(IndexError, match=rf"index {bad}\b.*vocabulary of 7"):
        emb(np.array([[0, bad]]))


def test_non_integral_or_non_numeric_indices_are_type_errors():
    emb = Embedding(7, 2)
    with pytest.raises(TypeError, match="integers.*1.5"):
        emb(tt.Tensor([1.0, 1.5]))
    with pytest.raises(TypeError, match="integers"):
        emb(tt.Tensor([np.nan]))
    with pytest.raises(TypeError, match="dtype bool"):
        emb(np.array([True, False]))


def test_embedding_initialisation_is_standard_normal_and_follows_the_default_dtype():
    tt.manual_seed(0)
    emb = Embedding(300, 100)
    assert emb.weight.shape == (300, 100) and emb.weight.dtype == np.float32
    assert abs(emb.weight.data.std() - 1.0) < 0.02 and abs(emb.weight.data.mean()) < 0.02
    assert [name for name, _ in emb.named_parameters()] == ["weight"]


# ----- positions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 5, 4), (5, 4)])
def test_positional_encoding_adds_the_first_rows_and_gets_their_gradients(shape):
    pe = PositionalEncoding(max_seq_len=8, embed_dim=4)
    pe.weight = f64(RNG.standard_normal((8, 4)))
    x = f64(RNG.standard_normal(shape))
    out = pe(x)
    np.testing.assert_array_equal(out.data, x.data + pe.weight.data[:5])
    out.backward(np.ones(shape))
    batch = shape[0] if len(shape) == 3 else 1
    np.testing.assert_array_equal(pe.weight.grad.data[:5], np.full((5, 4), batch))
    np.testing.assert_array_equal(pe.weight.grad.data[5:], 0)
    assert gradcheck(lambda x, w: pe(x) * x, [x, pe.weight])


def test_positional_encoding_offset_continues_positions():
    pe = PositionalEncoding(8, 2)
    x = tt.Tensor(np.zeros((1, 3, 2)))
    np.testing.assert_array_equal(pe(x, offset=4).data[0], pe.weight.data[4:7])
    with pytest.raises(ValueError, match="9 positions.*max_seq_len=8"):
        pe(x, offset=6)


def test_positional_encoding_rejects_long_sequences_and_wrong_widths():
    pe = PositionalEncoding(max_seq_len=4, embed_dim=3)
    with pytest.raises(ValueError, match="5 positions.*max_seq_len=4"):
        pe(tt.Tensor(np.zeros((1, 5, 3))))
    with pytest.raises(ValueError, match=r"\(1, 2, 2\)"):
        pe(tt.Tensor(np.zeros((1, 2, 2))))


def test_learned_positions_start_small():
    tt.manual_seed(1)
    weight = PositionalEncoding(512, 64).weight.data
    assert abs(weight.std() - 0.02) < 0.001


def test_sinusoidal_table_is_the_transformer_papers_interleaved_formula():
    for max_len, dim in ((6, 8), (5, 7)):                     # odd widths end with a sine
        table = create_sinusoidal_embeddings(max_len, dim)
        assert table.shape == (max_len, dim) and not table.requires_grad
        assert table.dtype == np.float32
        for p in range(max_len):
            for j in range(dim):
                angle = p / 10000 ** ((j - j % 2) / dim)
                expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
                assert table.data[p, j] == pytest.approx(expected, abs=1e-6)


# ----- EmbeddingLayer ----------------------------------------------------------------------------

def test_embedding_layer_learned_positions_and_scaling():
    layer = EmbeddingLayer(10, 4, max_seq_len=6, scale_embeddings=True)
    tokens = np.array([[1, 2, 3], [3, 3, 0]])
    out = layer(tokens)
    expected = (layer.token_embedding.weight.data[tokens] * 2.0
                + layer.pos_encoding.weight.data[:3])
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)
    out.sum().backward()
    assert layer.token_embedding.weight.grad.data[3, 0] == pytest.approx(3 * 2.0)
    assert sorted(layer.state_dict()) == ["pos_encoding.weight", "token_embedding.weight"]


def test_embedding_layer_sinusoidal_and_no_positions():
    tokens = np.array([[4, 5]])
    sinusoidal = EmbeddingLayer(10, 4, max_seq_len=6, pos_encoding="sinusoidal")
    np.testing.assert_allclose(sinusoidal(tokens).data,
                               sinusoidal.token_embedding.weight.data[tokens]
                               + create_sinusoidal_embeddings(6, 4).data[:2], rtol=1e-6)
    assert list(sinusoidal.state_dict()) == ["token_embedding.weight"]   # the table is fixed
    plain = EmbeddingLayer(10, 4, pos_encoding=None)
    np.testing.assert_array_equal(plain(tokens).data, plain.token_embedding.weight.data[tokens])


def test_embedding_layer_errors():
    with pytest.raises(ValueError, match="pos_encoding"):
        EmbeddingLayer(10, 4, pos_encoding="rotary")
    layer = EmbeddingLayer(10, 4, max_seq_len=3)
    with pytest.raises(ValueError, match="4 positions.*max_seq_len=3"):
        layer(np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(IndexError, match="index 10"):
        layer(np.array([[10]]))
