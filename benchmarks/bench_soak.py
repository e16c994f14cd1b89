"""Soak: probe → simulate → train → validate on 2 ranks, over and over, for a given time.

Does a long session leak? One long-lived process (this one, as a user's notebook or a
scheduler would be) runs the four commands in-process through ``asprof.cli.main``, each
launching its real ranks, round after round. Recorded:

- after every round, this process's RSS, open file descriptors and threads, and what was
  left behind: child processes, asprof worker processes anywhere, asprof network namespaces,
  the launcher's temporary folders (``asprof-launch-*``), ports the ranks were listening on;
- during every command, every rank process's peak RSS, fds and threads (sampled every 0.5 s).

Goals (issue 21): no growth beyond 5 % from the first rounds (after the first, which loads
MLX and fills caches) to the last, and nothing left behind. Prints the verdict and writes
``rounds.jsonl.gz``, ``summary.json`` and the commands' output (``commands.log.gz``) into ``--out``.

    python benchmarks/bench_soak.py --minutes 65 --out benchmarks/records/soak

This measures growth and leftovers, not speed: a loaded, shared machine only makes rounds
slower (fewer of them).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from asprof.cli import main as asprof_main
from asprof.cluster.netns import PREFIX, leftover_namespaces, why_unavailable

WORKERS = ("asprof.train.worker", "asprof.probe.allreduce_worker", "asprof.probe.cluster_worker")
TINY = ["--model", "tiny", "--batch", "2", "--seq", "16"]
GROWTH_LIMIT = 0.05


def probe(trace: Path) -> int:
    """The cluster probe validate runs (compute on both ranks at once, then the ring), at the
    test level: ``asprof probe --quick`` takes minutes on this VM, and the soak wants rounds."""
    from asprof.probe.cluster import Placement, probe_cluster

    probe_cluster(Placement(nodes=2), trace, level="tiny", rounds=1)
    return 0


def commands(work: Path, netns: bool) -> list[tuple[str, object]]:
    """(name, argv of ``asprof`` or a function) for one round; validate in namespaces as root."""
    trace = work / "probe.json"
    place = ["--nodes", "2", "--netns-rate", "1000"] if netns else ["--nodes", "2"]
    return [
        ("probe", lambda: probe(trace)),
        ("simulate", ["simulate", "--trace", str(trace), "--nodes", "2", "--optimizer", "adam,kpop"]),
        ("train", ["train", "--nodes", "2", "--optimizer", "kpop", *TINY, "--steps", "40", "--out", str(work / "train")]),
        ("validate", ["validate", *place, "--optimizer", "adam", *TINY, "--steps", "8", "--warmup", "2",
                      "--probe-level", "tiny", "--probe-rounds", "1", "--tolerance", "1e9",
                      "--traces-dir", str(work / "traces"), "--out", str(work / "validate")]),
    ]


MARK = "ASPROF_SOAK"  # set in our environment, inherited by every rank we start: ours, not another run's


def _role(p: psutil.Process) -> str | None:
    try:
        cmd = p.cmdline()
        mod = next((w for w in WORKERS if w in cmd), None)
        if mod is None:
            return None
        env = p.environ()
        if env.get(MARK) != os.environ[MARK]:
            return None
        return f"{mod.rsplit('.', 1)[1]}/rank{env.get('MLX_RANK', '?')}"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class RankSampler:
    """Peak RSS / fds / threads of every rank process below us while a command runs."""

    def __init__(self):
        self.peaks: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(0.5):
            for p in me.children(recursive=True):
                role = _role(p)
                if role is None:
                    continue
                try:
                    with p.oneshot():
                        now = {"rss_mib": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads()}
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                peak = self.peaks.setdefault(role, dict(now))
                for k, v in now.items():
                    peak[k] = max(peak[k], v)


def leftovers() -> dict:
    me = psutil.Process()
    workers = [p.pid for p in psutil.process_iter() if _role(p) is not None]
    tmp = sorted(str(p) for p in Path(tempfile.gettempdir()).glob("asprof-launch-*"))  # our own folder (main)
    ports = []
    try:
        for c in psutil.net_connections("tcp"):
            if c.status == psutil.CONN_LISTEN and c.pid in workers:
                ports.append(c.laddr.port)
    except psutil.AccessDenied:
        pass
    return {"children": [p.pid for p in me.children(recursive=True)], "workers": workers,
            "namespaces": [n for n in leftover_namespaces() if n.startswith(f"{PREFIX}{os.getpid() % 100000}")]
            if why_unavailable() is None else None,
            "launch_dirs": tmp, "listening_ports": ports}


def self_usage() -> dict:
    p = psutil.Process()
    with p.oneshot():
        return {"rss_mib": p.memory_info().rss / 2**20, "fds": p.num_fds(), "threads": p.num_threads()}


def run_round(r: int, work: Path, log, netns: bool) -> dict:
    out = {"round": r, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commands": {}}
    for name, what in commands(work, netns):
        t = time.monotonic()
        with RankSampler() as sampler, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                code = what() if callable(what) else asprof_main(what)
            except Exception as e:  # noqa: BLE001 - recorded, and the soak goes on
                print(f"{name}: {type(e).__name__}: {e}", file=log)
                code = -1
        out["commands"][name] = {"code": code, "seconds": round(time.monotonic() - t, 2), "ranks": sampler.peaks}
    out["self"] = self_usage()
    out["left"] = leftovers()
    return out


def _growth(first: list[float], last: list[float]) -> float:
    a, b = statistics.median(first), statistics.median(last)
    return (b - a) / a if a else 0.0


def summarise(rounds: list[dict]) -> dict:
    """Growth of every recorded quantity from the first rounds to the last (a tenth of the rounds,
    at least 3, each; round 0 warms up and is left out), and the rounds that left something.

    Judged: this process's RSS, fds and threads (it lives through the whole soak: what leaks,
    accumulates here) and every rank's peak RSS. The ranks' fds and threads are small counts
    sampled every 0.5 s (a rank at 5 or 6 fds depending on the moment): recorded, not judged."""
    n = max(3, (len(rounds) - 1) // 10)
    if len(rounds) < 1 + 2 * n:
        return {"rounds": len(rounds), "verdict": f"too few rounds to judge growth (need {1 + 2 * n})"}
    first, last = rounds[1:1 + n], rounds[-n:]
    series: dict[str, list] = {}
    for name in ("rss_mib", "fds", "threads"):
        series[f"self {name}"] = [x["self"][name] for x in rounds]
    for cmd in rounds[0]["commands"]:
        for role in rounds[0]["commands"][cmd]["ranks"]:
            for name in ("rss_mib", "fds", "threads"):
                series[f"{cmd} {role} {name}"] = [x["commands"][cmd]["ranks"].get(role, {}).get(name, float("nan"))
                                                  for x in rounds]
    growth = {k: round(_growth(v[1:1 + n], v[-n:]), 4) for k, v in series.items()}
    judged = {k: g for k, g in growth.items() if k.startswith("self ") or k.endswith(" rss_mib")}
    worst = max(judged, key=lambda k: judged[k])
    left = [x["round"] for x in rounds if any(v for v in x["left"].values())]
    failed = [(x["round"], c) for x in rounds for c, v in x["commands"].items() if v["code"] != 0]
    ok = judged[worst] <= GROWTH_LIMIT and not left and not failed
    return {"rounds": len(rounds), "first": [x["round"] for x in first], "last": [x["round"] for x in last],
            "self_first": first[0]["self"], "self_last": last[-1]["self"],
            "growth": growth, "worst_judged": [worst, judged[worst]], "rounds_with_leftovers": left,
            "failed_commands": failed, "verdict": "pass" if ok else "fail"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="run rounds until this much time has passed")
    ap.add_argument("--out", default="benchmarks/records/soak", help="folder for rounds.jsonl.gz and summary.json")
    ap.add_argument("--no-netns", action="store_true", help="validate on loopback even as root")
    args = ap.parse_args(argv)
    netns = not args.no_netns and why_unavailable() is None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rounds: list[dict] = []
    t0 = time.monotonic()
    os.environ[MARK] = str(os.getpid())
    with tempfile.TemporaryDirectory(prefix="asprof-soak-") as tmp, gzip.open(out / "commands.log.gz", "wt") as log, \
            gzip.open(out / "rounds.jsonl.gz", "wt") as rec:
        tempfile.tempdir = tmp  # the launcher's asprof-launch-* folders go here: any left are ours
        r = 0
        while time.monotonic() - t0 < args.minutes * 60:
            work = Path(tmp) / f"round-{r}"
            work.mkdir()
            rnd = run_round(r, work, log, netns)
            rounds.append(rnd)
            rec.write(json.dumps(rnd) + "\n")
            rec.flush()
            codes = " ".join(f"{k}={v['code']}({v['seconds']:.0f}s)" for k, v in rnd["commands"].items())
            print(f"round {r} at {(time.monotonic() - t0) / 60:.1f} min: {codes}; self rss "
                  f"{rnd['self']['rss_mib']:.0f} MiB fds {rnd['self']['fds']} threads {rnd['self']['threads']}; "
                  f"left {sum(len(v or []) for v in rnd['left'].values())}", flush=True)
            shutil.rmtree(work)  # its files are not what we watch
            r += 1
    summary = {"command": "python benchmarks/bench_soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "minutes": round((time.monotonic() - t0) / 60, 1), "cpus": os.cpu_count(), "netns": netns,
               **summarise(rounds)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in summary if k != "growth"}, indent=1))
    return 0 if summary["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
