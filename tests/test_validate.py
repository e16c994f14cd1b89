"""`asprof validate` without launching anything: the comparison math against hand computation,
trace matching, configuration errors (one line each), the instrumented simulation's phases."""

import os

import numpy as np
import pytest
from test_sim_hardware import make_trace

from asprof.cli import main
from asprof.errors import AsprofError
from asprof.presets import PRESETS
from asprof.simulate import Cluster, HardwareModel, OptimizerSpec, SimConfig, Workload, predict
from asprof.traces.io import save_trace
from asprof.traces.schema import Host, Record, Trace
from asprof.validate.compare import band_fraction, compare, phase_means, rel_error_pct
from asprof.spec import OPTIMIZERS, RunChoices
from asprof.validate.config import ValidateConfig
from asprof.validate.match import ClusterIdentity, find_matching, mismatches


# -- comparison math ------------------------------------------------------------------------------
def test_errors_and_band_by_hand():
    measured = [9.0, 1.0, 2.0, 3.0, 10.0]  # step 0 is excluded (first=1)
    replicas = [[5.0, 1.0, 2.0, 2.0, 4.0],
                [5.0, 2.0, 2.0, 4.0, 6.0]]
    c = compare("x", measured, replicas, first=1)
    assert c.steps == (1, 5)
    assert c.measured_mean_s == pytest.approx(4.0)  # (1+2+3+10)/4
    assert c.measured_median_s == pytest.approx(2.5)
    assert c.predicted_mean_s == pytest.approx(23 / 8)  # 1+2+2+4 + 2+2+4+6
    assert c.predicted_median_s == pytest.approx(2.0)  # pooled: 1 2 2 2 2 4 4 6
    assert c.mean_error_pct == pytest.approx((23 / 8 - 4) / 4 * 100)
    assert c.median_error_pct == pytest.approx(-20.0)
    # p5/p95 of two replicas per step: a + 0.05(b-a), a + 0.95(b-a)
    assert c.band_lo_s == pytest.approx([1.05, 2.0, 2.1, 4.1])
    assert c.band_hi_s == pytest.approx([1.95, 2.0, 3.9, 5.9])
    assert c.band_fraction == pytest.approx(2 / 4)  # 2.0 in [2.0, 2.0] and 3.0 in [2.1, 3.9]
    assert c.step_error_pct == c.mean_error_pct


def test_rel_error_and_phase_means():
    assert rel_error_pct(11.0, 10.0) == pytest.approx(10.0)
    assert rel_error_pct(9.0, 10.0) == pytest.approx(-10.0)
    assert np.isnan(rel_error_pct(1.0, 0.0))
    ph = [{"fwd_bwd": 1.0, "refresh": 4.0}, {"fwd_bwd": 3.0}]
    assert phase_means(ph) == {"fwd_bwd": 2.0, "refresh": 2.0}  # refresh absent from step 1 counts 0
    c = compare("x", [1.0, 1.0, 1.0], [[1.0] * 3] * 2, 1, measured_phases=ph + [{"fwd_bwd": 5.0}],
                predicted_phases=[{}, {"fwd_bwd": 2.0}, {"fwd_bwd": 2.0}])
    assert c.measured_phases_s == {"fwd_bwd": 4.0} and c.predicted_phases_s == {"fwd_bwd": 2.0}
    assert c.phase_error_pct == {"fwd_bwd": pytest.approx(-50.0)}


