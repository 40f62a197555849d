"""Per-image work on numpy arrays: decode, validate, resize, augment, encode. No Beam, no
TensorFlow; may import the modules of ``beam_etl`` itself."""
