import math

import pytest
import torch
import torch.nn.functional as F

import avrsp
from avrsp.models import FUSIONS, PAIR_LEVELS, to_channels_last_3d
from avrsp.models.fusion import RelevanceAwareCrossAttention
from avrsp.models.neck import memory_format, resize_to
from avrsp.models.s3d import S3DBackbone
from avrsp.models.soundnet import SoundNet8

from helpers import tiny_inputs


def test_registry_lists_the_paper_models():
    assert {"avrsp", "avrsp_v", "avrsp_tiny"} <= set(avrsp.list_models())
    assert avrsp.create_model("avrsp_tiny", fusion="bilinear").config.fusion == "bilinear"


def test_every_list_of_fusions_and_parts_agrees_with_the_registry():
    """The fusion registry is the one source: the config's allowed values, Table V's
    training configs, the fusion study's rows and the has-relevance-maps question all
    follow it; the freezable parts are the network's own top-level modules."""
    import typing
    from pathlib import Path

    import avrsp.ablate as ab
    from avrsp.models import has_relevance
    from avrsp.models.avrsp import PARTS, AVRSPConfig
    from avrsp.train import load_train_config

    assert typing.get_args(typing.get_type_hints(AVRSPConfig)["fusion"]) == tuple(FUSIONS)
    configs = Path(avrsp.__file__).parent / "configs" / "ablations"
    table5 = {load_train_config(p).model.fusion: p.stem for p in configs.glob("table5_*.yaml")
              if load_train_config(p).model.audio}
    assert set(table5) == set(FUSIONS) and all(stem == f"table5_{f}" for f, stem in table5.items())
    assert {ab.row_config(ab.StudyConfig(), r).fusion for r in ab.ROWS if ab.ROWS[r].soundnet != "none"} == set(FUSIONS)
    assert {f for f in FUSIONS if has_relevance(avrsp.get_config("avrsp_tiny", fusion=f))} == {"ravf"}
    assert not has_relevance(avrsp.get_config("avrsp_tiny", audio=False))
    with torch.device("meta"):
        assert tuple(n for n, _ in avrsp.create_model("avrsp").named_children()) == PARTS


# ---------------------------------------------------------------- backbones

def test_s3d_keys_and_shapes_follow_the_published_layout():
    with torch.device("meta"):
        sd = S3DBackbone().state_dict()
    expect = {
        "base.0.conv_s.weight": (64, 3, 1, 7, 7), "base.0.conv_t.weight": (64, 64, 7, 1, 1),
        "base.0.bn_s.running_var": (64,), "base.2.conv.weight": (64, 64, 1, 1, 1),
        "base.3.conv_s.weight": (192, 64, 1, 3, 3), "base.3.bn_t.weight": (192,),
        "base.5.branch0.0.conv.weight": (64, 192, 1, 1, 1),
        "base.5.branch1.1.conv_s.weight": (128, 96, 1, 3, 3),
        "base.5.branch3.1.conv.weight": (32, 192, 1, 1, 1),
        "base.8.branch0.0.conv.weight": (192, 480, 1, 1, 1),
        "base.12.branch3.1.bn.num_batches_tracked": (),
        "base.15.branch1.1.conv_t.weight": (384, 384, 3, 1, 1),
        "base.15.branch2.1.conv_t.weight": (128, 128, 3, 1, 1),
    }
    for key, shape in expect.items():
        assert tuple(sd[key].shape) == shape, key
    indices = {int(k.split(".")[1]) for k in sd}
    assert indices == {0, 2, 3, 5, 6, 8, 9, 10, 11, 12, 14, 15}  # the rest are max-pools
    assert all(k.startswith("base.") for k in sd) and not any(k.endswith(".bias") and "conv" in k for k in sd)
    bn = S3DBackbone().base[0].bn_s
    assert (bn.eps, bn.momentum) == (1e-3, 1e-3)


def test_s3d_block_outputs_at_paper_size():
    with torch.device("meta"):
        net = S3DBackbone()
        feats = net(torch.empty(1, 3, 32, 224, 384))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (192, 16, 56, 96), (480, 16, 28, 48), (832, 8, 14, 24), (1024, 4, 7, 12)]
    assert net.channels == (192, 480, 832, 1024)
    assert [i["reduction"] for i in net.feature_info] == [(2, 4, 4), (2, 8, 8), (4, 16, 16), (8, 32, 32)]


