"""The writing side: the Beam job (sources, per-image step, writers, statistics, manifest) and
the output's lease and commit. May import Apache Beam, tf.Transform, ``beam_etl.image`` and
``beam_etl.loader``'s transform graph; nothing imports it but ``pipelines``."""
