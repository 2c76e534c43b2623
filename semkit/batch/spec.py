"""Batch specs: a YAML file naming notebooks, their fixed parameters and a grid, expanded into runs.

A spec is either one notebook::

    name: tiny
    notebook: 03_finetuning          # a shipped notebook, or a path relative to the spec ("./my.ipynb")
    parameters: {quick: true}        # fixed parameters of every run
    grid: {backbone: [a, b], seed: [0, 1]}   # cartesian product
    zip: {lr: [1e-3, 1e-4], epochs: [10, 20]}  # equal-length lists taken together, crossed with the grid

or an ordered list of ``stages`` of that form, each with a ``name``. A value such as
``"${pretrain.output_dir}/encoder.pt"`` refers to the runs of the earlier stage ``pretrain`` (its run folder;
``${stage.run_id}`` and ``${stage.<parameter>}`` work too). A run is paired with the upstream runs that agree with
it on the parameters the two stages share and that either of them varies (e.g. ``seed``); when several upstream
runs agree, the run is repeated once per upstream run (fine-tune every pretrained encoder); ``match: [keys]``
sets the keys explicitly and ``where: {stage: {param: value or [values]}}`` keeps only some upstream runs.
Runs that refer to several stages use mutually consistent upstream runs (the same ancestors).

Top-level keys starting with ``x-`` are ignored (as in Compose files): they hold values shared through YAML
anchors, e.g. ``x-pool: &pool [...]`` then ``data_folders: *pool``.

A run's id is ``<notebook stem>-<hash>`` of the notebook's code cells and the run's parameters (references
replaced by the upstream run ids, so moving the project does not change ids): the same notebook and
parameters give the same id, and a finished run is found again after a crash.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semkit.batch.execute import NOTEBOOK_DIR
from semkit.errors import InputError

#: Specs shipped with semkit (``<repo>/papermill_runs/specs``).
SPEC_DIR = NOTEBOOK_DIR.parent / "papermill_runs" / "specs"
#: Parameters the batch sets itself (the run folder and its figures folder).
RESERVED = ("output_dir", "figures_dir")
STAGE_KEYS = ("name", "notebook", "parameters", "grid", "zip", "match", "where", "timeout_s", "resources")
BATCH_KEYS = ("name", "description", "stages", "timeout_s", "resources")
SINGLE_KEYS = ("name", "description", "notebook", "parameters", "grid", "zip", "timeout_s", "resources")
DEFAULT_TIMEOUT_S = 1800
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REF_RE = re.compile(r"\$\{([A-Za-z0-9][A-Za-z0-9_-]*)\.([A-Za-z_]\w*)\}")
HASH_CHARS = 10


@dataclass(frozen=True)
class Stage:
    """One notebook with its fixed parameters and grid, as written in the spec (validated)."""

    name: str
    notebook: Path
    parameters: dict[str, Any]
    grid: dict[str, list]
    zip: dict[str, list]
    match: tuple[str, ...] | None = None
    where: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeout_s: int = DEFAULT_TIMEOUT_S
    resources: dict[str, Any] = field(default_factory=dict)
    declared: tuple[str, ...] = ()  # the notebook's own parameter names

    @property
    def keys(self) -> set[str]:
        """Every parameter this stage sets."""
        return set(self.parameters) | set(self.grid) | set(self.zip)

    @property
    def varying(self) -> set[str]:
        """Parameters that differ between the stage's runs."""
        return set(self.grid) | set(self.zip)

    def references(self) -> set[str]:
        """Names of the stages this stage's values refer to."""
        text = json.dumps([self.parameters, self.grid, self.zip], default=str)
        return {m.group(1) for m in REF_RE.finditer(text)}


@dataclass(frozen=True)
class BatchSpec:
    """A validated spec: its name, description, source file and stages in execution order."""

    name: str
    stages: tuple[Stage, ...]
    description: str = ""
    path: Path | None = None

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")


