import csv
import dataclasses
import hashlib
import os

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.config import JobConfig
from beam_etl.elements import SourceRecord
from beam_etl.beam import options, sources
from beam_etl.beam.sources import ReadSources, check_sources, files, oxford
from beam_etl.beam.sources.pairing import RECORD, PairAndDedup, count_matches, tag
from beam_etl.beam.sources.files import ReadImageMaskPairs
from beam_etl.beam.sources.oxford import parse_oxford_list


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_pairs_by_stem_and_rejects_orphans(tmp_path):
    a_img = _touch(tmp_path / "img" / "a.jpg")
    b_img = _touch(tmp_path / "img" / "b.jpg")
    _touch(tmp_path / "img" / "._a.jpg")  # macOS resource fork: not an input
    a_mask = _touch(tmp_path / "mask" / "a.png")
    c_mask = _touch(tmp_path / "mask" / "c.png")
    with TestPipeline(runner=FnApiRunner()) as p:
        records, rejected = p | ReadImageMaskPairs(str(tmp_path / "img" / "*.jpg"), str(tmp_path / "mask" / "*.png"))
        assert_that(records, equal_to([SourceRecord(key="a", image_uri=a_img, mask_uri=a_mask)]))
        assert_that(rejected | beam.Map(lambda r: (r.uri, r.stage, r.reason, r.key)),
                    equal_to([(b_img, "pair", "missing_mask", "b"), (c_mask, "pair", "missing_image", "c")]),
                    label="CheckRejected")


def test_oxford_lists_give_labels_and_splits(tmp_path):
    root = tmp_path / "pets"
    img = _touch(root / "images" / "Abyssinian_1.jpg")
    mask = _touch(root / "annotations" / "trimaps" / "Abyssinian_1.png")
    unlisted = _touch(root / "images" / "pug_9.jpg")
    unlisted_mask = _touch(root / "annotations" / "trimaps" / "pug_9.png")
    _touch(root / "annotations" / "trainval.txt", b"#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\n")
    _touch(root / "annotations" / "test.txt", b"beagle_4 5 2 4\n")
    config = JobConfig(output=str(tmp_path / "out"), sources=(oxford.Settings((str(root),)),))
    with TestPipeline(runner=FnApiRunner()) as p:
        records, rejected = p | ReadSources(config)
        assert_that(records, equal_to([
            SourceRecord(key="Abyssinian_1", image_uri=img, mask_uri=mask, label=0,
                         label_name="Abyssinian", split="train"),  # trainval, less --val_fraction
            SourceRecord(key="pug_9", image_uri=unlisted, mask_uri=unlisted_mask, split="train")]))
        assert_that(rejected | beam.Map(lambda r: (r.uri, r.reason)),
                    equal_to([(str(root / "images" / "beagle_4.jpg"), "missing_image")]), label="CheckRejected")


def test_a_name_with_no_image_is_one_missing_input_however_many_files_and_lines_name_it(tmp_path):
    """``num_inputs`` counts a complete name once: one with a mask and list lines but no image
    is one rejection too (the mask's, the file there), naming each of them."""
    root = tmp_path / "pets"
    _touch(root / "images" / "Abyssinian_1.jpg")
    _touch(root / "annotations" / "trimaps" / "Abyssinian_1.png")
    beagle_mask = _touch(root / "annotations" / "trimaps" / "beagle_4.png")
    _touch(root / "annotations" / "trainval.txt", b"Abyssinian_1 1 1 1\nbeagle_4 5 2 4\npug_2 6 2 5\n")
    _touch(root / "annotations" / "test.txt", b"beagle_4 5 2 4\npug_2 6 2 5\n")
    config = JobConfig(output=str(tmp_path / "out"), sources=(oxford.Settings((str(root),)),))
    lists = [str(root / "annotations" / name) for name in ("test.txt", "trainval.txt")]
    with TestPipeline(runner=FnApiRunner()) as p:
        _, rejected = p | ReadSources(config)
        assert_that(rejected | beam.Map(lambda r: (r.uri, r.reason, r.key, r.message)), equal_to([
            (beagle_mask, "missing_image", "beagle_4",
             f"'beagle_4' has the mask {beagle_mask} and is listed in {lists[0]}:1, {lists[1]}:2, but has no "
             "image file"),
            (str(root / "images" / "pug_2.jpg"), "missing_image", "pug_2",
             f"'pug_2' is listed in {lists[0]}:2, {lists[1]}:3, but has no image file")]))


