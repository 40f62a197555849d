"""The job's command line, parsed once into ``(JobConfig, PipelineOptions)``.

The job's flags are declared once, in :class:`PreprocessOptions` and :class:`LaunchOptions`
(PipelineOptions subclasses, so they travel with the job's options to any runner), with the
value parsers and bounds of :mod:`beam_etl.config`. :func:`parse_args` is the one entry point:
the job's own parser reads them (``--help``, and errors with this job's usage line, naming the
flag and the value); Beam reads its own flags from the same ``argv``; a flag that neither knows,
which Beam itself would only log and discard, fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions, TestOptions, WorkerOptions)

from beam_etl import config as config_lib, globs, host_ports, native_logs
from beam_etl.beam import commit, sources
from beam_etl.config import FlagParser, flag_type, positive_hours, positive_int
from beam_etl.output_layout import CACHE_DIR, INCOMPLETE_DIR, UP_TO_DATE, UP_TO_DATE_FILES, is_job_file, is_within, join



class PreprocessOptions(PipelineOptions):
    """Flags of ``python -m pipelines.preprocess``."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("sources (repeatable; several are flattened into one run)")
        for kind in sources.SOURCE_KINDS:
            kind.add_flags(parser, group)
        out = parser.add_argument_group("output")
        out.add_argument("--output", default=None, metavar="DIR",
                         help="Output directory (local or gs://): shards, manifest.json, rejected/.")
        out.add_argument("--overwrite", action="store_true", default=False,
                         help="Replace the output of an earlier beam-etl run in --output, once the "
                              "new one is complete; files it did not write are never touched.")
        out.add_argument("--image_size", type=flag_type(config_lib.parse_image_size),
                         default=(128, 128), metavar="N|HxW",
                         help="Output size: one number for a square, or HEIGHTxWIDTH. Default 128.")
        out.add_argument("--image_format", type=str, choices=config_lib.IMAGE_FORMATS, default="jpeg",
                         help="Encoding of images in the records; masks are always lossless "
                              "(PNG, or raw bytes with --image_format raw). Default jpeg.")
        out.add_argument("--resize", type=str, choices=config_lib.RESIZE_MODES, default="stretch",
                         help="How an image meets --image_size: stretch (to it, aspect ratio changed; the "
                              "default), pad (the whole image fitted inside, centred; the rest of the "
                              f"image black and of the mask {config_lib.PAD_MASK_VALUE}, an ignored value), "
                              "crop (the short side fitted, the centre kept). Masks are resized by nearest "
                              "neighbour in every mode.")
        out.add_argument("--jpeg_quality", type=flag_type(config_lib.jpeg_quality), default=95,
                         help="JPEG quality, 1-100. Default 95.")
        out.add_argument("--num_shards", type=flag_type(config_lib.num_shards), default=None,
                         help="Files per split. Default: enough for --shard_size_mb per file.")
        out.add_argument("--shard_size_mb", type=flag_type(config_lib.shard_size_mb), default=100.0,
                         help="Target size of a shard in MB when --num_shards is not given "
                              f"({config_lib.MIN_SHARD_MB:g}-{config_lib.MAX_SHARD_MB:g}; never more "
                              "files than examples). Default 100.")
        proc = parser.add_argument_group("processing")
        proc.add_argument("--max_pixels", type=flag_type(positive_int), default=40_000_000,
                          help="Refuse images with more pixels than this, from their header, "
                               "before decoding. Default 40,000,000.")
        proc.add_argument("--mask_values", type=flag_type(config_lib.parse_mask_values), default=None,
                          metavar="LIST",
                          help="Allowed mask values, e.g. '1,2,3' for Oxford trimaps or '0-20,255'. "
                               "Masks with other values are rejected. Default: any.")
        proc.add_argument("--augment_copies", type=flag_type(config_lib.augment_copies), default=0,
                          help="Extra augmented copies of each training example (flip, crop, "
                               "rotation, brightness/contrast). Default 0.")
        proc.add_argument("--seed", type=flag_type(int), default=0,
                          help="Seed of augmentation and of nothing else. Default 0.")
        proc.add_argument("--cache", dest="cache_dir", type=flag_type(config_lib.folder_place), default=None,
                          metavar="DIR",
                          help="Where each input's outcome is kept by content (local or gs://), "
                               "so that a rerun decodes only what changed; several outputs may "
                               "share one. Default OUTPUT/.beam-etl-cache.")
        proc.add_argument("--no_cache", dest="use_cache", action="store_false", default=True,
                          help="Decode every input again and keep no outcome.")
        proc.add_argument("--no_statistics", dest="statistics", action="store_false", default=True,
                          help="Skip the tensorflow-transform pass over the training split: no "
                               "statistics in the manifest, no transform_fn/ for the loader.")
        split = parser.add_argument_group("splits")
        split.add_argument("--split_fractions", type=flag_type(config_lib.parse_split_fractions),
                           default=config_lib.DEFAULT_SPLIT_FRACTIONS, metavar="SPEC",
                           help="Split of inputs whose source has none, by stable hash of the key. "
                                "Default train=0.8,val=0.1,test=0.1.")
        split.add_argument("--val_fraction", type=flag_type(config_lib.fraction_below_one), default=0.1,
                           help="Fraction of Oxford trainval held out as 'val' by stable hash. Default 0.1.")
        split.add_argument("--max_reject_fraction", type=flag_type(config_lib.fraction), default=1.0,
                           help="Fail the job (leaving --output as it was) when more than this "
                                "fraction of inputs is rejected. Default 1.0: never.")


