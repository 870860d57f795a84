"""The hosted product's fine-tuning SDK surface, answered by a hone server.

Code written for ``from databricks.model_training import foundation_model as fm``
runs with one changed line::

    from hone import foundation_model as fm

The server is $HONE_SERVER (default http://127.0.0.1:8080) with the bearer
token $HONE_TOKEN, or whatever configure(server=..., token=...) sets; every
function also takes server= and token= for one call.

Parameters match the product's names and defaults. Where hone has no
counterpart (data_prep_cluster_id: hone reads tables without a Spark
cluster) the argument is accepted and an UnsupportedArgumentWarning says it
has no effect; nothing is dropped silently. hone's own settings (seed,
batch_rows, method='lora', lora={...}, optimizer={...}, ...) are keyword
arguments of create() too.
"""

import datetime as _dt
import enum
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

from ._http import Connection, HoneError

__all__ = [
    "create", "get", "list", "cancel", "delete", "get_events", "get_models", "configure",
    "Run", "FineTuningEvent", "RunStatus", "HoneError", "UnsupportedArgumentWarning",
]

_builtin_list = list  # list() below is the product's function


class UnsupportedArgumentWarning(UserWarning):
    """An argument of the product's SDK that hone accepts but cannot honour."""


class RunStatus(str, enum.Enum):
    """A run's state, as the product names them."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"

    def __str__(self):
        return self.value

    def is_terminal(self) -> bool:
        """Whether the run will not change state again."""
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED)


_default = {"server": None, "token": None, "ca_file": None}


def configure(server: Optional[str] = None, token: Optional[str] = None, ca_file: Optional[str] = None) -> None:
    """Sets the server, token and CA bundle of later calls (default: $HONE_SERVER,
    $HONE_TOKEN, $HONE_CA_FILE)."""
    _default.update(server=server, token=token, ca_file=ca_file)


def _conn(server=None, token=None) -> Connection:
    return Connection(server or _default["server"], token if token is not None else _default["token"], _default["ca_file"])


def _time(v: Optional[str]) -> Optional[_dt.datetime]:
    """An RFC 3339 time from the server as an aware datetime (microseconds)."""
    if not v:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", v)
    if not m:
        raise ValueError("hone: unexpected time %r from the server" % v)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return _dt.datetime.fromisoformat("%s.%s%s" % (m.group(1), frac, zone))


def _rfc3339(name: str, v: Union[str, _dt.datetime, _dt.date, None]) -> Optional[str]:
    """A filter time as RFC 3339; a time without a zone is taken as UTC."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = _dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("%s %r: want a datetime or a date/time string such as '2024-01-31' or "
                             "'2024-01-31T12:00:00'" % (name, v)) from None
    elif isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        v = _dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, _dt.datetime):
        raise TypeError("%s: want a datetime or a string, not %s" % (name, type(v).__name__))
    if v.tzinfo is None:
        v = v.replace(tzinfo=_dt.timezone.utc)
    return v.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


class FineTuningEvent:
    """One entry of a run's history: type (a state such as RUNNING, or
    CHECKPOINT, EVAL, LOG), time and message."""

    __slots__ = ("type", "time", "message")

    def __init__(self, type: str, time: Optional[_dt.datetime], message: str):
        self.type, self.time, self.message = type, time, message

    def __repr__(self):
        return "FineTuningEvent(type=%r, time=%r, message=%r)" % (self.type, self.time, self.message)

    def __eq__(self, other):
        return isinstance(other, FineTuningEvent) and (self.type, self.time, self.message) == (other.type, other.time, other.message)


class Run:
    """A fine-tuning run with the product's fields.

    name, status (RunStatus), created_by, created_at, started_at,
    estimated_end_time, completed_at (aware datetimes or None), the submitted
    settings (model, train_data_path, register_to, task_type,
    training_duration, learning_rate, context_length, eval_data_path,
    eval_prompts, custom_weights_path, experiment_path), and hone's:
    registered_model ("catalog.schema.model/N" once registered), error,
    metrics (the latest step's), checkpoints, config (every setting).
    """

    def __init__(self, raw: Dict[str, Any], conn: Optional[Connection] = None):
        self._raw = raw
        self._conn = conn
        cfg = raw.get("config") or {}
        self.name: str = raw["name"]
        self.status = RunStatus(raw["status"])
        self.created_by: str = raw.get("user", "")
        self.created_at = _time(raw.get("created_at"))
        self.started_at = _time(raw.get("started_at"))
        self.estimated_end_time = _time(raw.get("estimated_end_at"))
        self.completed_at = _time(raw.get("completed_at"))
        self.model: str = cfg.get("model", "")
        self.train_data_path: str = cfg.get("train_data_path", "")
        self.register_to: str = cfg.get("register_to", raw.get("register_to", ""))
        self.task_type: str = cfg.get("task_type", "")
        self.training_duration: str = cfg.get("training_duration", "")
        self.learning_rate: Optional[float] = cfg.get("learning_rate")
        self.context_length: Optional[int] = cfg.get("context_length")
        self.eval_data_path: Optional[str] = cfg.get("eval_data_path")
        self.eval_prompts: List[str] = cfg.get("eval_prompts") or []
        self.custom_weights_path: Optional[str] = cfg.get("custom_weights_path")
        self.experiment_path: str = raw.get("experiment_path", "")
        self.data_prep_cluster_id: Optional[str] = None  # no counterpart in hone
        self.registered_model: Optional[str] = raw.get("registered_model")
        self.error: Optional[str] = raw.get("error")
        self.metrics: Optional[Dict[str, Any]] = raw.get("metrics")
        self.checkpoints: List[Dict[str, Any]] = raw.get("checkpoints") or []
        self.config: Dict[str, Any] = cfg

    def __repr__(self):
        return "Run(name=%r, status=%s, model=%r, register_to=%r)" % (self.name, self.status, self.model, self.register_to)

    def __eq__(self, other):
        return isinstance(other, Run) and self.name == other.name

    def __hash__(self):
        return hash(self.name)

    def get_events(self) -> List[FineTuningEvent]:
        """The run's events, oldest first."""
        return get_events(self, server=self._conn.server if self._conn else None,
                          token=self._conn.token if self._conn else None)

    def refresh(self) -> "Run":
        """The run as it is now."""
        return get(self, server=self._conn.server if self._conn else None, token=self._conn.token if self._conn else None)


