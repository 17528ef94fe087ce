"""``lrpose-bench methods``: every registered method with codec, loss, stages and constants."""

from __future__ import annotations

import dataclasses

from lrpose_bench.config import resolve_method_params
from lrpose_bench.method import MethodContext
from lrpose_bench.registry import METHODS, PLUGIN_ERRORS
from lrpose_bench.resolution import Resolution

BENCHMARK_RESOLUTIONS = ("64x48", "128x96", "256x192", "384x288")


def describe_methods(total_epochs: int = 210) -> str:
    """Human-readable catalogue (plain text)."""
    lines: list[str] = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        per_res: dict[str, dict] = {}
        refused: list[str] = []
        stages_text = ""
        codec, loss = cls.codec_name, ""
        for res_text in BENCHMARK_RESOLUTIONS:
            res = Resolution.parse(res_text)
            try:
                params = resolve_method_params(cls.Params, name, res)
                method = cls(params, MethodContext(res))
            except Exception:  # e.g. SPSR+pose runs only at 64x48; a broken plugin must not hide the others
                refused.append(res_text)
                continue
            codec = codec or method.codec_name
            loss = loss or method.loss_name
            per_res[res_text] = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else {}
            if not stages_text:
                stages_text = ", ".join(f"{s.name} ({s.epochs} ep)" for s in method.stages(total_epochs))
        lines.insert(len(lines), f"{name}: {cls.description}")
        lines.append(f"  codec: {codec}    loss: {loss}")
        lines.append(f"  stages (paper schedule): {stages_text}")
        if refused:
            lines.append(f"  not available at: {', '.join(refused)}")
        keys = sorted({k for values in per_res.values() for k in values})
        if keys:
            lines.append("  constants: " + "  ".join(f"[{r}]" for r in BENCHMARK_RESOLUTIONS))
            for key in keys:
                values = "  ".join(f"{per_res.get(r, {}).get(key, '-')!s}" for r in BENCHMARK_RESOLUTIONS)
                lines.append(f"    {key}: {values}")
        lines.append("")
    for plugin, error in PLUGIN_ERRORS:
        lines.append(f"plugin {plugin} failed to load and was skipped: {error}")
    return "\n".join(lines).rstrip() + "\n"
