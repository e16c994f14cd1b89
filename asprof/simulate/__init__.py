"""`asprof simulate`: a trace-driven discrete-event simulator of data-parallel training steps
(DESIGN §4; docs/simulator.md).

The core (engine, hardware, workload, costs, collectives, predict, summarise) does no I/O and
reads no clock; session.py loads traces at the edge, report/timeline/plot render results.

    from asprof.simulate import HardwareModel, Workload, OptimizerSpec, Cluster, SimConfig, predict
    hw = HardwareModel.from_trace(load_profile("m4-mini-x16-tb4"))
    p = predict(Workload(PRESETS["kpop-1.7m"], batch=16, seq=1024),
                [OptimizerSpec("adam"), OptimizerSpec("topkpop", sparsity=0.1)], Cluster(16, hw))
    p.result("adam").mean_s
"""

from asprof.spec import OptimizerSpec
from asprof.simulate.hardware import HardwareModel
from asprof.simulate.predict import Cluster, NodeSpec, Prediction, SimConfig, predict
from asprof.simulate.summarise import OptimizerResult
from asprof.simulate.workload import Workload

__all__ = ["Cluster", "HardwareModel", "NodeSpec", "OptimizerResult", "OptimizerSpec", "Prediction", "SimConfig",
           "Workload", "predict"]
