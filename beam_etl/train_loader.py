"""``python -m beam_etl.train_loader``: the loader's command line (:mod:`beam_etl.loader.cli`)."""

from beam_etl.loader.cli import main

if __name__ == "__main__":
    main()