@dataclass
class Run:
    """One execution of a notebook: what :func:`plan_batch` produces and the runner executes.

    Attributes:
        run_id: ``<notebook stem>-<hash>``; also the run folder's name.
        stage: name of the spec stage.
        notebook: the notebook file.
        parameters: values injected by papermill (references resolved to absolute paths); ``output_dir`` and
            ``figures_dir`` are added at execution.
        coordinates: the grid/zip values of this run (what distinguishes it inside its stage).
        dependencies: stage → run id of the upstream runs this run refers to.
        lineage: stage → run id of this run and all its ancestors.
        run_dir: the run folder.
        figures_dir: where the notebook saves figures (``None`` if it has no ``figures_dir`` parameter).
        timeout_s: per-cell execution timeout.
        resources: SLURM/submitit resources of the stage.
    """

    run_id: str
    stage: str
    notebook: Path
    parameters: dict[str, Any]
    coordinates: dict[str, Any]
    dependencies: dict[str, str]
    lineage: dict[str, str]
    run_dir: Path
    figures_dir: Path | None
    timeout_s: int = DEFAULT_TIMEOUT_S
    resources: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "stage": self.stage, "notebook": str(self.notebook),
                "parameters": self.parameters, "coordinates": self.coordinates,
                "dependencies": self.dependencies, "run_dir": str(self.run_dir),
                "figures_dir": None if self.figures_dir is None else str(self.figures_dir),
                "timeout_s": self.timeout_s, "resources": self.resources}


# ---------------------------------------------------------------------------------------------------- loading


