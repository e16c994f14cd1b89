"""A training rank that also measures the compute probes between its steps (``--probe-during``):
``python -m asprof.validate.probing_worker --config JSON --probe-level LEVEL``.

The training is asprof.train.worker's, the measuring asprof.probe.during's; validate, the layer
above both, joins them, so train and probe stay independent of each other. Each rank's result
adds ``probed``: its records and skips, rank 0's host, and the seconds of training and probing.
"""

from __future__ import annotations

from asprof.cluster.worker import init_group
from asprof.train.worker import arguments, finish_rank, load, train_rank

MODULE = "asprof.validate.probing_worker"


def main(argv=None) -> None:
    ap = arguments(prog=f"python -m {MODULE}")
    ap.add_argument("--probe-level", required=True, choices=("full", "quick", "tiny"),
                    help="measure the compute probes between the steps at this level (asprof.probe.during)")
    args = ap.parse_args(argv)

    group = init_group()
    from asprof.probe.during import ProbeDuringTraining
    from asprof.probe.host import capture_host

    config, corpus = load(args)
    probe = ProbeDuringTraining(group, args.probe_level)
    record, trainer = train_rank(config, group, corpus, between=probe.between)
    probe.finish()
    probed = {"records": probe.records, "skipped": probe.skipped, "train_s": probe.train_s, "probe_s": probe.probe_s,
              "host": capture_host(with_torch=False).to_dict() if group.rank() == 0 else None}
    finish_rank(args, group, record, corpus, trainer, probed=probed)


def combine_probed(results: list[dict]) -> dict:
    """The ranks' ``probed`` as one: every rank's records, rank 0's skips, host and seconds."""
    got = [r["probed"] for r in results]
    return {"records": [x for g in got for x in g["records"]], "skipped": got[0]["skipped"],
            "host": got[0]["host"], "train_s": got[0]["train_s"], "probe_s": got[0]["probe_s"]}


if __name__ == "__main__":
    main()
