"""Effective throughput (paper 004, App. F.5 and Table 2): tokens/s adjusted by how many fewer
steps an optimizer needs than the reference (Adam) to reach the reference's final loss.

    speed-up S = steps the reference needs to reach its final loss L*
                 / steps the candidate needs to reach L*
    effective tokens/s = tokens/s × S

(F.5 defines it as the reference's total tokens over the candidate's time to reach L*; with the
same tokens per step that is the product above.) S comes either from the user (``--speedup
soap=1.5``) or from two measured loss curves (``asprof train`` results). Pure functions: the
curves are read at the edge (session.py).
"""

from __future__ import annotations

SMOOTH = 10  # trailing mean over this many steps for training-loss curves (they are noisy)


def effective_tokens_per_s(tokens_per_s: float, speedup: float) -> float:
    return tokens_per_s * speedup


def smoothed(losses: list[float], window: int = SMOOTH) -> list[tuple[int, float]]:
    """(step, trailing mean over ``window`` steps) for steps 1..N: a training-loss curve."""
    out, acc = [], 0.0
    for i, x in enumerate(losses):
        acc += x
        if i >= window:
            acc -= losses[i - window]
        out.append((i + 1, acc / min(i + 1, window)))
    return out


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first step at which ``curve`` ((step, loss) pairs, steps increasing) is ≤ target."""
    for step, loss in curve:
        if loss <= target:
            return step
    return None


def speedup_from_curves(reference: list[tuple[int, float]], candidate: list[tuple[int, float]]) -> float:
    """S as above; 0 when the candidate never reaches the reference's final loss within its curve
    (the paper's Fig. 3 shows such optimizers at effective throughput 0)."""
    if not reference or not candidate:
        raise ValueError("a loss curve is empty")
    target = reference[-1][1]
    ref_steps = steps_to_reach(reference, target)
    cand_steps = steps_to_reach(candidate, target)
    if cand_steps is None:
        return 0.0
    return ref_steps / cand_steps


def has_validation_curve(result: dict) -> bool:
    return len(result.get("val_losses") or []) >= 3


def curve_of(result: dict, validation: bool) -> list[tuple[int, float]]:
    """The loss curve of an ``asprof train`` result dict: its validation losses (``--eval-every``;
    use them when every compared result has at least 3), else its training losses smoothed over
    SMOOTH steps."""
    if validation:
        return [(int(s), float(x)) for s, x in result["val_losses"]]
    losses = [float(x) for x in result.get("losses") or []]
    if not losses:
        raise ValueError("the result has no losses")
    return smoothed(losses)
