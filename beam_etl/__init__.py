"""beam-etl: image-segmentation data to training-ready TFRecord shards with Apache Beam."""

__version__ = "0.1.0"
