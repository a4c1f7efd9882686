"""The documented import path ``bcos.explain.contributions``; the code is :mod:`bcos.explanation.contributions`.

The exact explanation core moved below the models; this name stays so existing code
(``from bcos.explain.contributions import explain``) keeps working.
"""

from bcos.explanation.contributions import (
    CompletenessResult,
    Explanation,
    Target,
    check_completeness,
    dynamic_linear_weights,
    explain,
    find_logit_layer,
)

__all__ = [
    "CompletenessResult",
    "Explanation",
    "Target",
    "check_completeness",
    "dynamic_linear_weights",
    "explain",
    "find_logit_layer",
]
