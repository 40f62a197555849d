"""BigQuery rows to source records, without a server: table specs, column flags, NULLs."""

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.beam.sources.bigquery import BigQueryColumns, Settings, _RowToRecordFn, parse_table_spec
from beam_etl.config import JobConfig
from beam_etl.beam.options import parse_args
from beam_etl.elements import Rejection, SourceRecord

SOURCE = "bigquery://p-1:d.t"


@pytest.mark.parametrize("text, expected", [
    ("my-project:pets.images", "my-project:pets.images"),
    ("my-project.pets.images", "my-project:pets.images"),
    ("pets.images", "pets.images"),
    ("example.com:my-project:pets.images", "example.com:my-project:pets.images"),
])
def test_table_specs_take_beams_forms(text, expected):
    assert parse_table_spec(text) == expected


@pytest.mark.parametrize("text", ["images", "Project:pets.images", "p:pets", "p:pe ts.images", ""])
def test_a_table_spec_that_is_no_bigquery_identifier_fails(text):
    with pytest.raises(ValueError, match="expected PROJECT:DATASET.TABLE or DATASET.TABLE"):
        parse_table_spec(text)


def test_bad_table_flag_fails_at_once_naming_flag_and_value(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--bigquery_table", "not a table", "--output", "o"])
    assert "--bigquery_table: invalid value 'not a table'" in capsys.readouterr().err


def test_project_completes_a_table_spec_and_is_needed_for_queries(capsys):
    config, _ = parse_args(["--bigquery_table", "pets.images", "--project", "p-1", "--output", "o"])
    assert config.source(Settings).bigquery_tables == ("p-1:pets.images",)
    with pytest.raises(SystemExit):
        parse_args(["--bigquery_query", "SELECT 1", "--output", "o"])
    assert "--bigquery_query runs as a BigQuery job: give --project" in capsys.readouterr().err


def test_column_flags_reach_the_config():
    config, _ = parse_args(["--bigquery_table", "p-1:d.t", "--output", "o", "--bigquery_key_column",
                            "id", "--bigquery_split_column", "fold"])
    assert config.source(Settings).bigquery_columns == BigQueryColumns(key="id", split="fold")
    assert config.splits == ("train", "val", "test")  # a split column may name any split
    assert JobConfig(output="o", sources=(Settings(("p-1:d.t",)),),
                     split_fractions=(("train", 1.0),)).splits == ("train",)



def test_rows_become_records_and_null_cells_rejections():
    columns = BigQueryColumns(label="label", label_name="breed", split="split")
    rows = [
        {"key": "a", "image": "gs://b/a.jpg", "mask": "gs://b/a.png", "label": 3, "breed": "pug", "split": "test"},
        {"key": 7, "image": b"JPEG", "mask": b"PNG", "label": None, "breed": None, "split": None},
        {"key": "c", "image": None, "mask": "m", "label": 1, "breed": "x", "split": None},
        {"key": "", "image": "i", "mask": "m", "label": 1, "breed": "x", "split": None},
        {"key": "e", "image": "i", "mask": "m", "label": 1, "breed": "x", "split": "TRAIN"},
    ]
    with TestPipeline(runner=FnApiRunner()) as pipeline:
        out = pipeline | beam.Create(rows) | beam.ParDo(_RowToRecordFn(SOURCE, columns))
        assert_that(out, equal_to([
            SourceRecord(key="a", image_uri="gs://b/a.jpg", mask_uri="gs://b/a.png", label=3,
                         label_name="pug", split="test"),
            SourceRecord(key="7", image_uri=f"{SOURCE}/7/image", mask_uri=f"{SOURCE}/7/mask",
                         image_bytes=b"JPEG", mask_bytes=b"PNG"),
            Rejection(uri=f"{SOURCE}/c/image", stage="read_row", reason="missing_image",
                      message="column 'image' is NULL", key="c"),
            Rejection(uri=SOURCE, stage="read_row", reason="missing_key",
                      message="column 'key' is NULL or empty", key=None),
            Rejection(uri=f"{SOURCE}/e/split", stage="read_row", reason="unknown_split",
                      message="column 'split' holds 'TRAIN'; expected one of "
                              "('train', 'val', 'test', 'trainval') or NULL", key="e"),
        ]))


@pytest.mark.parametrize("columns, row, message", [
    (BigQueryColumns(image="photo"), {"key": "a", "image": "i", "mask": "m"},
     r"--bigquery_image_column 'photo' is not a column of bigquery://p-1:d.t; its rows have \['image', 'key', 'mask'\]"),
    (BigQueryColumns(), {"key": "a", "image": 5, "mask": "m"},
     "--bigquery_image_column 'image' of bigquery://p-1:d.t holds int values; expected STRING URIs or BYTES"),
    (BigQueryColumns(label="label"), {"key": "a", "image": "i", "mask": "m", "label": "pug"},
     "--bigquery_label_column 'label' of bigquery://p-1:d.t holds str values; expected INT64"),
])
def test_a_column_flag_that_does_not_fit_the_rows_fails_naming_the_flag(columns, row, message):
    with pytest.raises(Exception, match=message):
        with TestPipeline(runner=FnApiRunner()) as pipeline:
            _ = pipeline | beam.Create([row]) | beam.ParDo(_RowToRecordFn(SOURCE, columns))
