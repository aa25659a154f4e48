from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_edge.errors import InvalidInputError
from vpr_edge.training.config import preset
from vpr_edge.training.init_model import init_model, list_images
from vpr_edge.training.model import images_to_tensor


def test_init_on_real_images_gives_working_retrieval(corridor_dir: Path) -> None:
    refs = list_images(corridor_dir / "ref")
    queries = list_images(corridor_dir / "query")
    assert len(refs) == len(queries) == 111
    config = preset(num_clusters=16, input_size=(120, 160))
    model, report = init_model(config, refs[::3], descriptors_per_image=50, progress=False)
    assert report.images_used == 37 and report.skipped == []
    assert report.descriptors == 37 * 50 and report.alpha > 0
    from vpr_edge.images import load_image

    def describe(paths):
        batch = np.stack([load_image(p) for p in paths])
        with torch.no_grad():
            return model(images_to_tensor(batch, config.preprocess)).numpy()

    gt = np.load(corridor_dir / "ground_truth.npy", allow_pickle=True)
    positives = {int(q): {int(r) for r in refs_} for q, refs_ in gt}
    picked = list(range(0, 111, 4))
    top1 = (describe([queries[i] for i in picked]) @ describe(refs).T).argmax(axis=1)
    recall = np.mean([top1[j] in positives[i] for j, i in enumerate(picked)])
    assert recall >= 0.75, recall  # measured 0.89 with these settings


def test_unreadable_images_are_counted_and_empty_folders_refused(tmp_path: Path,
                                                                 corridor_dir: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("0000000.jpg", "0000010.jpg", "0000020.jpg"):
        (folder / name).write_bytes((corridor_dir / "ref" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    config = preset(num_clusters=4, input_size=(64, 96))
    _, report = init_model(config, list_images(folder), progress=False)
    assert report.images_used == 3 and len(report.skipped) == 1
    assert "broken.jpg" in report.skipped[0]
    with pytest.raises(InvalidInputError, match="no images"):
        init_model(config, [], progress=False)
    with pytest.raises(InvalidInputError, match="could be read"):
        init_model(config, [folder / "broken.jpg"], progress=False)
    with pytest.raises(InvalidInputError, match="nowhere: no such folder"):
        list_images(folder / "nowhere")
    for bad in (0, -1):  # an IndexError / a numpy ValueError before
        with pytest.raises(InvalidInputError, match="--max-images must be at least 1"):
            init_model(config, list_images(folder), max_images=bad, progress=False)


def test_image_lists_leave_out_hidden_files_and_folders(tmp_path) -> None:
    """``._x.jpg`` (a Mac's AppleDouble files), ``.thumbnails/`` and a folder named like an
    image were listed as images: k-means init skipped them as damaged at best."""
    from PIL import Image

    (tmp_path / "run" / ".thumbnails").mkdir(parents=True)
    (tmp_path / "run" / "extra.jpg").mkdir()
    for name in ("run/a.jpg", "run/._a.jpg", "run/.thumbnails/a.jpg", "b.PNG"):
        Image.new("RGB", (8, 6)).save(tmp_path / name, format="PNG")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == \
        ["b.PNG", "run/a.jpg"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["b.PNG"]
