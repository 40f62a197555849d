"""Writes a synthetic dataset in the Oxford-IIIT Pet layout, deterministic from a seed.

    python -m beam_etl.tools.sample_data --output DATA --num_images 200 --seed 0 [--defects]

Layout, as the real dataset has it::

    DATA/images/<Breed>_<n>.jpg              photos, around 500x375, varied sizes and aspects
    DATA/annotations/trimaps/<Breed>_<n>.png single-channel trimaps: 1 pet, 2 background, 3 border
    DATA/annotations/trainval.txt, test.txt  "<Breed>_<n> CLASS-ID SPECIES BREED-ID" lines

Images are photo-like (smooth gradients, noise textures, a textured animal-shaped blob) so
that their JPEG sizes and decode costs are close to real photos. ``--defects`` adds the
quirks real datasets have, and writes ``DATA/defects.json`` saying what the job should do
with each: accept (grayscale, CMYK, EXIF-rotated, PNG named .jpg, palette mask) or reject
with a reason (truncated, empty, wrong-size mask, image without mask).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil

import cv2
import numpy as np
from PIL import Image

from beam_etl import config as config_lib
from beam_etl.hashing import stable_hash

CAT_BREEDS = ("Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
              "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx")
DOG_BREEDS = ("american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer",
              "chihuahua", "english_cocker_spaniel", "english_setter", "german_shorthaired",
              "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
              "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed",
              "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier",
              "yorkshire_terrier")
# Oxford-IIIT CLASS-IDs: 1-37 in case-insensitive alphabetical order of the breed names.
BREEDS = tuple(sorted(CAT_BREEDS + DOG_BREEDS, key=str.lower))
PET, BACKGROUND, BORDER = 1, 2, 3
_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (400, 300), (500, 281), (300, 225))


def breed_ids(breed: str) -> tuple[int, int, int]:
    """(CLASS-ID 1-37, SPECIES 1 cat / 2 dog, BREED-ID within the species, from 1)."""
    species = CAT_BREEDS if breed in CAT_BREEDS else DOG_BREEDS
    return BREEDS.index(breed) + 1, 1 if species is CAT_BREEDS else 2, species.index(breed) + 1


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Values in [0, 1] varying over about ``cells`` blobs across the image."""
    small = rng.random((max(2, cells * height // max(height, width)), max(2, cells * width // max(height, width))))
    image = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255.0


def make_example(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8[h, w, 3] photo-like image, trimap uint8[h, w])."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.integers(40, 230, size=(2, 3)).astype(np.float32)
    ramp = (yy / height)[:, :, None]
    background = top * (1 - ramp) + bottom * ramp
    background += (_smooth_noise(rng, height, width, 12)[:, :, None] - 0.5) * 70
    # The animal: a body ellipse and a head disc, rotated at random.
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.4, 0.65)
    ax, ay = width * rng.uniform(0.18, 0.32), height * rng.uniform(0.15, 0.28)
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / ax
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / ay
    hx, hy = cx + ax * 0.9 * np.cos(angle), cy - ay * 1.1
    radius = min(ax, ay) * rng.uniform(0.6, 0.9)
    pet = (u * u + v * v <= 1.0) | ((xx - hx) ** 2 + (yy - hy) ** 2 <= radius**2)
    fur = rng.integers(20, 240, size=3).astype(np.float32)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 9)) * rng.uniform(5, 30)
    texture = (_smooth_noise(rng, height, width, 40) - 0.5) * 60 + stripes
    animal = fur[None, None, :] + texture[:, :, None]
    pet8 = pet.astype(np.uint8)
    alpha = cv2.GaussianBlur(pet8.astype(np.float32), (0, 0), 1.5)[:, :, None]
    pixels = background * (1 - alpha) + animal * alpha
    pixels += rng.standard_normal(size=pixels.shape, dtype=np.float32) * 4  # sensor noise
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    square = np.ones((5, 5), np.uint8)
    outer = cv2.dilate(pet8, square) > 0
    inner = cv2.erode(pet8, square) > 0
    trimap = np.full((height, width), BACKGROUND, np.uint8)
    trimap[pet] = PET
    trimap[outer & ~inner] = BORDER
    return image, trimap


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _write_example(output: str, name: str, seed: int) -> None:
    rng = np.random.default_rng(stable_hash("sample_image", seed, name))
    width, height = _SIZES[int(rng.integers(len(_SIZES)))]
    image, trimap = make_example(rng, width, height)
    _write_pair(output, name, _jpeg(Image.fromarray(image)), _png(Image.fromarray(trimap)))


def _write_pair(output: str, name: str, image: bytes, mask: bytes | None) -> None:
    _write(os.path.join(output, "images", f"{name}.jpg"), image)
    if mask is not None:
        _write(os.path.join(output, "annotations", "trimaps", f"{name}.png"), mask)


