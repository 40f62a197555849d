"""What a manifest must say of itself, whatever the files beside it: the shape of its format
(and no key a later format's job wrote: a format lowered by hand), only names of files of an
output inside it, counts that add up (inputs, written, rejected, examples), from their formats on
a record index and a lineage file for every shard, and every count it gives twice the same both
times (a shard's records and its record index's, a split's bytes and its shards', its inputs and
its lineage files', the rejected by reason and by stage, the changes and the inputs written),
records described as the flags it records made them, and statistics with the graph made from
them. A hand edit that leaves every listed file as listed shows here; what the files themselves
say of one another, ``verify`` holds together (:mod:`beam_etl.loader.cross_checks`). Standard
library only (and the job's own modules of names and settings): the commands that check it
(``verify``, ``diff``, ``prune-cache``, the loader, the job before its commit) load no TensorFlow
for it.
"""

from __future__ import annotations

import collections

from beam_etl import schema
from beam_etl.config import IMAGE_FORMATS, PAD_MASK_VALUE, mask_format
from beam_etl.output_layout import (LINEAGE_DIR, REJECTED_DIR, TRANSFORM_DIRS, first_format, index_name,
                                    is_index_name, is_listable_name, is_shard_name, lineage_name)

FILES_FORMAT = 2  # the first manifest format whose "files" lists every file (bytes, crc32c)
INDEX_FORMAT = 3  # ... a record index beside every shard
LINEAGE_FORMAT = 4  # ... a lineage file beside every shard, and the manifest's "lineage"
_CRC32C_DIGITS = frozenset("0123456789abcdef")
# Keys of the manifest (``flags.x``: key x of its ``flags``) and the first format whose job wrote
# them: a manifest of an earlier format that holds one had its format lowered by hand (which would
# turn the later formats' checks off). The cache of outcomes (--cache, --no_cache) came with
# format 3's job, late in its life; --resize, and the image's resize and ignore value,
# with format 4's.
_LATER_KEYS = {"run_id": FILES_FORMAT, "statistics_absent": FILES_FORMAT, "lineage": LINEAGE_FORMAT,
               "changes": LINEAGE_FORMAT, "flags.use_cache": INDEX_FORMAT, "flags.cache_dir": INDEX_FORMAT,
               "flags.resize": LINEAGE_FORMAT, "image.resize": LINEAGE_FORMAT,
               "image.mask_ignore_value": LINEAGE_FORMAT}


def is_count(value) -> bool:
    return type(value) is int and value >= 0  # (not a bool, not a float: JSON's integers)


def lowered_format(manifest: dict) -> list[str]:
    """(A manifest whose ``format_version`` is a count) the keys it holds that its format is
    older than: the trace of a format lowered by hand."""
    version = manifest["format_version"]
    return [f"it holds {key!r}, which no manifest of format_version {version} has (from {first} on)"
            for key, first in _LATER_KEYS.items() if version < first and _holds(manifest, key)]


def _holds(manifest: dict, key: str) -> bool:
    """Whether ``manifest`` holds ``key`` (``a.b``: key b of its object a)."""
    *outer, last = key.split(".")
    for part in outer:
        manifest = manifest.get(part)
        if not isinstance(manifest, dict):
            return False
    return last in manifest


def shape_problems(manifest: dict) -> list[str]:
    """Where ``manifest`` lacks the shape of its format (a hand edit's usual trace); empty if none."""
    if not is_count(manifest.get("format_version")):
        return ["'format_version' is not a count"]
    version = manifest["format_version"]
    lowered = lowered_format(manifest)
    if lowered:
        return lowered
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        return ["'splits' is not an object"]
    problems = []
    for split, info in splits.items():
        if not isinstance(info, dict) or not isinstance(info.get("files"), list):
            problems.append(f"splits.{split} is not an object with a list of 'files'")
            continue
        problems += [f"splits.{split}'s {key!r} is not a count" for key in ("num_examples", "num_source_examples")
                     if not is_count(info.get(key))]
    flags = manifest.get("flags", {})
    if not isinstance(flags, dict):
        problems.append("'flags' is not an object")
    else:  # (what prune-cache acts on)
        if "cache_dir" in flags and not (flags["cache_dir"] is None or isinstance(flags["cache_dir"], str)):
            problems.append("flags.cache_dir is not a folder's name")
        if "use_cache" in flags and not isinstance(flags["use_cache"], bool):
            problems.append("flags.use_cache is not true or false")
    described = manifest.get("lineage")
    if described is not None and not (isinstance(described, dict) and isinstance(described.get("files"), list)
                                      and all(isinstance(name, str) for name in described["files"])):
        problems.append("'lineage' is not an object with a list of 'files'")
    if version < FILES_FORMAT:
        return problems
    counts = ("num_inputs", "num_written", "num_rejected", "num_examples")
    problems += [f"{key!r} is not a count" for key in counts if not is_count(manifest.get(key))]
    rejected = manifest.get("rejected")
    if not (isinstance(rejected, dict) and isinstance(rejected.get("file"), str)
            and is_count(rejected.get("num_rejected"))):
        problems.append("'rejected' is not an object with its 'file' and 'num_rejected'")
    files = manifest.get("files")
    if not isinstance(files, dict):
        return problems + ["'files' is not an object"]
    for name, entry in files.items():
        if not isinstance(entry, dict):
            problems.append(f"files.{name} is not an object")
            continue
        problems += [f"files.{name}: its {key!r} is not a count" for key in ("bytes", "num_examples", "num_records")
                     if (key in ("bytes", _count_key(name)) or key in entry) and not is_count(entry.get(key))]
        crc32c = entry.get("crc32c")
        if not (isinstance(crc32c, str) and len(crc32c) == 8 and set(crc32c) <= _CRC32C_DIGITS):
            problems.append(f"files.{name}: its 'crc32c' is not 8 hexadecimal digits")
    return problems


