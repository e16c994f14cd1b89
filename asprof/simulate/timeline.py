"""Chrome trace JSON of a simulation (Trace Event Format; opens in Perfetto and chrome://tracing).

One process per node and optimizer ("kpop · node 3"), one thread per lane (gpu, cpu, link),
one complete event (``ph: "X"``) per task with ``ts``/``dur`` in microseconds. Each optimizer
also gets a "summary" process with two tracks whose spans add up to the reported time: *steps*
(one span per training step, from the end of the previous one) and *critical path* (the chain
of tasks that determined the step time, which the breakdown is computed from). Metadata events
(names, sort order) carry ``ts``/``dur`` 0 so every event has name/ph/ts/dur/pid/tid.
"""

from __future__ import annotations

import json

from asprof.simulate.predict import Prediction

US = 1e6
_LANE_TID = {"gpu": 1, "cpu": 2, "link": 3}
_PID_STRIDE = 1_000_000  # pids of optimizer o: o·stride (summary) and o·stride + 1 + rank


def _meta(kind: str, pid: int, tid: int, value) -> dict:
    key = "sort_index" if kind.endswith("sort_index") else "name"
    return {"name": kind, "ph": "M", "ts": 0, "dur": 0, "pid": pid, "tid": tid, "args": {key: value}}


def chrome_trace(pred: Prediction) -> dict:
    """The trace of every optimizer in ``pred`` (which must have been run with
    ``SimConfig(timeline=True)``)."""
    events: list[dict] = []
    for o, res in enumerate(pred.results):
        if not res.spans:
            raise ValueError("this prediction kept no spans: run predict with SimConfig(timeline=True)")
        base = o * _PID_STRIDE
        events.append(_meta("process_name", base, 0, f"{res.label} · summary (mean step {res.mean_s * 1e3:.4g} ms)"))
        events.append(_meta("process_sort_index", base, 0, 2 * o * 10_000))
        events.append(_meta("thread_name", base, 1, "steps"))
        events.append(_meta("thread_name", base, 2, "critical path"))
        t = 0.0
        for step, dur in enumerate(res.step_times_s):
            events.append({"name": f"step {step}", "cat": "step", "ph": "X", "ts": t * US, "dur": dur * US,
                           "pid": base, "tid": 1, "args": {"step": step}})
            t += dur
        ranks = sorted({s[0] for s in res.spans})
        for rank in ranks:
            pid = base + 1 + rank
            who = (f"node {rank} (stands for all {pred.nodes} identical nodes)" if res.collapsed and pred.nodes > 1
                   else f"node {rank}")
            events.append(_meta("process_name", pid, 0, f"{res.label} · {who}"))
            events.append(_meta("process_sort_index", pid, 0, 2 * o * 10_000 + 1 + rank))
        lanes = sorted({(s[0], s[1]) for s in res.spans})
        for rank, lane in lanes:
            events.append(_meta("thread_name", base + 1 + rank, _LANE_TID.get(lane, 1), lane))
        for rank, lane, name, cat, step, start, dur, crit in res.spans:
            ev = {"name": name, "cat": cat, "ph": "X", "ts": start * US, "dur": dur * US,
                  "pid": base + 1 + rank, "tid": _LANE_TID.get(lane, 1), "args": {"step": step}}
            events.append(ev)
            if crit:
                events.append(dict(ev, pid=base, tid=2, args={"step": step, "node": rank, "lane": lane}))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"producer": "asprof simulate", "nodes": pred.nodes, "steps": pred.steps, "seed": pred.seed}}


def render_timeline(pred: Prediction) -> str:
    return json.dumps(chrome_trace(pred), allow_nan=False, separators=(",", ":")) + "\n"
