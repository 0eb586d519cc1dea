"""backend 'inductor' (inference.inductor): one torch.compile'd function per merge configuration,
every preset traced by dynamo with logits equal to the eager model's, switching back to a
configuration reusing its function. The tracing is checked with dynamo's 'eager' backend here
(inductor's code generation takes minutes per size on this CPU); tools/gpu-check times inductor
itself on CUDA beside eager and CUDA graphs."""
from __future__ import annotations

import torch

from segpp_ros.inference.compiled import BACKENDS, resolve_backend
from segpp_ros.inference.inductor import InductorForward
from segpp_ros.inference.loader import backend_precisions
from segpp_ros.model import PRESETS, build_model


def test_every_preset_compiles_to_its_own_function_with_the_eager_logits() -> None:
    torch.manual_seed(0)
    model = build_model("b0", num_classes=5).eval()
    forward = InductorForward(model, key=lambda: model.merge, compile_backend="eager")
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        for preset in [*PRESETS, "none"]:
            model.set_merge(preset)
            torch.testing.assert_close(forward(x), model(x), atol=1e-5, rtol=1e-5)
    assert len(forward._functions) == len(PRESETS)          # 'none' again: its function, not a new one
    assert {merge.name for merge, _, _ in forward.compiled} == set(PRESETS)


def test_inductor_is_a_backend_on_both_devices_in_the_models_precision() -> None:
    assert "inductor" in BACKENDS
    assert resolve_backend("inductor", torch.device("cpu")) == "inductor"
    assert resolve_backend("inductor", torch.device("cuda")) == "inductor"
    assert backend_precisions("inductor", "fp32", "cpu") == ("inductor", "fp32", "fp32")