def test_soundnet_layout_and_output_length():
    net = SoundNet8()
    sd = net.state_dict()
    assert tuple(sd["conv1.weight"].shape) == (16, 1, 64, 1)
    assert tuple(sd["conv7.weight"].shape) == (1024, 512, 4, 1)
    assert {k.split(".")[0] for k in sd} == {f"conv{i}" for i in range(1, 8)} | {f"batchnorm{i}" for i in range(1, 8)}
    with torch.device("meta"):
        out = SoundNet8()(torch.empty(2, 1, 70560))
    assert tuple(out.shape) == (2, 1024, 3) and SoundNet8.output_length(70560) == 3


# ---------------------------------------------------------------- paper size

@pytest.mark.parametrize("name", ["avrsp", "avrsp_v"])
def test_paper_size_forward(name):
    model = avrsp.create_model(name).eval()
    cfg = model.config
    assert (cfg.frames, cfg.height, cfg.width, cfg.audio_samples) == (32, 224, 384, 70560)
    clip = torch.rand(1, 3, 32, 224, 384) * 2 - 1
    audio = torch.randn(1, 1, cfg.audio_samples) * 50 if cfg.audio else None
    with torch.no_grad():
        out = model(clip, audio)
    assert out.shape == (1, 224, 384)
    assert torch.isfinite(out).all() and out.min() > 0 and out.max() < 1
    assert out.std() > 0


# ---------------------------------------------------------------- ablations

ABLATIONS = (
    # Table III: audio × MS × MRG
    [dict(audio=a, ms=m, mrg=g) for a in (False, True) for m in (False, True) for g in (False, True)]
    # Table IV: number of MS&MRG pairs, visual-only and audio-visual
    + [dict(audio=a, num_pairs=n) for a in (False, True) for n in range(5)]
    # Table V: fusion methods
    + [dict(fusion=f) for f in FUSIONS]
    + [dict(ret_activation="sigmoid"), dict(fusion="mbt", fusion_layers=2), dict(fusion_layers=3)]
)


def _ids(v):
    return ",".join(f"{k}={x}" for k, x in v.items())


@pytest.mark.parametrize("overrides", ABLATIONS, ids=[_ids(v) for v in ABLATIONS])
def test_every_ablation_trains_every_parameter(overrides):
    model = avrsp.create_model("avrsp_tiny", **overrides).train()
    cfg = model.config
    clip, audio = tiny_inputs(cfg)
    out = model(clip, audio)
    assert out.shape == (2, cfg.height, cfg.width)
    loss = avrsp.SaliencyLoss()(out, torch.rand_like(out))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    # The switches build exactly the modules they name, and nothing else.
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    # add and mul have no parameters of their own
    assert ("audio_net" in names) == cfg.audio and ("fusion" in names) == (cfg.audio and cfg.fusion not in
                                                                           ("add", "mul"))
    levels = set(PAIR_LEVELS[cfg.num_pairs])
    assert {int(k) for k in model.ms} == (levels if cfg.ms else set())
    assert {int(k) for k in model.mrg} == (levels if cfg.mrg else set())


def test_pair_levels_match_table_iv():
    # Outputs of Table IV, with X³ the highest resolution.
    assert PAIR_LEVELS == {0: (), 1: (3,), 2: (3, 2), 3: (3, 2, 1), 4: (3, 2, 1, 0)}
    model = avrsp.create_model("avrsp_tiny", num_pairs=1)
    ms3 = model.ms["3"]
    assert ms3.d3 is None and ms3.u3 is not None  # X³ has no higher-resolution neighbour
    model = avrsp.create_model("avrsp_tiny", num_pairs=4)
    assert model.ms["0"].u3 is None and model.ms["0"].d3 is not None  # X⁰ has no lower one


