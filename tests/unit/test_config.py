import os

import pytest

from beam_etl import config as config_lib
from beam_etl.beam import options
from beam_etl.beam.sources import files, oxford


def test_image_size_forms():
    assert config_lib.parse_image_size("128") == (128, 128)
    assert config_lib.parse_image_size("96x128") == (96, 128)
    for bad in ("", "0", "12x", "axb", "-3", "20000"):
        with pytest.raises(ValueError):
            config_lib.parse_image_size(bad)


def test_split_fractions():
    assert config_lib.parse_split_fractions("train=0.9,test=0.1") == (("train", 0.9), ("test", 0.1))
    for bad in ("train=0.5", "train=0.5,val=0.6", "train=1,dev=0", "train=x", "train=0.5,train=0.5"):
        with pytest.raises(ValueError):
            config_lib.parse_split_fractions(bad)


def test_mask_values():
    assert config_lib.parse_mask_values("1,2,3") == (1, 2, 3)
    assert config_lib.parse_mask_values("0-2,255") == (0, 1, 2, 255)
    for bad in ("a", "3-1", "256", "1,,2"):
        with pytest.raises(ValueError):
            config_lib.parse_mask_values(bad)


def test_splits_of_a_run():
    pets = config_lib.JobConfig(output="o", sources=(oxford.Settings(("r",)),), split_fractions=(("train", 1.0),))
    assert pets.splits == ("train", "val", "test")
    globs = config_lib.JobConfig(output="o", sources=(files.Settings(("a",), ("b",)),),
                                 split_fractions=(("train", 0.9), ("val", 0.0), ("test", 0.1)))
    assert globs.splits == ("train", "test")


