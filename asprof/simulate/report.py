"""Rendering a :class:`SimulationReport`: the text tables and the JSON document (no I/O)."""

from __future__ import annotations

import json

from asprof.simulate.energy import energy
from asprof.simulate.session import SimulationReport
from asprof.simulate.summarise import BREAKDOWN
from asprof.units import count as fmt_rate, nbytes as fmt_bytes, seconds

_BREAKDOWN_HEAD = {"compute": "compute", "exposed_comm": "exposed comm", "optimizer_accel": "opt accel",
                   "optimizer_cpu": "opt CPU", "refresh": "refresh"}


def fmt_time(s: float) -> str:
    return seconds(s, digits=4)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def header(rep: SimulationReport) -> list[str]:
    cfg, w, t = rep.config, rep.workload, rep.trace
    kind = "measured figures" if t.measured else (
        "published/derived figures, not measured on your machine" if t.bundled else
        "figures of origin " + ", ".join(f"{k}: {v}" for k, v in sorted(t.origins.items())))
    lanes = ("MLX runs on the CPU: accelerator and CPU work share one lane per node" if t.shared_lanes
             else "accelerator and CPU are separate lanes")
    nodes = ",".join(str(k) for k in cfg.nodes)
    if cfg.run.global_batch is not None and len(cfg.nodes) > 1:
        batch = f"global batch {cfg.run.global_batch} × seq {w.seq} split over the nodes"
    elif cfg.run.global_batch is not None:
        batch = f"global batch {cfg.run.global_batch} = {w.batch} × seq {w.seq} per node ({w.tokens} tokens)"
    else:
        batch = f"batch {w.batch} × seq {w.seq} per node ({w.tokens} tokens)"
    lines = [
        f"model {rep.model.name}: {rep.model.n_params() / 1e6:.3g} M parameters; {batch}, {w.dtype}; nodes {nodes}",
        f"trace: {t.label} ({kind}); chosen from {t.why}",
        f"  {t.chip}, {t.memory_bytes / 2**30:.3g} GiB per node, accelerator {t.accelerator}: {lanes}",
    ]
    sched = [f"{cfg.steps} steps"]
    if any(o in ("kpop", "topkpop") for o in cfg.optimizers):
        sched.append(f"KPOP refresh every step while t < {cfg.run.warmup}, then every {cfg.run.frequency} steps "
                     f"({cfg.run.eig_method})")
    structured = [o for o in cfg.optimizers if o in ("eigen-adam", "soap", "alice", "alice-0")]
    if structured:
        k = f"every {cfg.run.interval} steps" if cfg.run.interval else "every K steps (10; Alice 200)"
        sched.append(f"{'/'.join(structured)} refresh at the first step, then {k}")
    if any(o.startswith("alice") for o in cfg.optimizers):
        sched.append(f"Alice rank {cfg.run.rank:g}" + (" of the smaller side" if cfg.run.rank <= 1 else ""))
    lines.append(f"schedule: {'; '.join(sched)}; seed {cfg.seed}")
    return lines


def _state(r) -> float:
    m = r.memory_bytes
    return m.get("optimizer_state", 0) + m.get("preconditioner", 0) + m.get("batch_factors", 0)


def _effective(rep: SimulationReport, r) -> str:
    """tokens/s × the steps-to-target speed-up (paper 004, F.5), or "—" without one."""
    s = rep.speedups.get(r.name)
    if s is None:
        return "—"
    return f"{fmt_rate(r.tokens_per_s * s[0])} (×{s[0]:.3g})"


