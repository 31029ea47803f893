import numpy as np
import pytest
from PIL import Image

from mexport.errors import InputError
from mexport.photos import default_photos, load_photo, photo_set_sha256, prepare, restore
from mexport.spec import PipelineSpec


def _save(tmp_path, arr, name, mode=None, **kw):
    p = tmp_path / name
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(p, **kw)
    return p


def test_default_photos_load_from_the_installed_wheel(monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    photos = default_photos()
    assert len(photos) == 8
    for name, p in photos:
        assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 and min(p.shape[:2]) >= 300
    assert len(photo_set_sha256(photos)) == 64


def test_conversions(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    gray = _save(tmp_path, rgb[..., 0], "g.png")
    assert np.array_equal(load_photo(gray)[..., 1], rgb[..., 0])
    g16 = _save(tmp_path, (rgb[..., 0].astype(np.uint16) * 257), "g16.png")
    assert np.abs(load_photo(g16)[..., 0].astype(int) - rgb[..., 0]).max() <= 1
    pal = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P").save(pal)
    assert load_photo(pal).shape == (40, 50, 3)
    rgba = np.dstack([rgb, np.zeros((40, 50), np.uint8)])
    assert (load_photo(_save(tmp_path, rgba, "a.png")) == 255).all()  # transparent -> white
    webp = _save(tmp_path, rgb, "w.webp", lossless=True)
    assert np.array_equal(load_photo(webp), rgb)


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :10] = 255  # white band on the left
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "r.jpg"
    im.save(p, exif=exif, quality=95)
    out = load_photo(p)
    assert out.shape == (60, 40, 3)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now on top


@pytest.mark.parametrize("make, msg", [
    (lambda d: d / "missing.png", "photo not found"),
    (lambda d: (d / "t.txt").write_text("hello") and d / "t.txt", "not an image"),
    (lambda d: d, "not a file"),
])
def test_bad_inputs(tmp_path, make, msg):
    with pytest.raises(InputError, match=msg):
        load_photo(make(tmp_path))


def test_truncated_tiny_and_bomb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    full = _save(tmp_path, rgb, "f.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        load_photo(cut)
    with pytest.raises(InputError, match="too small"):
        load_photo(_save(tmp_path, rgb[:20, :20], "tiny.png"))
    bomb = tmp_path / "bomb.png"
    Image.new("1", (11000, 10000)).save(bomb)  # 110 MP, a few kB on disk
    with pytest.raises(InputError, match="megapixel"):
        load_photo(bomb)


@pytest.mark.parametrize("aspect", ["stretch", "letterbox"])
def test_prepare_restore_roundtrip(aspect):
    spec = PipelineSpec(coarse_size=(32, 32), refine_size=(128, 128), aspect=aspect)
    photo = np.zeros((60, 90, 3), np.uint8)
    photo[:, 45:] = 255
    tensor, place = prepare(photo, spec)
    assert tensor.shape == (1, 3, 128, 128) and tensor.dtype == np.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    if aspect == "letterbox":
        assert place.box == (21, 0, 85, 128) and tensor[0, :, :20].max() == 0.0
    back = restore(tensor[:, :1], place, spec)
    assert back.shape == (60, 90)
    assert back[:, :40].max() < 0.05 and back[:, 50:].min() > 0.95
