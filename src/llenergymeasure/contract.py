"""The files that cross the worker boundary, named once: the host writes EXP_FILE into an
experiment's directory and reads the rest; the worker (in a subprocess or a container) reads
EXP_FILE and writes RESULT_FILE or ERROR_FILE, TIMESERIES_FILE beside it; its output goes to
LOG_FILE. Nothing else is shared between them."""

EXP_FILE = "exp.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
TIMESERIES_FILE = "timeseries.parquet"
LOG_FILE = "worker.log"