def render_text(rep: SimulationReport, plot_path: str | None = None, timeline_path: str | None = None) -> str:
    lines = header(rep) + [""]
    if rep.config.is_sweep:
        eff = bool(rep.speedups)
        multi = len({p.backend for p in rep.predictions}) > 1
        rows = [(["backend"] if multi else []) + ["nodes", "optimizer", "mean", "p95", "tokens/s"] +
                (["effective tokens/s"] if eff else []) + ["MFU", "sent/node/step", "memory/node"] +
                (["J/step/node", "mJ/token"] if rep.power else [])]
        for p in rep.predictions:
            for r in p.results:
                rows.append(([p.backend] if multi else []) + [str(p.nodes), r.label, fmt_time(r.mean_s), fmt_time(r.p95_s), fmt_rate(r.tokens_per_s)] +
                            ([_effective(rep, r)] if eff else []) +
                            [f"{100 * r.mfu:.1f}%", fmt_bytes(r.bytes_sent["total"]),
                             fmt_bytes(r.memory_bytes["total"]) + ("" if r.fits else " (does not fit)")] +
                            _energy_cells(rep, p, r))
        lines += _table(rows, right={int(multi)} | set(range(2 + multi, len(rows[0]))))
    else:
        p = rep.predictions[0]
        eff = bool(rep.speedups)
        rows = [["optimizer", "mean", "p50", "p95", "after warm-up", "tokens/s"] +
                (["effective tokens/s"] if eff else []) + ["MFU", "sent/node/step", "memory/node", "of which opt. state"] +
                (["J/step/node", "mJ/token"] if rep.power else [])]
        for r in p.results:
            rows.append([r.label, fmt_time(r.mean_s), fmt_time(r.p50_s), fmt_time(r.p95_s),
                         fmt_time(r.steady_mean_s), fmt_rate(r.tokens_per_s)] + ([_effective(rep, r)] if eff else []) +
                        [f"{100 * r.mfu:.1f}%", fmt_bytes(r.bytes_sent["total"]),
                         f"{fmt_bytes(r.memory_bytes['total'])} of {fmt_bytes(r.node_memory_bytes)}",
                         fmt_bytes(_state(r))] + _energy_cells(rep, p, r))
        lines += _table(rows, right=set(range(1, len(rows[0]))))
        lines += ["", f"breakdown per step (critical path; the refresh amortised over {p.steps} steps):"]
        rows = [["optimizer"] + [_BREAKDOWN_HEAD[k] for k in BREAKDOWN] + ["= step"]]
        for r in p.results:
            rows.append([r.label] + [fmt_time(r.breakdown_s[k]) for k in BREAKDOWN] + [fmt_time(r.mean_s)])
        lines += _table(rows, right=set(range(1, 7)))
        kfac = [r for r in p.results if r.refreshes > 0]
        if kfac:
            r = kfac[0]
            d = r.refresh_detail_s
            sync = f"factor all-reduce {fmt_time(d['factor_allreduce'])}, " if r.name in ("kpop", "topkpop") else ""
            lines.append(f"  refresh ({r.refreshes} of {p.steps} steps): eigh/QR on the CPU {fmt_time(d['cpu'])}, "
                         f"{sync}accelerator {fmt_time(d['accel'])} per step ({r.label})")
        if p.nodes > 1:
            lines += ["", f"communication per node per step (ring all-reduce sends 2(K-1)/K of the payload, K = {p.nodes}):"]
            for r in p.results:
                b = r.bytes_sent
                text = f"  {r.label}: gradients {fmt_bytes(b['gradients'])}"
                if r.name in ("kpop", "topkpop"):
                    text += (f" (KFAC layers {fmt_bytes(b['kfac_gradients'])}) + factor sync "
                             f"{fmt_bytes(b['factors_amortised'])} amortised ({fmt_bytes(b['factors_per_refresh'])} "
                             "per refresh)")
                lines.append(text)
        else:
            lines += ["", "one node: no communication"]
        r0 = p.results[0]
        lines += ["", f"MFU against {r0.peak_flops / 1e12:.3g} TFLOP/s {rep.workload.dtype}: {r0.peak_source}"]
    if rep.power:
        pw = rep.power
        lines += ["", f"energy: {pw.idle_W:.3g} W idle, {pw.gemm_W:.3g} W GEMM-bound, {pw.membw_W:.3g} W bandwidth-bound "
                      f"({pw.source}); J/step = P_idle·T + (P_gemm − P_idle)·accelerator busy + (P_membw − P_idle)·CPU busy "
                      "(docs/simulator.md)"]
    if rep.speedups:
        lines += ["", "effective tokens/s = tokens/s × steps-to-target speed-up over Adam (paper 004, App. F.5):"]
        lines += [f"  {name}: ×{x:.3g} ({src})" for name, (x, src) in rep.speedups.items()]
    notes = list(dict.fromkeys(n for p in rep.predictions for n in p.notes))
    if notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in notes]
    if rep.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in rep.warnings]
    if plot_path:
        lines += ["", f"plot: {plot_path}"]
    if timeline_path:
        lines += ["", f"timeline: {timeline_path} (open it in https://ui.perfetto.dev or chrome://tracing)"]
    return "\n".join(lines) + "\n"


def report_dict(rep: SimulationReport, with_steps: bool = True) -> dict:
    cfg, t = rep.config, rep.trace
    return {
        "schema": "asprof.simulate",
        "version": 1,
        "config": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items() if k != "run"},
                   "run": cfg.run.to_dict()},
        "trace": {"label": t.label, "bundled": t.bundled, "origin": t.origin, "record_origins": t.origins,
                  "chip": t.chip, "memory_bytes": t.memory_bytes, "accelerator": t.accelerator,
                  "shared_lanes": t.shared_lanes, "chosen_because": t.why},
        "model": rep.model.to_dict(),
        "runs": [{"nodes": p.nodes, "backend": p.backend, "steps": p.steps, "seed": p.seed, "notes": list(p.notes),
                  "workload": {"batch_per_node": p.workload.batch, "seq": p.workload.seq, "dtype": p.workload.dtype,
                               "tokens_per_node": p.workload.tokens, "model_flop_per_node": p.workload.model_flop()},
                  "results": [_result_dict(rep, r, with_steps, p) for r in p.results]} for p in rep.predictions],
        "speedups": {name: {"speedup": x, "source": src} for name, (x, src) in rep.speedups.items()},
        "warnings": list(rep.warnings),
    }


def _energy_cells(rep: SimulationReport, p, r) -> list[str]:
    if not rep.power:
        return []
    e = energy(rep.power, r, p.workload.tokens)
    return [f"{e['J_per_step_per_node']:.3g} J", f"{1e3 * e['J_per_token']:.3g}"]


def _result_dict(rep: SimulationReport, r, with_steps: bool, p=None) -> dict:
    d = r.to_dict(with_steps)
    if rep.power and p is not None:
        d["energy"] = energy(rep.power, r, p.workload.tokens)
    s = rep.speedups.get(r.name)
    if s is not None:
        d["effective_tokens_per_s"] = r.tokens_per_s * s[0]
    return d


def render_json(rep: SimulationReport) -> str:
    return json.dumps(report_dict(rep), indent=1, allow_nan=False) + "\n"
