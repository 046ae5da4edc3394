"""How the CLI shows what a server answered: tables, numbers, times, statuses, progress.

Nothing here talks HTTP or reads a database, so every command renders the same way. Every
string from a server goes through `safe` (control characters escaped: a stored name may
hold an escape sequence, rows from before names were checked can) and into a `Text` or a
markup-free print (a name may hold brackets rich would read as markup).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from app.schemas.common import escape_controls

console = Console()
err_console = Console(stderr=True)

STATUS_STYLES = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
METRIC_ORDER = ("loss", "val_loss", "val_accuracy", "step", "samples_per_s")
BAR_WIDTH = 24  # the progress bar's cells: room at 80 columns for the status and a loss


def safe(value: Any, keep: str = "") -> str:
    """`value` as text the terminal shows rather than obeys: control characters other than
    those in `keep` are written as escapes (`\\x1b`), so ESC[2J clears no screen."""
    return escape_controls("" if value is None else str(value), keep)


def print_error(message: str) -> None:
    """In red on stderr, verbatim: a server's message may hold brackets rich would eat, and
    only its line breaks act."""
    err_console.print(
        f"error: {safe(message, keep=chr(10))}",
        style="red",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_field_errors(details: Any, sent: Mapping[str, Any] | None = None) -> None:
    """One red line per field a 422 names (`params.lr: Input should be ... (got 5)`), under
    the error's message: a bare "invalid params" leaves the user guessing which one."""
    for line in field_errors(details, sent):
        err_console.print(
            f"  {safe(line)}", style="red", markup=False, highlight=False, soft_wrap=True
        )


def field_errors(details: Any, sent: Mapping[str, Any] | None = None) -> list[str]:
    """`where: msg (got value)` for each `{loc, msg}` in a server's error details; the value
    is looked up in `sent`, the body the CLI sent (the server does not echo inputs)."""
    if not isinstance(details, list):
        return []
    lines = []
    for item in details:
        if not isinstance(item, Mapping) or "msg" not in item:
            continue
        loc = [str(part) for part in item.get("loc") or []]
        if loc[:1] in (["body"], ["query"], ["path"]):
            loc = loc[1:]
        line = f"{'.'.join(loc) or 'request'}: {item['msg']}"
        found, value = _lookup(sent, loc)
        if found:
            line += f" (got {json.dumps(value)})"
        lines.append(line)
    return lines


def _lookup(body: Any, loc: Sequence[str]) -> tuple[bool, Any]:
    """The value at `loc` in a JSON body, and whether there is one."""
    for part in loc:
        if isinstance(body, Mapping) and part in body:
            body = body[part]
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return False, None
    return bool(loc), body


def print_json(value: Any) -> None:
    """For scripts: plain JSON on stdout, no colours or wrapping; `json.dumps` writes every
    control character and non-ASCII letter as a `\\u` escape, so it is terminal-safe too."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[RenderableType]],
    right: Iterable[str] = (),
    clip: Iterable[str] = (),
) -> None:
    """One titled table; `right` names the numeric columns, aligned right. `clip` names
    those that take the width the others leave and are cut short with `…` there, rather than
    wrapped into rows ten lines tall at 80 columns (a table with one spans the terminal).
    Plain strings become plain text (`cell`); a `Text` is taken as built."""
    aligned, clipped = set(right), set(clip)
    table = Table(title=title, expand=bool(clipped))
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in aligned else "left",
            no_wrap=column in clipped,
            overflow="ellipsis" if column in clipped else "fold",
            ratio=1 if column in clipped else None,
        )
    for row in rows:
        table.add_row(*(value if isinstance(value, Text) else cell(value) for value in row))
    console.print(table)


def print_details(fields: Mapping[str, Any]) -> None:
    """One record as `key  value` lines, keys in bold."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in fields.items():
        grid.add_row(key, value if isinstance(value, Text) else cell(value))
    console.print(grid)


def cell(value: Any) -> Text:
    """Plain text cells: names and messages from the server are never read as rich markup,
    nor their control characters written to the terminal."""
    return Text(safe(value))


def lines(values: Iterable[Any]) -> Text:
    """One cell of several lines: each value escaped, so only these line breaks act."""
    return Text("\n".join(safe(value) for value in values))


def number(value: Any) -> str:
    """Floats to 4 significant digits, anything else as is; None is blank."""
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def percent(fraction: float | None, decimals: int = 0) -> str:
    """A job's progress (0..1, None before it starts) as `42%`."""
    return f"{100 * float(fraction or 0.0):.{decimals}f}%"


def timestamp(value: str | None) -> str:
    """An ISO time to the second, without the `T` and the offset."""
    return (value or "")[:19].replace("T", " ")


def duration(job: Mapping[str, Any]) -> str:
    """` in 12.3 s` for a job that started and finished, else nothing."""
    try:
        started = datetime.fromisoformat(job["started_at"])
        finished = datetime.fromisoformat(job["finished_at"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f" in {(finished - started).total_seconds():.1f} s"


def metric_keys(keys: Iterable[str]) -> list[str]:
    """The metrics people watch first (METRIC_ORDER), then the rest by name."""
    rank = {key: i for i, key in enumerate(METRIC_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), k))


def format_metrics(metrics: Mapping[str, Any] | None, sep: str = " ") -> str:
    """`loss=1.25 val_loss=1.5 step=200`: the latest metrics on one line."""
    if not metrics:
        return ""
    return sep.join(f"{k}={number(metrics[k])}" for k in metric_keys(metrics))


def status(value: str) -> Text:
    """A job status in its colour, so a failed job stands out in a long table."""
    return Text(safe(value), style=STATUS_STYLES.get(value, ""))


def status_progress(job: Mapping[str, Any]) -> Text:
    """A job's status, with its progress while it runs (`running 42%`): one column, not two,
    so a jobs table fits 80 columns."""
    text = status(job["status"])
    if job["status"] == "running":
        text.append(f" {percent(job.get('progress'))}")
    return text


def short_time(value: str | None) -> str:
    """`12-01 14:05`: a timestamp in a table, to the minute and without the year."""
    return timestamp(value)[5:16]


def version_ref(version: Mapping[str, Any] | None) -> str:
    """`name vN` for a model version the server returned, else blank."""
    return safe(f"{version['name']} v{version['version']}") if version else ""


def describe_param(param: Mapping[str, Any]) -> str:
    """`name: type = default [min..max] {a|b}`, skipping what a parameter does not have; an
    exclusive minimum opens with `(`: `(0..1]` takes 1 but not 0."""
    text = f"{param['name']}: {param.get('type', '')} = {json.dumps(param.get('default'))}"
    low, high = param.get("minimum"), param.get("maximum")
    above = param.get("exclusive_minimum")
    if low is not None or high is not None or above is not None:
        opening = f"({bound(above)}" if above is not None else f"[{bound(low)}"
        text += f" {opening}..{bound(high)}]"
    if param.get("enum"):
        text += " {" + "|".join(str(v) for v in param["enum"]) + "}"
    return text


def bound(value: Any) -> str:
    """A parameter's bound as a user would type it: 65536, not 6.554e+04 (JSON Schema gives
    integer bounds as floats); blank for none."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return number(value)


def print_params(params: Iterable[Mapping[str, Any]]) -> None:
    """A kind's parameters, one `describe_param` line each with its description indented
    under it: the long lines wrap at any width instead of folding a table's narrow cells."""
    grid = Table.grid()
    grid.add_column(overflow="fold")
    for param in params:
        grid.add_row(Text(safe(describe_param(param)), style="bold"))
        if param.get("description"):
            grid.add_row(Padding(Text(safe(param["description"])), (0, 0, 0, 4)))
    console.print(Padding(grid, (0, 0, 0, 2)))


def scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metrics that fit in a cell: numbers and words, not the nested per-epoch records
    some kinds keep (those are in `--json`)."""
    return {k: v for k, v in (metrics or {}).items() if not isinstance(v, Mapping | list)}


def job_progress() -> Progress:
    """The bar `train --follow` draws: status, progress, elapsed time, latest metrics.

    One line at any width from 60 columns: every column keeps its size and the metrics take
    what is left, cut short with `…` (loss first). Left to rich, a long metrics line squeezed
    the bar and the status to nothing at 100 columns and wrapped the line at 80."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=BAR_WIDTH),
        TaskProgressColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(),
        TextColumn(
            "{task.fields[metrics]}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
        ),
        console=console,
        expand=True,
    )


def show_job_progress(progress: Progress, task: TaskID, job: Mapping[str, Any]) -> None:
    """Moves the bar to the job's latest poll."""
    value = job["status"]
    shown = escape(safe(value))  # the description is markup: the server's text is escaped
    progress.update(
        task,
        completed=float(job.get("progress") or 0.0),
        description=f"job {escape(safe(job['id']))} "
        f"[{STATUS_STYLES.get(value, 'default')}]{shown}[/]",
        metrics=safe(format_metrics(job.get("metrics"))),
    )


def job_line(job: Mapping[str, Any], *parts: str | Text) -> Text:
    """`job 7 <status>` followed by `parts`, the opening of every one-line job report."""
    return Text.assemble(
        f"job {safe(job['id'])} ",
        status(job["status"]),
        *(part if isinstance(part, Text) else safe(part) for part in parts),
    )


def print_outcome(job: Mapping[str, Any]) -> None:
    """How a followed job ended: status, time taken, metrics, the version it produced."""
    line = job_line(job, duration(job))
    metrics = format_metrics(job.get("metrics"))
    if metrics:
        line.append(f": {safe(metrics)}")
    version = job.get("model_version")
    if version:
        line.append(f" -> model {version_ref(version)}")
    console.print(line)
    if job.get("error"):
        print_error(job["error"])