def test_same_key_from_two_sources_is_kept_once(tmp_path):
    first = _touch(tmp_path / "one" / "a.jpg")
    first_mask = _touch(tmp_path / "one" / "a.png")
    second = _touch(tmp_path / "two" / "a.jpg")
    _touch(tmp_path / "two" / "a.png")
    config = JobConfig(output="o", sources=(files.Settings(
        images=(str(tmp_path / "one" / "*.jpg"), str(tmp_path / "two" / "*.jpg")),
        masks=(str(tmp_path / "one" / "*.png"), str(tmp_path / "two" / "*.png"))),))
    with TestPipeline(runner=FnApiRunner()) as p:
        records, rejected = p | ReadSources(config)
        assert_that(records, equal_to([SourceRecord(key="a", image_uri=first, mask_uri=first_mask, split="train")]))
        assert_that(rejected | beam.Map(lambda r: (r.uri, r.reason)),
                    equal_to([(second, "duplicate_key")]), label="CheckRejected")


def test_the_same_files_from_two_sources_keep_the_label_and_split_one_of_them_gives(tmp_path):
    """``--oxford_pets ROOT --images 'ROOT/images/*.jpg' ...``: the URIs tie, and the record
    that says more of the input (its class and split, from the Oxford lists) is the one kept,
    whichever source is named first."""
    root = tmp_path / "pets"
    image = _touch(root / "images" / "Abyssinian_1.jpg")
    mask = _touch(root / "annotations" / "trimaps" / "Abyssinian_1.png")
    _touch(root / "annotations" / "trainval.txt", b"Abyssinian_1 1 1 1\n")
    _touch(root / "annotations" / "test.txt", b"")
    config = JobConfig(output=str(tmp_path / "out"), val_fraction=0.0, sources=(
        files.Settings(images=(str(root / "images" / "*.jpg"),),
                       masks=(str(root / "annotations" / "trimaps" / "*.png"),)),
        oxford.Settings((str(root),))))
    with TestPipeline(runner=FnApiRunner()) as p:
        records, rejected = p | ReadSources(config)
        assert_that(records, equal_to([SourceRecord(key="Abyssinian_1", image_uri=image, mask_uri=mask, label=0,
                                                    label_name="Abyssinian", split="train")]))
        # (one input, written: not also rejected as a duplicate of itself, counted twice)
        assert_that(rejected, equal_to([]), label="CheckRejected")


def _assert_paired(entries, records, rejected):
    """The pairing makes ``records`` and the rejections ``[(uri, reason)]`` of the entries
    ``(key, (source, tag, value))``."""
    with TestPipeline(runner=FnApiRunner()) as p:
        made, refused = p | beam.Create(entries) | PairAndDedup()
        assert_that(made, equal_to(records))
        assert_that(refused | beam.Map(lambda r: (r.uri, r.reason)), equal_to(rejected), label="Rejected")


def _oxford_meta(split, label, name, number=1):
    return ("meta", (split, label, name, "/d/annotations/trainval.txt", number, "/d/images/a.jpg"))


def test_a_file_that_two_sources_find_unpaired_is_one_input_rejected_once():
    _assert_paired([("a", (0, "image", "/d/a.jpg")), ("a", (1, "image", "/d/a.jpg"))],
                   [], [("/d/a.jpg", "missing_mask")])


