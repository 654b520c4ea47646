import pytest

from conftest import write_images
from edgevit.calibration import resolve_calibration
from edgevit.data import label_map, scan_image_folder
from edgevit.errors import DataError
from edgevit.recipe import CalibrationSpec


def test_scan_and_seeded_subset(images):
    folder = scan_image_folder(images)
    assert folder.classes == ("cat", "dog") and len(folder.samples) == 12
    a, b = folder.subset(5, seed=1), folder.subset(5, seed=1)
    assert a == b and len(a) == 5
    assert folder.subset(5, seed=2) != a
    assert {label for _, label in folder.subset(6, seed=0)} == {0, 1}  # not a class-ordered prefix
    assert folder.subset(None, 0) == folder.samples


def test_scan_errors(tmp_path):
    with pytest.raises(DataError, match="--data .*folder not found"):
        scan_image_folder(tmp_path / "none")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        scan_image_folder(tmp_path / "empty", "--calib-data")


def test_label_map_by_name_or_order():
    assert label_map(("cat", "dog"), ["dog", "bird", "cat"]) == ([2, 0], "by class name")
    assert label_map(("a", "b"), None) == ([0, 1], "by sorted folder order")


def test_calibration_sources_in_order_and_overlap(tmp_path):
    calib, train, data = (write_images(tmp_path / n, seed=i) for i, n in enumerate(("calib", "train", "data")))
    spec = CalibrationSpec(n=4, seed=3)
    assert resolve_calibration(spec, calib, train, data).source == "calib-data"
    assert resolve_calibration(spec, None, train, data).source == "train-data"
    from_data = resolve_calibration(spec, None, None, data)
    assert from_data.source == "data" and from_data.overlaps_eval and from_data.n == 4
    synthetic = resolve_calibration(spec, None, None, None)
    assert synthetic.synthetic and not synthetic.overlaps_eval
    with pytest.raises(DataError, match="--allow-synthetic-calibration"):
        synthetic.require_real(allow_synthetic=False, who="quantize")
    synthetic.require_real(allow_synthetic=True, who="quantize")
    assert tuple(synthetic.images({"input_size": (3, 8, 8)}).shape) == (4, 3, 8, 8)
    text = resolve_calibration(spec, calib, None, data).manifest_text()
    assert text.count("sha256") == 4 and "calib-data" in text
