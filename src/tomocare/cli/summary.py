"""Readable summaries of plans for the command line (the full plans are JSON, ``--json``)."""

from __future__ import annotations

from typing import Any


def _shape(values: Any) -> str:
    return " x ".join(str(v) for v in values)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _operator(op: dict) -> str:
    """A network (model, precision, orientations) or a filter (method and its parameters)."""
    if "method" in op:
        params = ", ".join(f"{k}={_value(v)}" for k, v in op.get("params", {}).items() if v is not None)
        return f"filter {op['method']}" + (f" ({params})" if params else "")
    if "model" in op:
        n = op.get("orientations", 1)
        return (f"network {op['model']}, precision {op.get('precision', 'auto')}, "
                f"{n} orientation{'s' if n != 1 else ''}")
    return ", ".join(f"{k} {_value(v)}" for k, v in op.items() if k != "halo")


def plan_summary(described: dict) -> list[str]:
    """The lines ``--dry-run`` prints for a block run's ``describe()`` dictionary."""
    n = described["blocks"]
    lines = [
        f"blocks: {n} of {_shape(described['block'])} (grid {_shape(described['grid'])}) "
        f"over {_shape(described['shape'])}",
        f"tiles: {_shape(described['tile'])} (block + halo {_shape(described['halo'])} each side); "
        f"{described['computed_to_output_ratio']:.2f} voxels computed per voxel written",
    ]
    memory = f"memory per task: ~{described['estimated_memory_per_task_mib']} MiB estimated"
    if "task_memory_budget_mib" in described:
        memory += f" (budget {described['task_memory_budget_mib']} MiB)"
    if described.get("network_pieces"):
        memory += f"; the network computes each tile in pieces of {_shape(described['network_pieces'])}"
    lines += [
        memory,
        f"operator: {_operator(described['operator'])}",
        f"inputs: {', '.join(described['inputs'])}",
        f"output: {described['output']} ({described['dtype']}, chunks {_shape(described['output_chunks'])})",
    ]
    return lines
