"""The Chrome-trace timeline: valid events, a process per node, a thread per lane, lanes that
run one task at a time, and summary tracks whose spans add up to the reported step time."""

import json
from collections import defaultdict

import pytest
from test_sim_hardware import make_trace

from asprof.presets import PRESETS
from asprof.simulate.costs import OptimizerSpec
from asprof.simulate.hardware import HardwareModel
from asprof.simulate.predict import Cluster, SimConfig, predict
from asprof.simulate.timeline import chrome_trace, render_timeline
from asprof.simulate.workload import Workload

SPECS = [OptimizerSpec("adam"), OptimizerSpec("kpop", warmup=2, frequency=3),
         OptimizerSpec("topkpop", sparsity=0.1, warmup=2, frequency=3)]


def make(K=3, steps=7, collapse="never", spread=(0.9, 1.0, 1.2)):
    hw = HardwareModel.from_trace(make_trace(spread=spread))
    return predict(Workload(PRESETS["tiny"], 2, 32), SPECS, Cluster(K, hw),
                   SimConfig(steps=steps, collapse=collapse, timeline=True))


@pytest.mark.parametrize("K, collapse", [(3, "never"), (1, "auto"), (4, "always")])
def test_timeline_is_valid_chrome_trace_json_that_adds_up(K, collapse):
    pred = make(K, collapse=collapse)
    doc = json.loads(render_timeline(pred))
    events = doc["traceEvents"]
    for ev in events:
        for key in ("name", "ph", "ts", "dur", "pid", "tid"):
            assert key in ev, (key, ev)
        assert ev["ph"] in ("X", "M") and ev["dur"] >= 0 and ev["ts"] >= 0
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int)
    names = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "process_name"}
    for o, res in enumerate(pred.results):
        base = o * 1_000_000
        ranks = 1 if res.collapsed else K
        node_pids = {pid for pid, _ in names if base < pid < base + 1_000_000}
        assert node_pids == {base + 1 + r for r in range(ranks)}
        x = [e for e in events if e["ph"] == "X"]
        total_us = res.mean_s * res.steps * 1e6
        for tid in (1, 2):  # steps, critical path: contiguous spans that add up to the run
            track = sorted((e for e in x if e["pid"] == base and e["tid"] == tid), key=lambda e: e["ts"])
            assert sum(e["dur"] for e in track) == pytest.approx(total_us, rel=1e-9)
            assert track[0]["ts"] == 0
            for a, b in zip(track, track[1:]):
                assert b["ts"] == pytest.approx(a["ts"] + a["dur"], rel=1e-9, abs=1e-6)
        steps = [e for e in x if e["pid"] == base and e["tid"] == 1]
        assert [e["dur"] / 1e6 for e in steps] == pytest.approx(list(res.step_times_s), rel=1e-9)
        lanes = defaultdict(list)  # every lane of every node runs one task at a time
        for e in x:
            if e["pid"] != base:
                lanes[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
        assert lanes
        for spans in lanes.values():
            spans.sort()
            assert all(a[1] <= b[0] + 1e-6 for a, b in zip(spans, spans[1:]))
        if K > 1:
            threads = {(e["pid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
            assert (base + 1, "link") in threads and (base + 1, "gpu") in threads and (base + 1, "cpu") in threads


def test_timeline_needs_spans():
    hw = HardwareModel.from_trace(make_trace())
    pred = predict(Workload(PRESETS["tiny"], 1, 16), SPECS[:1], Cluster(2, hw), SimConfig(steps=2))
    with pytest.raises(ValueError, match="timeline=True"):
        chrome_trace(pred)
