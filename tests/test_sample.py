import numpy as np
import pytest
import rasterio
from scipy import ndimage

from geogan import sample
from geogan.bands import LC, S1, S2
from geogan.files import is_temporary
from geogan.labels import IGBP


def class_mean_ndvi(arrays: sample.SceneArrays) -> dict[str, float]:
    s2 = arrays.s2.astype(np.float64)
    nir, red = s2[S2.index("B08")], s2[S2.index("B04")]
    ndvi = (nir - red) / (nir + red)
    return {c.key: ndvi[arrays.lc[0] == c.igbp].mean() for c in sample.DEMO_CLASSES}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ndvi_ordering_follows_land_cover(seed):
    ndvi = class_mean_ndvi(sample.make_scene(256, seed=seed))
    assert ndvi["forest"] > ndvi["grassland"] > ndvi["bare soil"] > ndvi["water"]
    assert ndvi["water"] < 0 < ndvi["bare soil"] < 0.3
    assert ndvi["forest"] > 0.5


def test_s1_backscatter_follows_land_cover():
    arrays = sample.make_scene(256, seed=4)
    vv = {c.key: arrays.s1[0][arrays.lc[0] == c.igbp].mean() for c in sample.DEMO_CLASSES}
    assert vv["water"] < vv["wetland/peat"] < vv["forest"] < vv["built-up"]
    assert -25 < vv["water"] < -15
    assert (arrays.s1[1] < arrays.s1[0]).mean() > 0.8  # VH below VV almost everywhere


def test_scenes_are_deterministic_and_seeded():
    a, b, c = sample.make_scene(128, 5), sample.make_scene(128, 5), sample.make_scene(128, 6)
    assert np.array_equal(a.s2, b.s2) and np.array_equal(a.lc, b.lc)
    assert not np.array_equal(a.s2, c.s2)


def test_land_cover_comes_in_coherent_patches():
    lc = sample.make_scene(256, seed=0).lc[0]
    # Few, large patches rather than per-pixel noise.
    same_as_right = (lc[:, 1:] == lc[:, :-1]).mean()
    assert same_as_right > 0.95
    patches = sum(ndimage.label(lc == c.igbp)[1] for c in sample.DEMO_CLASSES)
    assert patches < 80
    present = set(np.unique(lc))
    assert len(present) >= 4 and present <= set(IGBP.values)


def test_written_patches_open_with_crs_named_bands_and_plausible_values(sen12ms_root):
    s2_path = sen12ms_root / "ROIs1158_spring" / "s2_1" / "ROIs1158_spring_s2_1_p1.tif"
    with rasterio.open(s2_path) as ds:
        assert ds.crs.to_epsg() == 32630
        assert ds.res == (10.0, 10.0)
        assert ds.count == 13 and ds.dtypes[0] == "uint16"
        assert ds.descriptions == S2.band_names
        assert ds.nodata == 0
        data = ds.read()
        transform = ds.transform
    assert 100 < np.median(data) < 5000  # reflectance x 10000 of a temperate landscape
    assert data.min() >= 1  # 0 is nodata
    for role, sensor in (("s1", S1), ("lc", LC)):
        twin = sen12ms_root / "ROIs1158_spring" / f"{role}_1" / f"ROIs1158_spring_{role}_1_p1.tif"
        with rasterio.open(twin) as ds:
            assert ds.transform == transform and ds.crs.to_epsg() == 32630
            assert ds.descriptions == sensor.band_names and ds.dtypes[0] == sensor.dtype
    # The second patch of a scene sits right of the first, pixel-exactly.
    p2 = sen12ms_root / "ROIs1158_spring" / "s2_1" / "ROIs1158_spring_s2_1_p2.tif"
    with rasterio.open(p2) as ds:
        assert ds.transform.c == transform.c + 128 * 10 and ds.transform.f == transform.f


def test_rewriting_skips_complete_scenes(tmp_path):
    first = sample.write_sen12ms(tmp_path, scenes=1, patches_per_side=1, patch_size=64)
    mtime = first[0].stat().st_mtime_ns
    again = sample.write_sen12ms(tmp_path, scenes=1, patches_per_side=1, patch_size=64)
    assert again == first and first[0].stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p)]
