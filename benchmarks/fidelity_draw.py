"""Draw a randomized fidelity split (issue 16): training configurations from wide ranges, with a
seed. Pure: the same (seed, cells, shaped) always draws the same configurations, on any machine.

A *configuration* is one cluster (nodes, link) and one workload (model, seq, batch per node,
TopKPOP's s, f, warm-up) trained with two or three optimizers — one `asprof validate` run; a
*cell* is one (configuration, optimizer) comparison. ``draw_split(seed, cells)`` draws
configurations until there are ``cells`` cells (the last one may hold fewer optimizers).

Ranges (RANGES): nodes 1–6 (odd counts included); the link unshaped loopback or a namespace
ring shaped to 20 Mbit/s–10 Gbit/s, log-uniform (a coin flip between the two); models tiny,
kpop-1.7m, small (each with its own vocabulary) and random LLaMA configs (layers 1–6, hidden
32–256 even, heads dividing hidden with an even head dimension, FFN 1–4 × hidden, the byte
vocabulary); seq 32–512 and TopKPOP's s 0.05–1 log-uniform; batch 1–16 per node, f 1–50,
warm-up 0–10 uniform; optimizers drawn without replacement from all eight.

``shaped=False`` (no root, so no namespaces): every link is loopback. The rate is drawn all the
same, so every other field of every configuration is what the seed draws with root.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asprof.spec import BYTE_VOCAB, OPTIMIZERS  # noqa: E402

MODELS = ("tiny", "kpop-1.7m", "small", "random")
RANGES = {"nodes": (1, 6), "rate_mbit": (20.0, 10_000.0), "seq": (32, 512), "batch": (1, 16),
          "sparsity": (0.05, 1.0), "frequency": (1, 50), "warmup": (0, 10), "layers": (1, 6),
          "hidden": (32, 256), "ffn_ratio": (1.0, 4.0), "optimizers": (2, 3)}


@dataclass(frozen=True)
class Draw:
    """One drawn configuration (see module doc)."""

    index: int
    nodes: int
    rate_mbit: float | None  # None: unshaped loopback (one node: no link at all)
    model: str  # a preset, or "random" with ``model_config``
    seq: int
    batch: int  # sequences per node as drawn (fidelity_random.size_cell may lower it to fit the budget)
    sparsity: float
    frequency: int
    warmup: int
    optimizers: tuple[str, ...]
    model_config: dict | None = None  # random: ModelConfig fields (name, layers, hidden, ffn, heads, vocab, seq_len)

    @property
    def link(self) -> str:
        if self.nodes == 1:
            return "none"
        return "loopback" if self.rate_mbit is None else f"netns {self.rate_mbit:g} Mbit/s"

    def label(self) -> str:
        m = self.model_config["name"] if self.model_config else self.model
        return (f"#{self.index} {m} K={self.nodes} {self.link} seq {self.seq} batch {self.batch} "
                f"s={self.sparsity:g} f={self.frequency} W={self.warmup}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizers"] = list(self.optimizers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Draw":
        return cls(**{**d, "optimizers": tuple(d["optimizers"])})


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def random_model(rng: random.Random, name: str, seq: int) -> dict:
    """A LLaMA config (asprof.presets.ModelConfig fields) from RANGES: hidden even, heads a
    divisor of hidden leaving an even head dimension (rotary embeddings need one)."""
    layers = rng.randint(*RANGES["layers"])
    hidden = 2 * rng.randint(RANGES["hidden"][0] // 2, RANGES["hidden"][1] // 2)
    heads = rng.choice([h for h in range(1, hidden + 1) if hidden % h == 0 and (hidden // h) % 2 == 0])
    ffn = max(1, round(hidden * rng.uniform(*RANGES["ffn_ratio"])))
    return {"name": name, "layers": layers, "hidden": hidden, "ffn": ffn, "heads": heads, "vocab": BYTE_VOCAB,
            "seq_len": seq}


def draw_one(rng: random.Random, seed: int, index: int, n_optimizers: int, shaped: bool) -> Draw:
    """One configuration; consumes the same random numbers whatever ``shaped`` is."""
    nodes = rng.randint(*RANGES["nodes"])
    shaped_link = rng.random() < 0.5
    rate = round(_log_uniform(rng, *RANGES["rate_mbit"]), 1)
    model = rng.choice(MODELS)
    seq = round(_log_uniform(rng, *RANGES["seq"]))
    batch = rng.randint(*RANGES["batch"])
    sparsity = round(_log_uniform(rng, *RANGES["sparsity"]), 3)
    frequency = rng.randint(*RANGES["frequency"])
    warmup = rng.randint(*RANGES["warmup"])
    optimizers = tuple(rng.sample(OPTIMIZERS, RANGES["optimizers"][1]))[:n_optimizers]
    config = random_model(rng, f"random-s{seed}-{index}", seq) if model == "random" else None
    return Draw(index=index, nodes=nodes, rate_mbit=rate if (shaped and shaped_link and nodes > 1) else None,
                model=model, seq=seq, batch=batch, sparsity=sparsity, frequency=frequency, warmup=warmup,
                optimizers=optimizers, model_config=config)


def draw_split(seed: int, cells: int, shaped: bool = True) -> tuple[Draw, ...]:
    """Configurations holding ``cells`` cells in all, drawn with ``seed`` (see module doc)."""
    if cells < 1:
        raise ValueError(f"cells must be >= 1, got {cells}")
    rng = random.Random(f"asprof-fidelity-{seed}")  # a string seed: the same stream on every platform
    draws, left = [], cells
    while left > 0:
        k = min(left, rng.randint(*RANGES["optimizers"]))
        draws.append(draw_one(rng, seed, len(draws), k, shaped))
        left -= k
    return tuple(draws)
