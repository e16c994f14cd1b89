"""Compute probes measured between training steps (asprof.probe.during), in one process."""

import time

import mlx.core as mx
import pytest

from asprof.probe.during import ProbeDuringTraining


@pytest.fixture()
def group():
    return mx.distributed.init()  # a group of one without a launcher


def test_the_probe_takes_its_share_of_the_time_and_finishes_a_round(group):
    probe = ProbeDuringTraining(group, "tiny", share=0.5)
    time.sleep(0.4)  # "a training step"
    probe.between(0)
    assert probe.train_s >= 0.4 and probe.probe_s >= probe.train_s  # measured until its share was reached
    assert probe.records  # and then stopped: not a whole round in one go
    time.sleep(0.2)
    probe.between(1)
    assert probe.probe_s >= probe.train_s >= 0.6
    probe.finish()
    assert probe.rounds_done >= 1
    # every compute probe of the round, tagged like a cluster probe's records
    assert {r["probe"] for r in probe.records} == {"blas", "launch", "membw", "linalg"}
    assert all(r["params"]["rank"] == 0 and r["params"]["ranks"] == 1 for r in probe.records)


def test_finish_alone_measures_one_whole_round(group):
    probe = ProbeDuringTraining(group, "tiny")
    probe.finish()
    assert probe.rounds_done == 1 and {r["params"]["round"] for r in probe.records} == {0}
    assert {r["probe"] for r in probe.records} == {"blas", "launch", "membw", "linalg"}


@pytest.mark.parametrize("share", [0.0, 1.0, -0.5])
def test_the_share_is_a_fraction(group, share):
    with pytest.raises(ValueError, match="share"):
        ProbeDuringTraining(group, "tiny", share=share)
