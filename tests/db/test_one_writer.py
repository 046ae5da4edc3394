"""One writer per table: every INSERT, UPDATE and DELETE of a table lives in one module of app/.

A job row written from two places drifts into two ideas of a job's life cycle; this scan of
app/ keeps each table's writes where its rules are. It counts, per module: `insert(X)`,
`update(X)`, `delete(X)` (and `X.__table__.insert()` and the like), building a mapped object
`X(...)` (what session.add / add_all store), assigning a column of an object known to be an
X (`job = session.get(TrainingJob, ...)`, a parameter annotated X), session.delete/merge of
one, and raw SQL strings.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict

import pytest

from app.settings import REPO_ROOT
from app.tables import Base

WRITERS = {
    "datasets": "app/services/datasets.py",
    "training_jobs": "app/jobs/store.py",
    "training_job_metrics": "app/jobs/store.py",
    "models": "app/services/versions.py",
    "model_versions": "app/services/versions.py",
    "model_placements": "app/services/versions.py",
    "model_aliases": "app/services/versions.py",
}
TABLE_OF = {m.class_.__name__: m.local_table.name for m in Base.registry.mappers}
STATEMENTS = {"insert", "update", "delete"}
RAW_SQL = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[\"`]?(\w+)", re.IGNORECASE)


def written_tables(source: str) -> set[str]:
    """The tables a module's code writes to."""
    tree = ast.parse(source)
    mapped: dict[str, str] = {}  # local name -> table, for classes imported from app.tables
    modules: set[str] = set()  # local names of the app.tables module itself
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "app.tables":
            mapped |= {
                a.asname or a.name: TABLE_OF[a.name] for a in node.names if a.name in TABLE_OF
            }
        elif isinstance(node, ast.ImportFrom) and node.module == "app":
            modules |= {a.asname or a.name for a in node.names if a.name == "tables"}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == "app.tables" and a.asname}

    def table(node: ast.AST | None) -> str | None:
        """The table a class reference (`X`, `tables.X`, `X.__table__`) names."""
        if isinstance(node, ast.Attribute) and node.attr == "__table__":
            node = node.value
        if isinstance(node, ast.Name):
            return mapped.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return TABLE_OF.get(node.attr) if node.value.id in modules else None
        return None

    def mentioned(node: ast.AST | None) -> set[str]:
        return {t for n in ast.walk(node) if (t := table(n))} if node is not None else set()

    # Objects of a known table: parameters annotated with it, names assigned from an
    # expression that mentions only it (module-wide: a name reused for two tables counts both).
    objects: dict[str, set[str]] = defaultdict(set)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg not in ("self", "cls"):
            objects[node.arg] |= mentioned(node.annotation)
        elif isinstance(node, ast.Assign) and len(tables := mentioned(node.value)) == 1:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    objects[target.id] |= tables

    def of_object(node: ast.AST) -> set[str]:
        return objects.get(node.id, set()) if isinstance(node, ast.Name) else set()

    written: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            name = getattr(func, "attr", getattr(func, "id", None))
            found = {table(func)}  # X(...): a row to add
            if name in STATEMENTS:
                found |= {table(args[0]) if args else None}  # insert(X), update(X), delete(X)
                found |= {table(getattr(func, "value", None))}  # X.__table__.update()
            if name in ("delete", "merge") and args:
                found |= of_object(args[0])  # session.delete(obj)
            for arg in args:  # text("UPDATE ..."), exec_driver_sql("DELETE FROM ...")
                for leaf in ast.walk(arg):
                    if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                        found |= set(RAW_SQL.findall(leaf.value)) & set(WRITERS)
            written |= found - {None}
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for leaf in (n for target in targets for n in ast.walk(target)):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.ctx, ast.Store):
                    written |= of_object(leaf.value)  # job.status = ...
    return written


def test_every_table_has_one_writer() -> None:
    assert set(WRITERS) == set(Base.metadata.tables), "name the one module that writes a new table"
    writers: dict[str, set[str]] = defaultdict(set)
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        module = path.relative_to(REPO_ROOT).as_posix()
        for table in written_tables(path.read_text()):
            writers[table].add(module)
    assert {t: sorted(m) for t, m in writers.items()} == {t: [m] for t, m in WRITERS.items()}


IMPORTS = "from app.tables import JobMetric, ModelVersion, TrainingJob\n"


@pytest.mark.parametrize(
    ("source", "table"),
    [
        (IMPORTS + "update(TrainingJob).values(status='x')", "training_jobs"),
        ("from app.tables import Model as M\nsession.add(M(name='m'))", "models"),
        ("from app import tables\ns.execute(tables.Dataset.__table__.delete())", "datasets"),
        (IMPORTS + "def f(v: ModelVersion | None):\n    v.is_active = True", "model_versions"),
        (
            IMPORTS + "job = s.get(TrainingJob, 1)\njob.status, job.error = 'a', 'b'",
            "training_jobs",
        ),
        (IMPORTS + "row = s.get(JobMetric, 1)\ns.delete(row)", "training_job_metrics"),
        ("s.execute(text('UPDATE datasets SET name = 1'))", "datasets"),
    ],
)
def test_the_scan_sees_each_kind_of_write(source: str, table: str) -> None:
    assert written_tables(source) == {table}


def test_the_scan_ignores_reads() -> None:
    source = (
        "from app.tables import Dataset, TrainingJob\n"
        "def f(self, d: Dataset):\n"
        "    self.progress = 1.0\n"
        "    rows = s.scalars(select(TrainingJob).where(TrainingJob.status == 'queued'))\n"
        "    latest.update(row)\n"
        "    return d.path\n"
    )
    assert written_tables(source) == set()
