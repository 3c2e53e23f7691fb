"""Transformer (module 13) and KV cache (module 17): LayerNorm, MLP, blocks and GPT against
PyTorch in float64, causality, cached generation, state dicts."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.autograd import gradcheck
from tinytorch.core.functional import cross_entropy
from tinytorch.core.transformer import (
    GPT, MLP, KVCache, LayerNorm, TransformerBlock, create_causal_mask,
)

RNG = np.random.default_rng(13)


@pytest.fixture
def float64_default():
    tt.set_default_dtype(np.float64)
    yield
    tt.set_default_dtype(np.float32)


def randomize(module, scale=0.3):
    """Replace every parameter by random values (LayerNorm weights around 1), so that no
    gradient is trivially zero or one."""
    for name, p in module.named_parameters():
        values = RNG.standard_normal(p.shape) * scale
        layer_norm_gain = name.endswith("weight") and p.ndim == 1
        p.data[...] = values + 1.0 if layer_norm_gain else values


def test_create_causal_mask_is_true_on_and_below_the_diagonal():
    mask = create_causal_mask(4)
    assert mask.dtype == bool and mask.shape == (4, 4)
    np.testing.assert_array_equal(mask.data, np.tril(np.ones((4, 4), dtype=bool)))


def test_layer_norm_module_matches_torch(torch, float64_default):
    for shape, normalized in (((2, 3, 6), 6), ((2, 3, 4), (3, 4))):
        ln = LayerNorm(normalized)
        assert np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
        assert ln.gamma is ln.weight and ln.beta is ln.bias
        randomize(ln)
        theirs = torch.nn.LayerNorm(normalized, dtype=torch.float64)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ln.weight.data))
            theirs.bias.copy_(torch.tensor(ln.bias.data))
        x = RNG.standard_normal(shape)
        ours_x, their_x = tt.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        upstream = RNG.standard_normal(shape)
        out, expected = ln(ours_x), theirs(their_x)
        out.backward(upstream)
        expected.backward(torch.tensor(upstream))
        np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours_x.grad.data, their_x.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(ln.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(ln.bias.grad.data, theirs.bias.grad.numpy(), rtol=1e-9)


def test_mlp_is_linear_gelu_linear_dropout(torch, float64_default):
    mlp = MLP(6, dropout_prob=0.0)
    assert mlp.hidden_dim == 24 and mlp.linear1.weight.shape == (6, 24)
    x = RNG.standard_normal((2, 3, 6))
    expected = torch.nn.functional.gelu(
        torch.tensor(x) @ torch.tensor(mlp.linear1.weight.data) + torch.tensor(mlp.linear1.bias.data),
        approximate="tanh") @ torch.tensor(mlp.linear2.weight.data) + torch.tensor(mlp.linear2.bias.data)
    np.testing.assert_allclose(mlp(tt.Tensor(x)).data, expected.numpy(), rtol=1e-10)
    exact = MLP(6, hidden_dim=5, dropout_prob=0.0, approximate="none")
    h = torch.tensor(x) @ torch.tensor(exact.linear1.weight.data) + torch.tensor(exact.linear1.bias.data)
    expected = (torch.nn.functional.gelu(h) @ torch.tensor(exact.linear2.weight.data)
                + torch.tensor(exact.linear2.bias.data))
    np.testing.assert_allclose(exact(tt.Tensor(x)).data, expected.numpy(), rtol=1e-10)
    dropping = MLP(6, dropout_prob=0.5)
    tt.manual_seed(0)
    y = dropping(tt.Tensor(np.ones((4, 6)))).data
    assert np.any(y == 0)                                   # dropout after the second Linear
    dropping.eval()
    np.testing.assert_array_equal(dropping(tt.Tensor(np.ones((4, 6)))).data,
                                  dropping(tt.Tensor(np.ones((4, 6)))).data)


def test_transformer_block_is_pre_ln_with_the_curriculum_sub_modules(float64_default):
    block = TransformerBlock(8, num_heads=2, dropout_prob=0.0)
    assert [name for name, _ in block.named_children()] == ["ln1", "attn", "ln2", "mlp"]
    assert block.attention is block.attn and block.mlp.hidden_dim == 32
    randomize(block)
    x = tt.Tensor(RNG.standard_normal((2, 5, 8)))
    h = x + block.attn(block.ln1(x), is_causal=True)
    expected = h + block.mlp(block.ln2(h))
    np.testing.assert_allclose(block(x, is_causal=True).data, expected.data, rtol=1e-12)
    assert gradcheck(lambda x: block(x, is_causal=True), [tt.Tensor(x.data[:1, :3], requires_grad=True)])


# ----- GPT against an equivalent PyTorch model -----------------------------------------------

def torch_gpt(torch, model):
    """The same network written with PyTorch's modules, our weights copied in (float64)."""
    nn, F = torch.nn, torch.nn.functional
    D, H = model.embed_dim, model.num_heads

    def linear(ours, bias=True):
        layer = nn.Linear(*ours.weight.shape, bias=bias, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(ours.weight.data.T))
            if bias:
                layer.bias.copy_(torch.tensor(ours.bias.data))
        return layer

    def layer_norm(ours):
        layer = nn.LayerNorm(D, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(ours.weight.data))
            layer.bias.copy_(torch.tensor(ours.bias.data))
        return layer

    class Block(nn.Module):
        def __init__(self, ours):
            super().__init__()
            self.ln1, self.ln2 = layer_norm(ours.ln1), layer_norm(ours.ln2)
            a = ours.attn
            self.q, self.k, self.v, self.o = (linear(p) for p in (a.q_proj, a.k_proj, a.v_proj, a.out_proj))
            self.l1, self.l2 = linear(ours.mlp.linear1), linear(ours.mlp.linear2)

        def forward(self, x):
            B, T, _ = x.shape
            h = self.ln1(x)
            q, k, v = (f(h).view(B, T, H, D // H).transpose(1, 2) for f in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(B, T, D))
            return x + self.l2(F.gelu(self.l1(self.ln2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Parameter(torch.tensor(model.token_embedding.weight.data))
            self.wpe = nn.Parameter(torch.tensor(model.position_embedding.weight.data))
            self.blocks = nn.ModuleList(Block(b) for b in model.blocks)
            self.ln_f = layer_norm(model.ln_f)
            self.lm_head = linear(model.lm_head, bias=False)

        def forward(self, tokens):
            x = F.embedding(tokens, self.wte) + self.wpe[:tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return Model()


def their_gradient(theirs, name):
    """The torch gradient for our parameter ``name`` (Linear weights transposed back)."""
    table = {"token_embedding.weight": "wte", "position_embedding.weight": "wpe",
             "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias",
             "lm_head.weight": "lm_head.weight"}
    parts = {"ln1": "ln1", "ln2": "ln2", "attn.q_proj": "q", "attn.k_proj": "k",
             "attn.v_proj": "v", "attn.out_proj": "o", "mlp.linear1": "l1", "mlp.linear2": "l2"}
    if name in table:
        key = table[name]
    else:
        _, i, rest = name.split(".", 2)
        module, kind = rest.rsplit(".", 1)
        key = f"blocks.{i}.{parts[module]}.{kind}"
    grad = dict(theirs.named_parameters())[key].grad.numpy()
    is_linear_weight = name.endswith("weight") and grad.ndim == 2 and "embedding" not in name
    return grad.T if is_linear_weight else grad


def test_gpt_forward_and_backward_match_torch_with_copied_weights(torch, float64_default):
    model = GPT(vocab_size=11, embed_dim=8, num_layers=2, num_heads=2, max_seq_len=7, dropout_prob=0.0)
    randomize(model)
    theirs = torch_gpt(torch, model)
    tokens = RNG.integers(0, 11, (3, 7))
    targets = RNG.integers(0, 11, 21)
    logits = model(tokens)
    assert logits.shape == (3, 7, 11) and logits.dtype == np.float64
    loss = cross_entropy(logits.reshape(21, 11), targets)
    loss.backward()
    expected = theirs(torch.tensor(tokens))
    their_loss = torch.nn.functional.cross_entropy(expected.reshape(21, 11), torch.tensor(targets))
    their_loss.backward()
    np.testing.assert_allclose(logits.data, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(their_loss.item(), rel=1e-12)
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 2 + 2 * 16 + 3          # embeddings, 16 per block, ln_f and lm_head
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.data, their_gradient(theirs, name), rtol=1e-8, atol=1e-11,
                                   err_msg=name)


def test_gpt_initialisation_follows_gpt2():
    tt.manual_seed(0)
    model = GPT(65, 64, num_layers=4, num_heads=4, max_seq_len=256)
    params = dict(model.named_parameters())
    assert params["blocks.0.attn.q_proj.weight"].shape == (64, 64)
    assert params["lm_head.weight"].shape == (64, 65) and "lm_head.bias" not in params
    for name in ("token_embedding.weight", "position_embedding.weight", "blocks.1.mlp.linear1.weight"):
        assert abs(params[name].data.std() - 0.02) < 0.002, name
    residual = 0.02 / np.sqrt(2 * 4)
    assert abs(params["blocks.2.attn.out_proj.weight"].data.std() - residual) < 0.001
    assert np.all(params["blocks.3.mlp.linear2.bias"].data == 0)
    assert np.all(params["blocks.0.ln1.weight"].data == 1) and np.all(params["ln_f.bias"].data == 0)


def test_changing_future_tokens_never_changes_earlier_logits(float64_default):
    model = GPT(13, 8, num_layers=2, num_heads=2, max_seq_len=10, dropout_prob=0.0)
    randomize(model)
    tokens = RNG.integers(0, 13, (2, 10))
    base = model(tokens).data
    for t in (0, 4, 9):
        changed = tokens.copy()
        changed[:, t:] = (changed[:, t:] + 1 + RNG.integers(0, 12, changed[:, t:].shape)) % 13
        logits = model(changed).data
        np.testing.assert_allclose(logits[:, :t], base[:, :t], rtol=0, atol=1e-12)
        assert not np.allclose(logits[:, t], base[:, t])


def test_gpt_checks_its_input():
    model = GPT(5, 8, 1, 2, max_seq_len=4)
    with pytest.raises(ValueError, match="5 tokens exceed max_seq_len=4"):
        model(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(np.zeros(3, dtype=np.int64))
    with pytest.raises(IndexError, match="index 5"):
        model(np.array([[5]]))


# ----- KV cache and generation -----------------------------------------------------------------

def test_cached_forward_continues_positions_and_matches_the_full_forward(float64_default):
    model = GPT(17, 8, num_layers=2, num_heads=2, max_seq_len=12, dropout_prob=0.0)
    randomize(model)
    tokens = RNG.integers(0, 17, (2, 9))
    full = model(tokens).data
    cache = KVCache(2)
    pieces = [model(tokens[:, :4], cache=cache).data]           # prefill
    assert cache.length == 4
    pieces.append(model(tokens[:, 4:5], cache=cache).data)       # one position
    pieces.append(model(tokens[:, 5:9], cache=cache).data)       # a chunk after the cache
    assert cache.length == 9
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="after 9 cached positions"):
        model(tokens[:, :4], cache=cache)


@pytest.mark.parametrize("prompt_shape, new", [((5,), 20), ((3, 4), 12)])
def test_cached_and_uncached_generation_agree(float64_default, prompt_shape, new):
    model = GPT(23, 16, num_layers=2, num_heads=4, max_seq_len=10, dropout_prob=0.1)
    randomize(model, scale=0.5)
    prompt = RNG.integers(0, 23, prompt_shape)
    model.train()
    cached, cached_logits = model.generate(prompt, new, temperature=0.9, top_k=8, seed=7,
                                           return_logits=True)
    plain, plain_logits = model.generate(prompt, new, temperature=0.9, top_k=8, seed=7,
                                         use_cache=False, return_logits=True)
    assert model.training                                     # the previous mode is restored
    batch = 1 if len(prompt_shape) == 1 else prompt_shape[0]
    assert cached.shape == prompt_shape[:-1] + (prompt_shape[-1] + new,) and cached.dtype == np.int64
    assert cached_logits.shape == (batch, new, 23)
    np.testing.assert_array_equal(cached.data, plain.data)   # also past max_seq_len (cropped)
    np.testing.assert_allclose(cached_logits.data, plain_logits.data, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(cached.data[..., :prompt_shape[-1]], prompt)
    # the logits are the model's on the last max_seq_len tokens (nanoGPT's crop)
    sequence = cached.data.reshape(batch, -1)
    for step in (0, new - 1):
        context = sequence[:, :prompt_shape[-1] + step][:, -10:]
        model.eval()
        np.testing.assert_allclose(cached_logits.data[:, step], model(context).data[:, -1],
                                   rtol=1e-10, atol=1e-12)


def test_generation_options():
    tt.manual_seed(0)
    model = GPT(9, 8, 1, 2, max_seq_len=16)
    prompt = [1, 2, 3]
    a = model.generate(prompt, 10, seed=3)
    np.testing.assert_array_equal(a.data, model.generate(prompt, 10, seed=3).data)
    greedy, logits = model.generate(prompt, 6, top_k=1, return_logits=True)
    np.testing.assert_array_equal(greedy.data[3:], logits.data[0].argmax(axis=-1))
    tt.manual_seed(5)
    b = model.generate(prompt, 10)
    tt.manual_seed(5)
    np.testing.assert_array_equal(b.data, model.generate(prompt, 10).data)   # tinytorch's generator
    assert model.generate(prompt, 0).shape == (3,)
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            model.generate(prompt, 2, temperature=bad)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(prompt, 2, top_k=0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        model.generate([], 2)


def test_top_k_samples_only_among_the_k_largest_logits():
    tt.manual_seed(1)
    model = GPT(30, 8, 1, 2, max_seq_len=40)
    out, logits = model.generate([0], 30, top_k=3, temperature=5.0, seed=0, return_logits=True)
    top3 = np.argsort(logits.data[0], axis=-1)[:, -3:]
    assert all(token in allowed for token, allowed in zip(out.data[1:], top3))


def test_with_the_cache_each_new_token_costs_one_position_of_work(monkeypatch):
    tt.manual_seed(0)
    model = GPT(11, 8, num_layers=1, num_heads=2, max_seq_len=16)
    positions = []
    forward = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, tokens, cache=None: positions.append(
        np.shape(tokens)[-1]) or forward(self, tokens, cache))
    model.generate(np.arange(5), 8, seed=0)
    assert positions == [5] + [1] * 7                    # prefill, then one position per token
    positions.clear()
    model.generate(np.arange(5), 8, seed=0, use_cache=False)
    assert positions == list(range(5, 13))               # the whole context every time
    positions.clear()
    model.generate(np.arange(14) % 11, 4, seed=0)        # past max_seq_len: refilled, cropped
    assert positions == [14, 1, 1, 16]                   # the 4th token sees 17 > 16 tokens


def test_kv_cache_import_paths_and_checks():
    from tinytorch.perf.memoization import KVCache as CurriculumKVCache
    assert CurriculumKVCache is KVCache
    with pytest.raises(ValueError, match="num_layers"):
        KVCache(0)
    cache = KVCache(1)
    k = tt.Tensor(np.zeros((1, 2, 3, 4)))
    cache.update(0, k, k)
    with pytest.raises(ValueError, match="reset"):
        cache.update(0, tt.Tensor(np.zeros((2, 2, 1, 4))), tt.Tensor(np.zeros((2, 2, 1, 4))))
    cache.reset()
    assert cache.length == 0


# ----- saving and loading -------------------------------------------------------------------------

def test_state_dict_round_trip_gives_the_same_model(tmp_path):
    tt.manual_seed(0)
    model = GPT(20, 16, num_layers=2, num_heads=4, max_seq_len=8)
    tokens = RNG.integers(0, 20, (2, 8))
    model.eval()
    expected = model(tokens).data
    tt.save(model.state_dict(), tmp_path / "gpt.npz")
    tt.manual_seed(1)
    other = GPT(20, 16, num_layers=2, num_heads=4, max_seq_len=8)
    other.eval()
    assert not np.allclose(other(tokens).data, expected)
    other.load_state_dict(tt.load(tmp_path / "gpt.npz"))
    np.testing.assert_array_equal(other(tokens).data, expected)
    assert set(other.state_dict()) == set(model.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        GPT(20, 8, num_layers=2, num_heads=4, max_seq_len=8).load_state_dict(model.state_dict())


def test_the_package_root_exports_the_language_model_classes():
    from tinytorch import (  # noqa: F401
        GPT as RootGPT, KVCache as RootKVCache, LayerNorm as RootLayerNorm, MultiHeadAttention,
        Embedding, EmbeddingLayer, PositionalEncoding, TransformerBlock as RootBlock,
        create_causal_mask as root_mask, create_sinusoidal_embeddings, scaled_dot_product_attention,
    )
    assert RootGPT is GPT and RootKVCache is KVCache and RootBlock is TransformerBlock
