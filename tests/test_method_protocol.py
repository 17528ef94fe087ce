"""Every hook the engine, the oracle and `bench` use is declared on `Method` (with a default), and
no module looks a method attribute up with `getattr`/`hasattr` — a plugin author sees the whole
protocol on the base class. Pipeline methods (SR+pose) answer the declared hooks with their pose
codec's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lrpose_bench.config import config_dir, load_config, read_yaml
from lrpose_bench.engine.cell import CellSpec, build_method
from lrpose_bench.method import Method
from lrpose_bench.oracle import codec_bound, oracle_outputs
from lrpose_bench.registry import METHODS, load_builtins
from lrpose_bench.resolution import Resolution

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ("codec_bound_px", "oracle_outputs", "uses_mgm", "offset_weight", "prepare", "eval_input_transform",
         "build_head", "train_resolution", "coarse_argmax", "heatmaps", "encode_batch", "describe_params")  # fmt: skip
load_builtins()


def test_no_undeclared_lookup_on_a_method_in_the_engine_oracle_or_bench():
    pattern = re.compile(r"(?:getattr|hasattr)\((?:method|inner|m)\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "lrpose_bench").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]  # fmt: skip
    assert not offenders, offenders


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_declared_on_the_base_class(hook):
    assert hasattr(Method, hook), hook


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_answers_every_hook(name):
    cfg = load_config("quick")
    method = build_method(CellSpec(name, "hrnet-w8", Resolution(64, 48)), cfg)
    assert method.codec_bound_px is None or method.codec_bound_px > 0
    assert isinstance(method.uses_mgm(method.stages(10)[-1]), bool)
    if getattr(method, "upsampler", None) != "spsr":  # SPSR's transform needs its prepared SR network
        transform = method.eval_input_transform()
        assert transform is None or callable(transform)
    hm_h, hm_w = method.train_resolution().heatmap
    joints = np.array([[[hm_w / 2 + 0.3, hm_h / 2 - 0.2]] * 17], dtype=np.float32)
    outputs = oracle_outputs(method, joints, np.ones((1, 17), dtype=np.float32))
    coords, _ = method.decode(outputs)
    assert torch.allclose(coords, torch.from_numpy(joints), atol=max(codec_bound(method) or 1.0, 1e-3) * 1.5)


def test_pipeline_methods_answer_with_their_pose_codec():
    cfg = load_config("quick")
    for name in ("spsr+udp", "bicubic+hrnet"):
        method = build_method(CellSpec(name, "hrnet-w8", Resolution(64, 48)), cfg)
        assert method.codec_bound_px == method.inner.codec_bound_px is not None
    hrnet = build_method(CellSpec("hrnet", "hrnet-w8", Resolution(64, 48)), cfg)
    assert hrnet.codec_bound_px == 0.75  # arg-max + quarter-pixel shift


@pytest.mark.parametrize("name", [n for n in METHODS.names() if (config_dir() / "methods" / f"{n}.yaml").is_file()])
def test_params_defaults_equal_the_yaml_defaults(name):
    """A `Params` default that disagrees with `configs/methods/<name>.yaml`'s `defaults:` misleads
    whoever reads the code (the YAML wins at run time); they must be one number."""
    cls = METHODS.get(name)
    yaml_defaults = read_yaml(config_dir() / "methods" / f"{name}.yaml").get("defaults") or {}
    for f in dataclasses.fields(cls.Params):
        if f.name not in yaml_defaults:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        same = default == yaml_defaults[f.name] or (
            isinstance(default, tuple) and list(default) == yaml_defaults[f.name]
        )
        assert same, (name, f.name, default, yaml_defaults[f.name])


def test_loss_name_is_a_read_only_property_that_follows_the_constants() -> None:
    """``loss_name`` was a class attribute instances overwrote; now a property (``loss_family`` is
    the class-level text): every registered method answers it, and it cannot drift from params."""
    from lrpose_bench.config import resolve_method_params
    from lrpose_bench.method import Method, MethodContext
    from lrpose_bench.registry import METHODS
    from lrpose_bench.resolution import Resolution

    res = Resolution(64, 48)
    assert isinstance(Method.__dict__["loss_name"], property)
    for name in METHODS.names():
        cls = METHODS.get(name)
        method = cls(resolve_method_params(cls.Params, name, res), MethodContext(res))
        assert isinstance(method.loss_name, str) and method.loss_name, name
    cal_cls = METHODS.get("cal")
    cal = cal_cls(resolve_method_params(cal_cls.Params, "cal", res, {"offset_loss": "smoothl1"}), MethodContext(res))
    assert "SmoothL1" in cal.loss_name
    with pytest.raises(AttributeError):
        cal.loss_name = "something else"
