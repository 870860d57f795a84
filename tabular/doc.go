// Package tabular reads training data stored as tables: a Parquet file, a
// folder of Parquet files, a Hugging Face dataset folder (README.md plus
// data/<split>-NNNNN-of-NNNNN.parquet, data/<split>/*.parquet or
// <config>/<split>/*.parquet), a Hugging Face dataset by id from the local
// hub cache ($HF_HOME/hub/datasets--ORG--NAME), or a Delta table (a folder
// with _delta_log/, read through package delta).
//
// Open resolves a path to a Table: its Parquet files in reading order, each
// with the columns held outside the file (Delta partition values) and the
// names its columns have in the table (Delta column mapping). Scan streams
// the requested top-level columns of every row, one row group at a time, as
// a JSON object, so the caller can apply the same record rules as to a line
// of JSONL; memory is bounded by a row group's selected columns, never the
// table. A Table is immutable; Scan may run concurrently on one Table.
// Cancellation is checked between batches of rows.
package tabular