RunRef = Union[str, Run]


def _name(run: RunRef, what: str = "finetuning_run") -> str:
    if isinstance(run, Run):
        return run.name
    if isinstance(run, str) and run:
        return run
    raise TypeError("%s: want a run name or a Run, not %r" % (what, run))


def _unsupported(name: str, value: Any, why: str) -> None:
    if value is not None:
        warnings.warn("%s=%r has no effect on hone: %s" % (name, value, why), UnsupportedArgumentWarning, stacklevel=3)


def create(model: str,
           train_data_path: str,
           register_to: str,
           *,
           task_type: str = "CHAT_COMPLETION",
           training_duration: Optional[str] = None,
           learning_rate: Optional[float] = None,
           context_length: Optional[int] = None,
           eval_data_path: Optional[str] = None,
           eval_prompts: Optional[Sequence[str]] = None,
           custom_weights_path: Optional[str] = None,
           experiment_path: Optional[str] = None,
           data_prep_cluster_id: Optional[str] = None,
           validate_inputs: bool = True,
           # hone's own settings
           seed: Optional[int] = None,
           batch_rows: Optional[int] = None,
           grad_accum: Optional[int] = None,
           checkpoint_every: Optional[int] = None,
           keep_checkpoints: Optional[int] = None,
           optimizer: Optional[Dict[str, Any]] = None,
           precision: Optional[str] = None,
           method: Optional[str] = None,
           lora: Optional[Dict[str, Any]] = None,
           adapter_path: Optional[str] = None,
           register_adapter: Optional[bool] = None,
           user: Optional[str] = None,
           train_data_split: Optional[str] = None,
           eval_data_split: Optional[str] = None,
           train_data_version: Optional[int] = None,
           nodes: Optional[int] = None,
           server: Optional[str] = None,
           token: Optional[str] = None) -> Run:
    """Creates a fine-tuning run, as the product's fm.create does.

    model: a supported model id (from the server's Hugging Face cache), a
    catalog version, or a model directory on the server. train_data_path: a
    JSONL file, a folder of .txt files, a table or a /Volumes path.
    register_to: "catalog.schema" or "catalog.schema.model". task_type:
    CHAT_COMPLETION (default), INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN.
    training_duration: "3ep", "500ba" or "2_000_000tok" (default 1ep).
    The inputs are validated (file and line named on error) before the run
    is queued; validate_inputs=False skips the data check.
    """
    _unsupported("data_prep_cluster_id", data_prep_cluster_id,
                 "hone reads Delta tables and files itself, without a Spark cluster")
    body: Dict[str, Any] = {"model": model, "train_data_path": train_data_path, "register_to": register_to,
                            "task_type": task_type, "validate_inputs": bool(validate_inputs)}
    for key, value in (("training_duration", training_duration), ("learning_rate", learning_rate),
                       ("context_length", context_length), ("eval_data_path", eval_data_path),
                       ("custom_weights_path", custom_weights_path), ("experiment_path", experiment_path),
                       ("seed", seed), ("batch_rows", batch_rows), ("grad_accum", grad_accum),
                       ("checkpoint_every", checkpoint_every), ("keep_checkpoints", keep_checkpoints),
                       ("optimizer", optimizer), ("precision", precision), ("method", method), ("lora", lora),
                       ("adapter_path", adapter_path), ("register_adapter", register_adapter), ("user", user),
                       ("train_data_split", train_data_split), ("eval_data_split", eval_data_split),
                       ("train_data_version", train_data_version), ("nodes", nodes)):
        if value is not None:
            body[key] = value
    if eval_prompts is not None:
        if isinstance(eval_prompts, str):
            raise TypeError("eval_prompts: want a list of prompts, not one string")
        body["eval_prompts"] = _builtin_list(eval_prompts)
    conn = _conn(server, token)
    return Run(conn.request("POST", "/api/runs", body=body), conn)