@pytest.mark.parametrize("fusion", FUSIONS)
def test_audio_changes_the_map_only_when_the_model_uses_audio(fusion):
    # At initialisation an eval-mode map is nearly flat (std ~1e-5), so compare through the
    # gradient: d(map)/d(audio) is exactly zero iff the audio cannot change the map.
    model = avrsp.create_model("avrsp_tiny", fusion=fusion).eval()
    clip, audio = tiny_inputs(model.config, batch=1)
    audio.requires_grad_(True)
    model(clip, audio).pow(2).sum().backward()
    assert audio.grad.abs().max() > 0
    audio = audio.detach()

    visual = avrsp.create_model("avrsp_tiny", audio=False).eval()
    with torch.no_grad():  # a visual-only model never reads the audio: the same pass, bit for bit
        assert torch.equal(visual(clip, audio), visual(clip, None))


def test_audio_model_requires_audio(tiny_cfg):
    model = avrsp.create_model(tiny_cfg)
    clip, _ = tiny_inputs(tiny_cfg, batch=1)
    with pytest.raises(ValueError, match="uses audio"):
        model(clip)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(clip[..., :50], torch.zeros(1, 1, tiny_cfg.audio_samples))
    with pytest.raises(ValueError, match="at least 5 frames"):
        model(clip[:, :, :4], torch.zeros(1, 1, tiny_cfg.audio_samples))


def test_any_size_divisible_by_32(tiny_cfg):
    model = avrsp.create_model(tiny_cfg).eval()
    clip, audio = tiny_inputs(tiny_cfg, batch=1, height=96, width=160)
    with torch.no_grad():
        assert model(clip, audio).shape == (1, 96, 160)
        # Longer clips and longer audio buffers work too.
        clip16 = torch.rand(1, 3, 16, 64, 64) * 2 - 1
        assert model(clip16, torch.randn(1, 1, 2 * tiny_cfg.audio_samples)).shape == (1, 64, 64)
        # The shortest clip S3D's time strides allow.
        assert model(clip16[:, :, :5], torch.randn(1, 1, tiny_cfg.audio_samples)).shape == (1, 64, 64)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(3, 14, 12), (3, 15, 13), (6, 14, 12)])
def test_resize_to_upsamples_as_trilinear_interpolation_in_the_input_layout(layout, dtype, size):
    """Where T stays, resize_to upsamples frame by frame (bilinear on a 4-D view): the
    trilinear values, and the input's memory layout kept."""
    x = torch.randn(2, 5, 3, 7, 6).to(dtype).contiguous(memory_format=layout)
    got = resize_to(x, torch.empty(2, 5, *size))
    ref = F.interpolate(x.float(), size=size, mode="trilinear", align_corners=False)
    # float32: the interpolation weights are combined in another order, ~1e-7 relative on
    # values of order 1 (the absolute part covers values near 0). bf16: the result rounded
    # to 8 significant bits (a step is 2^-8 relative), up to two steps.
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.float(), ref, **tol)
    assert got.dtype == dtype and memory_format(got) == layout


def test_every_module_runs_in_bf16_channels_last(tiny_cfg):
    # Whole-model bf16-vs-fp32 agreement is a property of trained weights: an untrained
    # network amplifies any perturbation (0.4 % fp32 input noise alone drops S3D block 4
    # to CC ≈ 0.85), so here we check that nothing falls back to fp32 or mixes dtypes.
    for fusion in FUSIONS:
        model = to_channels_last_3d(avrsp.create_model(tiny_cfg, fusion=fusion).eval().to(torch.bfloat16))
        clip, audio = tiny_inputs(tiny_cfg, batch=1)
        dtypes = {}
        for name, module in model.named_modules():
            module.register_forward_hook(
                lambda m, i, o, name=name, dtypes=dtypes: dtypes.__setitem__(name, o.dtype) if torch.is_tensor(o)
                else None)
        with torch.no_grad():
            out = model(clip.bfloat16().contiguous(memory_format=torch.channels_last_3d), audio.bfloat16())
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all(), fusion
        assert {n for n, d in dtypes.items() if d != torch.bfloat16} == set(), fusion