def _count_key(name: str) -> str | None:
    """The key of the count that the job lists with the file ``name``: ``num_examples`` for a
    shard (its records), ``num_records`` for its record index and the files of a line per record
    (the lineage index, the rejected list, the changes); None for the rest."""
    if is_shard_name(name):
        return "num_examples"
    return "num_records" if is_index_name(name) or name.split("/", 1)[0] in (LINEAGE_DIR, REJECTED_DIR) else None


def _difference(count: int, than: int) -> str:
    return f"{count - than} more than" if count > than else f"{than - count} less than"


def manifest_problems(manifest: dict) -> list[str]:
    """What in ``manifest`` is not so of any output the job writes (empty: nothing): its shape
    (:func:`shape_problems`), then, once that holds, :func:`consistency_problems`."""
    return shape_problems(manifest) or consistency_problems(manifest)


def consistency_problems(manifest: dict) -> list[str]:
    """(A manifest of its format's shape: :func:`shape_problems`) a listed name outside the
    output, or of no file of an output, or of a file its format never held (the format lowered by
    hand to switch checks off); counts that do not add up (inputs, written, rejected, examples;
    the rejected by reason and by stage); a split's files that are not its shards, or hold other
    than its examples or bytes (:func:`split_problems`), or a shard of no split; from their formats
    on, a shard without its record index or listed with other than its index's count, the lineage
    index not one file per shard or of other than its splits' inputs, and changes that contradict
    their list or the inputs written; and records or statistics described otherwise than as they
    were made (:func:`_described_as_made`)."""
    version = manifest["format_version"]
    if version < FILES_FORMAT:
        return []
    problems = []
    files, splits = manifest["files"], manifest["splits"]
    for name in files:
        if not is_listable_name(name):
            problems.append(f"lists {name!r}, which is not a file of an output")
        elif first_format(name) > version:
            problems.append(f"lists {name!r}, a file of format {first_format(name)} on, and says "
                            f"format_version {version}")
    written, rejected = manifest["num_written"], manifest["num_rejected"]
    if manifest["num_inputs"] != written + rejected:
        problems.append(f"num_inputs is {_difference(manifest['num_inputs'], written + rejected)} num_written + "
                        f"num_rejected ({manifest['num_inputs']} against {written} + {rejected})")
    if rejected != manifest["rejected"]["num_rejected"]:
        problems.append(f"num_rejected {_difference(rejected, manifest['rejected']['num_rejected'])} the rejected "
                        f"list's ({rejected} against {manifest['rejected']['num_rejected']})")
    rejected_entry = files.get(manifest["rejected"]["file"])
    if rejected_entry is None or rejected_entry.get("num_records") != manifest["rejected"]["num_rejected"]:
        problems.append(f"the rejected list {manifest['rejected']['file']!r} is not listed with its "
                        f"{manifest['rejected']['num_rejected']} records")
    for key in ("by_reason", "by_stage"):  # (each rejection has one reason and one stage)
        counts = manifest["rejected"].get(key, {})
        if not (isinstance(counts, dict) and all(map(is_count, counts.values()))):
            problems.append(f"rejected.{key} is not an object of counts")
        elif sum(counts.values()) != manifest["rejected"]["num_rejected"]:
            problems.append(f"rejected.{key} counts {sum(counts.values())} rejections, and rejected.num_rejected "
                            f"says {manifest['rejected']['num_rejected']}")
    examples = sum(info["num_examples"] for info in splits.values())
    if manifest["num_examples"] != examples:
        problems.append(f"num_examples is {_difference(manifest['num_examples'], examples)} the splits' "
                        f"({manifest['num_examples']} against {examples})")
    if all("num_source_examples" in info for info in splits.values()):
        sources = sum(info["num_source_examples"] for info in splits.values())
        if written != sources:
            problems.append(f"num_written is {_difference(written, sources)} the splits' num_source_examples "
                            f"({written} against {sources})")
    for split in sorted(splits):
        problems += split_problems(manifest, split)
    shards = sorted(name for info in splits.values() for name in info["files"] if isinstance(name, str))
    problems += [f"lists the shard {name!r}, which no split lists" for name in sorted(set(files) - set(shards))
                 if is_shard_name(name)]
    if version >= INDEX_FORMAT:
        problems += [f"the shard {shard!r} has no record index listed" for shard in shards
                     if shard in files and index_name(shard) not in files]
        problems += [f"the shard {shard!r} is listed with {files[shard]['num_examples']} records, and its record "
                     f"index {index_name(shard)!r} with {files[index_name(shard)]['num_records']}" for shard in shards
                     if is_shard_name(shard) and shard in files and index_name(shard) in files
                     and files[shard]["num_examples"] != files[index_name(shard)]["num_records"]]
    if version >= LINEAGE_FORMAT:
        described = manifest.get("lineage")
        expected = collections.Counter(map(lineage_name, shards))
        if described is None:
            problems.append(f"format_version {version} has a lineage index, and this manifest has none")
        elif collections.Counter(described["files"]) != expected:
            odd = sorted((collections.Counter(described["files"]) - expected) + (expected - collections.Counter(
                described["files"])))
            problems.append(f"the lineage index lists {len(described['files'])} files, not one per shard "
                            f"({len(shards)}): {', '.join(map(repr, odd[:3]))} differ")
        else:
            unlisted = [f"the lineage file {name!r} is not among the listed files"
                        for name in described["files"] if name not in files]
            problems += unlisted or _lineage_counts(manifest)  # (the counts of files listed)
        problems += _changes_counts(manifest)
    return problems + _described_as_made(manifest)


