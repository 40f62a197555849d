"""``python -m beam_etl.train_loader``: the loader's command line (:mod:`beam_etl.loader.cli`)."""

import sys

from beam_etl import native_logs, unread_streams

if __name__ == "__main__":
    unread_streams.ignore_gone_readers()  # (`... | head`: a message nobody reads fails nothing)
    if not native_logs.wants_verbose(sys.argv[1:]):
        native_logs.filter_native_logs()  # before TensorFlow loads
    from beam_etl.loader.cli import main  # pylint: disable=import-outside-toplevel

    main()
