"""`asprof validate`: real MLX training on a live cluster against the simulator's prediction
(DESIGN §6; docs/validate.md).

    from asprof.validate import ValidateConfig, run_validation
    result = run_validation(ValidateConfig(nodes=2))
    result.comparisons["adam"].mean_error_pct
"""

from asprof.validate.config import ValidateConfig
from asprof.validate.run import ValidationResult, run_validation

__all__ = ["ValidateConfig", "ValidationResult", "run_validation"]
