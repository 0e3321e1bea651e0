"""Foreign weight layouts are rebuilt here independently (module trees with the published
key names, random values); importing them must give our backbones the same tensors and
make them compute what a network holding those tensors computes."""

import collections
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import avrsp
from avrsp.checkpoint import save_model
from avrsp.cli import main
from avrsp.models.s3d import S3DBackbone
from avrsp.models.soundnet import SoundNet8
from avrsp.weights import WeightsError, import_weights, imported_metadata, read_state_dict

# ------------------------------------------------------------------ torchvision's s3d nesting

BN = dict(eps=1e-3, momentum=1e-3)


def tv_cna(cin, cout, k=1, s=1, p=0):  # Conv3dNormActivation: conv at .0, BN at .1
    return nn.Sequential(nn.Conv3d(cin, cout, k, s, p, bias=False), nn.BatchNorm3d(cout, **BN), nn.ReLU())


def tv_tsc(cin, cout, k, s, p):  # TemporalSeparableConv: spatial at .0, temporal at .1
    return nn.Sequential(tv_cna(cin, cout, (1, k, k), (1, s, s), (0, p, p)),
                         tv_cna(cout, cout, (k, 1, 1), (s, 1, 1), (p, 0, 0)))


class TvInception(nn.Module):
    def __init__(self, cin, b0, b1m, b1, b2m, b2, b3):
        super().__init__()
        self.branch0 = tv_cna(cin, b0)
        self.branch1 = nn.Sequential(tv_cna(cin, b1m), tv_tsc(b1m, b1, 3, 1, 1))
        self.branch2 = nn.Sequential(tv_cna(cin, b2m), tv_tsc(b2m, b2, 3, 1, 1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), tv_cna(cin, b3))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class TvS3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            tv_tsc(3, 64, 7, 2, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)), tv_cna(64, 64),
            tv_tsc(64, 192, 3, 1, 1), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            TvInception(192, 64, 96, 128, 16, 32, 32), TvInception(256, 128, 128, 192, 32, 96, 64),
            nn.MaxPool3d(3, 2, 1),
            TvInception(480, 192, 96, 208, 16, 48, 64), TvInception(512, 160, 112, 224, 24, 64, 64),
            TvInception(512, 128, 128, 256, 24, 64, 64), TvInception(512, 112, 144, 288, 32, 64, 64),
            TvInception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool3d(2, 2),
            TvInception(832, 256, 160, 320, 32, 128, 128), TvInception(832, 384, 192, 384, 48, 128, 128))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Conv3d(1024, 400, 1))


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * 0.1)
    return module.eval()


@pytest.fixture(scope="module")
def tv_s3d():
    return randomise(TvS3D())


def save_pth(path, state):
    torch.save(collections.OrderedDict(state), path)
    return path


def test_torchvision_s3d_imports_and_computes_the_same(tv_s3d, tmp_path):
    path = save_pth(tmp_path / "s3d_tv.pth", tv_s3d.state_dict())
    state, meta = import_weights("s3d", path)
    assert meta["layout"] == "torchvision s3d" and meta["normalization"] == "kinetics_mean_std"
    assert meta["dropped"] == ["classifier.1.bias", "classifier.1.weight"]
    ours = S3DBackbone().eval()
    ours.load_state_dict(state)
    # Key for key, copied without arithmetic (bit for bit): e.g. the spatial conv of Mixed_3b's branch 1.
    assert torch.equal(state["base.5.branch1.1.conv_s.weight"], tv_s3d.state_dict()["features.5.branch1.1.0.0.weight"])
    assert torch.equal(state["base.2.bn.running_var"], tv_s3d.state_dict()["features.2.1.running_var"])
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        want = tv_s3d.features(x)
        got = ours(x)[-1]
    # The same float32 layers in another module tree, 16 blocks deep: kernels chosen per
    # module may sum in other orders, and rounding compounds with depth (relative, on
    # features of order 1; the absolute part covers those near 0 after a ReLU).
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_kinetics_s3d_with_module_prefix(tmp_path):
    src = randomise(S3DBackbone(), seed=1)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    state["module.fc.0.weight"] = torch.randn(400, 1024, 1, 1, 1)
    state["module.fc.0.bias"] = torch.randn(400)
    path = save_pth(tmp_path / "S3D_kinetics400.pt", state)
    imported, meta = import_weights("s3d", path)
    assert meta["layout"] == "S3D_kinetics400.pt" and meta["normalization"] == "minus_one_one"
    assert set(imported) == set(src.state_dict())
    assert all(torch.equal(imported[k], v.float()) for k, v in src.state_dict().items())   # copies: bit for bit
    # The first block recomputed functionally from the file's tensors: SepConv3d(3→64, k7, s2).
    ours = S3DBackbone().eval()
    ours.load_state_dict(imported)
    x = torch.randn(1, 3, 8, 32, 32)
    t = {k[len("module.base.0."):]: v for k, v in state.items() if k.startswith("module.base.0.")}

    def bn(y, p):
        return F.batch_norm(y, t[f"{p}.running_mean"], t[f"{p}.running_var"], t[f"{p}.weight"], t[f"{p}.bias"],
                            False, 0.0, 1e-3)

    y = F.relu(bn(F.conv3d(x, t["conv_s.weight"], stride=(1, 2, 2), padding=(0, 3, 3)), "bn_s"))
    y = F.relu(bn(F.conv3d(y, t["conv_t.weight"], stride=(2, 1, 1), padding=(3, 0, 0)), "bn_t"))
    with torch.no_grad():  # two convolutions and BatchNorms in float32, folded or not: ~1e-6 on values of order 1
        torch.testing.assert_close(ours.base[0](x), y, rtol=1e-5, atol=1e-5)


