"""Small COCO-format datasets on disk, images included (dataset and LazyConfig tests)."""
import json

from PIL import Image

W, H = 32, 24  # image size of the small datasets below


GOOD_BOX = [2.0, 2.0, 10.0, 8.0]


def make_coco(root, num_images=3, extra_anns=(), drop_keys=(), write_images=True):
    """A small COCO dataset under root: one good box per image plus `extra_anns`.

    extra_anns: (image_id, category_id, bbox) triples, given annotation ids 101, 102, ...
    Returns (json_path, image_dir) as strings.
    """
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i:03d}.jpg", "width": W, "height": H})
        if write_images:
            Image.new("RGB", (W, H), (i * 40, 80, 120)).save(img_dir / f"{i:03d}.jpg")
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": GOOD_BOX, "area": 80.0, "iscrowd": 0})
    for k, (image_id, cat_id, bbox) in enumerate(extra_anns):
        anns.append({"id": 101 + k, "image_id": image_id, "category_id": cat_id, "bbox": bbox,
                     "area": 1.0, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for key in drop_keys:
        del coco[key]
    json_path = root / "instances.json"
    json_path.write_text(json.dumps(coco, indent=1))  # json.dumps writes NaN/Infinity as is
    return str(json_path), str(img_dir)
