"""BigQuery as a source: a table or a query whose rows name (or hold) an image and its mask.

Rows are read with Beam's own ``ReadFromBigQuery`` through the Storage Read API
(``DIRECT_READ``), so the usual Beam settings and credentials apply. Flags name the columns:

- key (STRING or INT64): the example's key, used for its split and augmentation seed; keys
  must be unique across every source of the run (see :class:`beam_etl.beam.sources.ReadSources`);
- image and mask: STRING holding a URI read later through FileSystems (``gs://``, local), or
  BYTES holding the encoded file itself;
- label (INT64, optional), label name (STRING, optional): the class id and class name;
- split (STRING, optional): ``train``, ``val``, ``test``, or ``trainval`` (divided by
  ``--val_fraction``); NULL leaves the split to ``--split_fractions``.

A row with a NULL key, image or mask, or an unknown split, becomes a ``Rejection`` with the
row's key; an unreadable URI or bytes that are not an image are rejected later, by the
decoding step, like every other input. A column flag naming a column the rows do not have,
or a column of the wrong type, is a configuration error and fails the job with the flag's name.
"""

from __future__ import annotations

import dataclasses
import re

import apache_beam as beam
from apache_beam.io.gcp import bigquery_tools
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import GoogleCloudOptions

from beam_etl.config import SPLITS, flag_type
from beam_etl.elements import UNKNOWN_LABEL, Rejection, SourceRecord
from beam_etl.beam.rejections import SplitRejections
from beam_etl.beam.sources.pairing import RECORD, tag
from beam_etl.splits import TRAINVAL

SOURCE_SPLITS = (*SPLITS, TRAINVAL)


def parse_column_name(text: str) -> str:
    """A BigQuery column name: letters, digits and underscores, not starting with a digit."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,299}", str(text)):
        raise ValueError("expected a column name (letters, digits, underscores)")
    return str(text)


def parse_table_spec(text: str) -> str:
    """``PROJECT:DATASET.TABLE``, ``PROJECT.DATASET.TABLE`` or ``DATASET.TABLE``, checked with
    Beam's own parser; returns the ``PROJECT:DATASET.TABLE`` (or ``DATASET.TABLE``) form."""
    try:
        reference = bigquery_tools.parse_table_reference(str(text).strip())
    except ValueError:
        raise ValueError(f"expected PROJECT:DATASET.TABLE or DATASET.TABLE, got {text!r}") from None
    table = f"{reference.datasetId}.{reference.tableId}"
    return f"{reference.projectId}:{table}" if reference.projectId else table


@dataclasses.dataclass(frozen=True)
class BigQueryColumns:
    """Which column holds what; ``None`` for the optional ones the rows do not have."""

    key: str = "key"
    image: str = "image"
    mask: str = "mask"
    label: str | None = None
    label_name: str | None = None
    split: str | None = None

    @staticmethod
    def flag(role: str) -> str:
        """The flag that names the column of ``role`` (a field name): ``--bigquery_key_column``."""
        return f"--bigquery_{role}_column"

    def named(self) -> list[tuple[str, str]]:
        """``(role, column)`` for every column the rows must have."""
        return [(field.name, getattr(self, field.name))
                for field in dataclasses.fields(self) if getattr(self, field.name)]


@dataclasses.dataclass(frozen=True)
class Settings:
    """``--bigquery_table``, ``--bigquery_query`` and the ``--bigquery_*_column`` flags."""

    bigquery_tables: tuple[str, ...] = ()
    bigquery_queries: tuple[str, ...] = ()
    bigquery_columns: BigQueryColumns = BigQueryColumns()

    def splits(self, config) -> tuple[str, ...]:
        del config
        return SPLITS if self.bigquery_columns.split else ()  # the rows say, and may say any


FLAGS = "--bigquery_table or --bigquery_query"


# The BigQuery types each column may have (legacy names as the tables API reports them).
COLUMN_TYPES = {
    "key": ("STRING", "INTEGER", "INT64"),
    "image": ("STRING", "BYTES"),
    "mask": ("STRING", "BYTES"),
    "label": ("INTEGER", "INT64"),
    "label_name": ("STRING",),
    "split": ("STRING",),
}


