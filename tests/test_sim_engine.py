"""The discrete-event engine: exact times on hand-built graphs, FIFO lanes, deterministic ties,
and the critical path tiling the makespan."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asprof.simulate.engine import NO_LANE, Engine


def test_one_lane_runs_tasks_one_at_a_time_in_order():
    e = Engine()
    ln = e.lane("n0", "gpu")
    a = e.task(ln, 2.0)
    b = e.task(ln, 3.0)
    assert e.run() == 5.0
    assert (e.start[a], e.end[a], e.start[b], e.end[b]) == (0.0, 2.0, 2.0, 5.0)
    assert e.cause[b] == a  # it waited for the lane


def test_diamond_across_lanes():
    e = Engine()
    l0, l1 = e.lane("n0", "gpu"), e.lane("n0", "cpu")
    a = e.task(l0, 1.0)
    b = e.task(l1, 2.0, [a])
    c = e.task(l0, 3.0, [a])
    d = e.task(l1, 1.0, [b, c])
    assert e.run() == 5.0
    assert [(e.start[t], e.end[t]) for t in (a, b, c, d)] == [(0, 1), (1, 3), (1, 4), (4, 5)]
    assert e.critical_path() == [a, c, d]


def test_lane_queue_is_in_order_of_readiness_not_of_creation():
    e = Engine()
    busy, l1, l2 = e.lane(0, "gpu"), e.lane(0, "cpu"), e.lane(0, "link")
    x = e.task(busy, 5.0)
    q = e.task(l2, 2.0)
    p = e.task(l1, 1.0)
    z = e.task(busy, 1.0, [q])  # created first, ready at 2
    y = e.task(busy, 1.0, [p])  # created second, ready at 1
    e.run()
    assert e.end[x] == 5.0
    assert (e.start[y], e.start[z]) == (5.0, 6.0)


def test_no_lane_tasks_overlap_freely():
    e = Engine()
    a = e.task(NO_LANE, 4.0)
    b = e.task(NO_LANE, 4.0)
    c = e.task(NO_LANE, 1.0, [a, b])
    assert e.run() == 5.0
    assert e.start[b] == 0.0 and e.start[c] == 4.0


def test_simultaneous_events_are_deterministic():
    def build():
        e = Engine()
        lanes = [e.lane(i, "gpu") for i in range(4)]
        first = [e.task(ln, 1.0) for ln in lanes]  # all end at t = 1
        shared = e.lane("s", "link")
        after = [e.task(shared, 0.5, [f], tag=i) for i, f in enumerate(first)]
        e.run()
        return [e.start[t] for t in after], e.critical_path()

    starts, path = build()
    assert starts == [1.0, 1.5, 2.0, 2.5]  # processed in the order the completions were scheduled
    assert build() == (starts, path)


def test_zero_durations_and_empty_graph():
    e = Engine()
    assert e.run() == 0.0 and e.critical_path() == []
    e = Engine()
    ln = e.lane(0, "gpu")
    a = e.task(ln, 0.0)
    b = e.task(ln, 0.0, [a])
    assert e.run() == 0.0 and e.end[b] == 0.0


def test_bad_input_is_rejected():
    e = Engine()
    ln = e.lane(0, "gpu")
    with pytest.raises(ValueError, match="duration"):
        e.task(ln, -1.0)
    with pytest.raises(ValueError, match="duration"):
        e.task(ln, float("nan"))
    with pytest.raises(ValueError, match="earlier task"):
        e.task(ln, 1.0, [0])
    with pytest.raises(ValueError, match="lane"):
        e.task(7, 1.0)
    e.task(ln, 1.0)
    e.run()
    with pytest.raises(RuntimeError):
        e.run()
    with pytest.raises(RuntimeError):
        e.task(ln, 1.0)


@st.composite
def graphs(draw):
    n_lanes = draw(st.integers(1, 4))
    n = draw(st.integers(1, 40))
    tasks = []
    for i in range(n):
        lane = draw(st.integers(-1, n_lanes - 1))
        dur = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25]))
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        tasks.append((lane, dur, deps))
    return n_lanes, tasks


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_schedules_are_valid_work_conserving_and_tiled_by_the_critical_path(g):
    n_lanes, tasks = g
    e = Engine()
    for i in range(n_lanes):
        e.lane(0, f"l{i}")
    for lane, dur, deps in tasks:
        e.task(lane, dur, deps)
    makespan = e.run()
    for tid, (lane, dur, deps) in enumerate(tasks):
        ready = max((e.end[d] for d in deps), default=0.0)
        assert e.start[tid] >= ready
        assert e.end[tid] == e.start[tid] + dur
        if e.start[tid] > ready:  # started late only because its lane was busy until exactly then
            assert lane != NO_LANE
            assert any(e.end[o] == e.start[tid] and tasks[o][0] == lane for o in range(len(tasks)) if o != tid)
    for lane in range(n_lanes):  # one task at a time per lane
        spans = sorted((e.start[t], e.end[t]) for t in range(len(tasks)) if tasks[t][0] == lane and tasks[t][1] > 0)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    path = e.critical_path()
    assert e.start[path[0]] == 0.0 and e.end[path[-1]] == makespan
    assert all(e.end[a] == e.start[b] for a, b in zip(path, path[1:]))
    assert sum(e.duration(t) for t in path) == pytest.approx(makespan, abs=1e-12)
