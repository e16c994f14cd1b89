"""LLaMA-style model configurations shared by the real model (`asprof.train`) and the
simulator's workload model (`asprof.simulate`). Pure Python: the simulator must not import MLX.

A model is a stack of ``layers`` blocks, each RMSNorm → rotary multi-head attention (q, k, v, o
projections, no biases) → RMSNorm → gated MLP (gate, up: hidden→ffn; down: ffn→hidden), then a
final RMSNorm and an output head tied to the token embedding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from asprof.errors import AsprofError


@dataclass(frozen=True)
class ModelConfig:
    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    vocab: int
    seq_len: int  # default training sequence length for this preset
    tied_embeddings: bool = True
    description: str = ""

    def __post_init__(self):
        for f in ("layers", "hidden", "ffn", "heads", "vocab", "seq_len"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise AsprofError(f"model {self.name!r}: {f} must be a positive integer, got {v!r}")
        if self.hidden % self.heads:
            raise AsprofError(f"model {self.name!r}: hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if (self.hidden // self.heads) % 2:
            raise AsprofError(f"model {self.name!r}: head dimension must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[str, int, int]]:
        """(name, out_features, in_features) of every linear layer, in forward order.

        These are the weight matrices W ∈ R^{R×C} (R = out, C = in) that KPOP preconditions.
        The tied output head is the embedding matrix and is not listed here.
        """
        h, f = self.hidden, self.ffn
        out = []
        for i in range(self.layers):
            p = f"layers.{i}"
            out += [
                (f"{p}.attention.q_proj", h, h),
                (f"{p}.attention.k_proj", h, h),
                (f"{p}.attention.v_proj", h, h),
                (f"{p}.attention.o_proj", h, h),
                (f"{p}.mlp.gate_proj", f, h),
                (f"{p}.mlp.up_proj", f, h),
                (f"{p}.mlp.down_proj", h, f),
            ]
        return out

    def vector_shapes(self) -> list[tuple[str, int]]:
        """1-D parameters (RMSNorm weights)."""
        out = []
        for i in range(self.layers):
            out += [(f"layers.{i}.attention_norm.weight", self.hidden), (f"layers.{i}.mlp_norm.weight", self.hidden)]
        return out + [("norm.weight", self.hidden)]

    def n_params(self) -> int:
        linear = sum(r * c for _, r, c in self.linear_shapes())
        vectors = sum(n for _, n in self.vector_shapes())
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return linear + vectors + embed

    def with_overrides(self, **kw) -> "ModelConfig":
        kw = {k: v for k, v in kw.items() if v is not None}
        return replace(self, **kw) if kw else self

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig(
            "tiny", layers=2, hidden=64, ffn=128, heads=4, vocab=256, seq_len=64,
            description="for tests and smoke runs",
        ),
        ModelConfig(
            "kpop-1.7m", layers=4, hidden=128, ffn=256, heads=8, vocab=8192, seq_len=1024,
            description="the KPOP paper's Mac mini model (§5, Table 2): 4 layers, hidden 128, "
            "FFN 256, 8 heads, tied 8192-token vocabulary, ≈1.7 M parameters",
        ),
        ModelConfig(
            "small", layers=4, hidden=256, ffn=512, heads=8, vocab=256, seq_len=256,
            description="a byte-level model a little larger than the paper's, for validation runs",
        ),
        ModelConfig(
            "medium-35m", layers=8, hidden=512, ffn=1536, heads=8, vocab=8192, seq_len=1024,
            description="≈35 M parameters, the size of the KPOP paper's Mac Studio run (its exact "
            "architecture is not published; this one is ours)",
        ),
        ModelConfig(
            "gpt2-125m", layers=12, hidden=768, ffn=3072, heads=12, vocab=50304, seq_len=1024,
            description="GPT-2-small-sized LLaMA (the KPOP paper's NanoGPT setting, §A.1)",
        ),
    )
}

DEFAULT_PRESET = "kpop-1.7m"


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise AsprofError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config from a JSON file with the fields of :class:`ModelConfig`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise AsprofError(f"{p}: cannot read model config ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise AsprofError(f"{p}: model config is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise AsprofError(f"{p}: model config must be a JSON object")
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(data) - known
    if unknown:
        raise AsprofError(f"{p}: unknown model config field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    data.setdefault("name", p.stem)
    try:
        return ModelConfig(**data)
    except TypeError as e:
        raise AsprofError(f"{p}: {e}") from None


def resolve_model(spec: str) -> ModelConfig:
    """A preset name, or a path to a JSON model config."""
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.endswith(".json") or Path(spec).is_file():
        return load_model_config(spec)
    return get_preset(spec)
