"""The power probe: each source's parser on recorded output of that source's format, RAPL's
counter wrap, the skip where nothing is readable, and the simulator's J/step from lane busy time."""

import json
import shutil
from pathlib import Path

import pytest

from asprof.cli import main
from asprof.probe import power_sources as ps
from asprof.simulate.energy import PowerModel
from asprof.traces import load_profile
from asprof.traces.io import save_trace
from asprof.traces.schema import Record

FIX = Path(__file__).parent / "fixtures" / "power"


def test_macmon_pipe_lines_give_watts_per_domain():
    rows = ps.parse_macmon((FIX / "macmon_pipe.jsonl").read_text())
    assert [r["gpu"] for r in rows] == [38.5, 39.5]
    assert rows[0]["cpu"] == 4.125 and rows[1]["dram"] == 2.75 and rows[0]["system"] == 61.2


def test_nvidia_smi_csv_skips_boards_without_power():
    assert ps.parse_nvidia_smi((FIX / "nvidia_smi_power.csv").read_text()) == {"gpu0": [71.45, 312.90]}


def test_rapl_zones_and_a_wrapped_counter():
    zones = ps.rapl_domains(FIX / "powercap")
    assert set(zones) == {"package-0", "core", "dram"}
    assert ps.rapl_watts(1_000_000, 6_000_000, 2.0, 262143328850) == pytest.approx(2.5)
    # the counter wrapped: 10 J before the top, 5 J after it, over 1 s
    assert ps.rapl_watts(262143328850 - 10_000_000, 5_000_000, 1.0, 262143328850) == pytest.approx(15.0)


def test_rapl_source_measures_from_the_counters(monkeypatch, tmp_path):
    root = tmp_path / "powercap"
    shutil.copytree(FIX / "powercap", root)
    src = ps._rapl(root)
    assert isinstance(src, ps.Source)

    def work():  # the package counter advances 3 J while "working"
        f = root / "intel-rapl:0" / "energy_uj"
        f.write_text(str(int(f.read_text()) + 3_000_000))

    w = src.measure(work, 0.0)  # one call of work
    assert w["package-0"] > 0 and w["dram"] == 0.0


def test_no_source_is_one_skip_with_every_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(ps, "available_sources", lambda: ([], ["no macmon", "no RAPL zones", "no nvidia-smi"]))
    import asprof.probe.power as power

    monkeypatch.setattr(power, "available_sources", ps.available_sources)
    out = tmp_path / "p.json"
    assert main(["probe", "--only", "power", "--level", "tiny", "--out", str(out)]) == 0
    skipped = json.loads(out.read_text())["skipped"]
    assert len(skipped) == 1 and "no macmon; no RAPL zones; no nvidia-smi" in skipped[0]["reason"]


def _with_power(tmp_path) -> Path:
    t = load_profile("m4-mini-x16-tb4")
    watts = {"idle": {"cpu": 1.0, "gpu": 0.5, "dram": 0.5}, "gemm": {"cpu": 2.0, "gpu": 20.0, "dram": 2.0},
             "membw": {"cpu": 3.0, "gpu": 4.0, "dram": 5.0}}
    recs = [Record("power", load, "host", dom, None, params={"source": "ioreport (macmon)"}, metrics={"watts": w})
            for load, d in watts.items() for dom, w in d.items()]
    recs.append(Record("power", "idle", "host", "system", None, params={"source": "ioreport (macmon)"},
                       metrics={"watts": 99.0}))  # the whole system: not summed with its parts
    from dataclasses import replace

    p = tmp_path / "powered.json"
    save_trace(replace(t, records=t.records + tuple(recs)), p)
    return p


def test_power_model_sums_domains_once(tmp_path):
    from asprof.traces import load_trace

    pm = PowerModel.from_trace(load_trace(_with_power(tmp_path)))
    assert (pm.idle_W, pm.gemm_W, pm.membw_W) == (2.0, 24.0, 12.0)
    # eq. (1): 2 W x 0.1 s + 22 W x 0.05 s + 10 W x 0.02 s
    assert pm.step_J(0.1, {"accel": 0.05, "cpu": 0.02, "link": 0.03}) == pytest.approx(0.2 + 1.1 + 0.2)


def test_simulate_prints_joules_per_step_where_the_trace_has_power(tmp_path, capsys):
    p = _with_power(tmp_path)
    assert main(["simulate", "--trace", str(p), "--nodes", "4", "--optimizer", "adam", "--steps", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["runs"][0]["results"][0]
    busy = r["lane_busy_s"] if "lane_busy_s" in r else None
    e = r["energy"]
    assert e["J_per_step_per_node"] > 2.0 * r["mean_s"]  # more than idle alone
    assert e["J_per_token"] == pytest.approx(e["J_per_step_per_node"] / (16 * 1024))
    assert busy is None or busy["accel"] <= r["mean_s"]
    assert main(["simulate", "--trace", str(p), "--nodes", "4", "--optimizer", "adam", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "J/step/node" in out and "2 W idle, 24 W GEMM-bound, 12 W bandwidth-bound" in out


def test_show_prints_power_and_energy(tmp_path, capsys):
    p = _with_power(tmp_path)
    assert main(["show", str(p)]) == 0
    out = capsys.readouterr().out
    assert "GEMM-bound" in out and "24 W" not in out.split("power:")[0]
    assert "J per step per node" in out and "mJ per token" in out


@pytest.mark.parametrize("cmd", ["probe", "train", "validate", "simulate"])
def test_backend_is_in_every_run_commands_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "--backend" in capsys.readouterr().out


def test_probe_power_here_writes_records_or_a_reasoned_skip(tmp_path):
    out = tmp_path / "p.json"
    assert main(["probe", "--only", "power", "--level", "tiny", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    recs, skipped = d["probes"].get("power", []), [s for s in d["skipped"] if s["probe"] == "power"]
    assert recs or (len(skipped) == 1 and skipped[0]["reason"].startswith("no power source is readable here: "))
    assert all(r["metrics"]["watts"] >= 0 and r["op"] in ("idle", "gemm", "membw") for r in recs)
