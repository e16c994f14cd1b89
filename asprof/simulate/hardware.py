"""The hardware model: cost functions fitted from one trace (DESIGN §4 "Hardware model").

Every cost comes from the trace's records, never from a constant peak:

* ``gemm_work(m, n, k, batch, dtype, layout)``: the measured matmul times of that dtype on MLX's
  accelerator device, interpolated log-log over the flop count (which is the same as
  interpolating the throughput log-log over size), with a memory floor ``bytes / best
  bandwidth`` for skinny shapes the square sweep does not cover. Transposed operand layouts
  ("nt" A·Bᵀ, "tn" Aᵀ·B; blas ops ``matmul_nt`` / ``matmul_tn``) have their own curves where
  the trace measured them (a BLAS may run them at a different rate), else the "nn" one. Where
  the blas records also hold ``in_graph_s`` (a GEMM's time inside a chain evaluated once) that
  *is* the work of a GEMM inside a step, and it is used instead of "synced time less a launch";
  where the trace has the blas probe's shape grid (op ``matmul_shape``, float32; the quick and
  full levels measure it), the in-graph time interpolated between the measured shapes of that
  layout instead (asprof.simulate.gemm_grid; ``gemm_shapes=False`` keeps the square sweep): a
  step's GEMMs are tall and skinny, and a BLAS's rate depends on the shape, not only on the flop
  count (docs/validate.md §6.3);
* ``elementwise_time(bytes_moved, device)``: the membw copy/triad times over bytes moved (their
  in-graph chain times where measured, as for GEMMs);
* ``exp_work(elements)``: the membw ``exp`` times over elements: transcendentals (softmax,
  cross-entropy, sigmoid) can cost far more than their bytes (MLX's CPU exp). Without such
  records it is 0 and those ops cost their bytes;
* ``launch_s``: the median warm latency of one synced tiny op (launch probe). Every measured
  time above is a synced single op, so it contains one such latency: the *work* of an op inside
  a lazy graph is the measured time minus ``launch_s`` (``gemm_work``, ``elementwise_work``),
  and each evaluation (sync) of a graph pays ``launch_s`` once;
* ``dispatch_s``: the per-op cost inside one evaluated graph (launch probe op ``graph``: a
  chain of tiny ops evaluated once, time per op). A trace without it gets 0 and a note;
* ``linalg_time(op, n)`` for ``eigh`` / ``qr`` / ``power_step`` on the CPU stream, extrapolated
  with n³ above the measured range;
* ``alpha_s``, ``beta_Bps``: the all-reduce probe's ring fit (per ring step and per link);
  ``allreduce_time(bytes, K)``: the measured all_sum times of a K-rank ring, where the trace
  has them (a cluster's own probe), which the simulator prefers for that ring size.

* ``working_set_bytes``, ``page_in_Bps``: the ``memory`` records ``working_set`` (what the GPU
  may keep resident of unified memory) and ``paging``, for asprof.simulate.memory_pressure.

A cost whose measurements are missing raises :class:`MissingProbeError` naming the probe to run,
when (and only when) a simulation needs it. Whether the accelerator and CPU lanes are separate
hardware comes from ``host.accelerator`` ("none" = MLX runs on the CPU: one shared lane).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asprof.errors import MissingProbeError
from asprof.simulate.curves import Curve, origin_note, rel_samples, state_spread, time_of, typical
from asprof.simulate.gemm_grid import ShapeGrid
from asprof.simulate.memory_pressure import memory_figures
from asprof.traces.schema import Trace

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
LAYOUTS = ("nn", "nt", "tn")
LINALG_OPS = ("eigh", "qr", "power_step")


@dataclass(frozen=True)
class HardwareModel:
    """Cost functions of one node. Build with :meth:`from_trace`."""

    name: str
    chip: str
    accelerator: str  # "metal" | "cuda" | "none"
    accel_device: str  # the MLX device whose records drive the accelerator lane: "gpu" or "cpu"
    memory_bytes: int
    gemm: dict = field(default_factory=dict)  # dtype -> Curve over flop (A·B)
    gemm_layouts: dict = field(default_factory=dict)  # (dtype, "nt" | "tn") -> Curve over flop
    gemm_graph: dict = field(default_factory=dict)  # (dtype, layout) -> Curve of in-graph work over flop
    gemm_shapes: dict = field(default_factory=dict)  # layout -> ShapeGrid of float32 in-graph time over (m, n, k)
    membw_accel: Curve | None = None  # over bytes moved
    membw_cpu: Curve | None = None
    best_bw_Bps: float | None = None
    exp_curve: Curve | None = None  # over elements
    membw_graph: dict = field(default_factory=dict)  # "accel"/"cpu" -> in-graph kernel time over bytes moved
    launch: float | None = None
    dispatch: float | None = None
    linalg: dict = field(default_factory=dict)  # op -> Curve over n
    alpha: float | None = None
    beta: float | None = None
    # A fit to measured all_sum times already contains the ring's CPU reductions; the simulator
    # then takes them out of the link time so that they are not counted twice (predict.py).
    link_includes_reduction: bool = False
    allreduce_curves: dict = field(default_factory=dict)  # ring size -> measured all_sum time over bytes
    # The all-reduce was measured over links emulated on this one machine (loopback or network
    # namespaces): the ring's copies, TCP stack and MLX's busy-polling wait run on the same CPUs
    # as the compute, so the machine's slow spells slow the ring too (not so across real hosts).
    link_on_host: bool = False
    peaks: dict = field(default_factory=dict)  # dtype -> (flops_per_s, description)
    noise: dict = field(default_factory=dict)  # category -> ((median_s, relative samples), ...)
    origin: str = "measured"
    sources: dict = field(default_factory=dict)  # what -> origin/source description
    notes: tuple[str, ...] = ()
    # unified memory: what the GPU may keep resident, and how fast pages move beyond it
    # (asprof.simulate.memory_pressure); None where the trace does not say
    working_set_bytes: float | None = None
    page_in_Bps: float | None = None

    @property
    def shared_lanes(self) -> bool:
        """True when MLX's accelerator stream runs on the CPU cores (no GPU): the simulator then
        gives each node one lane for both (DESIGN §4)."""
        return self.accelerator == "none" or self.accel_device == "cpu"

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_trace(cls, trace: Trace, link_from: Trace | None = None, rank: int | None = None,
                   gemm_shapes: bool | None = None, spread_from: Trace | None = None,
                   linalg_dtype: str = "float32") -> "HardwareModel":
        """Fit the cost functions of ``trace``. ``link_from`` supplies α/β when ``trace`` has
        no all-reduce fit (reported in :attr:`notes`). A cluster probe (asprof.probe.cluster)
        has every compute record once per rank (``params.rank``) and round: by default each
        size's time is the median over all of them; ``rank`` keeps only that rank's records (a
        node of a heterogeneous cluster). ``gemm_shapes`` prices GEMMs from the trace's shape
        grid (see the module docstring): None where the trace has one, True always (a note
        when it has none), False never. ``spread_from`` takes the machine's speed pool (the
        "state" noise) from that trace's records instead: `asprof validate --probe-during`
        prices each run from the probe rounds taken during it, and the spread of the machine's
        speed from the rounds of all its runs (more samples, and the moves between runs;
        docs/validate.md §6.2). ``linalg_dtype`` picks the CPU linear-algebra records of that
        dtype ("float64": an implementation that runs eigh in double precision)."""
        if rank is not None:
            from dataclasses import replace

            trace = replace(trace, records=tuple(r for r in trace.records if r.params.get("rank", rank) == rank))
        host = trace.host
        name = trace.name or host.hostname
        mlx_gpu = trace.probe("blas", op="matmul", framework="mlx", device="gpu")
        accel_device = "gpu" if (host.accelerator != "none" and mlx_gpu) else "cpu"
        notes, sources = [], {}

        gemm, peaks = {}, {}
        mm = trace.probe("blas", op="matmul", framework="mlx", device=accel_device)
        for dtype in sorted({r.dtype for r in mm if r.dtype}):
            recs = [r for r in mm if r.dtype == dtype]
            pts = []
            for r in recs:
                p = r.params
                flop = r.metrics.get("flop") or 2.0 * p.get("m", 0) * p.get("n", 0) * p.get("k", 0) * p.get("batch", 1)
                t = time_of(r)
                if t:
                    pts.append((flop, t))
            if pts:
                gemm[dtype] = Curve.fit(pts, power=1.0)
                best = max(recs, key=lambda r: r.metrics.get("flops_per_s", 0.0))
                p = best.params
                peaks[dtype] = (best.metrics.get("flops_per_s", 0.0),
                                f"best measured matmul rate ({p.get('batch', 1)}×{p.get('m')}×{p.get('k')}·"
                                f"{p.get('k')}×{p.get('n')}, {best.origin})")
                sources[f"gemm {dtype}"] = origin_note(recs)
        gemm_graph = {}
        for layout in LAYOUTS:
            op = "matmul" if layout == "nn" else f"matmul_{layout}"
            recs = trace.probe("blas", op=op, framework="mlx", device=accel_device)
            for dtype in sorted({r.dtype for r in recs if r.dtype}):
                pts = [(r.metrics.get("flop", 0.0), r.metrics["in_graph_s"]) for r in recs
                       if r.dtype == dtype and r.metrics.get("in_graph_s")]
                if pts:
                    gemm_graph[(dtype, layout)] = Curve.fit(pts, power=1.0)
        gemm_layouts = {}
        for layout in LAYOUTS[1:]:
            recs = trace.probe("blas", op=f"matmul_{layout}", framework="mlx", device=accel_device)
            for dtype in sorted({r.dtype for r in recs if r.dtype}):
                pts = [(r.metrics.get("flop") or 0.0, time_of(r)) for r in recs if r.dtype == dtype]
                pts = [(f, t) for f, t in pts if f and t]
                if pts:
                    gemm_layouts[(dtype, layout)] = Curve.fit(pts, power=1.0)
        grids = {}
        if gemm_shapes is not False:
            shape_recs = [r for r in trace.probe("blas", op="matmul_shape", framework="mlx", device=accel_device)
                          if r.dtype == "float32" and r.metrics.get("in_graph_s")]
            for layout in LAYOUTS:
                grid = ShapeGrid.fit([(r.params.get("m", 0), r.params.get("n", 0), r.params.get("k", 0),
                                       r.metrics["in_graph_s"]) for r in shape_recs if r.params.get("layout") == layout])
                if grid is not None:
                    grids[layout] = grid
            if grids:
                sources["gemm shapes"] = origin_note(shape_recs)
            elif gemm_shapes:
                notes.append("GEMM shapes asked for, but the trace has no shape grid (blas op matmul_shape): a GEMM "
                             "costs what a square one of the same flop costs (`asprof probe` measures it at its quick and full levels)")
        if gemm and not gemm_layouts and trace.origin == "measured":
            notes.append("no transposed-layout matmul measurements (blas ops matmul_nt/matmul_tn): every GEMM "
                         "costs what A·B costs, which some BLAS libraries do not (re-run `asprof probe`)")
        for r in trace.probe("blas", op="peak", framework="mlx", device=accel_device):
            if r.dtype and r.metrics.get("flops_per_s"):
                src = r.source or "measured"
                src = src if src.startswith(r.origin) else f"{r.origin}: {src}"
                peaks[r.dtype] = (r.metrics["flops_per_s"], f"the trace's blas peak record ({src})")

        def membw_curve(device):
            recs = [r for r in trace.probe("membw", framework="mlx", device=device) if r.op in ("copy", "triad")]
            pts = []
            for r in recs:
                moved = r.metrics.get("bytes_moved") or r.params.get("bytes", 0) * (2 if r.op == "copy" else 3)
                t = time_of(r)
                if t:
                    pts.append((moved, t))
            return (Curve.fit(pts), recs) if pts else (None, recs)

        membw_accel, bw_recs = membw_curve(accel_device)
        membw_cpu, cpu_recs = membw_curve("cpu")

        def membw_graph_curve(device):
            pts = []
            for r in trace.probe("membw", framework="mlx", device=device):
                if r.op in ("copy", "triad") and r.metrics.get("in_graph_s"):
                    moved = r.metrics.get("bytes_moved") or r.params.get("bytes", 0) * (2 if r.op == "copy" else 3)
                    pts.append((moved, r.metrics["in_graph_s"]))
            return Curve.fit(pts) if pts else None

        membw_graph = {"accel": membw_graph_curve(accel_device), "cpu": membw_graph_curve("cpu")}
        if membw_cpu is None and membw_accel is not None and host.unified_memory:
            membw_cpu = membw_accel
            notes.append("CPU-side reductions use the accelerator's memory bandwidth (unified memory; "
                         "the trace has no membw records for the CPU)")
        if membw_accel is not None:
            sources["membw"] = origin_note(bw_recs)

        exp_recs = trace.probe("membw", op="exp", framework="mlx", device=accel_device)
        exp_pts = [(r.params.get("bytes", 0) / ITEMSIZE.get(r.dtype or "float32", 4), time_of(r)) for r in exp_recs]
        exp_curve = Curve.fit(exp_pts) if any(x > 0 and t for x, t in exp_pts) else None
        if exp_curve is None and trace.origin == "measured":
            notes.append("no exp throughput measurement (membw op exp): softmax, cross-entropy and SiLU cost only "
                         "their bytes, which under-predicts them where transcendentals are slow (re-run `asprof probe`)")
        warm = trace.probe("launch", op="warm", framework="mlx", device=accel_device)
        launch = typical([r for r in warm if "latency_s" in r.metrics], "latency_s") if warm else None
        if warm:
            sources["launch"] = origin_note(warm)
        # the best bandwidth of the work itself (time less one launch): the GEMM memory floor
        best_bw = None
        if membw_accel is not None:
            rates = [x / (t - (launch or 0.0)) for x, t in zip(membw_accel.xs, membw_accel.ts) if t > (launch or 0.0)]
            best_bw = max(rates) if rates else None
        graph = trace.probe("launch", op="graph", framework="mlx", device=accel_device)
        dispatch = typical([r for r in graph if "latency_s" in r.metrics], "latency_s") if graph else None
        if graph:
            sources["dispatch"] = origin_note(graph)
        else:
            notes.append("no in-graph dispatch measurement (launch probe, op 'graph'): kernels cost only their "
                         "work, so many-kernel steps of small models may be under-predicted")

        linalg = {}
        lin_recs = []
        for op in LINALG_OPS:
            recs = [r for r in trace.probe("linalg", op=op, framework="mlx", device="cpu")
                    if (r.dtype or "float32") == linalg_dtype]
            pts = [(r.params.get("n", 0), time_of(r)) for r in recs if time_of(r)]
            if pts:
                linalg[op] = Curve.fit(pts, power=3.0)
                lin_recs += recs
        if lin_recs:
            sources["linalg"] = origin_note(lin_recs)

        alpha = beta = None
        link_includes_reduction = False
        fits = [r for r in trace.probe("allreduce", op="fit") if {"alpha_s", "beta_Bps"} <= set(r.metrics)]
        link_trace = trace
        if not fits and link_from is not None:
            fits = [r for r in link_from.probe("allreduce", op="fit") if {"alpha_s", "beta_Bps"} <= set(r.metrics)]
            link_trace = link_from
            if fits:
                notes.append(f"link α/β borrowed from {link_from.name or link_from.host.hostname} "
                             "(the trace has no all-reduce fit)")
        if fits:
            best = max(fits, key=lambda r: r.params.get("nodes", 0) if isinstance(r.params.get("nodes"), int) else 0)
            alpha, beta = best.metrics["alpha_s"], best.metrics["beta_Bps"]
            link_includes_reduction = best.origin == "measured"
            sources["link"] = f"{best.origin} ({link_trace.name or link_trace.host.hostname})"

        # Measured all_sum times per ring size: for a ring of exactly that size the simulator uses
        # the measured curve (MLX's ring changes its schedule with the payload — one or two
        # directions, packet sizes — and a shaped TCP link is not linear in size either), the
        # α-β fit for other sizes.
        allreduce_curves = {}
        measured_ring = link_includes_reduction and link_trace is trace
        for k in sorted({r.params.get("nodes") for r in trace.probe("allreduce", op="all_sum")} - {None} if measured_ring else ()):
            pts = [(r.params.get("bytes", 0), time_of(r)) for r in trace.probe("allreduce", op="all_sum")
                   if r.params.get("nodes") == k and r.origin == "measured"]
            if len([1 for x, t in pts if x > 0 and t]) >= 2:
                allreduce_curves[int(k)] = Curve.fit(pts, power=1.0)

        labels = {str(r.params.get("link", "")) for r in trace.probe("allreduce", op="all_sum")}
        link_on_host = bool(labels) and all(lab.startswith(("loopback", "netns")) for lab in labels)
        noise = {
            "gemm": rel_samples(mm),
            "elementwise": rel_samples(bw_recs),
            "cpu": rel_samples(lin_recs),
            "link": rel_samples(trace.probe("allreduce", op="all_sum")),
        }
        if spread_from is not None:
            state = cls.from_trace(spread_from, rank=rank).noise.get("state", ())
        else:
            state = state_spread(list(mm) + list(bw_recs) + list(lin_recs))
        if state:
            noise["state"] = state
        memory = memory_figures(trace)
        return cls(
            name=name, chip=host.chip, accelerator=host.accelerator, accel_device=accel_device,
            memory_bytes=host.memory_bytes, gemm=gemm, gemm_layouts=gemm_layouts, gemm_graph=gemm_graph,
            gemm_shapes=grids,
            membw_accel=membw_accel, membw_cpu=membw_cpu,
            best_bw_Bps=best_bw, exp_curve=exp_curve, membw_graph=membw_graph, launch=launch, dispatch=dispatch, linalg=linalg, alpha=alpha, beta=beta,
            link_includes_reduction=link_includes_reduction, allreduce_curves=allreduce_curves,
            link_on_host=link_on_host, peaks=peaks, noise={k: v for k, v in noise.items() if v}, origin=trace.origin, sources=sources,
            notes=tuple(notes), working_set_bytes=memory[0], page_in_Bps=memory[1],
        )

    # -- costs --------------------------------------------------------------------------------
    def _missing(self, probe: str, what: str) -> MissingProbeError:
        return MissingProbeError(
            f"trace {self.name} has no {what}; run `asprof probe` with the {probe} probe on this machine "
            f"(or pass --trace with a trace or bundled profile that has it)")

    @property
    def launch_s(self) -> float:
        if self.launch is None:
            raise self._missing("launch", f"warm launch latency for mlx/{self.accel_device}")
        return self.launch

    @property
    def dispatch_s(self) -> float:
        return self.dispatch if self.dispatch is not None else 0.0

    def gemm_curve(self, dtype: str, layout: str = "nn") -> Curve:
        curve = self.gemm_layouts.get((dtype, layout)) or self.gemm.get(dtype)
        if curve is None:
            raise self._missing("blas", f"{dtype} matmul measurements for mlx/{self.accel_device}")
        return curve

    def flop_work(self, flop: float, dtype: str = "float32", layout: str = "nn") -> float:
        """Seconds of GEMM work for ``flop`` inside a graph: the measured in-graph time where the
        trace has it, else the synced time less one launch."""
        graph = self.gemm_graph.get((dtype, layout)) or (self.gemm_graph.get((dtype, "nn"))
                                                          if (dtype, layout) not in self.gemm_layouts else None)
        if graph is not None:
            return graph(flop)
        return max(0.0, self.gemm_curve(dtype, layout)(flop) - self.launch_s)

    def gemm_work(self, m: int, n: int, k: int, batch: int = 1, dtype: str = "float32", layout: str = "nn") -> float:
        """Seconds of work of one (batched) GEMM (m×k)·(k×n) with operands stored as ``layout``
        inside a graph: from the square sweep's time at the same flop count, or from the shape
        grid where one was loaded (``from_trace(gemm_shapes=True)``; float32; a batched GEMM
        costs ``batch`` of its matrices); at least its memory traffic at the best measured
        bandwidth."""
        grid = self.gemm_shapes.get(layout) if dtype == "float32" else None
        if grid is not None:
            t = batch * grid(m, n, k)
        else:
            t = self.flop_work(2.0 * m * n * k * batch, dtype, layout)
        if self.best_bw_Bps:
            t = max(t, ITEMSIZE.get(dtype, 4) * batch * (m * k + k * n + m * n) / self.best_bw_Bps)
        return t

    def elementwise_work(self, bytes_moved: float, device: str = "accel") -> float:
        """Seconds of work of memory-bound ops moving ``bytes_moved`` bytes in total: the in-graph
        kernel time where the trace measured it (it includes the in-graph dispatch), else the
        synced time less one launch."""
        graph = self.membw_graph.get(device)
        if graph is not None:
            return graph(bytes_moved)
        curve = self.membw_accel if device == "accel" else self.membw_cpu
        if curve is None:
            raise self._missing("membw", f"memory bandwidth (copy/triad) for mlx/{self.accel_device if device == 'accel' else 'cpu'}")
        return max(0.0, curve(bytes_moved) - self.launch_s)

    def exp_work(self, elements: float) -> float:
        """Seconds of ``elements`` exp evaluations inside a graph (0 without measurements)."""
        if self.exp_curve is None or elements <= 0:
            return 0.0
        return max(0.0, self.exp_curve(elements) - self.launch_s)

    def linalg_time(self, op: str, n: int) -> float:
        """Seconds for one ``eigh`` / ``qr`` / ``power_step`` of an n×n matrix on the CPU stream."""
        curve = self.linalg.get(op)
        if curve is None:
            raise self._missing("linalg", f"{op} timings on the CPU stream")
        return curve(n)

    def allreduce_time(self, nbytes: float, nodes: int) -> float | None:
        """The measured all_sum time of ``nbytes`` on a ring of ``nodes`` ranks, interpolated
        log-log between the probed sizes (None when this ring size was not measured)."""
        curve = self.allreduce_curves.get(nodes)
        return curve(nbytes) if curve is not None else None

    def link(self) -> tuple[float, float]:
        """(α seconds per ring step, β bytes/s per link) from the all-reduce fit."""
        if self.alpha is None or self.beta is None:
            raise MissingProbeError(
                f"trace {self.name} has no all-reduce fit (α, β), needed for more than one node; run "
                "`asprof probe --nodes 2` (or with --hostfile on the cluster), or pass --link PROFILE to "
                "borrow the link of a bundled profile")
        return self.alpha, self.beta

    def peak(self, dtype: str = "float32") -> tuple[float, str]:
        """(FLOP/s, where it comes from): the trace's blas ``peak`` record if there is one,
        else the best measured matmul rate."""
        if dtype not in self.peaks:
            raise self._missing("blas", f"{dtype} matmul measurements for mlx/{self.accel_device}")
        return self.peaks[dtype]
