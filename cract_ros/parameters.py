"""Declared, validated ROS parameters for the cract nodes (tracker and follower).

Each node lists its parameters as ParamSpec entries (default, description, bounds). The helpers
here declare them, validate every value at start and on `ros2 param set`, and say which may
change when:

* runtime: at any time, applied at once;
* start-up (`startup=True`): read once when the process starts (read-only afterwards);
* otherwise, for a lifecycle node: read by the configure transition, so they may change only
  while the node is unconfigured (a node without a lifecycle treats them as start-up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from rcl_interfaces.msg import ParameterDescriptor

__all__ = ["ParamSpec", "declare_parameters", "check_values", "apply_update", "MODEL_RUNTIME_PARAMS",
           "apply_model_runtime"]


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    description: str
    runtime: bool = False  # may change while running
    startup: bool = False  # read once at process start (else, in a lifecycle node, at configure)
    choices: tuple = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    # a value that stands for "not set here" and passes every bound (the tracker node's -1: the
    # model config's own value); None: no such value
    unset: Optional[Any] = None

    def coerce(self, value: Any) -> Any:
        """An int given for a float parameter counts as that float (YAML writes 1 for 1.0)."""
        if type(self.default) is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def check(self, name: str, value: Any) -> Optional[str]:
        """None when `value` is acceptable, else the reason it is not."""
        want = type(self.default)
        value = self.coerce(value)
        if type(value) is not want:
            return f"{name} must be a {want.__name__}, got {type(value).__name__} {value!r}"
        if self.unset is not None and value == self.unset:
            return None
        if self.choices and value not in self.choices:
            return f"{name} must be one of {list(self.choices)}, got {value!r}"
        if want in (int, float):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{name} must be finite, got {value!r}"
            if self.minimum is not None:
                if self.exclusive_minimum and value <= self.minimum:
                    return f"{name} must be > {self.minimum}, got {value!r}"
                if not self.exclusive_minimum and value < self.minimum:
                    return f"{name} must be >= {self.minimum}, got {value!r}"
            if self.maximum is not None and value > self.maximum:
                return f"{name} must be <= {self.maximum}, got {value!r}"
        return None


def declare_parameters(node: Any, specs: Mapping[str, ParamSpec], read_only_unless_runtime: bool) -> dict:
    """Declare every parameter on `node`; returns {name: value}. A value of the wrong type in a
    params file raises ValueError naming the parameter.

    `read_only_unless_runtime`: mark every non-runtime parameter read-only in its descriptor (a
    node without a lifecycle); a lifecycle node marks only start-up ones and refuses
    configure-time changes itself, outside the unconfigured state (see `apply_update`).
    """
    values = {}
    for name, spec in specs.items():
        read_only = not spec.runtime and (spec.startup or read_only_unless_runtime)
        desc = ParameterDescriptor(description=spec.description, read_only=read_only)
        try:
            values[name] = spec.coerce(node.declare_parameter(name, spec.default, desc).value)
        except Exception as exc:  # a wrong type in the params file: say which parameter
            raise ValueError(f"parameter {name}: {exc} (expected a {type(spec.default).__name__}, "
                             f"default {spec.default!r})") from exc
    return values


def check_values(specs: Mapping[str, ParamSpec], values: Mapping[str, Any]) -> list[str]:
    """Every reason why `values` are not acceptable (empty when they all are)."""
    return [r for r in (specs[n].check(n, v) for n, v in values.items() if n in specs) if r]


def apply_update(specs: Mapping[str, ParamSpec], current: Mapping[str, Any], params: list,
                 configurable: bool, state: str) -> tuple[Optional[dict], str]:
    """The values after a `ros2 param set` of `params` (rclpy Parameter objects), or (None, reason).

    `configurable`: configure-time parameters may change now (a lifecycle node while
    unconfigured); `state` names the node's state for the refusal.
    """
    new = dict(current)
    for param in params:
        spec = specs.get(param.name)
        if spec is None:
            continue  # use_sim_time and other rclpy-owned parameters
        if not spec.runtime and (spec.startup or not configurable):
            when = ("read once at start-up: restart the node to change it" if spec.startup or not state else
                    f"read by the configure transition: deactivate and clean up the node, set it, configure again")
            where = f" while the node is {state}" if state and not spec.startup else ""
            return None, f"{param.name} is read-only{where} ({when})"
        value = spec.coerce(param.value)
        reason = spec.check(param.name, value)
        if reason:
            return None, reason
        new[param.name] = value
    return new, ""


# The tracker node's inference runtime (docs/runtime.md), declared beside its other model
# parameters; read by the configure transition like them.
MODEL_RUNTIME_PARAMS: dict[str, ParamSpec] = {
    "runtime": ParamSpec("", "inference runtime: torch or onnxruntime (ONNX graphs exported from the same "
                         "weights, cached by hash); empty = the model config's own", choices=("", "torch", "onnxruntime")),
}


def apply_model_runtime(cfg: Any, settings: Mapping[str, Any]) -> Any:
    """Write the node's ``runtime`` parameter over the model config (empty or absent: the config's own)."""
    runtime = settings.get("runtime") or ""
    if runtime:
        reason = MODEL_RUNTIME_PARAMS["runtime"].check("runtime", runtime)
        if reason:
            raise ValueError(reason)
        cfg.runtime = runtime
    return cfg
