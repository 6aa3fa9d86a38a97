import pytest
import torch

from cl_toolkit.augment import ViewGenerator, preset
from cl_toolkit.encoders import ENCODERS, create_encoder, export_encoder, load_encoder, mlp
from cl_toolkit.io import InputError


@pytest.mark.parametrize("name, channels, size", [
    ("convnet-small", 1, 28), ("convnet-tiny", 3, 64), ("resnet18", 1, 32), ("resnet18", 3, 96),
])
def test_encoders_give_their_out_dim(name, channels, size):
    enc = create_encoder(name, channels, size).eval()
    with torch.no_grad():
        z = enc(torch.rand(2, channels, size, size))
    assert z.shape == (2, enc.out_dim)


def test_small_stem_for_small_images():
    small = create_encoder("resnet18", 1, 32).backbone
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    big = create_encoder("resnet18", 3, 224).backbone
    assert big.conv1.kernel_size == (7, 7)


def test_registry_and_unknown_name():
    assert {"convnet-small", "resnet18", "resnet50"} <= set(ENCODERS)
    with pytest.raises(InputError, match="unknown image encoder 'vit-huge'"):
        create_encoder("vit-huge", 3, 32)
    with pytest.raises(InputError, match="pool_type must be avg or max"):
        create_encoder("convnet-small", 1, 28, pool_type="median")


def test_export_roundtrip_without_training_code(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("convnet-small", 1, 28, pool=2)
    for m in enc.modules():  # make BN running stats non-trivial
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    enc.eval()
    export_encoder(enc, "convnet-small", {"pool": 2}, tmp_path / "encoder")
    loaded, spec = load_encoder(tmp_path / "encoder")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(enc(x), loaded(x))
    assert spec["embedding_dim"] == enc.out_dim == 512 and spec["input"]["image_size"] == 28


def test_convnet_small_max_pools_a_3x3_grid():
    enc = create_encoder("convnet-small", 1, 28).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        maps = enc.backbone.features((x - 0.5) / 0.25)        # [2, 128, 7, 7]
        rows = [slice(0, 3), slice(2, 5), slice(4, 7)]        # adaptive pooling 7 -> 3 overlaps by one
        cells = [maps[..., r, c].amax((-2, -1)) for r in rows for c in rows]
        want = torch.stack(cells, -1).flatten(1)              # channel-major, as the encoder's flatten
        assert enc.out_dim == 1152
        assert torch.allclose(enc(x), want)
    avg = create_encoder("convnet-small", 1, 28, pool_type="avg").eval()
    avg.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert not torch.allclose(avg(x), enc(x))


def test_format_1_convnet_loads_with_average_pooling(tmp_path):
    """Encoders exported before max pooling became the default (format 1) keep their pooling."""
    import json

    enc = create_encoder("convnet-small", 1, 28, pool=2, pool_type="avg").eval()
    args = {"width": 32, "stages": 3, "depth": 2, "pool": 2}       # a format-1 spec: no pool_type
    export_encoder(enc, "convnet-small", args, tmp_path / "encoder")
    spec_file = tmp_path / "encoder" / "encoder.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "format": 1}))
    loaded, _ = load_encoder(tmp_path / "encoder")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(enc(x), loaded(x))


def test_mlp_head_shapes():
    assert mlp(8, 16, 4)(torch.randn(5, 8)).shape == (5, 4)


@pytest.mark.parametrize("name, size, channels", [("simclr", 28, 1), ("byol", 32, 1), ("byol", 224, 3),
                                                  ("simclr", 96, 3)])
def test_views_are_per_sample_random_and_in_range(name, size, channels):
    torch.manual_seed(0)
    gen = ViewGenerator(preset(name, size, channels), size, channels)
    x = torch.randint(0, 256, (1, channels, size + 4, size + 4), dtype=torch.uint8).repeat(6, 1, 1, 1)
    v1, v2 = gen(x)
    assert v1.shape == v2.shape == (6, channels, size, size)
    assert v1.min() >= 0 and v1.max() <= 1
    # the same image gets different random views within the batch and across the two views
    assert not torch.allclose(v1[0], v1[1]) and not torch.allclose(v1, v2)


def test_presets_are_sized_to_the_image():
    small = preset("byol", 28, 1)
    big = preset("byol", 224, 3)
    assert small[0].blur == 0 and big[0].blur == 1.0 and big[1].solarize == 0.2
    assert small[0].saturation == 0 and small[0].hue == 0 and small[0].grayscale == 0
    assert small[0].crop_scale[0] > big[0].crop_scale[0]