def get(finetuning_run: RunRef, *, server: Optional[str] = None, token: Optional[str] = None) -> Run:
    """The run named (or given), as it is now."""
    conn = _conn(server, token)
    return Run(conn.request("GET", "/api/runs/" + _name(finetuning_run)), conn)


def list(finetuning_runs: Optional[Sequence[RunRef]] = None,  # noqa: A001 - the product's name
         user_emails: Optional[Union[str, Sequence[str]]] = None,
         before: Union[str, _dt.datetime, None] = None,
         after: Union[str, _dt.datetime, None] = None,
         limit: Optional[int] = None,
         *, server: Optional[str] = None, token: Optional[str] = None) -> List[Run]:
    """Runs, newest first: those named in finetuning_runs (default all),
    submitted by one of user_emails (hone's user names), created before /
    after the given times (a time without a zone is UTC), at most limit."""
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError("limit %r: want a positive integer" % (limit,))
    conn = _conn(server, token)
    if isinstance(user_emails, str):
        user_emails = [user_emails]
    names = None if finetuning_runs is None else {_name(r, "finetuning_runs") for r in finetuning_runs}
    query = {"created_before": _rfc3339("before", before), "created_after": _rfc3339("after", after)}
    found: Dict[str, Run] = {}
    for user in (user_emails or [None]):
        token_ = None
        while True:
            page = conn.request("GET", "/api/runs", query=dict(query, user=user, page_token=token_, limit=1000))
            for raw in page.get("runs") or []:
                if names is None or raw["name"] in names:
                    found[raw["name"]] = Run(raw, conn)
            token_ = page.get("next_page_token")
            if not token_ or (names is None and limit is not None and len(found) >= limit and len(user_emails or [1]) == 1):
                break
    runs = sorted(found.values(), key=lambda r: (r.created_at, r.name), reverse=True)
    return runs[:limit] if limit is not None else runs


def cancel(finetuning_run: Optional[Union[RunRef, Sequence[RunRef]]] = None, *,
           runs: Optional[Sequence[RunRef]] = None,
           experiment_id: Optional[str] = None,
           server: Optional[str] = None, token: Optional[str] = None) -> int:
    """Cancels one run, several (runs=[...]) or every active run of an
    experiment (experiment_id: in hone, the experiment's path, e.g.
    /Users/ann/hone). Queued runs stop at once, running ones within one
    optimizer step (they keep a checkpoint and can be resumed). Returns how
    many runs are stopping or stopped."""
    names: List[str] = []
    if finetuning_run is not None:
        if isinstance(finetuning_run, (str, Run)):
            names.append(_name(finetuning_run))
        else:
            names.extend(_name(r) for r in finetuning_run)
    if runs is not None:
        names.extend(_name(r, "runs") for r in runs)
    if bool(names) == bool(experiment_id):
        raise ValueError("cancel: give a run, runs=[...] or experiment_id= (one of them)")
    body: Dict[str, Any] = {"names": names} if names else {"experiment_path": experiment_id}
    if experiment_id and not experiment_id.startswith("/"):
        raise ValueError("experiment_id %r: hone names experiments by path, e.g. /Users/ann/hone "
                         "(the experiment_path of its runs)" % experiment_id)
    out = _conn(server, token).request("POST", "/api/runs/cancel", body=body)
    return sum(1 for r in out.get("runs") or [] if r["status"] in ("STOPPING", "STOPPED"))


def delete(finetuning_runs: Union[RunRef, Sequence[RunRef]], *, server: Optional[str] = None,
           token: Optional[str] = None) -> int:
    """Deletes finished or cancelled runs with their tracking and files
    (registered model versions stay). Returns how many were deleted."""
    if isinstance(finetuning_runs, (str, Run)):
        finetuning_runs = [finetuning_runs]
    conn = _conn(server, token)
    n = 0
    for r in finetuning_runs:
        conn.request("DELETE", "/api/runs/" + _name(r, "finetuning_runs"))
        n += 1
    return n


def get_events(finetuning_run: RunRef, *, server: Optional[str] = None, token: Optional[str] = None) -> List[FineTuningEvent]:
    """The run's events, oldest first."""
    conn = _conn(server, token)
    name = _name(finetuning_run)
    out: List[FineTuningEvent] = []
    page_token = None
    while True:
        page = conn.request("GET", "/api/runs/%s/events" % name, query={"limit": 1000, "page_token": page_token})
        for e in page.get("events") or []:
            out.append(FineTuningEvent(e["type"], _time(e.get("time")), e.get("message", "")))
        page_token = page.get("next_page_token")
        if not page_token:
            return out


def get_models(*, server: Optional[str] = None, token: Optional[str] = None) -> List[Dict[str, Any]]:
    """The supported base models (name, maximum context, ...)."""
    return _conn(server, token).request("GET", "/api/models").get("models") or []
