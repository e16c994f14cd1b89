"""The timing harness against a fake clock: statistics, stopping rules, warnings, sync placement."""

import numpy as np
import pytest

from asprof.probe.harness import Harness, HarnessConfig, summarize


class FakeClock:
    """A clock that only moves when a fake call says how long it took."""

    def __init__(self):
        self.now = 100.0
        self.calls = 0

    def __call__(self):
        return self.now

    def work(self, durations):
        """A callable that advances the clock by the next duration on each call."""
        it = iter(durations)

        def fn():
            self.calls += 1
            self.now += next(it)
            return self.calls

        return fn


def no_sync(_):
    pass


def harness(clock, **kw):
    base = dict(warmup=0, min_repeats=3, max_repeats=100, budget_s=1e9, max_time_s=1e9, target_cv=0.0)
    base.update(kw)
    return Harness(HarnessConfig(**base), clock=clock)


def test_statistics_match_numpy_and_cold_call_is_separate():
    clock = FakeClock()
    durations = [50.0, 2.0, 1.0, 4.0, 3.0, 9.0, 5.0]
    t = harness(clock, warmup=1, min_repeats=5, max_repeats=5).measure(clock.work(durations), no_sync)
    xs = np.array(durations[2:])
    assert t.first_s == 50.0  # the cold call, never a sample
    assert list(t.samples_s) == list(xs)  # the warm-up call (2.0) is not a sample either
    assert t.median_s == pytest.approx(np.median(xs))
    assert t.min_s == 1.0
    assert t.mean_s == pytest.approx(xs.mean())
    assert t.iqr_s == pytest.approx(np.percentile(xs, 75) - np.percentile(xs, 25))
    assert t.cv == pytest.approx(xs.std(ddof=1) / xs.mean())
    assert any("cold start" in w for w in t.warnings)  # 50 s vs a 4 s median
    assert any("high variance" in w for w in t.warnings)  # CV ~ 0.7


def test_steady_samples_stop_at_min_repeats():
    clock = FakeClock()
    t = harness(clock, min_repeats=4, target_cv=0.02).measure(clock.work([1.0] * 100), no_sync)
    assert len(t.samples_s) == 4 and t.cv == 0.0 and t.warnings == ()


def test_noisy_samples_run_until_the_budget_is_spent():
    clock = FakeClock()
    # cold 1 s, then samples alternating 1 s / 3 s: CV never reaches the target, so sampling
    # stops at the first sample that ends at or after 10 s since the start.
    durations = [1.0] + [1.0, 3.0] * 50
    t = harness(clock, min_repeats=2, budget_s=10.0, target_cv=0.01).measure(clock.work(durations), no_sync)
    assert list(t.samples_s) == [1.0, 3.0, 1.0, 3.0, 1.0]


def test_max_repeats_caps_the_samples():
    clock = FakeClock()
    t = harness(clock, min_repeats=2, max_repeats=7).measure(clock.work([1.0, 2.0] * 50), no_sync)
    assert len(t.samples_s) == 7


def test_slow_calls_get_two_samples_after_the_hard_cap_and_a_short_warmup():
    clock = FakeClock()
    t = harness(clock, warmup=3, min_repeats=5, budget_s=1.0, max_time_s=5.0).measure(clock.work([10.0] * 20), no_sync)
    # cold (10 s) already exceeds budget/4, so no warm-up; then 2 samples and the cap stops it.
    assert clock.calls == 3 and len(t.samples_s) == 2


def test_sync_is_inside_the_timed_region():
    clock = FakeClock()

    def sync(_):
        clock.now += 0.5  # e.g. mx.eval doing the real work of a lazy graph

    t = harness(clock, min_repeats=3, max_repeats=3).measure(clock.work([1.0] * 10), sync)
    assert t.samples_s == (1.5, 1.5, 1.5) and t.first_s == 1.5


def test_collective_agreement_decides_when_to_stop():
    clock = FakeClock()
    votes = []

    def agree(stop):  # another rank still wants samples until 6 are taken
        votes.append(stop)
        return len(votes) >= 6

    t = harness(clock, min_repeats=2, target_cv=0.5).measure(clock.work([1.0] * 50), no_sync, agree=agree)
    assert len(t.samples_s) == 6
    assert votes[:1] == [False] and all(votes[1:])  # locally done after 2 samples


def test_agreement_after_runs_of_samples():
    """With ``every``, ranks agree only after every m-th sample (m from the last warm call's
    time), so that samples run back to back between collectives; the cap still holds."""
    clock = FakeClock()
    votes, seen = [], []

    def agree(stop):
        votes.append(stop)
        return len(votes) >= 3

    def every(last_s):
        seen.append(last_s)
        return 4

    work = clock.work([5.0, 2.0] + [1.0] * 50)  # the cold call, one warm call, the samples
    t = harness(clock, warmup=1, min_repeats=1).measure(work, no_sync, agree=agree, every=every)
    assert seen == [2.0]  # decided from the warm call, not the cold one
    assert len(t.samples_s) == 12 and len(votes) == 3  # agreed after samples 4, 8 and 12

    clock = FakeClock()
    t = harness(clock, max_repeats=6).measure(clock.work([1.0, 2.0] * 25), no_sync,
                                              agree=lambda stop: stop, every=lambda s: 4)
    assert len(t.samples_s) == 6  # agreement at 4, then at the cap (6), not at 8

    clock = FakeClock()  # without agree (one process), every has no effect
    t = harness(clock, min_repeats=2, target_cv=0.5).measure(clock.work([1.0] * 50), no_sync, every=lambda s: 4)
    assert len(t.samples_s) == 2


def test_time_steps_excludes_the_observer():
    clock = FakeClock()
    seen = []

    def after(i):
        clock.now += 100.0  # reading RSS must not count as step time
        seen.append(i)

    out = harness(clock).time_steps(lambda i: clock.work([0.25])(), 4, no_sync, after=after)
    assert out == [0.25] * 4 and seen == [0, 1, 2, 3]


def test_summarize_edge_cases():
    one = summarize([2.0])
    assert (one.median_s, one.iqr_s, one.cv, one.min_s) == (2.0, 0.0, 0.0, 2.0)
    with pytest.raises(ValueError):
        summarize([])
    assert summarize([1.0, 1.0], first_s=1.2).warnings == ()


@pytest.mark.parametrize("kw", [dict(min_repeats=0), dict(min_repeats=5, max_repeats=4), dict(budget_s=0),
                                dict(budget_s=2.0, max_time_s=1.0), dict(warmup=-1)])
def test_config_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        HarnessConfig(**kw)