class LaunchOptions(PipelineOptions):
    """How this process launches the job: conveniences around Beam's own runner flags."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--dask_local_workers", type=flag_type(positive_int), default=None, metavar="N",
            help="Start a dask.distributed LocalCluster of N worker processes (one thread each) "
                 "and run on it with beam_dask's runner; for a running cluster give "
                 "--runner beam_dask.DaskRunner --dask_client_address HOST:PORT instead.")
        parser.add_argument(
            "--render_graph", default=None, metavar="PATH",
            help="Write a picture of the job's graph (.svg, .png or .dot; needs Graphviz's dot "
                 "for images) before running it.")
        parser.add_argument(
            "--break_lease", action="store_true", default=False,
            help="Take over --output from a run that is gone (on this host: its processes no longer "
                 "run; elsewhere: its lease is older than --lease_timeout_hours), clearing what it left.")
        parser.add_argument(
            "--lease_timeout_hours", type=flag_type(positive_hours), default=48.0, metavar="H",
            help="A lease older than this counts as stale (for runs on other hosts). Default 48.")
        parser.add_argument(
            "--verbose", action="store_true", default=False,
            help="Show every log (Beam's, dask's, TensorFlow's native ones) and, when the run "
                 "fails, the whole traceback instead of one message.")


class JobOptions(PipelineOptions):
    """The job's PipelineOptions, whose views are made once per options class and kept.

    Beam's ``view_as`` makes a new view at each call, parsing the flags again with a parser of
    the class's options (about 1 ms), and Beam asks for one some 500 times while it builds this
    job's graph (for each transform applied, each output's type, each type check): 0.4-0.6 s of
    every launch. A view keeps no value of its own (it reads and writes the options'
    ``_all_options``, parsed from their ``_flags``), so a kept view reads and writes what a new one
    would; one made before either was replaced is made again. Kept views stay out of the pickled
    and copied state: where Beam blanks ``impersonate_service_account`` there it pickles a copy
    of the values, and a view pickled beside the options would restore with a copy of its own.
    """

    def view_as(self, cls):
        views = self.__dict__.get("_views")
        if views is None:
            views = {}
            object.__setattr__(self, "_views", views)  # (Beam's __setattr__ takes option names only)
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options or view._flags is not self._flags:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def to_config(flags: argparse.Namespace, pipeline_options: PipelineOptions | None = None) -> config_lib.JobConfig:
    """The job's flags, as parsed by :func:`parse_args`, as the validated settings: each source
    kind's settings from its own flags (completed from Beam's, such as ``--project``, when
    ``pipeline_options`` are given), every other field from the flag of the same name."""
    settings = []
    for kind in sources.SOURCE_KINDS:
        kind_settings = kind.settings(flags)
        if kind_settings is None:
            continue
        if pipeline_options is not None and hasattr(kind, "with_pipeline_options"):
            kind_settings = kind.with_pipeline_options(kind_settings, pipeline_options)
        settings.append(kind_settings)
    if not settings:
        raise ValueError("give at least one source: " + ", ".join(kind.FLAGS for kind in sources.SOURCE_KINDS))
    values = {field.name: getattr(flags, field.name) for field in dataclasses.fields(config_lib.JobConfig)
              if hasattr(flags, field.name)}
    return config_lib.JobConfig(**values, sources=tuple(settings))


def _parser(prog: str | None, description: str | None) -> argparse.ArgumentParser:
    parser = FlagParser(
        prog=prog, description=description, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Beam pipeline option is accepted too, e.g. --runner DirectRunner "
               "--direct_running_mode multi_processing --direct_num_workers 2, or "
               "--runner beam_dask.DaskRunner --dask_client_address HOST:PORT.")
    PreprocessOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    LaunchOptions._add_argparse_args(parser.add_argument_group("running"))  # pylint: disable=protected-access
    return parser


def parse_args(argv: list[str], prog: str | None = None,
               description: str | None = None) -> tuple[config_lib.JobConfig, PipelineOptions]:
    """Parses and validates ``argv``; exits with status 2 and a message naming the flag on error."""
    parser = _parser(prog, description)
    flags, _ = parser.parse_known_args(argv)  # the job's flags; the rest are Beam's
    # Beam's warning that it discards what it cannot parse: the job refuses it instead, naming it
    native_logs.drop_notes("apache_beam.options.pipeline_options", ("Discarding unparseable args",))
    options = JobOptions(argv)
    try:
        check_runner_flags(options, flags)
        check_dask_flags(options, flags, argv)
        unknown = _unknown_arguments(options, argv)
        if unknown:
            raise ValueError(_unrecognized(unknown))
        job_config = to_config(flags, options)
        check_output_flag(job_config.output, job_config.statistics)
        check_cache_flag(job_config.cache_dir, job_config.output)
        # (absolute, as --cache and the sources are: a cluster's workers run in folders of their own;
        # kept as given below a working folder whose name Beam cannot carry, not UTF-8)
        placed = config_lib.folder_place(job_config.output)
        if placed.encode("utf-8", "surrogateescape").decode("utf-8", "replace") == placed:
            job_config = dataclasses.replace(job_config, output=placed)
        direct_workers(options, argv)
        check_bucket_names(argv)
    except ValueError as error:
        parser.error(str(error))
    if not _names_any(argv, DIRECT_FLAGS) and not flags.dask_local_workers:
        options.view_as(DirectOptions).direct_num_workers = JOB_CHOOSES_WORKERS
    return job_config, options


# Cloud Storage's bucket names, as Beam's options validator checks them (3 to 222 characters).
_BUCKET = re.compile(r"[a-z0-9][-_a-z0-9.]{1,220}[a-z0-9]")


def check_bucket_names(argv: list[str]) -> None:
    """Refuses a ``gs://`` value of any flag whose bucket cannot be one: a wrong name fails here,
    naming the flag, where Beam, given no valid ``--temp_location`` or ``--staging_location``,
    would go to make a default bucket over the network first."""
    for index, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        flag, equals, value = arg.partition("=")
        if not equals and index + 1 < len(argv):
            value = argv[index + 1]
        if value.startswith("gs://"):
            bucket = value[len("gs://"):].split("/", 1)[0]
            if not _BUCKET.fullmatch(bucket):
                raise ValueError(f"{flag} {value!r}: {bucket!r} is not a Cloud Storage bucket name (3 or more "
                                 "lowercase letters, digits, '-', '_' and '.', from a letter or digit to one)")


def direct_workers(options: PipelineOptions, argv: list[str]) -> None:
    """What ``--direct_num_workers N`` asks for, where Beam would not do it: Beam's default
    mode, in_memory, runs one worker whatever N is (it only warns), so N alone runs N worker
    processes (multi_processing); with in_memory named, an N other than 1 is refused. 0 is one
    per core, made a number here (0 with in_memory is how the job marks a run left to it)."""
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers
    if not _names_any(argv, ("--direct_num_workers",)) or workers == 1:
        return
    mode_named = _names_any(argv, ("--direct_running_mode",))
    if mode_named and direct.direct_running_mode == "in_memory":
        raise ValueError(f"--direct_num_workers {workers} with --direct_running_mode in_memory: that mode runs "
                         "one worker whatever the number; give --direct_running_mode multi_processing (or "
                         "multi_threading), or leave --direct_running_mode out for worker processes")
    if not mode_named:
        direct.direct_running_mode = "multi_processing"
    if workers == 0:
        direct.direct_num_workers = os.cpu_count() or 1


# The DirectRunner's own flags; with neither, the job chooses (beam_etl.beam.launch.local_workers).
DIRECT_FLAGS = ("--direct_running_mode", "--direct_num_workers")
# Beam's "as many workers as cores", which with the default in_memory mode (where Beam runs one
# thread whatever the number) stands for "the job chooses".
JOB_CHOOSES_WORKERS = 0


def _names_any(argv: list[str], flags) -> bool:
    return any(arg.split("=", 1)[0] in flags for arg in argv)


def job_chooses_workers(options: PipelineOptions) -> bool:
    """Whether the run is left to the DirectRunner's defaults, the user naming neither of
    :data:`DIRECT_FLAGS` (nor a runner other than the DirectRunner)."""
    direct = options.view_as(DirectOptions)
    return (runner_kind(options) in ("DirectRunner", "SwitchingDirectRunner")
            and direct.direct_num_workers == JOB_CHOOSES_WORKERS and direct.direct_running_mode == "in_memory")


_SHOWN_UNKNOWN = 5  # unrecognized arguments named in the error; an expanded glob can be thousands


def _unrecognized(unknown: list[str]) -> str:
    shown = " ".join(unknown[:_SHOWN_UNKNOWN])
    if len(unknown) > _SHOWN_UNKNOWN:
        shown += f" and {len(unknown) - _SHOWN_UNKNOWN:,} more"
    if any(not word.startswith("-") and os.path.lexists(word) for word in unknown):
        shown += " (files the shell listed for an unquoted glob? Quote it: --images 'DIR/*.jpg')"
    return f"unrecognized arguments: {shown}"


def _unknown_arguments(options: PipelineOptions, argv: list[str]) -> list[str]:
    """What in ``argv`` no options class knows: unknown flags, and words no flag takes (an
    unquoted glob the shell expanded). Beam's own parser, with every options class (call once
    the runner is loaded: it registers the runner's flags), is the one that decides."""
    unknown = []

    def parse(parser):
        unknown.extend(parser.parse_known_args(argv)[1])

    options.get_all_options(add_extra_args_fn=parse)
    return unknown