def check_table(table: str, columns: BigQueryColumns, pipeline_options=None) -> None:
    """Launch-time check that ``table`` exists and has the named columns, of usable types.

    Uses the same client and credentials as Beam's BigQuery IO (``pipeline_options`` may set
    e.g. ``--impersonate_service_account``).
    """
    # pylint: disable=import-outside-toplevel  # the Google clients load slowly
    from apache_beam.internal.gcp import auth
    from apache_beam.internal.http_client import get_new_http
    from apache_beam.io.gcp import bigquery_tools
    from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
    from apache_beam.options.pipeline_options import PipelineOptions

    reference = bigquery_tools.parse_table_reference(table)
    try:
        client = bigquery_api.BigqueryV2(
            http=get_new_http(), response_encoding="utf8",
            credentials=auth.get_service_credentials(pipeline_options or PipelineOptions([])))
        schema = client.tables.Get(bigquery_api.BigqueryTablesGetRequest(
            projectId=reference.projectId, datasetId=reference.datasetId,
            tableId=reference.tableId)).schema
    except Exception as error:  # pylint: disable=broad-except  # apitools raises HttpError and more
        raise ValueError(f"--bigquery_table {table!r} cannot be read: {error}") from None
    types = {field.name: field.type for field in schema.fields}
    for role, column in columns.named():
        flag = columns.flag(role)
        if column not in types:
            raise ValueError(f"{flag} {column!r} is not a column of {table}; it has {sorted(types)}")
        if types[column] not in COLUMN_TYPES[role]:
            raise ValueError(f"{flag} {column!r} of {table} is {types[column]}; expected "
                             f"{' or '.join(COLUMN_TYPES[role])}")


def source_uri(table: str | None, query_index: int | None) -> str:
    """How rejections and ``image/filename`` name a row's source: ``bigquery://PROJECT:DS.T``."""
    return f"bigquery://{table}" if table else f"bigquery://query{query_index}"


class _RowToRecordFn(beam.DoFn):
    """A row (dict) -> ``SourceRecord``, or a ``Rejection`` for a NULL or unusable value."""

    def __init__(self, source: str, columns: BigQueryColumns):
        self._source = source
        self._columns = columns

    def setup(self):
        self._rejected = Metrics.counter("beam_etl", "rejected_at_source")

    def _reject(self, key, reason, message, column=None):
        self._rejected.inc()
        uri = self._source if key is None else f"{self._source}/{key}"
        return Rejection(uri=uri if column is None else f"{uri}/{column}", stage="read_row",
                         reason=reason, message=message, key=key)

    def _check_columns(self, row: dict):
        for role, column in self._columns.named():
            if column not in row:
                raise ValueError(f"{self._columns.flag(role)} {column!r} is not a column of {self._source}; "
                                 f"its rows have {sorted(row)}")

    def _file(self, row, key, role):
        """(uri, bytes) of the image or mask column: a STRING URI or BYTES."""
        column = getattr(self._columns, role)
        value = row[column]
        if isinstance(value, str):
            return value, None
        if isinstance(value, bytes):
            return f"{self._source}/{key}/{column}", value
        raise ValueError(f"{self._columns.flag(role)} {column!r} of {self._source} holds "
                         f"{type(value).__name__} values; expected STRING URIs or BYTES")

    def process(self, row):
        self._check_columns(row)
        columns = self._columns
        key = row[columns.key]
        if key is None or str(key) == "":
            yield self._reject(None, "missing_key", f"column {columns.key!r} is NULL or empty")
            return
        key = str(key)
        for role in ("image", "mask"):
            column = getattr(columns, role)
            if row[column] is None:
                yield self._reject(key, f"missing_{role}", f"column {column!r} is NULL", column)
                return
        split = row[columns.split] if columns.split else None
        if split is not None and split not in SOURCE_SPLITS:
            yield self._reject(key, "unknown_split",
                               f"column {columns.split!r} holds {split!r}; expected one of "
                               f"{SOURCE_SPLITS} or NULL", columns.split)
            return
        label = row[columns.label] if columns.label else None
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise ValueError(f"{columns.flag('label')} {columns.label!r} of {self._source} holds "
                             f"{type(label).__name__} values; expected INT64")
        label_name = row[columns.label_name] if columns.label_name else None
        if label_name is not None and not isinstance(label_name, str):
            raise ValueError(f"{columns.flag('label_name')} {columns.label_name!r} of "
                             f"{self._source} holds {type(label_name).__name__} values; expected STRING")
        image_uri, image_bytes = self._file(row, key, "image")
        mask_uri, mask_bytes = self._file(row, key, "mask")
        yield SourceRecord(key=key, image_uri=image_uri, mask_uri=mask_uri,
                           label=UNKNOWN_LABEL if label is None else label,
                           label_name=label_name or "", split=split,
                           image_bytes=image_bytes, mask_bytes=mask_bytes)


