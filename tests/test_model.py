"""The MLX LLaMA matches asprof.presets.ModelConfig (names, shapes, counts) and is causal."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from asprof.presets import PRESETS
from asprof.train.model import LLaMA, build_model, n_params


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_and_names_match_model_config(name):
    cfg = PRESETS[name].with_overrides(vocab=256)
    model = LLaMA(cfg)  # lazily initialised: counting needs shapes only
    assert n_params(model) == cfg.n_params()
    shapes = {k: v.shape for k, v in tree_flatten(model.parameters())}
    for layer, r, c in cfg.linear_shapes():
        assert shapes.pop(f"{layer}.weight") == (r, c)
    for vec, n in cfg.vector_shapes():
        assert shapes.pop(vec) == (n,)
    assert shapes == {"tok_embeddings.weight": (cfg.vocab, cfg.hidden)}  # tied head: no extra matrix


def test_untied_config_has_an_output_head():
    cfg = PRESETS["tiny"].with_overrides(tied_embeddings=False)
    model = LLaMA(cfg)
    assert n_params(model) == cfg.n_params()
    assert model.output.weight.shape == (cfg.vocab, cfg.hidden)


def test_logits_shape_causality_and_determinism():
    cfg = PRESETS["tiny"]
    model = build_model(cfg, seed=0)
    rng = np.random.default_rng(0)
    tok = rng.integers(0, cfg.vocab, size=(2, 12)).astype(np.int32)
    out = model(mx.array(tok))
    assert out.shape == (2, 12, cfg.vocab)
    changed = tok.copy()
    changed[:, 8:] = (changed[:, 8:] + 1) % cfg.vocab  # change the future only
    out2 = model(mx.array(changed))
    assert mx.allclose(out[:, :8], out2[:, :8], atol=1e-5).item()
    assert not mx.allclose(out[:, 8:], out2[:, 8:], atol=1e-3).item()
    same = build_model(cfg, seed=0)
    assert all(mx.array_equal(a, b).item() for (_, a), (_, b) in zip(tree_flatten(model.parameters()),
                                                                    tree_flatten(same.parameters())))


def test_rotary_embedding_makes_attention_order_aware():
    """Without positions, causal attention at the last token sees only the *set* of earlier tokens:
    swapping two earlier tokens would leave its logits unchanged (one layer; deeper layers mix
    earlier positions' own outputs). Rotary embeddings must not."""
    cfg = PRESETS["tiny"].with_overrides(layers=1)
    model = build_model(cfg, seed=1)
    a = model(mx.array([[10, 11, 12, 13, 14]]))
    b = model(mx.array([[11, 10, 12, 13, 14]]))
    assert not mx.allclose(a[:, -1], b[:, -1], atol=1e-4).item()
    model.layers[0].attention.rope = lambda t: t  # the check itself: no positions -> same logits
    a, b = model(mx.array([[10, 11, 12, 13, 14]])), model(mx.array([[11, 10, 12, 13, 14]]))
    assert mx.allclose(a[:, -1], b[:, -1], atol=1e-5).item()