def _fail(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        options.parse_args(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [
    ("--image_size", "12x"), ("--image_format", "webp"), ("--split_fractions", "train=0.7"),
    ("--mask_values", "1-x"), ("--max_reject_fraction", "1.5"), ("--num_shards", "0"),
    ("--augment_copies", "-1"), ("--val_fraction", "2"),
])
def test_bad_flag_value_names_flag_and_value(capsys, flag, value):
    err = _fail(capsys, ["--oxford_pets", "d", "--output", "o", flag, value])
    assert flag in err and value in err


def test_unknown_flag_fails_instead_of_being_discarded(capsys):
    err = _fail(capsys, ["--oxford_pets", "d", "--output", "o", "--imagesize", "64"])
    assert "--imagesize" in err


def test_an_unknown_flag_is_refused_without_beams_warning(capsys, caplog):
    err = _fail(capsys, ["--oxford_pets", "d", "--output", "o", "--imagesize", "64"])
    assert err.strip().splitlines()[-1].endswith("error: unrecognized arguments: --imagesize 64")
    assert "Discarding unparseable args" not in caplog.text + err


def test_a_glob_the_shell_expanded_is_refused_with_a_hint_to_quote_it(capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        (images / f"pet_{i:02d}.jpg").write_bytes(b"x")
    expanded = sorted(str(path) for path in images.iterdir())  # what the shell makes of images/*.jpg
    err = _fail(capsys, ["--images", *expanded, "--masks", "m/*.png", "--output", str(tmp_path / "o")])
    last = err.strip().splitlines()[-1]
    assert f"unrecognized arguments: {expanded[1]} {expanded[2]} {expanded[3]}" in last
    assert "and 34 more" in last and expanded[-1] not in last  # (not 39 paths)
    assert "files the shell listed for an unquoted glob? Quote it: --images 'DIR/*.jpg'" in last


def test_cross_field_errors(capsys):
    assert "--images" in _fail(capsys, ["--images", "a/*.jpg", "--output", "o"])
    assert "source" in _fail(capsys, ["--output", "o"])


def test_beam_flags_pass_through():
    job, pipeline_options = options.parse_args(
        ["--oxford_pets", "d", "--output", "o", "--image_size", "64x96", "--runner", "DirectRunner",
         "--direct_num_workers", "2", "--augment_copies", "2"])
    assert job.image_size == (64, 96) and job.augment_copies == 2 and job.source(oxford.Settings) == oxford.Settings((os.path.join(os.getcwd(), "d"),))
    assert pipeline_options.get_all_options()["direct_num_workers"] == 2


def test_a_relative_output_is_made_absolute_where_the_command_starts(tmp_path, monkeypatch):
    """The job's workers may run elsewhere (a Dask cluster's, in their own working folder): a
    relative --output would be another folder to each of them, as --cache and the sources would."""
    monkeypatch.chdir(tmp_path)
    job, _ = options.parse_args(["--oxford_pets", "d", "--output", "rel/out", "--cache", "c"])
    assert (job.output, job.cache_dir) == (str(tmp_path / "rel" / "out"), str(tmp_path / "c"))
    assert options.parse_args(["--oxford_pets", "d", "--output", "gs://bucket/out"])[0].output == "gs://bucket/out"


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        options.parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--images", "--masks", "--oxford_pets", "--output", "--image_size", "--image_format",
                 "--max_pixels", "--mask_values", "--augment_copies", "--seed", "--val_fraction",
                 "--split_fractions", "--num_shards", "--shard_size_mb", "--max_reject_fraction",
                 "--overwrite", "--jpeg_quality"):
        assert flag in out


@pytest.mark.parametrize("name,good,bad", [
    ("jpeg_quality", "100", "0"), ("val_fraction", "0.99", "1.0"), ("augment_copies", "100", "101"),
    ("num_shards", "99999", "100000"), ("shard_size_mb", "0.001", "nan"),
    ("max_reject_fraction", "1", "1.01"), ("max_pixels", "1", "0"),
])
def test_a_bound_is_one_function_for_the_flag_and_for_code(capsys, name, good, bad):
    flag = f"--{name}"
    types = {action.dest: action.type for action in options._parser(None, None)._actions}  # pylint: disable=protected-access
    assert types[name].parse is config_lib.FLAG_PARSERS[name]
    job, _ = options.parse_args(["--oxford_pets", "d", "--output", "o", flag, good])
    assert getattr(job, name) == config_lib.FLAG_PARSERS[name](good)
    err = _fail(capsys, ["--oxford_pets", "d", "--output", "o", flag, bad])
    assert flag in err and bad in err
    value = type(getattr(job, name))(float(bad))
    with pytest.raises(ValueError, match=f"^{flag} "):
        config_lib.JobConfig(output="o", sources=(oxford.Settings(("d",)),), **{name: value})


def test_every_parsed_setting_is_refused_from_code_where_its_flag_is_refused():
    """A config built in code takes a value exactly when its flag would: the flag's parser reads
    the text it would hold, and must read back the same value."""
    types = {action.dest: action.type for action in options._parser(None, None)._actions}  # pylint: disable=protected-access
    for name, parse in config_lib.FLAG_PARSERS.items():
        assert getattr(types[name], "parse", types[name]) is parse, name
    sources = (oxford.Settings(("d",)),)
    for name, value in [("image_size", (0, -5)), ("image_size", (128,)), ("image_size", [128, 128]),
                        ("image_size", (128.5, 128)), ("split_fractions", (("train", 0.3),)),
                        ("split_fractions", (("train", 0.5), ("train", 0.5))), ("mask_values", (300,)),
                        ("mask_values", (2, 1)), ("mask_values", ()), ("seed", "x"), ("seed", 1.5), ("seed", True),
                        ("jpeg_quality", 95.7), ("augment_copies", True), ("num_shards", 2.0)]:
        with pytest.raises(ValueError, match=f"^--{name} "):
            config_lib.JobConfig(output="o", sources=sources, **{name: value})
    for name in ("overwrite", "statistics", "use_cache"):
        with pytest.raises(ValueError, match=f"^{name} 'no': expected True or False"):
            config_lib.JobConfig(output="o", sources=sources, **{name: "no"})
    accepted = config_lib.JobConfig(output="o", sources=sources, image_size=(96, 128), seed=-3, mask_values=(1, 2, 3),
                                    split_fractions=(("train", 0.7), ("test", 0.3)), shard_size_mb=1)
    assert accepted.image_size == (96, 128) and accepted.mask_values == (1, 2, 3)


def test_the_dask_runner_is_named_by_its_package_and_its_flags_are_known(capsys):
    _, pipeline_options = options.parse_args(["--oxford_pets", "d", "--output", "o", "--runner",
                                              "beam_dask.DaskRunner", "--dask_client_address", "h:8786"])
    assert pipeline_options.get_all_options()["address"] == "h:8786"
    assert "--runner beam_dask.DaskRunner" in _fail(capsys, ["--oxford_pets", "d", "--output", "o",
                                                             "--runner", "DaskRunner"])
    assert "--dask_local_workers" in _fail(capsys, ["--oxford_pets", "d", "--output", "o", "--runner",
                                                    "DirectRunner", "--dask_local_workers", "2"])


@pytest.mark.parametrize("extra,named", [
    (["--images", "a.jpg", "b.jpg", "--masks", "m.png"], "b.jpg"),  # an unquoted glob the shell expanded
    (["--oxford_pets", "d", "-x", "1"], "-x"),
    (["--oxford_pets", "d", "--dry_run=True"], "--dry_run"),  # only Dataflow builds without running
    (["--oxford_pets", "d", "--runner", "direct", "--no_wait_until_finish"], "--no_wait_until_finish"),
    (["--oxford_pets", "d", "--dask_local_workers", "2", "--dask_client_address", "h:1"], "--dask_client_address"),
    # Beam's Dask flags: a negative count ran a job of nothing; a timeout it cannot parse was none;
    # a scheduler file not there, or no cluster named, or not waiting for the job, lost the run.
    *[(["--oxford_pets", "d", "--runner", "beam_dask.DaskRunner", "--dask_client_address", "h:1", flag, value],
       f"{flag} {value!r}: expected a whole number, 1 or more")
      for flag, value in (("--dask_npartitions", "-1"), ("--dask_partition_size", "0"),
                          ("--dask_connection_timeout", "abc"), ("--dask_connection_timeout", "-5"),
                          ("--dask_connection_limit", "0"))],
    (["--oxford_pets", "d", "--dask_local_workers", "2", "--dask_npartitions", "-1"], "--dask_npartitions '-1'"),
    (["--oxford_pets", "d", "--runner", "beam_dask.DaskRunner", "--dask_scheduler_file", "/no/such.json"],
     "--dask_scheduler_file '/no/such.json' is not a file"),
    (["--oxford_pets", "d", "--runner", "beam_dask.DaskRunner"], "give --dask_client_address"),
    (["--oxford_pets", "d", "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address",
      "h:1"], "Beam's own Dask runner mixes up a step's tagged outputs"),
    (["--oxford_pets", "d", "--runner", "beam_dask.DaskRunner", "--dask_client_address", "h:1",
      "--no_wait_until_finish"], "--no_wait_until_finish: the job's tasks belong to this command's Dask client"),
    (["--oxford_pets", "d", "--dask_client_address", "h:1"],
     "--dask_client_address is a flag of the Dask runner: give --runner beam_dask.DaskRunner"),
    (["--oxford_pets", "d", "--runner", "beam_dask.DaskRunner", "--dask_client_address", "not an address"],
     "--dask_client_address 'not an address': expected [tcp://]HOST:PORT"),
])
def test_arguments_the_job_would_ignore_or_misuse_fail_at_launch(capsys, extra, named):
    assert named in _fail(capsys, ["--output", "o", *extra])


def test_beams_worker_pool_and_staging_flags_that_dataflow_would_take_are_accepted(tmp_path):
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "extra.whl").write_bytes(b"")
    _, pipeline_options = options.parse_args([
        "--oxford_pets", "d", "--output", "o", "--runner", "DataflowRunner", "--num_workers", "3",
        "--max_num_workers", "5", "--setup_file", str(tmp_path / "setup.py"), "--requirements_file",
        str(tmp_path / "requirements.txt"), "--extra_package", str(tmp_path / "extra.whl"),
        "--extra_package", "gs://bucket/remote.tar.gz"])  # (a remote package: Beam's stager fetches it)
    given = pipeline_options.get_all_options()
    assert (given["num_workers"], given["max_num_workers"]) == (3, 5)
    assert given["extra_packages"] == [str(tmp_path / "extra.whl"), "gs://bucket/remote.tar.gz"]
    # Locally the staging flags are harmless (the workers are this machine's): an existing file is accepted.
    _, pipeline_options = options.parse_args(["--oxford_pets", "d", "--output", "o", "--setup_file",
                                              str(tmp_path / "pyproject.toml")])
    assert pipeline_options.get_all_options()["setup_file"] == str(tmp_path / "pyproject.toml")