class ReadBigQueryRows(beam.PTransform):
    """Rows of a table or of a query's result -> ``(records, rejected)``.

    Give exactly one of ``table`` (``PROJECT:DATASET.TABLE``) and ``query`` (standard SQL).
    A query runs as a BigQuery job into a temporary table in ``--project``, which Beam deletes
    afterwards; a table is read directly, only the named columns.
    """

    def __init__(self, columns: BigQueryColumns, *, table: str | None = None,
                 query: str | None = None, query_index: int | None = None, index: int = 0):
        super().__init__()
        if (table is None) == (query is None):
            raise ValueError("give exactly one of table and query")
        self._columns = columns
        self._table = table
        self._query = query
        self._source = source_uri(table, query_index)
        self.label = f"ReadBigQueryTable{index}" if table is not None else f"ReadBigQueryQuery{index}"

    def check(self, pipeline_options=None) -> None:
        if self._table is not None:
            check_table(self._table, self._columns, pipeline_options)

    def entries(self, pbegin, source: int = 0) -> tuple[list, list]:
        """Each row's record as ``(key, (source, "record", record))``, and the rows' rejections."""
        records, rejected = pbegin | "Rows" >> self
        return [tag(records | "KeyRecords" >> beam.Map(lambda record: (record.key, record)),
                    "TagRecords", source, RECORD)], [rejected]

    def expand(self, pbegin):
        method = beam.io.ReadFromBigQuery.Method.DIRECT_READ
        if self._table is not None:
            read = beam.io.ReadFromBigQuery(
                table=self._table, method=method,
                selected_fields=[column for _, column in self._columns.named()])
        else:
            read = beam.io.ReadFromBigQuery(query=self._query, use_standard_sql=True, method=method)
        return (pbegin
                | "ReadRows" >> read  # {column: value}
                | "ToRecords" >> beam.ParDo(_RowToRecordFn(self._source, self._columns))
                # SourceRecord | Rejection
                | "SplitRejections" >> SplitRejections())


def from_config(config) -> list[ReadBigQueryRows]:
    settings = config.source(Settings)
    if settings is None:
        return []
    columns = settings.bigquery_columns
    return ([ReadBigQueryRows(columns, table=table, index=index)
             for index, table in enumerate(settings.bigquery_tables)]
            + [ReadBigQueryRows(columns, query=query, query_index=index, index=index)
               for index, query in enumerate(settings.bigquery_queries)])


_COLUMN_HELP = {
    "key": "Column of the example's key (STRING or INT64), unique across all sources.",
    "image": "Column of the image: a STRING URI (gs://, local) or the encoded BYTES.",
    "mask": "Column of the mask: a STRING URI or the encoded BYTES.",
    "label": "INT64 column of the class id.",
    "label_name": "STRING column of the class name (the label vocabulary is built from it).",
    "split": "STRING column: train, val, test, trainval or NULL (then --split_fractions).",
}


def add_flags(parser, group) -> None:
    group.add_argument(
        "--bigquery_table", action="append", default=None, metavar="PROJECT:DATASET.TABLE",
        type=flag_type(parse_table_spec),
        help="BigQuery table with one row per example (see the --bigquery_*_column flags), "
             "read with the Storage Read API (DIRECT_READ). DATASET.TABLE uses --project.")
    group.add_argument(
        "--bigquery_query", action="append", default=None, metavar="SQL",
        help="Standard-SQL query whose result rows are examples, like --bigquery_table's; "
             "runs as a job in --project.")
    columns = parser.add_argument_group("BigQuery columns (STRING URIs or BYTES for image and mask)")
    defaults = BigQueryColumns()
    for field in dataclasses.fields(BigQueryColumns):
        default = getattr(defaults, field.name)
        columns.add_argument(
            BigQueryColumns.flag(field.name), default=default, metavar="COLUMN",
            type=flag_type(parse_column_name),
            help=_COLUMN_HELP[field.name] + (f" Default {default!r}." if default else " Default: none."))


def settings(flags) -> Settings | None:
    if not (flags.bigquery_table or flags.bigquery_query):
        return None
    return Settings(
        bigquery_tables=tuple(flags.bigquery_table or ()),
        bigquery_queries=tuple(flags.bigquery_query or ()),
        bigquery_columns=BigQueryColumns(**{
            field.name: getattr(flags, f"bigquery_{field.name}_column") or None
            for field in dataclasses.fields(BigQueryColumns)}))


def with_pipeline_options(settings: Settings, pipeline_options) -> Settings:
    """Table specs without a project get ``--project``; queries need one to run in."""
    project = pipeline_options.view_as(GoogleCloudOptions).project
    tables = []
    for table in settings.bigquery_tables:
        if ":" not in table:
            if not project:
                raise ValueError(f"--bigquery_table {table!r} names no project: give "
                                 f"PROJECT:DATASET.TABLE or --project")
            table = f"{project}:{table}"
        tables.append(table)
    if settings.bigquery_queries and not project:
        raise ValueError("--bigquery_query runs as a BigQuery job: give --project")
    return dataclasses.replace(settings, bigquery_tables=tuple(tables))
