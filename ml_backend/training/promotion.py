"""Whether a retrained model should be served instead of the current one.

Example:
    >>> old = {"metric": "mAP50-95", "primary": 0.50}
    >>> decide(old, {"metric": "mAP50-95", "primary": 0.55}, "if_better")[0]
    True
    >>> decide(old, {"metric": "mAP50-95", "primary": 0.45}, "if_better")[0]
    False
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def decide(old: Mapping[str, Any], new: Mapping[str, Any], policy: str) -> tuple[bool, str]:
    """Whether the new model should be served, and why (one sentence for the status and the log).

    ``if_better`` serves it when it is not worse on the primary metric (ties go to the new
    model: it has seen more labels; but not a tie at zero, which is no evidence at all);
    ``always`` serves every run.
    """
    name = new.get("metric", "score")
    a, b = float(old.get("primary", 0.0)), float(new.get("primary", 0.0))
    if policy == "always":
        return True, f"PROMOTION=always: served ({name} {b:.4f}, the previous model had {a:.4f})"
    if a <= 0.0 and b <= 0.0:
        return False, f"kept the previous model: both score {name} 0 on the held-out labels, so nothing shows the new one is better"
    if b + 1e-9 >= a:
        return True, f"served: {name} {b:.4f} on the held-out labels, not worse than the previous model's {a:.4f}"
    return False, f"kept the previous model: the new one is worse on the held-out labels ({name} {b:.4f} < {a:.4f})"
