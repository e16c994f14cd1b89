"""Published link figures per backend: what one all-reduce step costs over a Thunderbolt link.

Each figure is an α (seconds per message, the latency one ring step or one mesh phase pays) and a β
(bytes/s one link carries), with the measurement it comes from. They are community measurements
of real Macs, not asprof's own: a probed cluster (``asprof probe --hostfile ... --backend ...``)
replaces them. The bundled profiles carry them as ``allreduce`` ``fit`` records
(:func:`link_records`); the simulator borrows one for a backend the trace did not measure.

- TCP over Thunderbolt (MLX's ring backend) pays the kernel's network stack per message: about
  300 µs, against about 3 µs with RDMA (NetworkChuck's four-Mac-Studio measurement, summarised at
  brainfeed.ai; Jeff Geerling's test of the same setup gives "300 µs down to < 50 µs").
- TB5 TCP bandwidth: iperf3 between two Macs over a direct Thunderbolt 5 cable, 52.6-56.1 Gbit/s
  (exo-explore/exo pull request #2063).
- TB4 TCP bandwidth: iperf3 from a Mac over a Thunderbolt 4 / USB4 cable, 16.4 Gbit/s at the
  default MTU (jiribrejcha.net, "Direct 20 Gbps connection between Mac and Windows 11").
- TB5 RDMA bandwidth: 3.5 GB/s per cable moving files with JACCL (ml-explore/mlx issue #3207).
"""

from __future__ import annotations

from dataclasses import dataclass

from asprof.traces.schema import Record

_TCP_ALPHA_SRC = ("about 300 us per message over TCP on Thunderbolt (NetworkChuck, 'Ethernet is DEAD?? Mac Studio is "
                  "100x FASTER', 4 x Mac Studio M3 Ultra, macOS 26.2; Jeff Geerling, '1.5 TB of VRAM on Mac Studio - "
                  "RDMA over Thunderbolt 5', 2025: 300 us)")


@dataclass(frozen=True)
class LinkFigure:
    key: str
    backend: str
    link: str  # the cable, as the profiles name it
    alpha_s: float
    beta_Bps: float
    alpha_src: str
    beta_src: str

    @property
    def source(self) -> str:
        return f"alpha: {self.alpha_src}; beta: {self.beta_src}"


LINK_FIGURES: dict[str, LinkFigure] = {f.key: f for f in (
    LinkFigure("tb4-ring", "ring", "Thunderbolt 4", 300e-6, 16.4e9 / 8, _TCP_ALPHA_SRC,
               "16.4 Gbit/s TCP (iperf3, Mac over a Thunderbolt 4 cable, MTU 1500; jiribrejcha.net, 'Direct 20 Gbps "
               "connection between Mac and Windows 11 machine with no Ethernet adapters')"),
    LinkFigure("tb5-ring", "ring", "Thunderbolt 5", 300e-6, 54.35e9 / 8, _TCP_ALPHA_SRC,
               "52.6-56.1 Gbit/s TCP, midpoint (iperf3, 4 streams, two Macs on a direct Thunderbolt 5 cable; "
               "github.com/exo-explore/exo pull 2063)"),
    LinkFigure("tb5-jaccl", "jaccl", "Thunderbolt 5", 3e-6, 3.5e9,
               "about 3 us per message with RDMA over Thunderbolt 5 (NetworkChuck, same measurement as the TCP figure; "
               "MLX docs: 'an order of magnitude lower than the ring backend'; exo's Alex Cheema: single-digit us)",
               "3.5 GB/s per cable (JACCL RDMA transfer between two Macs over Thunderbolt 5; "
               "github.com/ml-explore/mlx issue 3207)"),
)}

_TOPOLOGY = {"ring": "ring", "jaccl": "mesh"}  # as asprof.cluster.hostfile.TOPOLOGY names them
_MODEL = {"ring": "ring: t = 2(K-1)*alpha + 2(K-1)/K * S / beta (not fitted: published figures)",
          "jaccl": "mesh: t = alpha + S/beta up to 32 KiB or 2 ranks, else 2*alpha + 2 S/(K beta) "
                   "(not fitted: published figures)"}

# the cable a profile names -> the figures bundled for it (RDMA needs Thunderbolt 5)
_BY_LINK = {"tb4": ("tb4-ring",), "tb5": ("tb5-ring", "tb5-jaccl")}


def link_records(link: str, nodes: int) -> list[Record]:
    """The ``allreduce`` fit records of a profile whose cluster is joined by ``link`` (tb4, tb5)."""
    out = []
    for key in _BY_LINK[link]:
        f = LINK_FIGURES[key]
        out.append(Record(
            "allreduce", "fit", "mlx", "link", "float32",
            params={"nodes": nodes, "backend": f.backend, "topology": _TOPOLOGY[f.backend], "link": f.link,
                    "model": _MODEL[f.backend]},
            metrics={"alpha_s": f.alpha_s, "beta_Bps": f.beta_Bps},  # not fitted: no fit statistics
            origin="published", source=f.source,
        ))
    return out


def figure_for(backend: str, link: str | None = None) -> LinkFigure | None:
    """A published figure for ``backend`` (jaccl-ring and mpi borrow jaccl's and ring's), on
    ``link`` if given ("Thunderbolt 4" / "Thunderbolt 5")."""
    want = {"jaccl-ring": "jaccl", "mpi": "ring"}.get(backend, backend)
    figs = [f for f in LINK_FIGURES.values() if f.backend == want and (link is None or f.link == link)]
    return figs[-1] if figs else None