def shipped_specs() -> list[str]:
    """Names of the specs in :data:`SPEC_DIR`."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec file: an existing path, else ``<name>.yaml`` in :data:`SPEC_DIR`.

    Raises:
        InputError: if neither exists (the message lists the shipped specs).
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SPEC_DIR / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and path.parent == Path(".") and shipped.is_file():
        return shipped
    raise InputError(f"no such spec file; shipped specs: {', '.join(shipped_specs())}", path)


def load_spec(spec: str | Path | Mapping, notebook_dir: str | Path = NOTEBOOK_DIR) -> BatchSpec:
    """Read and validate a batch spec.

    Args:
        spec: a YAML file, the name of a shipped spec (``"demo"``), or an already parsed mapping.
        notebook_dir: where bare notebook names (``03_finetuning``) are looked up.

    Returns:
        The validated :class:`BatchSpec`.

    Raises:
        InputError: naming the spec file and the key, for unknown keys, unknown notebooks or parameters,
            zip lists of different lengths, bad stage references and the like.
    """
    if isinstance(spec, Mapping):
        raw, path, where = dict(spec), None, "<spec>"
    else:
        # absolute once, here: notebook paths in the spec are relative to its folder, whatever the caller's
        # working directory later is
        path = resolve_spec_path(spec).absolute()
        where = str(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML: {exc}", path) from exc
    if not isinstance(raw, dict):
        raise InputError("a spec is a mapping with 'name' and either 'notebook' or 'stages'", where)
    base = path.parent if path is not None else Path.cwd()

    def fail(message: str):
        raise InputError(message, where)

    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        fail(f"'name' must be a folder-safe name (letters, digits, _ . -), got {name!r}")
    raw = {k: v for k, v in raw.items() if not str(k).startswith("x-")}  # anchor holders, see the module doc
    if "stages" in raw:
        _check_keys(raw, BATCH_KEYS, "the spec", fail)
        entries = raw["stages"]
        if not isinstance(entries, list) or not entries:
            fail("'stages' must be a non-empty list")
    else:
        _check_keys(raw, SINGLE_KEYS, "the spec", fail)
        if "notebook" not in raw:
            fail("a spec needs 'notebook' (one notebook) or 'stages' (a list)")
        entries = [{k: v for k, v in raw.items() if k in STAGE_KEYS and k != "name"}]
    defaults = {"timeout_s": raw.get("timeout_s", DEFAULT_TIMEOUT_S), "resources": raw.get("resources") or {}}
    stages: list[Stage] = []
    for i, entry in enumerate(entries):
        stages.append(_parse_stage(entry, i, stages, defaults, base, Path(notebook_dir), fail,
                                   single="stages" not in raw))
    description = raw.get("description") or ""
    if not isinstance(description, str):
        fail("'description' must be a string")
    return BatchSpec(name=name, stages=tuple(stages), description=description.strip(), path=path)


def _check_keys(mapping: Mapping, valid, what: str, fail) -> None:
    unknown = [k for k in mapping if k not in valid]
    if unknown:
        fail(f"unknown key(s) {', '.join(map(repr, unknown))} in {what}; valid keys: {', '.join(valid)}")


def _parse_stage(entry, index: int, earlier: list[Stage], defaults: dict, base: Path, notebook_dir: Path,
                 fail, single: bool) -> Stage:
    if not isinstance(entry, dict):
        fail(f"stages[{index}] must be a mapping with {', '.join(STAGE_KEYS)}")
    label = "the spec" if single else f"stages[{index}]"
    _check_keys(entry, STAGE_KEYS, label, fail)
    if "notebook" not in entry:
        fail(f"{label} needs a 'notebook'")
    notebook = _resolve_notebook(entry["notebook"], base, notebook_dir, lambda m: fail(f"{label}: {m}"))
    name = entry.get("name", notebook.stem if single else None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        fail(f"{label} needs a 'name' (letters, digits, _ . -), got {name!r}")
    label = "the spec" if single else f"stage {name!r}"
    if any(s.name == name for s in earlier):
        fail(f"two stages are named {name!r}")

    def sfail(message: str):
        fail(f"{label}: {message}")

    declared = notebook_parameters(notebook)
    parameters = _mapping(entry, "parameters", sfail)
    grid = _mapping(entry, "grid", sfail)
    zipped = _mapping(entry, "zip", sfail)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            sfail(f"grid key {key!r} must be a non-empty list, got {values!r}")
    lengths = {key: len(values) if isinstance(values, list) else -1 for key, values in zipped.items()}
    if any(n < 1 for n in lengths.values()) or len(set(lengths.values())) > 1:
        sfail(f"zip lists must be non-empty lists of one length; lengths: {lengths}")
    seen: dict[str, str] = {}
    for part, keys in (("parameters", parameters), ("grid", grid), ("zip", zipped)):
        for key in keys:
            if key in RESERVED:
                sfail(f"{part} key {key!r} is set by the batch (each run gets its own folder); remove it")
            if key not in declared:
                sfail(f"{part} key {key!r} is not a parameter of {notebook.name}; "
                      f"its parameters: {', '.join(declared)}")
            if key in seen:
                sfail(f"{key!r} appears in both {seen[key]} and {part}")
            seen[key] = part
    for resources in (defaults["resources"], entry.get("resources") or {}):
        if not isinstance(resources, dict):
            sfail(f"'resources' must map submitit parameters to values (timeout_min, gpus_per_node, "
                  f"cpus_per_task, mem_gb, slurm_partition, ...), got {resources!r}")
    stage = Stage(name=name, notebook=notebook, parameters=parameters, grid=grid, zip=zipped,
                  timeout_s=entry.get("timeout_s", defaults["timeout_s"]),
                  resources={**defaults["resources"], **(entry.get("resources") or {})}, declared=declared)
    if not isinstance(stage.timeout_s, int) or stage.timeout_s <= 0:
        sfail(f"timeout_s must be a positive integer (seconds per cell), got {stage.timeout_s!r}")
    earlier_names = {s.name: s for s in earlier}
    text = json.dumps([parameters, grid, zipped], default=str)
    for m in REF_RE.finditer(text):
        ref, attr = m.groups()
        if ref not in earlier_names:
            sfail(f"refers to stage {ref!r} in {m.group(0)}, which is not an earlier stage; earlier stages: "
                  f"{', '.join(earlier_names) or 'none'}")
        if attr not in ("output_dir", "run_id") and attr not in earlier_names[ref].keys:
            sfail(f"{m.group(0)}: stage {ref!r} sets no parameter {attr!r}; use output_dir, run_id or one of: "
                  f"{', '.join(sorted(earlier_names[ref].keys))}")
    match = entry.get("match")
    if match is not None:
        if not isinstance(match, list) or not all(isinstance(k, str) for k in match):
            sfail("'match' must be a list of parameter names")
        for ref in stage.references():
            missing = [k for k in match if k not in stage.keys or k not in earlier_names[ref].keys]
            if missing:
                sfail(f"match keys {missing} are not set by both this stage and stage {ref!r}")
        match = tuple(match)
    where = _mapping(entry, "where", sfail)
    for ref, condition in where.items():
        if ref not in stage.references():
            sfail(f"'where' names stage {ref!r}, which this stage does not refer to "
                  f"(refers to: {', '.join(sorted(stage.references())) or 'none'})")
        if not isinstance(condition, dict):
            sfail(f"'where' for stage {ref!r} must map parameters to values")
        unknown = [k for k in condition if k not in earlier_names[ref].keys]
        if unknown:
            sfail(f"'where' for stage {ref!r} names {unknown}, which that stage does not set; "
                  f"it sets: {', '.join(sorted(earlier_names[ref].keys))}")
    return dataclasses.replace(stage, match=match, where=where)


def _mapping(entry: Mapping, key: str, fail) -> dict:
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        fail(f"{key!r} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _resolve_notebook(value, base: Path, notebook_dir: Path, fail) -> Path:
    if not isinstance(value, str) or not value:
        fail(f"'notebook' must be a notebook name or path, got {value!r}")
    if "/" not in value and "\\" not in value:
        path = notebook_dir / (value if value.endswith(".ipynb") else f"{value}.ipynb")
    else:
        path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in notebook_dir.glob("*.ipynb")))
        fail(f"notebook {value!r} not found ({path}); shipped notebooks: {available}")
    return path.resolve()


def _cells(notebook: Path) -> list[dict]:
    try:
        return json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a readable notebook ({type(exc).__name__}: {exc})", notebook) from exc


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _parameter_assignments(notebook: Path) -> list[tuple[str, ast.expr | None]]:
    for cell in _cells(notebook):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(_source(cell))
            except SyntaxError as exc:
                raise InputError(f"parameters cell is not valid Python: {exc}", notebook) from exc
            out = []
            for node in tree.body:
                targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
                out += [(t.id, node.value) for t in targets if isinstance(t, ast.Name)]
            return out
    raise InputError("notebook has no cell tagged 'parameters' (papermill needs one)", notebook)


def notebook_parameters(notebook: str | Path) -> tuple[str, ...]:
    """Names assigned in the notebook's ``parameters``-tagged cell, in order.

    Read with :mod:`ast` rather than ``papermill.inspect_notebook``, which skips annotated lines it cannot
    parse (``x: str | None = None``) and would make valid parameters look unknown.

    Raises:
        InputError: if the notebook has no ``parameters`` cell or that cell is not valid Python.
    """
    return tuple(dict.fromkeys(name for name, _ in _parameter_assignments(Path(notebook))))


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """Default values of the notebook's parameters (those written as Python literals)."""
    defaults = {}
    for name, value in _parameter_assignments(Path(notebook)):
        try:
            defaults[name] = ast.literal_eval(value) if value is not None else None
        except ValueError:  # not a literal (an expression): the notebook computes it
            continue
    return defaults