def stavis_soundnet():
    """STAViS's soundnet8.pth: one nn.Sequential, kernels (1, K) over B×1×1×L."""
    layers = []
    cin = 1
    for i, (cout, k, p) in enumerate([(16, 64, 32), (32, 32, 16), (64, 16, 8), (128, 8, 4), (256, 4, 2),
                                      (512, 4, 2), (1024, 4, 2)], 1):
        layers += [nn.Conv2d(cin, cout, (1, k), (1, 2), (0, p)), nn.BatchNorm2d(cout), nn.ReLU()]
        if i in (1, 2):
            layers.append(nn.MaxPool2d((1, 8), (1, 8)))
        if i == 5:
            layers.append(nn.MaxPool2d((1, 4), (1, 4)))
        cin = cout
    return randomise(nn.Sequential(*layers), seed=2)


def test_stavis_soundnet_imports_and_computes_the_same(tmp_path):
    net = stavis_soundnet()
    path = save_pth(tmp_path / "soundnet8.pth", net.state_dict())
    state, meta = import_weights("soundnet", path)
    assert meta["layout"] == "STAViS soundnet8.pth"
    ours = SoundNet8().eval()
    ours.load_state_dict(state)
    # A transpose rounds nothing: bit for bit.
    assert torch.equal(state["conv3.weight"], net.state_dict()["8.weight"].transpose(2, 3))
    wave = torch.randn(2, 1, 17640) * 50
    with torch.no_grad():
        want = net(wave[:, :, None, :]).squeeze(2)   # B×1×1×L through (1, K) kernels
        got = ours(wave)
    # (1, K) and (K, 1) kernels: the same products summed in other memory orders, seven
    # layers deep, on a waveform of ±50 (features up to hundreds): relative 1e-4.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_soundnet8_final_layout(tmp_path):
    src = randomise(SoundNet8(), seed=3)
    state = dict(src.state_dict())
    state["conv8_objs.weight"], state["conv8_scns.weight"] = torch.randn(1000, 1024, 8, 1), torch.randn(401, 1024, 8, 1)
    imported, meta = import_weights("soundnet", save_pth(tmp_path / "soundnet8_final.pth", state))
    assert meta["layout"] == "soundnet8_final.pth" and meta["dropped"] == ["conv8_objs.weight", "conv8_scns.weight"]
    assert all(torch.equal(imported[k], v.float()) for k, v in src.state_dict().items())   # copies: bit for bit


def test_wrong_kind_missing_and_mis_shaped_keys_are_reported(tv_s3d, tmp_path):
    s3d = save_pth(tmp_path / "s3d.pth", tv_s3d.state_dict())
    with pytest.raises(WeightsError, match="not a SoundNet8 weight file"):
        import_weights("soundnet", s3d)
    with pytest.raises(WeightsError, match="not an S3D weight file"):
        import_weights("s3d", save_pth(tmp_path / "sn.pth", SoundNet8().state_dict()))
    state = dict(S3DBackbone().state_dict())
    del state["base.15.branch3.1.bn.running_mean"]
    state["base.0.conv_s.weight"] = torch.zeros(64, 3, 1, 5, 5)
    with pytest.raises(WeightsError) as e:
        import_weights("s3d", save_pth(tmp_path / "broken.pt", state))
    message = str(e.value)
    assert "1 missing (e.g. base.15.branch3.1.bn.running_mean)" in message
    assert "1 mis-shaped (e.g. base.0.conv_s.weight: (64, 3, 1, 5, 5) in the file, (64, 3, 1, 7, 7) expected)" in message