def _lineage_counts(manifest: dict) -> list[str]:
    """(Format 4 on, one lineage file listed per shard) where a split's lineage files, a line per
    input whose original example is in their shards, index other than its ``num_source_examples``."""
    files, problems = manifest["files"], []
    for split, info in sorted(manifest["splits"].items()):
        indexed = sum(files[lineage_name(shard)]["num_records"] for shard in info["files"] if isinstance(shard, str))
        if indexed != info["num_source_examples"]:
            problems.append(f"split {split!r}: its lineage files are listed with {indexed} inputs, its "
                            f"num_source_examples says {info['num_source_examples']}")
    return problems


def _changes_counts(manifest: dict) -> list[str]:
    """(Format 4 on) where the manifest's ``changes`` (counts of inputs added, removed, changed and
    unchanged against the output replaced) contradict the written inputs, or the list of them
    (a line per key added, removed or changed) it names."""
    changes = manifest.get("changes")
    if not (isinstance(changes, dict) and "file" in changes):  # (none, or unknown: no list)
        return []
    if not isinstance(changes["file"], str):
        return ["changes.file is not a file's name"]
    counts = {key: changes.get(key) for key in ("added", "removed", "changed", "unchanged")}
    if not all(map(is_count, counts.values())):
        return ["changes' added, removed, changed and unchanged are not counts"]
    problems = []
    listed = manifest["files"].get(changes["file"])
    keyed = counts["added"] + counts["removed"] + counts["changed"]
    if listed is None or listed.get("num_records") != keyed:
        problems.append(f"the changes' list {changes['file']!r} is not listed with their {keyed} keys "
                        "(added, removed, changed)")
    written = counts["added"] + counts["changed"] + counts["unchanged"]
    if written != manifest["num_written"]:
        problems.append(f"changes count {written} inputs written (added, changed, unchanged), and num_written "
                        f"says {manifest['num_written']}")
    return problems


