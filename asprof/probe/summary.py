"""Text rendering of a trace for `asprof show`: host, one table per probe, the all-reduce fit,
warnings and what was skipped. Pure: takes a Trace, returns a string."""

from __future__ import annotations

from collections import Counter, defaultdict

from asprof.traces.schema import Record, Trace
from asprof.units import nbytes, seconds, si

DASH = "-"


def render_summary(trace: Trace, source: str | None = None) -> str:
    parts = [_header(trace, source), _host(trace)]
    for name, fn in (("blas", _blas), ("launch", _launch), ("membw", _membw), ("linalg", _linalg),
                     ("memory", _memory), ("allreduce", _allreduce), ("power", _power)):
        recs = trace.probe(name)
        if recs:
            parts.append(fn(recs))
    parts.append(_warnings(trace))
    parts.append(_skipped(trace))
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


# -- formatting helpers ------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return indent + "  ".join([first] + rest).rstrip()

    return "\n".join([line(header), indent + "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def _backend(r: Record) -> str:
    return f"{r.framework}/{r.device}"


def _origin_note(recs: list[Record]) -> str:
    origins = Counter(r.origin for r in recs)
    if set(origins) == {"measured"}:
        return ""
    return "  (" + ", ".join(f"{n} {o}" for o, n in sorted(origins.items())) + " figures; see each record's source)"


# -- sections ----------------------------------------------------------------------------------


def _header(trace: Trace, source: str | None) -> str:
    what = trace.name or source or "trace"
    bits = [f"origin {trace.origin}"]
    if trace.created_utc:
        bits.append(f"created {trace.created_utc}")
    if trace.asprof_version:
        bits.append(f"asprof {trace.asprof_version}")
    if trace.nodes:
        bits.append(f"{trace.nodes} nodes")
    out = f"Trace {what} ({', '.join(bits)})"
    if trace.description:
        out += f"\n  {trace.description}"
    counts = Counter(r.origin for r in trace.records)
    if set(counts) - {"measured"}:
        out += ("\n  records: " + ", ".join(f"{counts[o]} {o}" for o in ("measured", "published", "derived") if counts[o])
                + " (each record's source says where it comes from or how it was derived)")
    return out


def _host(trace: Trace) -> str:
    h = trace.host
    cores = f"{h.cores_logical} cores"
    if h.cores_performance is not None:
        cores += f" ({h.cores_performance}P + {h.cores_efficiency or 0}E)"
    accel = {"metal": "Metal GPU", "cuda": "CUDA GPU", "none": "none (MLX runs on the CPU)"}[h.accelerator]
    if h.gpu_name:
        accel += f": {h.gpu_name}" + (f", {h.gpu_cores} cores" if h.gpu_cores else "")
    lines = [
        f"Host {h.hostname}: {h.chip}, {cores}, {nbytes(h.memory_bytes)} memory"
        + (" (unified)" if h.unified_memory else ""),
        f"  OS        {h.os} {h.os_release} {h.machine}",
        f"  GPU       {accel}",
    ]
    if h.blas:
        shown = [f"{k} {v}" for k, v in h.blas.items() if not k.endswith("_library")]
        lines.append(f"  BLAS      {', '.join(shown)}")
        for k, v in h.blas.items():
            if k.endswith("_library"):
                lines.append(f"            ({k.removesuffix('_library')}: {v})")
    if h.versions:
        lines.append("  versions  " + ", ".join(f"{k} {v}" for k, v in h.versions.items()))
    if h.threads:
        lines.append("  threads   " + ", ".join(f"{k}={v}" for k, v in h.threads.items()))
    lines.append("  env       " + (", ".join(f"{k}={v}" for k, v in h.env.items()) or "(no timing-relevant variables set)"))
    return "\n".join(lines)


def _columns(recs: list[Record]) -> list[tuple[str, str | None]]:
    seen = []
    for r in recs:
        key = (_backend(r), r.dtype)
        if key not in seen:
            seen.append(key)
    return seen


def _blas(recs: list[Record]) -> str:
    out = ["blas: achieved FLOP/s (median; decimal units)" + _origin_note(recs)]
    for op in ("matmul", "matvec", "vjp", "peak", "rate"):
        rs = [r for r in recs if r.op == op]
        if not rs:
            continue
        cols = _columns(rs)
        shapes = []
        cells: dict = defaultdict(dict)
        for r in rs:
            shape = _shape(r)
            if shape not in shapes:
                shapes.append(shape)
            cells[shape][(_backend(r), r.dtype)] = si(r.metrics["flops_per_s"], "FLOP/s")
        rows = [[s] + [cells[s].get(c, DASH) for c in cols] for s in sorted(shapes, key=_shape_key)]
        header = [op] + [f"{b} {d or ''}".strip() for b, d in cols]
        out.append(table(header, rows))
    layouts = _layouts(recs)
    if layouts:
        out.append(layouts)
    return "\n".join(out)


def _layouts(recs: list[Record]) -> str:
    """The operand layouts: per layout and backend, the square sweep's in-graph rates and the
    spread of the shape grid's (slowest, median, fastest shape)."""
    rows = []
    by: dict = defaultdict(list)
    for r in recs:
        if r.op in ("matmul", "matmul_nt", "matmul_tn", "matmul_shape") and r.dtype == "float32" and r.metrics.get("in_graph_s"):
            layout = r.params.get("layout") or {"matmul": "nn", "matmul_nt": "nt", "matmul_tn": "tn"}[r.op]
            by[(layout, _backend(r), r.op == "matmul_shape")].append(r)
    for (layout, backend, grid), rs in sorted(by.items()):
        rated = sorted(rs, key=lambda r: r.metrics["flop"] / r.metrics["in_graph_s"])

        def cell(r):
            p = r.params
            return f"{si(r.metrics['flop'] / r.metrics['in_graph_s'], 'FLOP/s')} ({p['m']}x{p['n']}x{p['k']})"

        what = f"grid of {len({(r.params['m'], r.params['n'], r.params['k']) for r in rs})} shapes" if grid else "square sweep"
        rows.append([layout, backend, what, cell(rated[0]), cell(rated[len(rated) // 2]), cell(rated[-1])])
    if not rows:
        return ""
    return ("GEMMs inside a graph, float32, by operand layout (nn A·B, nt A·Bᵀ, tn Aᵀ·B; m x n x k)\n"
            + table(["layout", "backend", "measured", "slowest", "median", "fastest"], rows))


def _shape(r: Record) -> str:
    p = r.params
    if r.op == "matmul":
        b = int(p.get("batch", 1))
        core = f"{p['m']}x{p['k']}@{p['k']}x{p['n']}"
        return f"{b}x {core}" if b > 1 else core
    if "m" in p:
        return f"{p['m']}x{p['n']}"
    return "-"


def _shape_key(s: str) -> tuple:
    nums = [int(x) for x in s.replace("@", "x").replace(" ", "").split("x") if x.isdigit()]
    return (" " in s, nums[-1] if nums else 0, s)


def _launch(recs: list[Record]) -> str:
    cols = []
    for r in recs:
        if (_backend(r), r.op) not in cols:
            cols.append((_backend(r), r.op))
    ops = []
    cells: dict = defaultdict(dict)
    for r in recs:
        op = str(r.params.get("op", "-"))
        if op not in ops:
            ops.append(op)
        cells[op][(_backend(r), r.op)] = seconds(r.metrics["latency_s"])
    rows = [[op] + [cells[op].get(c, DASH) for c in cols] for op in ops]
    head = "launch: per-op latency, dispatch + sync of a tiny op (cold = first call in a fresh process)"
    return head + _origin_note(recs) + "\n" + table(["op"] + [f"{b} {w}" for b, w in cols], rows)


def _membw(recs: list[Record]) -> str:
    rates = [f"  {_backend(r)} {si(r.metrics['bytes_per_s'], 'B/s')} ({r.origin})" for r in recs if r.op == "rate"]
    recs = [r for r in recs if r.op != "rate"]
    cols = []
    for r in recs:
        if (_backend(r), r.op) not in cols:
            cols.append((_backend(r), r.op))
    sizes = sorted({int(r.params["bytes"]) for r in recs})
    cells = {(int(r.params["bytes"]), _backend(r), r.op): si(r.metrics["bytes_per_s"], "B/s") for r in recs}
    rows = [[nbytes(s)] + [cells.get((s, b, op), DASH) for b, op in cols] for s in sizes]
    head = "membw: bandwidth (STREAM byte counts: copy 2x, triad 3x the array size; decimal units)"
    out = head + _origin_note(recs) + "\n" + table(["array"] + [f"{b} {op}" for b, op in cols], rows)
    return out + ("\n  the rate the curve is built from:\n" + "\n".join(rates) if rates else "")


def _linalg(recs: list[Record]) -> str:
    cols = []
    for r in recs:
        if (_backend(r), r.op, r.dtype) not in cols:
            cols.append((_backend(r), r.op, r.dtype))
    sizes = sorted({int(r.params["n"]) for r in recs})
    cells = {(int(r.params["n"]), _backend(r), r.op, r.dtype): seconds(r.metrics["time_s"]) for r in recs}
    rows = [[str(n)] + [cells.get((n, b, op, d), DASH) for b, op, d in cols] for n in sizes]
    head = "linalg: time per call on MLX's CPU stream (median)"
    return head + _origin_note(recs) + "\n" + table(["n"] + [f"{b} {op} {d or ''}".strip() for b, op, d in cols], rows)


def _memory(recs: list[Record]) -> str:
    figures = []
    for r in recs:
        if "gpu_working_set_bytes" in r.metrics:
            figures.append(f"  GPU working set {nbytes(r.metrics['gpu_working_set_bytes'])} ({r.origin})")
        if "page_in_Bps" in r.metrics:
            figures.append(f"  paging beyond it {si(r.metrics['page_in_Bps'], 'B/s')} ({r.origin})")
    recs = [r for r in recs if r.op == "training_loop"]
    if not recs:
        return "memory: unified-memory figures (docs/simulator.md §8b)\n" + "\n".join(figures)
    rows = []
    for r in recs:
        m, p = r.metrics, r.params
        model = f"{p.get('model', '?')} {p.get('parameters', '?')} params, batch {p.get('batch', '?')}"
        rows.append([
            _backend(r), model, f"{int(m.get('steps', 0))}", seconds(m.get("median_step_s", 0.0)),
            nbytes(m.get("rss_start_bytes", 0.0)), nbytes(m.get("rss_end_bytes", 0.0)),
            ("+" if m.get("rss_growth_bytes", 0.0) >= 0 else "-") + nbytes(abs(m.get("rss_growth_bytes", 0.0))),
            f"{m.get('minor_faults_per_step', 0.0):.3g}", f"{m.get('major_faults_per_step', 0.0):.3g}",
        ])
    head = "memory: training loop (RSS after step 1 -> last step; page faults per step after step 1)"
    return head + _origin_note(recs) + "\n" + table(
        ["backend", "model", "steps", "median step", "RSS start", "RSS end", "growth", "minor/step", "major/step"], rows) \
        + ("\n" + "\n".join(figures) if figures else "")


def _allreduce(recs: list[Record]) -> str:
    from asprof.probe.allreduce import MODEL  # scipy: imported only for a trace with all-reduce records

    out = ["allreduce: mx.distributed.all_sum (busbw = algbw * 2(K-1)/K, nccl-tests convention)"
           + _origin_note(recs)]
    by_nodes: dict = defaultdict(list)
    for r in recs:
        if r.op == "all_sum":
            by_nodes[(r.params.get("nodes"), r.params.get("backend"), r.params.get("topology"))].append(r)
    for (k, backend, topology), rs in by_nodes.items():
        hosts = rs[0].params.get("hosts")
        where = f", hosts {', '.join(map(str, hosts))}" if isinstance(hosts, list) and hosts else ""
        topo = f" ({topology})" if topology and topology != backend else ""
        out.append(f"  {k} ranks, {backend} backend{topo}{where}; every size checked correct")
        rows = [[nbytes(r.params["bytes"]), seconds(r.metrics["time_s"]), si(r.metrics["algbw_Bps"], "B/s"),
                 si(r.metrics["busbw_Bps"], "B/s")] for r in sorted(rs, key=lambda r: r.params["bytes"])]
        out.append(table(["size", "time", "algbw", "busbw"], rows, indent="    "))
    for r in recs:
        if r.op == "fit":
            m = r.metrics
            model = r.params.get("model", MODEL)
            extra = f", max rel. error {m['max_rel_err']:.0%}" if "max_rel_err" in m else ""
            stats = f", R^2 {m['r2']:.3f}{extra}" if "r2" in m else f" ({r.origin}, not fitted: see its source)"
            out.append(f"  fit ({r.params.get('nodes')} ranks, {r.params.get('backend', 'ring')}, {model}): "
                       f"alpha {seconds(m['alpha_s'])} per step, beta {si(m['beta_Bps'], 'B/s')} per link{stats}")
    return "\n".join(out)


def _power(recs: list[Record]) -> str:
    """Watts per source and domain at each load (asprof.probe.power)."""
    loads = ("idle", "gemm", "membw")
    cells = {(str(r.params.get("source")), r.device, r.op): r.metrics["watts"] for r in recs}
    keys = list(dict.fromkeys((s, d) for s, d, _ in cells))
    rows = [[s, d] + [f"{cells[(s, d, x)]:.3g} W" if (s, d, x) in cells else "-" for x in loads] for s, d in keys]
    return ("power: mean draw per domain (the simulator prices J/step from it)" + _origin_note(recs) + "\n"
            + table(["source", "domain", "idle", "GEMM-bound", "bandwidth-bound"], rows))


def _warnings(trace: Trace) -> str:
    kinds: Counter = Counter()
    examples: dict[str, str] = {}
    for r in trace.records:
        for w in r.timing.warnings if r.timing else ():
            kind = "high variance" if "high variance" in w else "cold start" if "cold start" in w else "other"
            kinds[kind] += 1
            examples.setdefault(kind, w)
    if not kinds:
        return "warnings: none"
    lines = [f"warnings: {sum(kinds.values())} timing warnings"]
    for kind, n in kinds.most_common():
        lines.append(f"  {n:3d} {kind}, e.g. {examples[kind]}")
    return "\n".join(lines)


def _skipped(trace: Trace) -> str:
    if not trace.skipped:
        return "skipped: nothing"
    groups: dict = defaultdict(list)
    for s in trace.skipped:
        groups[(s.framework, s.device, s.reason)].append(s.probe)
    lines = [f"skipped: {len(trace.skipped)}"]
    for (fw, dev, reason), probes in groups.items():
        lines.append(f"  {', '.join(probes)} on {fw}/{dev}: {reason}")
    return "\n".join(lines)