def test_a_name_the_lists_give_two_splits_is_rejected_once_when_another_source_pairs_its_files_too():
    _assert_paired([("a", (0, "image", "/d/images/a.jpg")), ("a", (0, "mask", "/d/a.png")),
                    ("a", (0, *_oxford_meta("trainval", 0, "Abyssinian"))),
                    ("a", (0, *_oxford_meta("test", 0, "Abyssinian", 2))),
                    ("a", (1, "image", "/d/images/a.jpg")), ("a", (1, "mask", "/d/a.png"))],
                   [], [("/d/images/a.jpg", "conflicting_lists")])


def test_a_duplicate_names_the_file_the_written_record_does_not_use():
    """Two sources pair one image with two masks: the mask not used is what is rejected, not
    the image that is written."""
    _assert_paired([("a", (0, "image", "/d/a.jpg")), ("a", (0, "mask", "/m1/a.png")),
                    ("a", (1, "image", "/d/a.jpg")), ("a", (1, "mask", "/m2/a.png"))],
                   [SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/m1/a.png")],
                   [("/m2/a.png", "duplicate_key")])


def test_a_duplicate_names_the_mask_not_used_when_its_image_is_the_written_one_spelt_otherwise():
    _assert_paired([("a", (0, "image", "/d/a.jpg")), ("a", (0, "mask", "/m1/a.png")),
                    ("a", (1, "image", "/d/../d/a.jpg")), ("a", (1, "mask", "/m2/a.png"))],
                   [SourceRecord(key="a", image_uri="/d/../d/a.jpg", mask_uri="/m2/a.png")],
                   [("/m1/a.png", "duplicate_key")])


def test_a_file_one_source_passes_over_is_not_rejected_when_another_source_writes_it():
    """Source 0 sees two images of stem a and no mask; source 1 pairs the second one."""
    _assert_paired([("a", (0, "image", "/d/a.jpeg")), ("a", (0, "image", "/d/a.jpg")),
                    ("a", (1, "image", "/d/a.jpg")), ("a", (1, "mask", "/d/a.png"))],
                   [SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png")],
                   [("/d/a.jpeg", "missing_mask")])


def test_the_same_files_given_two_classes_by_two_sources_are_rejected_once_and_not_written():
    rows = [SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=label, label_name=name,
                         split="train") for label, name in ((0, "cat"), (1, "dog"))]
    _assert_paired([("a", (0, RECORD, rows[0])), ("a", (1, RECORD, rows[1]))],
                   [], [("/d/a.jpg", "conflicting_sources")])
    # A source that gives no class or split agrees with one that does.
    quiet = dataclasses.replace(rows[0], label=-1, label_name="", split=None)
    _assert_paired([("a", (0, RECORD, quiet)), ("a", (1, RECORD, rows[0]))], [rows[0]], [])


def test_a_file_both_globs_match_takes_the_role_its_stem_lacks_and_is_never_its_own_mask():
    """``--images 'D/*' --masks 'D/*.png'``: ``a.png`` is ``a.jpg``'s mask (not also an extra
    image), and ``m.png``, a mask alone, is no image of its own."""
    _assert_paired([("a", (0, "image", "/D/a.jpg")), ("a", (0, "image", "/D/a.png")), ("a", (0, "mask", "/D/a.png")),
                    ("m", (0, "image", "/D/m.png")), ("m", (0, "mask", "/D/m.png"))],
                   [SourceRecord(key="a", image_uri="/D/a.jpg", mask_uri="/D/a.png")],
                   [("/D/m.png", "missing_image")])
    # With other files for both roles, it is an extra.
    _assert_paired([("a", (0, "image", "/D/a.jpg")), ("a", (0, "mask", "/D/a.gif")),
                    ("a", (0, "image", "/D/a.png")), ("a", (0, "mask", "/D/a.png"))],
                   [SourceRecord(key="a", image_uri="/D/a.jpg", mask_uri="/D/a.gif")],
                   [("/D/a.png", "duplicate_key")])


def test_a_stem_in_several_folders_pairs_the_image_and_mask_that_lie_together():
    """``--images 'D/**/*.jpg' --masks 'D/**/*.png'`` with ``D/a/x.jpg``, ``D/b/x.jpg`` and
    ``D/b/x.png``: the mask's own image is written, the other is the duplicate."""
    _assert_paired([("x", (0, "image", "/D/a/x.jpg")), ("x", (0, "image", "/D/b/x.jpg")),
                    ("x", (0, "mask", "/D/b/x.png"))],
                   [SourceRecord(key="x", image_uri="/D/b/x.jpg", mask_uri="/D/b/x.png")],
                   [("/D/a/x.jpg", "duplicate_key")])
    # (folders named differently for images and masks: the split's folder decides)
    _assert_paired([("x", (0, "image", "/D/train/images/x.jpg")), ("x", (0, "image", "/D/val/images/x.jpg")),
                    ("x", (0, "mask", "/D/val/masks/x.png"))],
                   [SourceRecord(key="x", image_uri="/D/val/images/x.jpg", mask_uri="/D/val/masks/x.png")],
                   [("/D/train/images/x.jpg", "duplicate_key")])


def test_one_file_spelt_two_ways_by_two_sources_is_one_input_with_the_oxford_class_and_split(tmp_path):
    """``--oxford_pets ROOT`` with ``--images 'ROOT/../ROOT/images/*.jpg'``, or through a link
    to ROOT: the same files, whose record from the lists (class, split) is the one kept."""
    root = tmp_path / "pets"
    image = _touch(root / "images" / "Abyssinian_1.jpg")
    mask = _touch(root / "annotations" / "trimaps" / "Abyssinian_1.png")
    _touch(root / "annotations" / "trainval.txt", b"")
    _touch(root / "annotations" / "test.txt", b"Abyssinian_1 1 1 1\n")
    os.symlink(root, tmp_path / "link")
    for spelt in (f"{tmp_path}/pets/../pets", f"{tmp_path}/link"):
        config = JobConfig(output=str(tmp_path / "out"), sources=(
            oxford.Settings((str(root),)),
            files.Settings(images=(f"{spelt}/images/*.jpg",), masks=(f"{spelt}/annotations/trimaps/*.png",))))
        with TestPipeline(runner=FnApiRunner()) as p:
            records, rejected = p | ReadSources(config)
            assert_that(records, equal_to([SourceRecord(key="Abyssinian_1", image_uri=image, mask_uri=mask, label=0,
                                                        label_name="Abyssinian", split="test")]))
            assert_that(rejected, equal_to([]), label="NoneRejected")


def _pairing_of(entries, key="k"):
    """``(records, [(uri, reason, message)])``: the pairing step run on one key's grouped entries."""
    from beam_etl.beam.sources.pairing import _PairAndDedupFn  # pylint: disable=import-outside-toplevel

    outputs = list(_PairAndDedupFn().process((key, entries)))
    return ([output for output in outputs if isinstance(output, SourceRecord)],
            [(output.uri, output.reason, output.message) for output in outputs if not isinstance(output, SourceRecord)])


def test_a_key_refused_whole_names_each_record_s_file_that_nothing_else_names():
    """Two sources pair one image with two masks under a reserved key (or a key the sources
    give two classes): each mask is accounted for, the second record by its mask."""
    records, rejected = _pairing_of([(0, "image", "/d/x#aug1.jpg"), (0, "mask", "/m1/x#aug1.png"),
                                     (1, "image", "/d/x#aug1.jpg"), (1, "mask", "/m2/x#aug1.png")], key="x#aug1")
    assert records == [] and [(uri, reason) for uri, reason, _ in rejected] == [
        ("/d/x#aug1.jpg", "reserved_key"), ("/m2/x#aug1.png", "reserved_key")]
    rows = [SourceRecord(key="k", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=label, label_name=name)
            for label, name in ((0, "cat"), (1, "dog"))]
    records, rejected = _pairing_of([(0, RECORD, rows[0]), (1, RECORD, rows[1]),
                                     (2, "image", "/d/a.jpg"), (2, "mask", "/m2/a.png")])
    assert records == [] and [(uri, reason) for uri, reason, _ in rejected] == [
        ("/d/a.jpg", "conflicting_sources"), ("/m2/a.png", "conflicting_sources")]


def test_a_record_that_lost_to_another_is_named_by_its_file_the_winner_does_not_use():
    """Source 0 pairs D/x.png with M/x.png, source 1 D/x.jpg with D/x.png: the second is written,
    and the first is named by M/x.png, the file of it that nothing else accounts for."""
    records, rejected = _pairing_of([(0, "image", "/D/x.png"), (0, "mask", "/M/x.png"),
                                     (1, "image", "/D/x.jpg"), (1, "mask", "/D/x.png")])
    assert records == [SourceRecord(key="k", image_uri="/D/x.jpg", mask_uri="/D/x.png")]
    assert [(uri, reason) for uri, reason, _ in rejected] == [("/M/x.png", "duplicate_key")]


def test_a_name_that_is_not_utf8_is_its_own_input_and_is_told_by_its_real_path_whatever_the_order():
    shown = "/d/a\\xff.jpg"  # (how the name with the byte 0xff is shown; also a file of its own, literally)
    records, rejected = _pairing_of([(0, "not_utf8", (shown, shown)), (0, "image", shown), (0, "mask", "/m/a.png")])
    assert records == [SourceRecord(key="k", image_uri=shown, mask_uri="/m/a.png")]
    assert [(uri, reason) for uri, reason, _ in rejected] == [(shown, "file_name_not_utf8")]
    through_link = [(0, "not_utf8", ("/d/a\\xff.jpg", "/d/a\\xff.jpg")),
                    (1, "not_utf8", ("/link/a\\xff.jpg", "/d/a\\xff.jpg"))]
    for entries in (through_link, through_link[::-1]):
        assert [rejection[:2] for rejection in _pairing_of(entries)[1]] == [("/d/a\\xff.jpg", "file_name_not_utf8")]


def test_a_file_refused_by_two_sources_beside_a_row_that_carries_bytes_under_its_name_is_refused_once():
    row = SourceRecord(key="k", image_uri="/d/x.jpg", mask_uri="/d/x.png", image_bytes=b"i", mask_bytes=b"m")
    records, rejected = _pairing_of([(0, "image", "/d/x.jpg"), (1, "image", "/d/x.jpg"), (2, RECORD, row)])
    assert records == [row] and [(uri, reason) for uri, reason, _ in rejected] == [("/d/x.jpg", "missing_mask")]


def test_sources_that_each_give_part_of_what_an_input_is_agree_and_are_merged():
    rows = [SourceRecord(key="k", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=0, label_name="cat"),
            SourceRecord(key="k", image_uri="/d/a.jpg", mask_uri="/d/a.png", split="train")]
    assert _pairing_of([(0, RECORD, rows[0]), (1, RECORD, rows[1])]) == (
        [dataclasses.replace(rows[0], split="train")], [])


def test_a_file_both_globs_match_is_refused_with_a_reason_true_whatever_becomes_of_the_others():
    records, rejected = _pairing_of([(0, "image", "/D/a/x.jpg"), (0, "image", "/D/b/x.jpg"),
                                     (0, "mask", "/D/b/sub/x.png"), (0, "image", "/D/e/x.png"),
                                     (0, "mask", "/D/e/x.png")])
    assert records == [SourceRecord(key="k", image_uri="/D/b/x.jpg", mask_uri="/D/b/sub/x.png")]
    both = [message for uri, _, message in rejected if uri == "/D/e/x.png"]
    assert both == ["matches both the images' and the masks' globs, and the stem 'k' has other files for both: "
                    "one input per stem"]


def test_one_file_spelt_two_ways_within_a_source_is_one_file(tmp_path):
    """Through a link to its folder: never an image and its own mask, never its own duplicate."""
    folder = tmp_path / "a"
    folder.mkdir()
    for name in ("x.png", "x.jpg"):
        (folder / name).write_bytes(b"x")
    os.symlink(folder, tmp_path / "link")
    a, link = str(folder), str(tmp_path / "link")
    assert _pairing_of([(0, "image", f"{a}/x.png"), (0, "mask", f"{link}/x.png")]) == (
        [], [(f"{a}/x.png", "missing_image", "mask has no image with stem 'k'")])
    records, rejected = _pairing_of([(0, "image", f"{a}/x.jpg"), (0, "image", f"{link}/x.jpg")])
    assert records == [] and [(uri, reason) for uri, reason, _ in rejected] == [(f"{a}/x.jpg", "missing_mask")]


def test_the_file_a_written_row_reads_is_not_also_rejected():
    """A row that carries its image's bytes and names its mask's file: that file is used."""
    row = SourceRecord(key="k", image_uri="bigquery://p:d.t/k/image", mask_uri="/d/x.png", image_bytes=b"i")
    assert _pairing_of([(0, RECORD, row), (1, "mask", "/d/x.png")]) == ([row], [])


def test_rows_that_differ_only_in_their_mask_s_bytes_are_told_apart():
    rows = [SourceRecord(key="k", image_uri="bigquery://t/k/image", mask_uri="bigquery://t/k/mask", image_bytes=b"i",
                         mask_bytes=mask) for mask in (b"m1", b"m2", b"m3")]
    records, rejected = _pairing_of([(0, RECORD, row) for row in rows])
    assert len(records) == 1 and len(rejected) == 2 and len({message for _, _, message in rejected}) == 2


def test_groups_of_disagreeing_rows_are_refused_alike_in_any_order():
    rows = [SourceRecord(key="k", image_uri="/d/x.jpg", mask_uri=mask, label=label, label_name=name)
            for mask in ("/d/x.png", "/e/x.png") for label, name in ((0, "cat"), (1, "dog"))]
    entries = [(0, RECORD, row) for row in rows]
    assert _pairing_of(entries) == _pairing_of(entries[::-1]) == _pairing_of([entries[i] for i in (2, 0, 3, 1)])


def test_glob_matching_nothing_is_an_error_naming_it(tmp_path):
    config = JobConfig(output="o", sources=(files.Settings(images=(str(tmp_path / "nothing" / "*.jpg"),),
                                                    masks=(str(tmp_path / "*.png"),)),))
    with pytest.raises(ValueError, match=r"--images .*nothing.*matches no file"):
        check_sources(config)


@pytest.mark.parametrize("images, said", [
    ("{d}", r"--images '{d}' is a folder, not files: give a glob, such as '{d}/\*\.jpg'"),
    ("{d}/.*.jpg", r"--images '{d}/\.\*\.jpg' matches only hidden files"),
])
def test_a_glob_that_names_no_input_is_an_error_naming_it(tmp_path, images, said):
    folder = tmp_path / "images"
    _touch(folder / ".a.jpg")
    _touch(tmp_path / "a.png")
    config = JobConfig(output="o", sources=(files.Settings(images=(images.format(d=folder),),
                                                           masks=(str(tmp_path / "*.png"),)),))
    with pytest.raises(ValueError, match=said.format(d=folder)):
        check_sources(config)


def test_a_glob_in_a_folder_whose_name_is_not_utf8_is_refused_naming_the_flag(tmp_path):
    folder = os.fsencode(tmp_path) + b"/im\xe9"
    os.makedirs(folder + b"/x")
    with open(folder + b"/a.jpg", "wb") as handle:
        handle.write(b"x")
    _touch(tmp_path / "a.png")
    images = os.fsdecode(folder) + "/*.jpg"
    config = JobConfig(output="o", sources=(files.Settings(images=(images,), masks=(str(tmp_path / "*.png"),)),))
    with pytest.raises(ValueError, match=r"--images '.*/im\\\\xe9/\*\.jpg' is not UTF-8 text"):
        check_sources(config)


def test_the_count_of_inputs_stops_at_its_limit_and_leaves_hidden_files_out(tmp_path):
    for name in ("a", "b", "c", ".d", ".e"):
        _touch(tmp_path / f"{name}.jpg")
    assert count_matches(str(tmp_path / "*.jpg"), 100) == 3
    assert count_matches(str(tmp_path / "*.jpg"), 2) <= 2


def test_a_folder_named_with_its_final_slash_names_its_files(tmp_path):
    _touch(tmp_path / "images" / "a.jpg")
    _touch(tmp_path / "a.png")
    check_sources(JobConfig(output="o", sources=(files.Settings(images=(f"{tmp_path}/images/",),
                                                                masks=(str(tmp_path / "*.png"),)),)))


def test_oxford_list_parsing():
    text = "#comment\nAbyssinian_100 1 1 1\n\nyorkshire_terrier_9 37 2 25\n"
    assert list(parse_oxford_list(text, "l.txt", "test")) == [
        ("Abyssinian_100", ("test", 0, "Abyssinian", "l.txt", 2)),
        ("yorkshire_terrier_9", ("test", 36, "yorkshire_terrier", "l.txt", 4))]
    with pytest.raises(ValueError, match=r"l.txt:2"):
        list(parse_oxford_list("a 1 1 1\nbroken line\n", "l.txt", "test"))


def test_an_oxford_list_s_lines_are_numbered_as_an_editor_numbers_them():
    """A form feed or a Unicode line separator inside a line (a comment's) neither moves the
    line numbers the rejections give nor starts a line of its own."""
    text = "# exported\x0c# page 2\r\nAbyssinian_1 1 1 1\n# from\u2028the sheet\npug_2 25 2 12\n"
    assert [meta[4] for _, meta in parse_oxford_list(text, "l.txt", "test")] == [2, 4]


@pytest.mark.parametrize("line", ["a 1 cat 1", "a 1 1 0", "a +1 1 1", "a \u0661 1 1", "a 1 1 1_0"])
def test_an_oxford_line_s_numbers_are_counted_from_one_in_ascii_digits(line):
    with pytest.raises(ValueError, match=r"l.txt:1: expected 'NAME CLASS_ID SPECIES BREED_ID'"):
        list(parse_oxford_list(line, "l.txt", "test"))


def test_only_a_key_that_ends_in_an_augmentation_copy_s_suffix_is_reserved():
    from beam_etl.elements import example_key, is_reserved_key

    assert is_reserved_key(example_key("x", 1)) and is_reserved_key("x#aug12")
    assert not any(map(is_reserved_key, ["x#aug1\n", "x#aug\u0661", "x#aug", "x#aug1 "]))


def test_the_generic_steps_know_no_kind_of_source():
    # Adding a kind of source is a module in beam_etl/beam/sources/ and one line in
    # SOURCE_KINDS: the registry, the pairing, the flag parser and the settings name no kind
    # themselves.
    import ast
    import pathlib

    from beam_etl import config

    root = pathlib.Path(sources.__file__).parent
    for path in (root / "__init__.py", root / "pairing.py", root.parent / "options.py",
                 pathlib.Path(config.__file__)):
        tree = ast.parse(path.read_text())
        registry = [node for node in tree.body if isinstance(node, (ast.Assign, ast.ImportFrom))
                    and "SOURCE_KINDS" in ast.unparse(node) or isinstance(node, ast.ImportFrom)
                    and node.module == "beam_etl.beam.sources"]
        names = set()
        for node in ast.walk(tree):
            if any(node is entry or node in ast.walk(entry) for entry in registry):
                continue
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--"):
                names.add(node.value)
        for name in names:
            for kind in ("oxford", "bigquery", "--images", "--masks"):
                assert kind not in name.lower(), (path.name, name)
    kinds = [kind.__name__.rsplit(".", 1)[1] for kind in sources.SOURCE_KINDS]
    assert kinds == ["files", "oxford", "bigquery"]
    for kind in sources.SOURCE_KINDS:
        assert callable(kind.add_flags) and callable(kind.settings) and callable(kind.from_config)
        assert dataclasses.is_dataclass(kind.Settings) and callable(kind.Settings.splits) and kind.FLAGS


@dataclasses.dataclass(frozen=True)
class _UriListSettings:
    uri_lists: tuple[str, ...] = ()

    def splits(self, config):
        del config
        return ("test",)  # every row of a list names its split; these name test


class _UriListSource:
    """A CSV of ``key,image_uri,mask_uri`` rows, all in the test split."""

    def __init__(self, path, index):
        self.path, self.label = path, f"ReadUriList{index}"

    def check(self, pipeline_options=None):
        if not os.path.exists(self.path):
            raise ValueError(f"--uri_list {self.path!r} does not exist")

    def entries(self, pbegin, source_index):
        def records(path):
            with open(path, encoding="utf-8") as lines:
                for key, image, mask in csv.reader(lines):
                    yield SourceRecord(key=key, image_uri=image, mask_uri=mask, split="test")
        rows = pbegin | "List" >> beam.Create([self.path]) | "Rows" >> beam.FlatMap(records)
        return [tag(rows | "ByKey" >> beam.Map(lambda r: (r.key, r)), "TagRows", source_index, RECORD)], []


class _UriListKind:
    """A kind of source written outside the package: module-like, as SOURCE_KINDS expects."""

    Settings = _UriListSettings
    FLAGS = "--uri_list"

    @staticmethod
    def add_flags(parser, group):
        del parser
        group.add_argument("--uri_list", action="append", default=None, metavar="CSV")

    @staticmethod
    def settings(flags):
        return _UriListSettings(tuple(flags.uri_list)) if flags.uri_list else None

    @staticmethod
    def from_config(config):
        settings = config.source(_UriListSettings)
        return [_UriListSource(path, i) for i, path in enumerate(settings.uri_lists)] if settings else []


def test_a_new_kind_of_source_is_its_module_and_one_line_of_registration(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "SOURCE_KINDS", (*sources.SOURCE_KINDS, _UriListKind))
    listing = tmp_path / "pets.csv"
    listing.write_text("b,/d/b.jpg,/d/b.png\na,/d/a.jpg,/d/a.png\n", encoding="utf-8")
    config, _ = options.parse_args(["--uri_list", str(listing), "--output", str(tmp_path / "out"),
                                    "--split_fractions", "train=1"])
    assert config.source(_UriListSettings) == _UriListSettings((str(listing),))
    assert config.splits == ("train", "test")
    assert config.flags()["uri_lists"] == [str(listing)]
    check_sources(config)
    with TestPipeline(runner=FnApiRunner()) as p:
        records, rejected = p | ReadSources(config)
        assert_that(records, equal_to([SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", split="test"),
                                       SourceRecord(key="b", image_uri="/d/b.jpg", mask_uri="/d/b.png", split="test")]))
        assert_that(rejected, equal_to([]), label="NoneRejected")
    with pytest.raises(SystemExit):
        options.parse_args(["--output", "o"])
    assert "give at least one source: --images/--masks, --oxford_pets, " \
           "--bigquery_table or --bigquery_query, --uri_list" in capsys.readouterr().err


def test_rows_of_one_table_with_one_key_keep_the_same_row_whatever_their_order():
    """Two BYTES rows of a table under one key have the same URIs: which is kept must not depend
    on the order the runner groups them in (their bytes decide), and the rejection tells them apart."""
    rows = [SourceRecord(key="k", image_uri="bigquery://p.d.t/k/image", mask_uri="bigquery://p.d.t/k/mask",
                         image_bytes=data, mask_bytes=b"mask") for data in (b"first image", b"second image")]
    kept = min(rows, key=lambda row: hashlib.sha256(row.image_bytes).hexdigest())
    for ordered in (rows, rows[::-1]):
        with TestPipeline(runner=FnApiRunner()) as p:
            records, rejected = (p | beam.Create([("k", (0, RECORD, row)) for row in ordered])
                                 | PairAndDedup())
            assert_that(records, equal_to([kept]))
            assert_that(rejected | beam.Map(lambda r: (r.reason, "; this is bigquery://p.d.t/k/image (image SHA-256 "
                                                       in r.message)), equal_to([("duplicate_key", True)]),
                        label="Rejected")