MAX_WORKERS_PER_CORE = 32  # --direct_num_workers, --dask_local_workers: more is a typo, not a plan

# Runners whose workers end with the launching process.
IN_PROCESS_RUNNERS = {"DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner",
                      "PrismRunner"}
DASK_RUNNER = "beam_dask.DaskRunner"  # what --dask_local_workers runs on


def runner_kind(options: PipelineOptions) -> str:
    """The class name of the runner ``--runner`` names (``direct`` and the qualified name of the
    DirectRunner are the DirectRunner too)."""
    from apache_beam.runners import runner as runner_lib  # pylint: disable=import-outside-toplevel

    name = options.view_as(StandardOptions).runner
    if not name:
        return "DirectRunner"
    try:
        return type(runner_lib.create_runner(name)).__name__
    except (ValueError, ImportError, AttributeError):
        return name


def is_dry_run(options: PipelineOptions) -> bool:
    """``--dry_run=True``: DataflowRunner builds the job and submits nothing."""
    return bool(options.view_as(TestOptions).dry_run)


def check_runner_flags(options: PipelineOptions, flags: argparse.Namespace) -> None:
    """Beam's own flags that Beam would check only once the job runs, or never. Loads the runner,
    which registers its own flags (beam_dask's ``--dask_client_address``)."""
    # pylint: disable=import-outside-toplevel
    from apache_beam.runners import runner as runner_lib

    name = options.view_as(StandardOptions).runner
    flag = f"--runner {name!r}"
    if flags.dask_local_workers:
        if name:
            raise ValueError(f"--dask_local_workers runs on a cluster it starts: leave out --runner {name!r}")
        name, flag = DASK_RUNNER, "--dask_local_workers"
    runner = None
    if name:
        try:
            runner = runner_lib.create_runner(name)
        except ImportError as error:
            extra = " (pip install .[dask])" if "dask" in name.lower() else ""
            raise ValueError(f"{flag}: its runner cannot be loaded{extra}: {error}") from None
        except (ValueError, AttributeError) as error:
            hint = f" (for Dask: --runner {DASK_RUNNER})" if name.lower().endswith("daskrunner") else ""
            raise ValueError(f"{flag} is not a runner Beam knows{hint}: {error}") from None
    if flags.dask_local_workers and options.get_all_options().get("address"):
        raise ValueError("--dask_local_workers runs on a cluster it starts: leave out --dask_client_address")
    kind = type(runner).__name__ if runner is not None else "DirectRunner"
    if kind == "DaskRunner" and type(runner).__module__.split(".")[0] != DASK_RUNNER.split(".", maxsplit=1)[0]:
        raise ValueError(f"{flag}: Beam's own Dask runner mixes up a step's tagged outputs and loses what a step "
                         f"makes as a bundle ends (beam_dask/README.md); give --runner {DASK_RUNNER}")
    if options.view_as(StandardOptions).no_wait_until_finish and (kind in IN_PROCESS_RUNNERS or flags.dask_local_workers):
        raise ValueError(f"--no_wait_until_finish: the job ends with this process ({flag if name else 'the DirectRunner'}), "
                         "before it could finish; leave the flag out")
    if is_dry_run(options) and kind not in ("DataflowRunner", "TestDataflowRunner"):
        raise ValueError(f"--dry_run builds a Dataflow job without running it; {kind} would run the job: "
                         "give --runner DataflowRunner, or leave --dry_run out")
    dry_run = options.view_as(TestOptions).dry_run
    if dry_run and str(dry_run).lower() != "true":
        raise ValueError(f"--dry_run={dry_run!r}: Beam takes any value as true (a job built, not run): "
                         "give --dry_run=True, or leave it out for a real run")
    _check_dataflow_worker_flags(options, kind, flag if name else "the DirectRunner")
    most = MAX_WORKERS_PER_CORE * (os.cpu_count() or 1)
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is None or workers < 0:
        raise ValueError(f"--direct_num_workers must be 0 (one per core) or more, got {workers}")
    for flag, count in (("--direct_num_workers", workers), ("--dask_local_workers", flags.dask_local_workers)):
        if count and count > most:
            raise ValueError(f"{flag} {count}: at most {MAX_WORKERS_PER_CORE} a core ({most} on this machine)")
    graph = flags.render_graph
    if graph is not None:
        folder = os.path.dirname(os.path.abspath(graph))
        if not os.path.isdir(folder):
            raise ValueError(f"--render_graph {graph!r}: folder {folder!r} does not exist")
        if os.path.splitext(graph)[1] not in (".svg", ".png", ".dot"):
            raise ValueError(f"--render_graph {graph!r}: expected a .svg, .png or .dot file")
        output = flags.output
        if output and "://" not in output and is_within(graph, output):
            raise ValueError(f"--render_graph {graph!r} is inside --output {output!r}, which holds the job's "
                             "files only (a file of another kind there stops the next run): write it elsewhere")


