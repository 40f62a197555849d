"""Local globs are listed without a stat per file, and name what Beam's listing names."""

import os

import pytest
from apache_beam.io.filesystems import FileSystems

from beam_etl.beam.sources import matching
from tests.support import file_modes


def _beam(glob):
    return sorted(m.path for m in FileSystems.match([glob])[0].metadata_list)


@pytest.fixture
def tree(tmp_path):
    """Files, a subfolder, a link to a file, a link to a folder, a hidden file."""
    for name in ("a1.jpg", "b2.jpg", "abc.jpg", "c.png", ".hidden.jpg", "sub/d.jpg",
                 "sub/deeper/e.jpg", "other/f.jpg", "a/x.jpg"):
        path = tmp_path / "top" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    os.symlink(tmp_path / "top" / "a1.jpg", tmp_path / "top" / "link.jpg")
    os.symlink(tmp_path / "top" / "other", tmp_path / "top" / "folder_link")
    return tmp_path / "top"


@pytest.mark.parametrize("pattern", [
    "*.jpg", "a*.jpg", "*", "**", "**/*.jpg", "*/*.jpg", "sub/*.jpg", "sub/**", "a?c.jpg", "a?x.jpg",
    "[ab]*.jpg", "[!a]*.jpg", "sub*", "*.png", "nothing*.jpg", "a1.jpg", "missing.jpg", "sub", "sub/", "s*/",
    "sub\\"])
def test_the_same_paths_as_beams_listing(tree, pattern):
    glob = f"{tree}/{pattern}"
    assert sorted(matching.matches(glob)) == _beam(glob)


def test_a_backslash_in_a_file_s_name_is_matched_by_a_star_where_beam_passes_over_it(tree):
    (tree / "x\\y.jpg").write_bytes(b"x")
    (tree / "sub" / "p\\q").mkdir()
    (tree / "sub" / "p\\q" / "z.jpg").write_bytes(b"x")
    assert str(tree / "x\\y.jpg") in matching.matches(f"{tree}/*.jpg")
    assert str(tree / "x\\y.jpg") not in _beam(f"{tree}/*.jpg")  # (Beam's "*" is [^/\\]*)
    assert list(matching.matches(f"{tree}/sub/*/z.jpg")) == [str(tree / "sub" / "p\\q" / "z.jpg")]


def test_the_pattern_decides_and_relative_globs_are_listed_as_beam_lists_them(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert sorted(matching.matches("top/*.jpg")) == _beam("top/*.jpg") == [
        "top/.hidden.jpg", "top/a1.jpg", "top/abc.jpg", "top/b2.jpg", "top/link.jpg"]
    monkeypatch.chdir(tree)
    assert list(matching.matches("*.jpg")) == _beam("*.jpg") == []  # no folder before the wildcard


def test_a_folder_whose_glob_characters_are_escaped_is_listed_and_nothing_beside_it(tree, monkeypatch):
    """An escaped folder (a root or working folder joined into a pattern: ``globs.escape_glob``)
    is where the listing starts: its glob characters are no wildcards, and a folder beside it,
    one that cannot be listed among them, is not walked."""
    from beam_etl import globs  # pylint: disable=import-outside-toplevel

    folder = tree.parent / "run [1] *"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.jpg").write_bytes(b"x")
    glob = f"{globs.escape_glob(str(folder))}/images/*.jpg"
    assert matching._start(glob)[1:] == (f"{folder}/images", "*.jpg")  # pylint: disable=protected-access
    assert not matching.walks_folders(glob)
    assert _beam(glob) == [f"{folder}/images/a.jpg"]  # (Beam's own walk starts at the folder above)
    monkeypatch.setattr(os, "scandir", lambda path, real=os.scandir: real(path) if path == f"{folder}/images" else
                        pytest.fail(f"listed {path}"))
    assert list(matching.matches(glob)) == [f"{folder}/images/a.jpg"]
    assert list(matching.matches(globs.escape_glob(f"{folder}/images/a.jpg"))) == [f"{folder}/images/a.jpg"]


def test_a_limit_stops_the_listing(tree):
    assert len(list(matching.matches(f"{tree}/**", limit=3))) == 3
    assert len(list(matching.matches(f"{tree}/**"))) == 10


def test_a_broken_link_is_named_where_beam_drops_it(tree):
    os.symlink(tree / "gone.jpg", tree / "broken.jpg")
    assert f"{tree}/broken.jpg" in matching.matches(f"{tree}/*.jpg")
    assert f"{tree}/broken.jpg" not in _beam(f"{tree}/*.jpg")


def test_no_file_is_asked_its_size_or_time(tree, monkeypatch):
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda *a, **k: calls.append(a) or real_stat(*a, **k))
    assert len(list(matching.matches(f"{tree}/**"))) == 10
    assert calls == []
    assert len(_beam(f"{tree}/**")) == 10 and calls  # (Beam's listing asks each one)


def test_other_schemes_go_through_beam(tree):
    with pytest.raises(Exception, match="Unable to get filesystem"):
        list(matching.matches(f"file://{tree}/*.jpg"))


def test_a_folder_the_walk_cannot_list_fails_the_listing_naming_it(tree):
    """Beam's walk passes over a folder it may not list, and what it holds is lost without a word."""
    locked = tree / "sub" / "deeper"
    locked.chmod(0)
    try:
        listed = file_modes.run_python(
            "from beam_etl.beam.sources import matching\n"
            f"for glob in ({str(tree / '*.jpg')!r}, {str(tree / 's*' / '*' / '*.jpg')!r}, {str(tree / 'o*' / '*')!r},"
            f" {str(tree / '**' / '*.jpg')!r}):\n"
            "    try:\n"
            "        print(len(list(matching.matches(glob))))\n"
            "    except OSError as error:\n"
            "        print(type(error).__name__, error.filename, error.strerror)\n")
    finally:
        locked.chmod(0o755)
    shallow, under, elsewhere, deep = listed.stdout.splitlines()
    assert shallow == "5"  # a1, b2, abc, link, .hidden: the locked folder is not walked
    assert under.startswith(f"PermissionError {locked} cannot list the folder (Permission denied)")
    assert elsewhere == "1"  # other/f.jpg: sub/ cannot hold a match of o*/*, and is not walked
    assert deep.startswith(f"PermissionError {locked} cannot list the folder (Permission denied)")