def _defects(rng: np.random.Generator) -> list[tuple[str, bytes, bytes | None, str]]:
    """(kind, image bytes, mask bytes or None, what the job should do) for each quirk."""
    def example(size=(500, 375)):
        return make_example(rng, *size)

    out = []
    image, trimap = example()
    out.append(("grayscale", _jpeg(Image.fromarray(image).convert("L")), _png(Image.fromarray(trimap)), "accepted"))
    image, trimap = example()
    out.append(("cmyk", _jpeg(Image.fromarray(image).convert("CMYK")), _png(Image.fromarray(trimap)), "accepted"))
    image, trimap = example((400, 300))
    # Stored sideways with EXIF orientation 6 (rotate 90 clockwise to view); the mask is upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = Image.fromarray(image).transpose(Image.Transpose.ROTATE_90)
    out.append(("exif_rotated", _jpeg(sideways, exif=exif.tobytes()), _png(Image.fromarray(trimap)), "accepted"))
    image, trimap = example()
    out.append(("png_named_jpg", _png(Image.fromarray(image)), _png(Image.fromarray(trimap)), "accepted"))
    image, trimap = example()
    palette = Image.fromarray(trimap).convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (3 * 252))
    out.append(("palette_mask", _jpeg(Image.fromarray(image)), _png(palette), "accepted"))
    image, trimap = example()
    data = _jpeg(Image.fromarray(image))
    out.append(("truncated", data[: len(data) // 2], _png(Image.fromarray(trimap)), "rejected:truncated"))
    out.append(("empty", b"", _png(Image.fromarray(trimap)), "rejected:empty_file"))
    image, trimap = example()
    wrong = Image.fromarray(trimap).resize((trimap.shape[1] // 2, trimap.shape[0] // 2), Image.Resampling.NEAREST)
    out.append(("wrong_size_mask", _jpeg(Image.fromarray(image)), _png(wrong), "rejected:size_mismatch"))
    image, _ = example()
    out.append(("no_mask", _jpeg(Image.fromarray(image)), None, "rejected:missing_mask"))
    return out


def generate(output: str, num_images: int, seed: int = 0, defects: bool = False) -> dict:
    """Writes the dataset; returns ``{"images": n, "defects": [...]}``."""
    os.makedirs(os.path.join(output, "images"), exist_ok=True)
    os.makedirs(os.path.join(output, "annotations", "trimaps"), exist_ok=True)
    quirks = _defects(np.random.default_rng(stable_hash("defects", seed))) if defects else []
    rng = np.random.default_rng(stable_hash("sample_data", seed))
    counters = dict.fromkeys(BREEDS, 0)
    names = []
    for _ in range(num_images + len(quirks)):
        breed = BREEDS[int(rng.integers(len(BREEDS)))]
        counters[breed] += 1
        names.append(f"{breed}_{counters[breed]}")
    lists = {"trainval": [], "test": []}
    jobs = [(output, name, seed) for name in names[:num_images]]
    if len(jobs) > 200 and (os.cpu_count() or 1) > 1:
        with multiprocessing.get_context("spawn").Pool() as pool:
            pool.starmap(_write_example, jobs, chunksize=32)
    else:
        for job in jobs:
            _write_example(*job)
    written_defects = []
    for name, (kind, image, mask, expect) in zip(names[num_images:], quirks):
        _write_pair(output, name, image, mask)
        written_defects.append({"name": name, "kind": kind, "expect": expect})
    for name in names:
        lists["trainval" if rng.random() < 0.5 else "test"].append(name)
    for list_name, members in lists.items():
        lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids",
                 "#SPECIES: 1:Cat 2:Dog", "#BREED ID: 1-25:Cat 1:12:Dog"]
        lines += [f"{name} {' '.join(map(str, breed_ids(name.rsplit('_', 1)[0])))}" for name in members]
        with open(os.path.join(output, "annotations", f"{list_name}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    summary = {"images": num_images, "seed": seed, "defects": written_defects,
               "trainval": len(lists["trainval"]), "test": len(lists["test"])}
    if defects:
        with open(os.path.join(output, "defects.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary


PAIR_BYTES = 40_000  # a pair's files, about (31 KB measured on 7,390 pairs), and the lists' lines


def _size(size: int) -> str:
    return f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{size / 1e6:,.0f} MB"


def _check_output(output: str, num_images: int) -> None:
    """``--output``: a new or empty local folder that can be made, with room for ``num_images``
    pairs; raises ValueError naming the flag and value. Checked before anything is written."""
    shown = f"--output {output!r}"
    try:
        config_lib.folder_place(output)
    except ValueError as error:
        raise ValueError(f"{shown}: {error}") from None
    if "://" in output:
        raise ValueError(f"{shown}: a local folder (the dataset is written with the local filesystem)")
    if os.path.islink(output) and not os.path.exists(output):
        raise ValueError(f"{shown} is a link to nothing")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"{shown} is a file, not a folder")
    if os.path.isdir(output) and os.listdir(output):
        # its images would sit beside the new ones, and a job would read both
        raise ValueError(f"{shown} is not empty; give a new or empty folder")
    existing = os.path.abspath(output)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: cannot make the folder ({existing!r} is not a folder this user may write to)")
    free = shutil.disk_usage(existing).free
    if num_images * PAIR_BYTES > free:
        raise ValueError(f"--num_images {num_images}: about {_size(num_images * PAIR_BYTES)}, and the disk of "
                         f"{shown} has {_size(free)} free")


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.tools.sample_data") -> None:
    parser = config_lib.FlagParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--output", required=True, help="Directory to write the dataset into.")
    parser.add_argument("--num_images", type=int, default=200, help="Number of regular images. Default 200.")
    parser.add_argument("--seed", type=int, default=0, help="Seed: the same seed writes the same bytes.")
    parser.add_argument("--defects", action="store_true",
                        help="Add one input of each quirk real datasets have, and write defects.json "
                             "saying which the job should accept and which reject.")
    args = parser.parse_args(argv)
    if args.num_images < 0:
        parser.error(f"argument --num_images: must be >= 0, got {args.num_images}")
    try:
        _check_output(args.output, args.num_images)
    except ValueError as error:
        parser.error(str(error))
    summary = generate(args.output, args.num_images, args.seed, args.defects)
    print(f"wrote {summary['images']} images + {len(summary['defects'])} defects to {args.output} "
          f"(trainval {summary['trainval']}, test {summary['test']})")


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    main()
