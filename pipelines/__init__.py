"""The commands: the Beam job's launcher (``preprocess``) and ``beam-etl`` (``cli``), thin over
the beam_etl library."""