def notebook_fingerprint(notebook: str | Path) -> str:
    """SHA-256 of the notebook's code-cell sources: outputs, metadata and markdown do not change a run's id."""
    code = [_source(c) for c in _cells(Path(notebook)) if c.get("cell_type") == "code"]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()


def run_id(notebook: str | Path, identity_parameters: Mapping[str, Any]) -> str:
    """``<notebook stem>-<hash>`` of the notebook's code and the parameters (without ``output_dir``/``figures_dir``)."""
    params = {k: v for k, v in identity_parameters.items() if k not in RESERVED}
    payload = json.dumps({"notebook": notebook_fingerprint(notebook), "parameters": params}, sort_keys=True,
                         default=str)
    return f"{Path(notebook).stem}-{hashlib.sha256(payload.encode()).hexdigest()[:HASH_CHARS]}"


# -------------------------------------------------------------------------------------------------- expansion


def stage_combinations(stage: Stage) -> list[dict[str, Any]]:
    """The grid/zip values of each run of ``stage``: the grid's cartesian product (keys in spec order, last
    fastest) crossed with the zipped rows; ``[{}]`` for a stage without grid or zip."""
    grid = [dict(zip(stage.grid, values, strict=True)) for values in itertools.product(*stage.grid.values())]
    n_zip = len(next(iter(stage.zip.values()))) if stage.zip else 1
    rows = [{k: v[i] for k, v in stage.zip.items()} for i in range(n_zip)]
    return [{**g, **z} for g in grid for z in rows]


def match_keys(down: Stage, up: Stage) -> tuple[str, ...]:
    """Parameters on which runs of ``down`` are paired with runs of ``up``: ``down.match`` if set, else those
    both stages set and at least one of them varies."""
    if down.match is not None:
        return down.match
    return tuple(sorted((down.varying | up.varying) & down.keys & up.keys))