@pytest.mark.parametrize("fusion", [f for f in FUSIONS if f != "concat"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_fusion_returns_its_input_layout_with_that_layouts_own_strides(fusion, layout):
    """Batch 1, where a reshape would give the size-1 batch an odd stride and trilinear
    upsampling, reading the layout from the strides, would then return the default
    layout to every convolution after it. (concat ends in a convolution, whose output
    layout at batch 1 is oneDNN's choice.)"""
    from avrsp.models.fusion import build_fusion

    module = build_fusion(fusion, 32, 4, 1, 2, "none", 0.0).eval()
    if layout == torch.channels_last_3d:
        to_channels_last_3d(module)  # as prepare stores the weights for the CPU
    x0 = torch.randn(1, 32, 2, 3, 4).contiguous(memory_format=layout)
    with torch.no_grad():
        out = module(x0, torch.randn(1, 3, 32))[0]
    assert out.stride() == torch.empty(out.shape, memory_format=layout).stride()
    assert memory_format(F.interpolate(out, size=(4, 6, 8), mode="trilinear")) == memory_format(x0)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_bf16_agrees_with_fp32(fusion):
    from avrsp.models.fusion import build_fusion

    module = build_fusion(fusion, 32, 4, 2, 2, "none", 0.0).eval()
    x0, a = torch.randn(2, 32, 2, 3, 4), torch.randn(2, 3, 32)
    with torch.no_grad():
        ref = module(x0, a)[0]
        out = module.to(torch.bfloat16)(x0.bfloat16(), a.bfloat16())[0]
    assert out.dtype == torch.bfloat16
    # Random weights, every activation rounded to bf16's 8 bits: values move by bf16's steps,
    # the output's pattern must survive.
    assert torch.corrcoef(torch.stack([ref.flatten(), out.float().flatten()]))[0, 1] > 0.99


def test_bilinear_fusion_is_nn_bilinear_plus_identity():
    from avrsp.models.fusion import BilinearFusion

    m = BilinearFusion(8)
    x0, a = torch.randn(2, 8, 2, 3, 4), torch.randn(2, 3, 8)
    got = m(x0, a)[0]
    tokens = x0.flatten(2).transpose(1, 2)
    want = m.bilinear(tokens, a.mean(1, keepdim=True).expand_as(tokens).contiguous())
    # The same float32 products contracted in another order (64 per output): ~1e-6 on values of order 1.
    torch.testing.assert_close(got, x0 + want.transpose(1, 2).reshape(x0.shape), rtol=1e-5, atol=1e-5)


def test_lip_is_a_local_importance_weighted_average():
    from avrsp.models.neck import LIP

    lip = LIP(4).eval()
    x = torch.rand(1, 4, 3, 5, 5)
    with torch.no_grad():
        out = lip(x)
        w = torch.exp(12 * torch.sigmoid(lip.logit(x)))
        # Centre position, whose 3×3×3 window is fully inside the map.
        win = (slice(None), slice(None), slice(0, 3), slice(1, 4), slice(1, 4))
        want = (x[win] * w[win]).sum((2, 3, 4)) / w[win].sum((2, 3, 4))
        # Float32 weighted means of 27 values in another order: ~1e-7 relative.
        torch.testing.assert_close(out[:, :, 1, 2, 2], want, rtol=1e-5, atol=1e-6)
        # A constant map is a fixed point whatever the weights (Σ w·c / Σ w, to float32 rounding).
        c = torch.full((1, 4, 1, 2, 3), 0.7)
        torch.testing.assert_close(lip(c), c, rtol=0, atol=1e-6)
        assert lip.to(torch.bfloat16)(x.bfloat16()).dtype == torch.bfloat16


# ---------------------------------------------------------------- RAVF (Eq. 1–7)

def _ravf_reference(m: RelevanceAwareCrossAttention, v, a, sigmoid):
    """Eq. 1–7 written out independently with einsum, from the module's weights."""
    h, dk = m.heads, m.dk
    lin = lambda layer, x: F.linear(x, layer.weight, layer.bias)  # noqa: E731
    split = lambda x: x.reshape(x.shape[0], x.shape[1], h, dk)  # noqa: E731  B×N×h×d
    VQ, VK, VV = split(lin(m.f_vq, v)), split(lin(m.f_vk, v)), split(lin(m.f_vv, v))
    AQ, AK, AV = split(lin(m.f_aq, a)), split(lin(m.f_ak, a)), split(lin(m.f_av, a))
    ret_a = torch.einsum("bnhd,bmhd->bhnm", VQ, AK) / math.sqrt(dk)
    ret_v = torch.einsum("bmhd,bnhd->bhmn", AQ, VK) / math.sqrt(dk)
    if sigmoid:
        ret_a, ret_v = ret_a.sigmoid(), ret_v.sigmoid()
    v2a = torch.einsum("bhnm,bmhd->bnhd", ret_a, AV) + VV
    a2v = torch.einsum("bhmn,bnhd->bmhd", ret_v, VV) + AV
    b, n = v.shape[:2]
    cat = torch.cat([v2a.reshape(b, n, -1), a2v.mean(1).reshape(b, 1, -1).expand(b, n, -1)], -1)
    w = torch.softmax(m.head_mlp(cat), -1)  # B×N×h
    fav = (w.unsqueeze(-1) * v2a).reshape(b, n, -1)
    return lin(m.proj, fav), ret_a, ret_v


@pytest.mark.parametrize("sigmoid", [False, True])
def test_ravf_attention_matches_equations(sigmoid):
    m = RelevanceAwareCrossAttention(32, 4, "sigmoid" if sigmoid else "none")
    v, a = torch.randn(2, 10, 32), torch.randn(2, 3, 32)
    got = m(v, a)
    want = _ravf_reference(m, v, a, sigmoid)
    # einsum against the module's matmuls: float32 sums of 8–32 products in other orders,
    # ~1e-6 on values of order 1.
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    # No softmax over keys: doubling the audio keys' projection doubles Ret_A (Eq. 2 is linear).
    with torch.no_grad():
        m.f_ak.weight.mul_(2), m.f_ak.bias.mul_(2)
    if not sigmoid:
        torch.testing.assert_close(m(v, a)[1], 2 * got[1], rtol=1e-5, atol=1e-5)


def test_ravf_returns_ret_a_from_visual_queries_and_ret_v_from_audio_queries():
    """Which map is which: Ret_A (Eq. 2) is V_Q A_Kᵀ/√d_k, visual queries against audio
    keys, and Ret_V (Eq. 3) is A_Q V_Kᵀ/√d_k, audio queries against visual keys; RAVF
    returns both as B×h×N_a×T×H×W maps over X⁰'s grid. Both have that one shape, so only
    their values tell them apart: computed here from each block's own projections, on the
    tokens the block receives (X⁰'s for the first block, the first block's output for the
    second), they must land under their own names. Float32 sums of d_k = 8 products in
    another order than the module's matmul: rounding ~1e-6 on values of order 1."""
    from avrsp.models.fusion import RAVF

    torch.manual_seed(0)
    b, c, heads, na, (t, h, w) = 2, 16, 2, 5, (2, 3, 4)
    ravf = RAVF(c, heads, layers=2).eval()
    x0, a = torch.randn(b, c, t, h, w), torch.randn(b, na, c)
    with torch.no_grad():
        _, relevance = ravf(x0, a, return_relevance=True)
        tokens = x0.flatten(2).transpose(1, 2)                      # B×N_v×C, N_v in T, H, W order
        for block, maps in zip(ravf.blocks, relevance):
            attn = block.attn
            heads_of = lambda layer, x: F.linear(x, layer.weight, layer.bias).reshape(  # noqa: E731
                b, x.shape[1], heads, c // heads)                  # B×N×h×d_k
            vq, vk = heads_of(attn.f_vq, tokens), heads_of(attn.f_vk, tokens)
            aq, ak = heads_of(attn.f_aq, a), heads_of(attn.f_ak, a)
            ret_a = torch.einsum("bnhd,bmhd->bhmn", vq, ak) / math.sqrt(c // heads)   # Eq. 2, as N_a×N_v
            ret_v = torch.einsum("bmhd,bnhd->bhmn", aq, vk) / math.sqrt(c // heads)   # Eq. 3
            assert (ret_a - ret_v).abs().max() > 0.5                # the two differ: a swap cannot pass
            torch.testing.assert_close(maps["ret_a"], ret_a.reshape(b, heads, na, t, h, w), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(maps["ret_v"], ret_v.reshape(b, heads, na, t, h, w), rtol=1e-5, atol=1e-5)
            tokens = block(tokens, a)[0]


def test_relevance_maps_come_from_the_same_forward(tiny_cfg):
    model = avrsp.create_model(tiny_cfg, fusion_layers=2).eval()
    clip, audio = tiny_inputs(tiny_cfg, batch=2)
    calls = []
    model.visual.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        plain = model(clip, audio)
        out, relevance = model.forward_with_relevance(clip, audio)
    assert len(calls) == 2  # one backbone pass per call, none extra for relevance
    assert torch.equal(out, plain)  # the same operators on the same inputs: bit for bit
    assert len(relevance) == 2
    na = SoundNet8.output_length(tiny_cfg.audio_samples)
    with torch.no_grad():
        x0 = model.features(clip)[0]
    t, h, w = x0.shape[-3:]
    for maps in relevance:
        assert maps["ret_a"].shape == maps["ret_v"].shape == (2, tiny_cfg.heads, na, t, h, w)
    assert avrsp.create_model(tiny_cfg, fusion="add").eval().forward_with_relevance(clip, audio)[1] is None


@pytest.mark.parametrize("overrides", [dict(audio=False)] + [dict(fusion=f) for f in FUSIONS])
def test_forward_is_the_head_on_the_features_and_feature_info_describes_them(tiny_cfg, overrides):
    """timm's shape, for every registered fusion and without audio: ``forward`` is
    ``forward_head(forward_features(…))`` bit for bit (the same operators in the same
    order), ``forward_with_relevance`` gives the same saliency and relevance maps exactly
    where the registry says the fusion has them, and ``feature_info`` gives X⁰..X³'s
    channels, reductions and producing modules."""
    from avrsp.models import has_relevance

    model = avrsp.create_model(tiny_cfg, **overrides).eval()
    clip, audio = tiny_inputs(tiny_cfg, batch=2)
    with torch.no_grad():
        out = model(clip, audio)
        streams = model.forward_features(clip, audio)
        assert torch.equal(model.forward_head(streams, clip.shape[-2:]), out)
        saliency, relevance = model.forward_with_relevance(clip, audio)
        assert torch.equal(saliency, out) and (relevance is not None) == has_relevance(model.config)
        outputs = {}
        for i, info in enumerate(model.feature_info):
            dict(model.named_modules())[info["module"]].register_forward_hook(
                lambda m, args, y, i=i: outputs.__setitem__(i, y))
        features = model.features(clip)
    for i, (info, x, s) in enumerate(zip(model.feature_info, features, streams)):
        assert x.shape[1] == s.shape[1] == info["num_chs"] and outputs[i] is x
        assert tuple(x.shape[2:]) == tuple(d // r for d, r in zip(clip.shape[2:], info["reduction"]))
    assert [x.shape[-1] for x in features] == sorted(x.shape[-1] for x in features)  # X⁰ coarsest


@pytest.mark.parametrize("fusion", ["ravf", "add", "concat", "mbt"])
def test_a_residual_fusion_starts_stage_two_exactly_where_stage_one_ended(fusion):
    """fusion_residual: F_av = X̂⁰ + γ·fusion with γ = 0 at the start, so a stage-2 model
    built from stage-1 weights predicts stage 1's maps until γ moves; γ trains."""
    torch.manual_seed(0)
    stage1 = avrsp.create_model("avrsp_tiny", audio=False).eval()
    stage2 = avrsp.create_model("avrsp_tiny", fusion=fusion, fusion_residual=True)
    missing = stage2.load_state_dict(stage1.state_dict(), strict=False).missing_keys
    assert "fusion.residual_scale" in missing and all(k.split(".")[0] in ("audio_net", "audio_proj", "fusion")
                                                      for k in missing)
    clip, audio = torch.rand(2, 3, 8, 64, 96) * 2 - 1, torch.randn(2, 1, 17640) * 50
    with torch.no_grad():  # X̂⁰ + 0·fusion is X̂⁰ exactly, and the rest is stage 1's network
        assert torch.equal(stage2.eval()(clip, audio), stage1(clip))
    stage2.train()
    stage2(clip, audio).mean().backward()
    assert stage2.fusion.residual_scale.grad is not None and stage2.fusion.residual_scale.grad.abs().sum() > 0
