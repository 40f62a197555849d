"""The loader's command line: throughput, a preview grid, a short training run.

Its flags are parsed and checked here, where nothing loads TensorFlow, so that a wrong one is
refused at once; :mod:`beam_etl.loader.load_run` then holds them against the output and runs.

    python -m beam_etl.train_loader --data OUT --split train --batch_size 64 --steps 200
    python -m beam_etl.train_loader --data OUT --preview grid.png [--columns 4] [--keys KEY,KEY]
    python -m beam_etl.train_loader --data OUT --train_steps 50 [--normalize_on_device]
"""

from __future__ import annotations

import argparse

from beam_etl import host_ports
from beam_etl.config import FlagParser, flag_type, output_folder, positive_int
from beam_etl.loader import written_file


def _keys(text: str) -> list[str]:
    keys = [key for key in text.split(",") if key]
    if not keys:
        raise ValueError("expected KEY,KEY,...")
    return keys


def _seed(text: str) -> int:
    """A seed TensorFlow holds (an int64)."""
    value = int(text)
    if not -2 ** 63 <= value < 2 ** 63:
        raise ValueError("must be within [-2**63, 2**63) (a 64-bit integer)")
    return value


def _batch_size(text: str) -> int:
    """A batch size tf.data holds (an int64)."""
    value = positive_int(text)
    if value >= 2 ** 63:
        raise ValueError("must be at most 2**63 - 1 (a tf.data batch's size is a 64-bit integer)")
    return value


def _steps(text: str) -> int:
    """A count of steps TensorFlow holds (an int64: Keras's ``steps_per_epoch``)."""
    value = positive_int(text)
    if value >= 2 ** 63:
        raise ValueError("must be at most 2**63 - 1 (TensorFlow counts steps in a 64-bit integer)")
    return value


def _service_address(text: str) -> str:
    host_ports.parse(text, "grpc")
    return text


def _check_flags(parser: argparse.ArgumentParser, args) -> None:
    """The flags checked before anything is read: exits with status 2 naming flag and value."""
    if args.data_service_address:  # (TensorFlow would wait for a dispatcher for ever)
        refusal = host_ports.refusal(*host_ports.parse(args.data_service_address, "grpc"))
        if refusal is not None:
            parser.error(f"--data_service_address {args.data_service_address!r}: no tf.data service "
                         f"dispatcher answers there ({refusal})")
    if args.preview is not None:
        refused = written_file.refusal("--preview", args.preview, args.data, ".png")
        if refused is not None:
            parser.error(refused)


def build_parser(prog: str = "python -m beam_etl.train_loader") -> argparse.ArgumentParser:
    parser = FlagParser(prog=prog,
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, type=flag_type(output_folder), metavar="DIR",
                        help="Output directory of the job (local or gs://).")
    parser.add_argument("--split", default="train", help="Split to read. Default train.")
    parser.add_argument("--batch_size", type=flag_type(_batch_size), default=64, help="Default 64.")
    parser.add_argument("--steps", type=flag_type(_steps), default=100,
                        help="Batches to time for the throughput figures. Default 100.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON line.")
    parser.add_argument("--verbose", action="store_true",
                        help="Show TensorFlow's native logs (hidden on the command line otherwise).")
    parser.add_argument("--seed", type=flag_type(_seed), default=0, help="Shuffle and augmentation seed.")
    parser.add_argument("--deterministic", action="store_true", help="Same order on every run.")
    parser.add_argument("--no_shuffle", dest="shuffle", action="store_false", help="Read in file order.")
    parser.add_argument("--augment", action="store_true", help="Random flips (stateless, seeded).")
    parser.add_argument("--cache", action="store_true", help="Cache the serialized records in memory.")
    parser.add_argument("--drop_remainder", action="store_true", help="Static batch shapes (TPUs).")
    parser.add_argument("--normalize_on_device", action="store_true",
                        help="Feed uint8 images and compact mask ids; the model normalizes them "
                             "(normalization_layer). With --train_steps, the U-Net starts with it.")
    parser.add_argument("--data_service_address", type=flag_type(_service_address), default=None,
                        metavar="grpc://HOST:PORT",
                        help="Run the input pipeline on this tf.data service dispatcher's workers.")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="Write a picture of a few examples with their masks overlaid, then exit.")
    parser.add_argument("--preview_count", type=flag_type(positive_int), default=8,
                        help="Examples in the preview (drawn at random by --seed). Default 8.")
    parser.add_argument("--columns", type=flag_type(positive_int), default=2,
                        help="Examples per row of the preview. Default 2.")
    parser.add_argument("--keys", type=flag_type(_keys), default=None, metavar="KEY,KEY",
                        help="Preview these examples (their image/source_id), in this order.")
    parser.add_argument("--train_steps", type=flag_type(_steps), default=None, metavar="N",
                        help="Fit a small U-Net for N steps fed by the loader, and again fed from "
                             "one in-memory batch; report step times and how input-bound it is.")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.train_loader") -> dict:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    # TensorFlow takes seconds to load: only now that every flag is right (a wrong one fails at once)
    from beam_etl.loader import load_run  # pylint: disable=import-outside-toplevel
    return load_run.run(parser, args)


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    main()