# Beam's Dask flags that take a count: each must be 1 or more (Beam passes a negative one on, and
# its dask.Bag of the inputs comes out empty: a run of nothing; it reads a timeout it cannot parse
# as none).
_DASK_COUNTS = ("--dask_npartitions", "--dask_partition_size", "--dask_connection_timeout",
                "--dask_connection_limit")


def tcp_scheduler(options: PipelineOptions) -> tuple[str, int] | None:
    """``(host, port)`` of the Dask scheduler ``--dask_client_address`` names over TCP (``tcp://``
    or no scheme); None where it names none, or one of another scheme (``tls://``, ``ucx://``:
    dask's own to reach). ValueError for an address that is no ``[tcp://]HOST:PORT``."""
    address = options.get_all_options().get("address")
    if not address or ("://" in address and not address.startswith("tcp://")):
        return None
    return host_ports.parse(address, "tcp")


def check_dask_flags(options: PipelineOptions, flags: argparse.Namespace, argv: list[str]) -> None:
    """Beam's Dask flags, on the Dask runner: counts of 1 or more, a scheduler file that is there,
    a cluster named (Beam's own LocalCluster would run without the workers' environment and end with
    this command, which its lease would not know), and the job waited for (its tasks are this
    command's client's: the cluster drops them when the command exits)."""
    given = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in (*_DASK_COUNTS, "--dask_scheduler_file"):
        given.add_argument(flag)
    raw = vars(given.parse_known_args(argv)[0])
    dask = bool(flags.dask_local_workers) or options.view_as(StandardOptions).runner in (DASK_RUNNER, "DaskRunner")
    named = [flag for flag in (*_DASK_COUNTS, "--dask_scheduler_file", "--dask_client_address")
             if _names_any(argv, (flag,))]
    if named and not dask:
        raise ValueError(f"{named[0]} is a flag of the Dask runner: give --runner {DASK_RUNNER} with it")
    if not dask:
        return
    for flag in _DASK_COUNTS:
        text = raw[flag.lstrip("-")]
        if text is not None and not (text.strip().isdigit() and int(text) >= 1):
            raise ValueError(f"{flag} {text!r}: expected a whole number, 1 or more")
    if flags.dask_local_workers:
        return
    address = options.get_all_options().get("address")
    try:
        tcp_scheduler(options)
    except ValueError as error:
        raise ValueError(f"--dask_client_address {address!r}: {error}") from None
    scheduler_file = raw["dask_scheduler_file"]
    if scheduler_file is not None and not os.path.isfile(scheduler_file):
        raise ValueError(f"--dask_scheduler_file {scheduler_file!r} is not a file (dask would wait for it for ever)")
    if not address and scheduler_file is None:
        raise ValueError(f"--runner {DASK_RUNNER} runs on a cluster you name: give --dask_client_address "
                         "(or --dask_scheduler_file), or --dask_local_workers N to start one on this machine")
    if options.view_as(StandardOptions).no_wait_until_finish:
        raise ValueError("--no_wait_until_finish: the job's tasks belong to this command's Dask client, and the "
                         "cluster drops them when the command exits; leave the flag out")