def plan_batch(spec: BatchSpec, batch_dir: str | Path, figures_dir: str | Path | None = None) -> list[Run]:
    """Expand ``spec`` into runs, stage by stage, resolving references to earlier stages.

    Args:
        spec: a validated spec.
        batch_dir: folder of the batch; run ``r`` lives in ``batch_dir / r.run_id``.
        figures_dir: parent of the runs' figure folders (``figures_dir / run_id``); ``None`` = inside each run
            folder (``<run_dir>/figures``).

    Returns:
        Runs in execution order (stage by stage).

    Raises:
        InputError: naming the spec, if a run has no upstream run to pair with, or two runs are identical.
    """
    batch_dir = Path(batch_dir).resolve()
    where = str(spec.path) if spec.path else spec.name
    runs: list[Run] = []
    by_stage: dict[str, list[Run]] = {}
    for stage in spec.stages:
        refs = sorted(stage.references())
        stage_runs: list[Run] = []
        for coords in stage_combinations(stage):
            values = {**stage.parameters, **coords}
            options = [_upstream_options(stage, spec.stage(ref), by_stage[ref], values, where) for ref in refs]
            produced = 0
            for choice in itertools.product(*options):
                lineage: dict[str, str] = {}
                if not _consistent(choice, lineage):
                    continue
                produced += 1
                upstream = dict(zip(refs, choice, strict=True))
                identity = _substitute(values, upstream, identity=True)
                rid = run_id(stage.notebook, identity)
                run_dir = batch_dir / rid
                fig = None
                if "figures_dir" in stage.declared:
                    fig = (Path(figures_dir).resolve() / rid) if figures_dir is not None else run_dir / "figures"
                stage_runs.append(Run(
                    run_id=rid, stage=stage.name, notebook=stage.notebook,
                    parameters=_substitute(values, upstream, identity=False), coordinates=coords,
                    dependencies={ref: r.run_id for ref, r in upstream.items()},
                    lineage={**lineage, stage.name: rid}, run_dir=run_dir, figures_dir=fig,
                    timeout_s=stage.timeout_s, resources=dict(stage.resources), identity=identity))
            if not produced:
                raise InputError(f"stage {stage.name!r}: the run with {coords or values} has no mutually "
                                 f"consistent runs in stages {refs} (same ancestors for every stage)", where)
        by_stage[stage.name] = stage_runs
        runs += stage_runs
    seen: dict[str, Run] = {}
    for r in runs:
        if r.run_id in seen:
            other = seen[r.run_id]
            raise InputError(f"stages {other.stage!r} and {r.stage!r} define the same run ({r.run_id}: same "
                             f"notebook and parameters {r.identity}); remove one", where)
        seen[r.run_id] = r
    return runs


def _upstream_options(stage: Stage, up: Stage, up_runs: list[Run], values: dict, where: str) -> list[Run]:
    keys = [k for k in match_keys(stage, up) if not _has_reference(values.get(k))]
    condition = stage.where.get(up.name, {})
    options = []
    for r in up_runs:
        up_values = {**up.parameters, **r.coordinates}
        if any(up_values.get(k) not in (v if isinstance(v, list) else [v]) for k, v in condition.items()):
            continue
        if all(up_values.get(k) == values.get(k) for k in keys):
            options.append(r)
    if not options:
        wanted = {k: values.get(k) for k in keys}
        raise InputError(f"stage {stage.name!r}: no run of stage {up.name!r} matches {wanted or 'anything'}"
                         f"{f' with where {condition}' if condition else ''} (paired on {list(keys)}; "
                         f"set 'match' or 'where' to pair differently)", where)
    return options


def _consistent(choice: tuple[Run, ...], lineage: dict[str, str]) -> bool:
    for r in choice:
        for name, rid in r.lineage.items():
            if lineage.setdefault(name, rid) != rid:
                return False
    return True


def _has_reference(value: Any) -> bool:
    return bool(REF_RE.search(json.dumps(value, default=str)))


def _substitute(value: Any, upstream: Mapping[str, Run], identity: bool) -> Any:
    """Replace ``${stage.attr}`` in strings (also inside lists and dicts) by the upstream run's value."""
    if isinstance(value, dict):
        return {k: _substitute(v, upstream, identity) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, upstream, identity) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(m: re.Match) -> Any:
        run, attr = upstream[m.group(1)], m.group(2)
        if attr == "output_dir":
            # identity form: the run id, so that ids do not depend on where the project lies on disk
            return f"{{run:{run.run_id}}}" if identity else str(run.run_dir)
        if attr == "run_id":
            return run.run_id
        return (run.identity if identity else run.parameters)[attr]  # validated by load_spec

    whole = REF_RE.fullmatch(value)
    if whole:
        return lookup(whole)  # a value that is only a reference keeps the referenced value's type
    return REF_RE.sub(lambda m: str(lookup(m)), value)
