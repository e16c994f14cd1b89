"""A small LLaMA-style language model in MLX, built exactly from :class:`asprof.presets.ModelConfig`.

Pre-norm blocks (Touvron et al. 2023): RMSNorm → rotary multi-head causal attention
(q, k, v, o projections without biases) → residual → RMSNorm → gated SiLU MLP (gate, up, down)
→ residual; a final RMSNorm and an output head tied to the token embedding. Parameter names
match ``ModelConfig.linear_shapes()`` / ``vector_shapes()`` so the optimizers' routing, the
simulator's workload and this model agree on which matrices exist; the embedding is
``tok_embeddings.weight``. ``n_params`` equals ``ModelConfig.n_params()`` (tested).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from asprof.presets import ModelConfig

RMS_EPS = 1e-5
ROPE_BASE = 10000.0
EMBED_STD = 0.02  # GPT-2 / LLaMA-style small init, so tied-head logits start near uniform


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.hidden
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.q_proj = nn.Linear(h, h, bias=False)
        self.k_proj = nn.Linear(h, h, bias=False)
        self.v_proj = nn.Linear(h, h, bias=False)
        self.o_proj = nn.Linear(h, h, bias=False)
        # nn.RoPE calls mx.fast.rope (non-interleaved, the LLaMA/HF convention).
        self.rope = nn.RoPE(self.head_dim, traditional=False, base=ROPE_BASE)

    def __call__(self, x: mx.array) -> mx.array:
        b, n, _ = x.shape

        def heads(t):
            return t.reshape(b, n, self.heads, self.head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        q, k = self.rope(q), self.rope(k)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim), mask="causal")
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.hidden, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.hidden, eps=RMS_EPS)
        self.attention = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.hidden, eps=RMS_EPS)
        self.mlp = MLP(cfg)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class LLaMA(nn.Module):
    """``LLaMA(cfg)(tokens)`` → logits (batch, seq, vocab). Untied configs get an ``output`` head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab, cfg.hidden)
        self.tok_embeddings.weight = EMBED_STD * mx.random.normal((cfg.vocab, cfg.hidden))
        self.layers = [Block(cfg) for _ in range(cfg.layers)]
        self.norm = nn.RMSNorm(cfg.hidden, eps=RMS_EPS)
        if not cfg.tied_embeddings:
            self.output = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.tok_embeddings(tokens)
        for block in self.layers:
            x = block(x)
        x = self.norm(x)
        if self.config.tied_embeddings:
            return self.tok_embeddings.as_linear(x)
        return self.output(x)


def n_params(model: nn.Module) -> int:
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.parameters()))


def build_model(cfg: ModelConfig, seed: int = 0) -> LLaMA:
    """A freshly initialised model, identical for the same ``seed`` (every rank builds the same)."""
    mx.random.seed(seed)
    model = LLaMA(cfg)
    mx.eval(model.parameters())
    return model


def loss_fn(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """Mean next-token cross-entropy over all tokens of the (local) batch."""
    logits = model(inputs)
    return nn.losses.cross_entropy(logits, targets, reduction="mean")