def split_problems(manifest: dict, split: str) -> list[str]:
    """What in the manifest's ``split`` contradicts the rest of it (empty: nothing)."""
    info = manifest["splits"][split]
    listed = manifest.get("files")
    problems, seen = [], set()
    for name in info["files"]:
        if not (isinstance(name, str) and is_shard_name(name) and name.startswith(f"{split}-")):
            problems.append(f"split {split!r} lists {name!r}, which is not a shard of split {split!r}")
        elif name in seen:
            problems.append(f"split {split!r} lists {name!r} twice")
        elif listed is not None and name not in listed:
            problems.append(f"split {split!r} lists {name!r}, which the manifest's files do not")
        seen.add(name)
    if not problems and listed is not None:
        entries = [listed[name] if isinstance(listed[name], dict) else {} for name in info["files"]]
        records = sum(entry.get("num_examples", 0) for entry in entries)
        if records != info["num_examples"]:
            problems.append(f"split {split!r}: its files hold {records} records, its num_examples says "
                            f"{info['num_examples']}")
        size = sum(entry.get("bytes", 0) for entry in entries if is_count(entry.get("bytes")))
        if "bytes" in info and size != info["bytes"]:  # (every format's job wrote their sum)
            problems.append(f"split {split!r}: its files hold {size} bytes, its bytes says {info['bytes']}")
    return problems


def _feature_problems(features) -> list[str]:
    """Where the manifest's ``features`` (what the loader parses every record by) differ from
    what the job writes: every format's records hold :data:`schema.FEATURES`, the same keys of
    the same types since format 1 (a change to them is a new format, to be told apart here)."""
    if not isinstance(features, dict):
        return ["'features' is not an object"]
    problems = [f"features lacks {key!r}, which the job writes in every record"
                for key in schema.FEATURES if key not in features]
    problems += [f"features has {key!r}, which the job writes in no record"
                 for key in features if key not in schema.FEATURES]
    for key, (dtype, _) in schema.FEATURES.items():
        entry = features.get(key, {"dtype": dtype})
        if not isinstance(entry, dict):
            problems.append(f"features.{key} is not an object with its 'dtype'")
        elif entry.get("dtype") != dtype:
            problems.append(f"features.{key} is of dtype {entry.get('dtype')!r}, and the job writes it as {dtype!r}")
    return problems


def _described_as_made(manifest: dict) -> list[str]:
    """Where what the manifest says of its records (``image``: size, encodings, padding;
    ``features``) or of its statistics contradicts the flags it says they were made with, what
    the job writes, or the files it lists: what the loader decodes by and feeds a model."""
    flags, image, problems = manifest.get("flags"), manifest.get("image"), []
    if not isinstance(image, dict):
        return ["'image' is not an object"]
    if isinstance(flags, dict):
        size = flags.get("image_size")
        size = [size, size] if type(size) is int else size
        if isinstance(size, list) and [image.get("height"), image.get("width")] != size:
            problems.append(f"image is {image.get('height')}x{image.get('width')} (height x width), and the "
                            f"flags say --image_size {'x'.join(map(str, size))}")
        for key, flag in (("format", "image_format"), ("resize", "resize")):
            if flag in flags and image.get(key) != flags[flag]:
                problems.append(f"image.{key} is {image.get(key)!r}, and the flags say --{flag} {flags[flag]!r}")
        if "resize" in flags and ("mask_ignore_value" in image) != (flags["resize"] == "pad"):
            problems.append("image.mask_ignore_value is there only for padded records (--resize pad), and "
                            f"these are {flags['resize']!r}")
    # (the flag the records were made with, else what the manifest says they are)
    made = flags["image_format"] if isinstance(flags, dict) and "image_format" in flags else image.get("format")
    if made in IMAGE_FORMATS and image.get("mask_format") != mask_format(made):
        problems.append(f"image.mask_format is {image.get('mask_format')!r}, and the job stores the masks of "
                        f"--image_format {made!r} records as {mask_format(made)!r}")
    ignored = image.get("mask_ignore_value", PAD_MASK_VALUE)
    if type(ignored) is not int or ignored != PAD_MASK_VALUE:  # (not true, not 255.0: JSON's integer)
        problems.append(f"image.mask_ignore_value is {ignored!r}, and the job gives the padding of --resize pad "
                        f"{PAD_MASK_VALUE}")
    problems += _feature_problems(manifest.get("features"))
    graph = sorted(name for name in manifest["files"] if name.split("/", 1)[0] in TRANSFORM_DIRS)
    if manifest.get("statistics") is None and graph:
        problems.append(f"statistics are null, and it lists the transform graph made from them ({graph[0]!r}, ...)")
    if manifest.get("statistics") is not None and not graph:
        problems.append("it has statistics, and lists no transform graph made from them")
    if isinstance(flags, dict) and flags.get("statistics") is False and manifest.get("statistics") is not None:
        problems.append("it has statistics, and the flags say --no_statistics")
    return problems
