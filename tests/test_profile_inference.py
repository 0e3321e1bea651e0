"""benchmarks/profile_inference.py --convolutions: the per-convolution split behind
docs/performance.md's account of the neck and decoder against S3D's blocks."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import avrsp
from avrsp.graph import prepare
from avrsp.models.fold import ConvReLU


@pytest.fixture(scope="module")
def profiler(benchmark_script):
    return benchmark_script("profile_inference")


def test_every_convolution_is_timed_once_with_pytorchs_flop_count(profiler):
    torch.manual_seed(0)
    model = avrsp.create_model("avrsp_tiny").eval()
    cfg = model.config
    clip = torch.rand(1, 3, cfg.frames, cfg.height, cfg.width) * 2 - 1
    audio = torch.randn(1, 1, cfg.audio_samples)
    lip_inputs = []
    hooks = [m.register_forward_hook(lambda m, inp, out: lip_inputs.append(inp[0].numel())) for m in model.lip]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clip, audio)
    for h in hooks:
        h.remove()
    counts = counter.get_flop_counts()
    # LIP's two window sums a call are convolutions by function, not modules: the table
    # leaves them to the other operators (each a 3×3×3 depthwise sum, 2 × 27 FLOPs an element).
    conv_flops = counts["Global"][torch.ops.aten.convolution] - sum(2 * 2 * 27 * n for n in lip_inputs)
    s3d_flops = counts["AVRSP.visual"][torch.ops.aten.convolution]

    graph = prepare(model, "cpu", "fp32")
    assert any(isinstance(m, ConvReLU) for m in graph.modules())   # the fused convolutions are counted too
    clip = clip.contiguous(memory_format=torch.channels_last_3d)
    rows, parts = profiler.convolution_table(graph, clip, audio, passes=2, warmup=1)

    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)) == len(profiler.convolution_modules(graph))
    assert not any(n.endswith(".conv") and isinstance(graph.get_submodule(n[:-5]), ConvReLU) for n in names)
    # FLOP counts are whole numbers far from 0, scaled by 1e9 in float64: relative 1e-9 is that rounding.
    assert sum(r["gflop"] for r in rows) * 1e9 == pytest.approx(conv_flops, rel=1e-9)
    assert parts["s3d"]["conv_gflop"] * 1e9 == pytest.approx(s3d_flops, rel=1e-9)
    assert {r["part"] for r in rows if r["name"].startswith("visual.")} == {"s3d"}
    assert all(r["ms"] > 0 for r in rows)
    for p in parts.values():
        assert p["other_ms"] == pytest.approx(p["pass_ms"] - p["conv_ms"], abs=1e-9)  # one float64 subtraction
    table = profiler.format_convolutions(rows, parts, limit=3)
    assert table.count("| rest |") + table.count("| s3d |") == 3