# Runners whose workers are this machine's processes or a Dask cluster's: no pool of machines
# for --num_workers to size, no container for Beam to stage files for.
PROCESS_AND_DASK_RUNNERS = IN_PROCESS_RUNNERS | {"DaskRunner"}
_SETUP_FILE_NAMES = ("setup.py", "pyproject.toml")
_PACKAGE_SUFFIXES = (".tar", ".tar.gz", ".whl", ".zip")


def _check_dataflow_worker_flags(options: PipelineOptions, kind: str, runner: str) -> None:
    """Beam's flags for Dataflow's workers, which Beam checks on Dataflow only, once the graph is
    built (its options validator, its stager), and other runners ignore: the sizes of the pool of
    machines (refused where the runner has no such pool, for they would size nothing), and the files
    staged for the workers, by the rules of Beam's stager, on every runner (a local file that is
    not there is a mistake wherever the command runs; one that is there is harmless locally)."""
    worker = options.view_as(WorkerOptions)
    sizes = {"--num_workers": worker.num_workers, "--max_num_workers": worker.max_num_workers}
    for flag, size in sizes.items():
        if size is None:
            continue
        if kind in PROCESS_AND_DASK_RUNNERS:
            raise ValueError(f"{flag} {size}: sizes Dataflow's pool of worker machines, and {runner} has none: "
                             "leave it out (the DirectRunner's processes: --direct_num_workers; a Dask cluster "
                             "the job starts: --dask_local_workers)")
        if size < 1:
            raise ValueError(f"{flag} {size}: a number of worker machines is 1 or more")
    if None not in sizes.values() and worker.num_workers > worker.max_num_workers:
        raise ValueError(f"--num_workers {worker.num_workers} is more than --max_num_workers {worker.max_num_workers}")
    setup = options.view_as(SetupOptions)
    staged = [("--setup_file", setup.setup_file, "setup.py or pyproject.toml",
               lambda base: base in _SETUP_FILE_NAMES),
              ("--requirements_file", setup.requirements_file, "", lambda base: True),
              *(("--extra_package", package, "a .tar, .tar.gz, .whl or .zip",
                 lambda base: base.endswith(_PACKAGE_SUFFIXES)) for package in setup.extra_packages or ())]
    for flag, path, takes, named_so in staged:
        if path is None or "://" in path:  # (a remote package is Beam's stager's to fetch)
            continue
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path!r} is not a file (Beam stages it for Dataflow's workers)")
        if not named_so(os.path.basename(path)):
            raise ValueError(f"{flag} {path!r}: Beam takes {takes} here")


def _check_folder_flag(flag: str, value: str) -> None:
    """A folder flag's value: UTF-8 text (Beam carries paths as text), a local path (Beam's
    FileSystems has no ``file://``) or any other scheme's; locally, not a file, not the root of
    the filesystem, not a ``~`` left unexpanded, not inside a folder named like an output's
    ``.incomplete`` (that output's next run clears it), and not inside another output where it
    keeps its own files (``A/lineage/...``: that output's manifest lists what they hold)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(value).decode("utf-8", "backslashreplace")
        raise ValueError(f"{flag} {shown!r} is not UTF-8 text (its other bytes are shown as \\xNN), which "
                         "Beam cannot carry: choose another name") from None
    if value.startswith("file://"):
        raise ValueError(f"{flag} {value!r}: give the local path {value[len('file://'):]!r}")
    if value.startswith("~"):
        raise ValueError(f"{flag} {value!r}: the shell did not expand '~' (it does not after '='): "
                         f"give {flag} ~/... with a space, or the full path")
    local = "://" not in value
    if local and os.path.exists(value) and not os.path.isdir(value):
        raise ValueError(f"{flag} {value!r} is a file, not a folder")
    if local and os.path.realpath(value) == os.path.realpath(os.sep):
        raise ValueError(f"{flag} {value!r} is the root of the filesystem: the job keeps its files and "
                         f"folders at the top of {flag}; choose a folder of its own")
    parts = (os.path.realpath(value) if local else value).split("/")
    if INCOMPLETE_DIR in parts[:-1] or parts[-1] == INCOMPLETE_DIR:
        raise ValueError(f"{flag} {value!r} is inside {INCOMPLETE_DIR!r}, where an output of the job keeps what "
                         "its runs have not committed (its next run clears it): choose a folder of its own")
    for depth in range(len(parts) - 1, 0, -1) if local else ():
        output, inside = "/".join(parts[:depth]) or "/", "/".join(parts[depth:])
        if is_job_file(inside) and commit.read_manifest_if_any(output, checked=False) is not None:
            raise ValueError(f"{flag} {value!r} is inside {output!r}, an output of the job, where it keeps "
                             f"{inside.split('/', 1)[0]!r} of its own (its files are listed in its manifest, and "
                             "its next run refuses or replaces what it does not list): choose a folder of its own")


def check_output_flag(output: str, statistics: bool) -> None:
    _check_folder_flag("--output", output)
    place = os.path.abspath(output) if "://" not in output else output  # (a relative one: the folder's name too)
    if statistics and any(character in place for character in globs.GLOB_CHARACTERS):
        # The job takes the path literally, but TensorFlow restores a SavedModel's variables by
        # file pattern: tf.Transform's graph could be written there and never loaded.
        raise ValueError(f"--output {output!r} holds a glob character (*, ? or [), and TensorFlow "
                         "loads tf.Transform's SavedModel by pattern: choose another folder name, "
                         "or pass --no_statistics")


def check_cache_flag(cache: str | None, output: str) -> None:
    """``--cache``: a folder, and not one where ``--output`` keeps a file or folder of its own
    (a run would make its folder there, then refuse or clear it: ``OUT/lineage``,
    ``OUT/.incomplete/...``, a shard's name). A folder of its own in ``OUT`` is fine."""
    if cache is None:
        return
    local = "://" not in cache
    if local == ("://" not in output):
        place, top = (os.path.realpath(cache), os.path.realpath(output)) if local else (cache, output)
        inside = place[len(top.rstrip("/")) + 1:] if place.startswith(top.rstrip("/") + "/") else ""
        first = next((part for part in inside.split("/") if part), "")
        if first and (is_job_file(first) or first in (UP_TO_DATE, UP_TO_DATE_FILES)):
            raise ValueError(f"--cache {cache!r} is where --output {output!r} keeps {first!r} of its own: "
                             f"leave --cache out (the cache is then {join(output, CACHE_DIR)}), or name a "
                             "folder of its own")
    _check_folder_flag("--cache", cache)