def test_a_view_of_the_options_is_made_once_and_reads_and_writes_what_a_new_one_would():
    import copy  # pylint: disable=import-outside-toplevel
    import pickle  # pylint: disable=import-outside-toplevel

    from apache_beam.options.pipeline_options import (  # pylint: disable=import-outside-toplevel
        DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions)

    _, pipeline_options = options.parse_args(["--oxford_pets", "d", "--output", "o", "--direct_num_workers", "2"])
    direct = pipeline_options.view_as(DirectOptions)
    assert pipeline_options.view_as(DirectOptions) is direct  # (Beam makes a new parser each time)
    assert direct.direct_num_workers == 2
    direct.direct_num_workers = 3  # a write through one view is seen by every other, and by the options
    assert pipeline_options.view_as(PipelineOptions).view_as(DirectOptions).direct_num_workers == 3
    assert pipeline_options.get_all_options()["direct_num_workers"] == 3
    copied = copy.deepcopy(pipeline_options)  # as beam.Pipeline keeps its options
    copied.view_as(DirectOptions).direct_num_workers = 4
    assert direct.direct_num_workers == 3 and copied.view_as(DirectOptions).direct_num_workers == 4
    copied.view_as(StandardOptions).runner = "DirectRunner"
    assert pipeline_options.view_as(StandardOptions).runner is None
    # Beam blanks this option in the pickled options (by pickling a copy of the values, which the
    # views kept must not be pickled with: they would write to a copy of their own once restored).
    pipeline_options.view_as(GoogleCloudOptions).impersonate_service_account = "someone@example.com"
    pickled = pickle.dumps(pipeline_options)
    assert b"someone@example.com" not in pickled
    restored = pickle.loads(pickled)
    assert restored.view_as(GoogleCloudOptions).impersonate_service_account is None
    assert restored.view_as(DirectOptions).direct_num_workers == 3
    assert restored.view_as(DirectOptions) is restored.view_as(DirectOptions)
    restored.view_as(DirectOptions).direct_num_workers = 5  # the restored views are the restored options'
    assert restored.get_all_options()["direct_num_workers"] == 5
    # Values replaced whole (nothing in Beam does it today): a view kept from before is made again.
    restored._all_options = dict(restored._all_options, direct_num_workers=6)  # pylint: disable=protected-access
    assert restored.view_as(DirectOptions).direct_num_workers == 6


