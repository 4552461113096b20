"""Mix tuning: find the weights / thresholds that hold a spending, quality or latency target.

``offline`` sweeps a mix's knob over routing records and picks the best point meeting the target,
``yaml_io`` writes it back into the mix instructions without disturbing the file, ``live`` holds the
same target online from telemetry. Nothing heavy is imported here.
"""

from __future__ import annotations

from moai.tuning.targets import Target, TargetError, parse_target

__all__ = ["Target", "TargetError", "parse_target"]
