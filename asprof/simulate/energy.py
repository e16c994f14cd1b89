"""Energy per step from the lanes' busy time and the trace's measured power (no I/O).

The power probe (asprof.probe.power) records a node's watts at idle, under GEMM-bound work and
under bandwidth-bound work. A node's step then costs, to first order,

    E_step = P_idle·T + (P_gemm − P_idle)·busy_accel + (P_membw − P_idle)·busy_cpu        (1)

T the step time, busy_* the seconds per step the node's accelerator and CPU lanes are busy (the
CPU lane's reductions and eigendecompositions are memory-bound). The link's own power is not
measured and not counted. J per token per node = E_step / tokens per node per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from asprof.traces.schema import Trace

# domains that add up to a node's power without counting a part twice
_SUMMED = ("cpu", "gpu", "dram", "ane", "package")


@dataclass(frozen=True)
class PowerModel:
    idle_W: float
    gemm_W: float
    membw_W: float
    source: str

    @classmethod
    def from_trace(cls, trace: Trace) -> "PowerModel | None":
        """The first power source the trace measured all three loads with, else None."""
        recs = trace.probe("power")
        for source in dict.fromkeys(str(r.params.get("source")) for r in recs):
            watts = {}
            for load in ("idle", "gemm", "membw"):
                rs = [r for r in recs if r.op == load and str(r.params.get("source")) == source
                      and r.device.startswith(_SUMMED)]
                if rs:
                    watts[load] = sum(r.metrics["watts"] for r in rs)
            if len(watts) == 3:
                return cls(watts["idle"], watts["gemm"], watts["membw"], source)
        return None

    def step_J(self, step_s: float, busy_s: dict) -> float:
        """Equation (1)."""
        return (self.idle_W * step_s + max(0.0, self.gemm_W - self.idle_W) * busy_s.get("accel", 0.0)
                + max(0.0, self.membw_W - self.idle_W) * busy_s.get("cpu", 0.0))


def energy(power: PowerModel, result, tokens_per_node: int) -> dict:
    """J per step per node and J per token for one simulated optimizer."""
    j = power.step_J(result.mean_s, result.lane_busy_s)
    return {"J_per_step_per_node": j, "J_per_token": j / tokens_per_node if tokens_per_node else 0.0}