class Payload:
    """Unpickling this would run code (any class does): weights_only refuses it."""


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="refused: the file needs to run pickled code"):
        read_state_dict(path)
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(WeightsError, match="not a PyTorch weight file"):
        read_state_dict(tmp_path / "text.pth")


def test_cli_import_then_train_initialisation_checks_normalisation(tv_s3d, tmp_path, capsys):
    src = save_pth(tmp_path / "s3d_tv.pth", tv_s3d.state_dict())
    out = tmp_path / "s3d.safetensors"
    assert main(["weights", "import", "--kind", "s3d", str(src), "-o", str(out)]) == 0
    assert "torchvision s3d layout" in capsys.readouterr().out
    assert imported_metadata(out)["normalization"] == "kinetics_mean_std"
    # The model applies the recorded normalisation: its backbone sees torchvision's input.
    model = avrsp.create_model("avrsp", visual_norm="kinetics_mean_std").eval()
    from safetensors.torch import load_file

    model.visual.load_state_dict(load_file(str(out)))
    x = torch.rand(1, 3, 8, 64, 64) * 2 - 1
    mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)
    with torch.no_grad():  # as in test_torchvision_s3d_imports_and_computes_the_same
        normalised = ((x + 1) / 2 - mean) / std
        torch.testing.assert_close(model.visual(normalised)[-1], tv_s3d.features(normalised), rtol=1e-4, atol=1e-5)
        got = model.features(x)  # runs the conversion itself
    assert got[0].shape[1] == model.config.dims[0]
    # Training refuses a backbone file whose normalisation the model config does not use.
    from avrsp.config import ConfigError
    from avrsp.train import TrainConfig, build_model

    cfg = TrainConfig(model=avrsp.get_config("avrsp"))
    cfg = dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, s3d=str(out)))
    with pytest.raises(ConfigError, match="set model.visual_norm=kinetics_mean_std"):
        build_model(cfg, lambda *a: None)
    assert main(["weights", "import", "--kind", "soundnet", str(src), "-o", str(tmp_path / "x.safetensors")]) == 2


def test_export_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model(path, avrsp.create_model("avrsp_tiny"))
    assert main(["export", str(path), "--onnx", str(tmp_path / "m.onnx"), "--torch-export", str(tmp_path / "m.pt2")]) == 0
    captured = capsys.readouterr()
    assert "ONNX opset 18" in captured.out and "torch.export program" in captured.out
    assert "Traceback" not in captured.out + captured.err and "warning" not in captured.err
    import onnx
    import onnxruntime as ort

    assert {o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import if o.domain == ""} == {18}
    # An opset the exporter cannot write is refused up front, in one line, and nothing is written.
    assert main(["export", str(path), "--onnx", str(tmp_path / "old.onnx"), "--opset", "17"]) == 2
    err = capsys.readouterr().err
    assert "--opset 17" in err and err.count("\n") == 1 and not (tmp_path / "old.onnx").exists()

    from avrsp.checkpoint import load_model

    model = load_model(path)
    g = torch.Generator().manual_seed(7)  # inputs the export check did not use
    clip = torch.rand(1, 3, 8, 64, 96, generator=g) * 2 - 1
    audio = torch.randn(1, 1, 17640, generator=g) * 50
    with torch.no_grad():
        ref = model(clip, audio).numpy()
    # The .onnx file travels alone: copied to another folder, without anything beside it.
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.onnx", "m.pt2", "tiny.safetensors"]
    moved = tmp_path / "elsewhere" / "copy.onnx"
    moved.parent.mkdir()
    (tmp_path / "m.onnx").rename(moved)
    onnx_out = ort.InferenceSession(str(moved)).run(None, {"clip": clip.numpy(), "audio": audio.numpy()})[0]
    # ONNX Runtime's own float32 kernels sum in other orders than ATen's: ~1e-6 on maps in (0, 1).
    assert np.abs(onnx_out - ref).max() < 1e-4
    program = torch.export.load(str(tmp_path / "m.pt2"))
    # ATen's kernels again, through the exported graph's decompositions: float32 rounding.
    assert (program.module()(clip, audio) - torch.from_numpy(ref)).abs().max() < 1e-5