def test_a_folder_inside_another_output_where_it_keeps_its_own_files_is_refused(capsys, tmp_path):
    """Another output's ``lineage/``, ``rejected/``, ``transform_fn/``...: its manifest lists what
    they hold, so a run there would make that output fail verify and refuse its own rerun."""
    other = tmp_path / "A"
    (other / "lineage").mkdir(parents=True)
    (other / "manifest.json").write_text('{"format_version": 2, "splits": {}}')
    (tmp_path / "W" / "metadata").mkdir(parents=True)  # a manifest.json of something else: no output of the job
    (tmp_path / "W" / "manifest.json").write_text('{"name": "my app"}')
    (tmp_path / "d" / "images").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    for extra, named in [
            (["--output", "A/lineage"], "--output 'A/lineage' is inside 'A', an output of the job, where it keeps "
                                        "'lineage' of its own"),
            (["--output", "A/rejected/C"], "--output 'A/rejected/C' is inside 'A', an output of the job, where it "
                                           "keeps 'rejected' of its own"),
            (["--output", "B", "--cache", "A/transform_fn/variables"], "--cache 'A/transform_fn/variables' is inside 'A'"),
            (["--output", "B", "--cache", "A/lineage"], "--cache 'A/lineage' is inside 'A'")]:
        argv = ["--oxford_pets", str(tmp_path / "d")] + [str(tmp_path / arg) if arg[:1] in "AB" else arg for arg in extra]
        assert named in _fail(capsys, argv).replace(f"{tmp_path}/", "")
        assert sorted(tmp_path.rglob("*")) == before
    for fine in (["--output", "A/own"], ["--output", "B", "--cache", "A/cache"], ["--output", "A"],
                 ["--output", "W/metadata/out"], ["--output", "B", "--cache", "W/lineage"]):
        options.parse_args(["--oxford_pets", str(tmp_path / "d")] + [str(tmp_path / a) if a[:1] in "ABW" else a
                                                                   for a in fine])