def test_band_fraction_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        band_fraction([1.0, 2.0], [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError):
        compare("x", [1.0, 2.0], [[1.0, 2.0]], first=2)


# -- trace matching -------------------------------------------------------------------------------
def host(**kw):
    base = dict(hostname="box", os="Linux", os_release="", machine="x86_64", chip="EPYC", cores_logical=2,
                memory_bytes=2**30, versions={"mlx": "0.32.4"}, blas={"mlx": "reference", "mlx_library": "/lib/blas.so"},
                threads={"cpu_count": "2", "affinity_cpus": "2"}, env={"MLX_RANK": "0"})
    return Host(**{**base, **kw})


def cluster_trace(ranks=2, link="loopback", h=None, fit_nodes=None, origin="measured"):
    recs = [Record("blas", "matmul", "mlx", "cpu", "float32", params={"m": 8, "n": 8, "k": 8, "batch": 1,
                                                                       "rank": r, "ranks": ranks}, metrics={"time_s": 1.0})
            for r in range(ranks)]
    if ranks > 1 or fit_nodes:
        params = {"nodes": fit_nodes or ranks, "hosts": ["box"] * ranks}
        if link is not None:
            params["link"] = link
        recs.append(Record("allreduce", "fit", "mlx", "link", "float32", params=params,
                           metrics={"alpha_s": 1e-5, "beta_Bps": 1e9}))
    return Trace(host=h or host(), records=tuple(recs), created_utc="", asprof_version="0", origin=origin,
                 **({"name": "p"} if origin != "measured" else {}))


def test_a_trace_of_this_cluster_matches():
    assert mismatches(cluster_trace(2), ClusterIdentity(2, "loopback", host(env={"MLX_RANK": "1"}))) == []
    # one rank: the link does not matter; a plain one-process probe (no rank tags) counts as one rank
    plain = Trace(host=host(), records=(Record("blas", "matmul", "mlx", "cpu", "float32", metrics={"time_s": 1.0}),))
    assert mismatches(plain, ClusterIdentity(1, "netns 50 Mbit/s", host())) == []
    # old `asprof probe --nodes 2` traces have no link label: one host -> loopback
    assert mismatches(cluster_trace(2, link=None), ClusterIdentity(2, "loopback", host())) == []


@pytest.mark.parametrize("change, expect", [
    (dict(hostname="other"), "taken on other"),
    (dict(versions={"mlx": "0.30.0"}), "MLX 0.30.0 there"),
    (dict(blas={"mlx": "openblas", "mlx_library": "/x/libopenblas.so"}), "openblas BLAS"),
    (dict(env={"OPENBLAS_NUM_THREADS": "1"}), "OPENBLAS_NUM_THREADS=1 vs -"),
    (dict(threads={"cpu_count": "2", "affinity_cpus": "1"}), "affinity_cpus=1 vs 2"),
])
def test_host_differences_are_named(change, expect):
    why = mismatches(cluster_trace(2, h=host(**change)), ClusterIdentity(2, "loopback", host()))
    assert len(why) == 1 and expect in why[0]


def test_rank_count_link_and_origin_must_agree():
    want = ClusterIdentity(4, "netns 50 Mbit/s", host())
    assert any("measured with 2 rank(s)" in w for w in mismatches(cluster_trace(2, "netns 50 Mbit/s"), want))
    assert any("no all-reduce fit on 4 ranks" in w for w in mismatches(cluster_trace(2, "netns 50 Mbit/s"), want))
    why = mismatches(cluster_trace(4, "netns 400 Mbit/s"), want)
    assert why == ["its link is 'netns 400 Mbit/s', this cluster's is 'netns 50 Mbit/s'"]
    assert "published profile" in mismatches(cluster_trace(2, origin="published"), want)[0]


def test_find_matching_takes_the_newest_match_and_says_why_others_failed(tmp_path):
    want = ClusterIdentity(2, "loopback", host())
    old, new, wrong = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    save_trace(cluster_trace(2), old)
    save_trace(cluster_trace(2), new)
    save_trace(cluster_trace(2, h=host(hostname="elsewhere")), wrong)
    (tmp_path / "junk.json").write_text("{not json")
    for i, p in enumerate((old, new, wrong, tmp_path / "junk.json")):
        os.utime(p, (1000 + i, 1000 + i))
    found, rejected = find_matching(tmp_path, want)
    assert found == new
    assert [p.name for p, _ in rejected] == ["junk.json", "c.json"]
    assert find_matching(tmp_path / "missing", want) == (None, [])


# -- configuration ---------------------------------------------------------------------------------
def test_every_optimizer_is_validated_from_the_one_registry():
    specs = ValidateConfig(run=RunChoices(optimizers=OPTIMIZERS, model="tiny")).specs()
    assert [s.optimizer.name for s in specs] == list(OPTIMIZERS)


def _config(**kw):
    run = {k: kw.pop(k) for k in list(kw) if k in RunChoices.__dataclass_fields__}
    return ValidateConfig(run=RunChoices(**run), **kw)


@pytest.mark.parametrize("kw, expect", [
    (dict(nodes=0), "--nodes must be a positive integer"),
    (dict(nodes=-2), "--nodes must be a positive integer"),
    (dict(hostfile="/nonexistent/hosts.json"), "no such hostfile"),
    (dict(optimizers=("adam", "lion")), "unknown optimizer 'lion'"),
    (dict(tolerance=-1.0), "--tolerance must be a percentage >= 0"),
    (dict(sparsity=(0.0,)), "--sparsity must be in (0, 1]"),
    (dict(steps=12, warmup=10), "must exceed --warmup + 1"),
    (dict(model="nope"), "unknown model preset 'nope'"),
    (dict(nodes=2, hostfile="h.json"), "not both"),
    (dict(probe_during=True, trace="m4-mini-x16-tb4"), "--probe-during probes the cluster during every run itself"),
    (dict(dtype="bfloat16"), "asprof train runs float32 only"),
    (dict(vocab=100), "training reads bytes"),
])
def test_bad_configurations(kw, expect):
    with pytest.raises(AsprofError, match=None) as e:
        _config(**kw)
    assert expect in str(e.value)


def test_netns_without_root_is_one_line(monkeypatch):
    import asprof.cluster.netns as netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(AsprofError, match="--netns-rate: building network namespaces needs root"):
        ValidateConfig(nodes=2, netns_rate=100.0)


@pytest.mark.parametrize("argv, expect", [
    (["--nodes", "0"], "--nodes must be a positive integer"),
    (["--hostfile", "/nonexistent/hosts.json"], "no such hostfile"),
    (["--optimizer", "adam,lion"], "unknown optimizer 'lion'"),
    (["--tolerance", "-5"], "--tolerance must be a percentage >= 0"),
    (["--netns-rate", "100"], "--netns-rate needs --nodes N"),
    (["--nodes", "two"], "'two' is not a valid integer"),
    (["--probe-during", "--trace", "m4-mini-x16-tb4"], "drop --trace"),
])
def test_cli_bad_input_is_one_line(capsys, tmp_path, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    code = main(["validate", *argv])
    _, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "traces").exists()


# -- the instrumented simulation -----------------------------------------------------------------------
@pytest.mark.parametrize("K", [1, 3])
def test_instrumented_phases_add_up_and_close_with_a_sync(K):
    hw = HardwareModel.from_trace(make_trace())
    wl = Workload(PRESETS["tiny"], 2, 16)
    spec = OptimizerSpec("kpop", warmup=1, frequency=2)
    inst = predict(wl, [spec], Cluster(K, hw), SimConfig(steps=4, variance=False, instrumented=True)).results[0]
    plain = predict(wl, [spec], Cluster(K, hw), SimConfig(steps=4, variance=False)).results[0]
    assert plain.phase_times_s is None and len(inst.phase_times_s) == 4
    for t, ph in enumerate(inst.phase_times_s):
        assert ("refresh" in ph) == spec.refresh_due(t)
        assert set(ph) >= {"fwd_bwd", "factor_ema", "grad_allreduce", "optimizer"}
        assert sum(ph.values()) == pytest.approx(inst.step_times_s[t], rel=1e-9)  # identical ranks
    # the syncs and the lost overlap (EMA ‖ ring) make the instrumented pass no faster
    assert inst.mean_s >= plain.mean_s
    assert inst.phase_times_s[1]["factor_ema"] >= hw.launch_s


def test_probe_rounds_repeat_every_measurement_at_least_six_times():
    from asprof.validate.run import probe_rounds

    assert [probe_rounds(ValidateConfig(nodes=k)) for k in (1, 2, 3, 4, 8)] == [6, 3, 3, 3, 3]
    assert probe_rounds(ValidateConfig(nodes=1, probe_rounds=8)) == 8