@pytest.mark.parametrize("extra,named", [
    (["--output", "~/out"], "--output '~/out': the shell"),  # (no shell expands ~ after =)
    (["--output", "OUT", "--cache", "~/cache"], "--cache: invalid value '~/cache': the shell"),
    (["--output", "OUT/\udcff\udcfe"], "is not UTF-8 text"),  # a name of other bytes, which Beam cannot carry
    (["--output", "OUT", "--cache", "OUT/c\udcff"], "--cache 'OUT/c\\\\xff' is not UTF-8 text"),
    (["--output", "OUT", "--cache", "/"], "--cache '/' is the root of the filesystem"),
    (["--output", "OUT/.incomplete/tmp/mine"], "--output 'OUT/.incomplete/tmp/mine' is inside '.incomplete'"),
    (["--output", "OUT2", "--cache", "OUT/.incomplete/cache"],
     "--cache 'OUT/.incomplete/cache' is inside '.incomplete'"),
    (["--output", "OUT", "--direct_num_workers", "99999999"], "--direct_num_workers 99999999"),
    (["--output", "OUT", "--dask_local_workers", "100000"], "--dask_local_workers 100000"),
    (["--output", "OUT", "--runner", "DataflowRunner", "--dry_run=False"], "--dry_run='False'"),
    (["--output", "OUT", "--render_graph", "OUT/metadata/graph.dot"],
     "--render_graph 'OUT/metadata/graph.dot' is inside --output"),
    # Beam's sizes of Dataflow's pool of machines, which Beam checks on Dataflow only, once the
    # graph is built; on a runner of this machine's processes or a Dask cluster they size nothing.
    (["--output", "OUT", "--num_workers", "4"], "--num_workers 4: sizes Dataflow's pool"),
    (["--output", "OUT", "--runner", "beam_dask.DaskRunner", "--dask_client_address", "h:1",
      "--max_num_workers", "8"], "--max_num_workers 8: sizes Dataflow's pool"),
    (["--output", "OUT", "--runner", "DataflowRunner", "--num_workers", "-5"], "--num_workers -5: "),
    (["--output", "OUT", "--runner", "DataflowRunner", "--max_num_workers", "0"], "--max_num_workers 0: "),
    (["--output", "OUT", "--runner", "DataflowRunner", "--num_workers", "5", "--max_num_workers", "2"],
     "--num_workers 5 is more than --max_num_workers 2"),
    # Files Beam stages for Dataflow's workers, which its stager looks for only on Dataflow.
    (["--output", "OUT", "--setup_file", "OUT/nowhere/setup.py"], "--setup_file 'OUT/nowhere/setup.py' is not a file"),
    (["--output", "OUT", "--runner", "DataflowRunner", "--setup_file", "OUT/metadata"],
     "--setup_file 'OUT/metadata' is not a file"),
    (["--output", "OUT", "--runner", "DataflowRunner", "--setup_file", "OUT/metadata/setup.txt"],
     "--setup_file 'OUT/metadata/setup.txt': Beam takes setup.py or pyproject.toml here"),
    (["--output", "OUT", "--requirements_file", "OUT/requirements.txt"],
     "--requirements_file 'OUT/requirements.txt' is not a file"),
    (["--output", "OUT", "--extra_package", "OUT/dist/beam_etl-1.0.tar.gz"],
     "--extra_package 'OUT/dist/beam_etl-1.0.tar.gz' is not a file"),
    (["--output", "OUT", "--runner", "DataflowRunner", "--extra_package", "OUT/metadata/setup.txt"],
     "--extra_package 'OUT/metadata/setup.txt': Beam takes a .tar, .tar.gz, .whl or .zip here"),
    (["--output", "OUT", "--dask_local_workers", "2", "--num_workers", "2"],
     "--num_workers 2: sizes Dataflow's pool of worker machines, and --dask_local_workers has none"),
    # A bucket named against Cloud Storage's rules: Beam, given no valid --temp_location or
    # --staging_location, goes to make a default bucket over the network (2 minutes to fail).
    (["--output", "OUT", "--runner", "DataflowRunner", "--temp_location", "gs://BUCKET/tmp", "--dry_run=True"],
     "--temp_location 'gs://BUCKET/tmp': 'BUCKET' is not a Cloud Storage bucket name"),
    (["--output", "OUT", "--staging_location=gs://my_bucket!/s"],
     "--staging_location 'gs://my_bucket!/s': 'my_bucket!' is not a Cloud Storage bucket name"),
    (["--output", "gs://Pets/out"], "--output 'gs://Pets/out': 'Pets' is not a Cloud Storage bucket name"),
    (["--output", "OUT", "--images", "gs:///images/*.jpg", "--masks", "gs://b-1/m/*.png"],
     "--images 'gs:///images/*.jpg': '' is not a Cloud Storage bucket name"),
])
def test_a_path_or_number_the_job_would_misuse_fails_at_launch_touching_nothing(capsys, tmp_path, extra, named):
    (tmp_path / "OUT" / "metadata").mkdir(parents=True)
    (tmp_path / "OUT" / "metadata" / "setup.txt").write_text("")
    (tmp_path / "d" / "images").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    argv = ["--oxford_pets", str(tmp_path / "d")]
    for arg in extra:
        argv.append(str(tmp_path / arg) if arg.startswith("OUT") else arg)
    message = _fail(capsys, argv).replace(f"{tmp_path}/", "")
    assert named in message
    assert sorted(tmp_path.rglob("*")) == before
