"""Finding artifacts on disk, their target, their provenance, and their float reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..spec import Provenance


@dataclass
class Artifact:
    """One thing to validate: a single model file, or a coarse+refine pair run as one pipeline."""

    label: str
    target: str
    paths: dict[str, Path]  # role -> path ("fused"), or "coarse" + "refine" for a pair
    provenance: Provenance

    @property
    def kind(self) -> str:
        return "pair" if "refine" in self.paths and "coarse" in self.paths else next(iter(self.paths))

    @property
    def precision(self) -> str:
        return self.provenance.precision

    def size_bytes(self) -> int:
        total = 0
        for p in self.paths.values():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        return total

    def runner(self, threads: int | None = None, **kw):
        """``kw`` go to the runtime's runner (e.g. ``python=`` for a TFLite artifact on an older runtime)."""
        from ..runtimes import open_runner

        return open_runner(self.target, self.paths, self.provenance.pipeline_spec, name=self.label, threads=threads, **kw)


def read_provenance(path: Path) -> tuple[str, Provenance]:
    from ..runtimes import get_runtime, runtime_for

    if not path.exists():
        raise InputError(f"artifact not found: {path}")
    target = runtime_for(path)
    return target, get_runtime(target).read_provenance(path)


def unfinished(path: Path) -> bool:
    """Inside mexport's staging of a run that never finished (``.mexport-*``, see mexport.io)."""
    from ..io import PREFIX

    return any(part.startswith(PREFIX) for part in Path(path).resolve().parts)


def same_export(where: str, found: dict[str, tuple[Path, Provenance]]) -> None:
    """The files of one pipeline (a coarse+refine pair, an export directory) must come from one
    export: the same model, weights, spec, target, precision, recipe and calibration. A pair mixed
    from two exports (an int8 coarse with an fp32 refine) would be run, labelled and gated as one."""
    import dataclasses

    items = sorted(found.items())
    (role0, (f0, p0)), rest = items[0], items[1:]
    base = {k: v for k, v in dataclasses.asdict(p0).items() if k != "role"}
    for role, (f, prov) in rest:
        other = {k: v for k, v in dataclasses.asdict(prov).items() if k != "role"}
        diff = [k for k in base if base[k] != other[k]]
        if diff:
            k = diff[0]
            raise InputError(f"{where}: {f0.name} and {f.name} come from different exports ({k}: {base[k]!r} vs {other[k]!r}); "
                             "export them together, or give the fused model")


def discover(args: list[str | Path]) -> list[Artifact]:
    """Files become single artifacts; an export directory becomes its fused model and its pair;
    a coarse and a refine file of the same export given together become a pair. Staging of an
    unfinished run is never an artifact, and a pair's files must come from one export."""
    out: list[Artifact] = []
    files: list[Path] = []
    for a in map(Path, args):
        if not a.exists():
            raise InputError(f"artifact not found: {a}")
        if unfinished(a):
            raise InputError(f"{a}: left by an export that never finished (mexport's staging); it was never checked "
                             "and is not an artifact: export again")
        if a.is_dir() and not a.name.endswith(".mlpackage"):
            found = sorted(p for p in a.iterdir() if p.stem in ("coarse", "refine", "fused") and _is_artifact(p))
            if not found:
                raise InputError(f"{a}: no coarse/refine/fused artifacts inside")
            by_role: dict[str, Path] = {}
            for p in found:
                if p.stem in by_role:
                    raise InputError(f"{a}: holds {by_role[p.stem].name} and {p.name}, two exports in one directory; "
                                     "give the files you mean")
                by_role[p.stem] = p
            provs = {role: read_provenance(p) for role, p in by_role.items()}
            for role, (_, prov) in provs.items():
                if prov.role != role:
                    raise InputError(f"{by_role[role]}: its provenance says it is the {prov.role} model; a renamed file?")
            same_export(str(a), {role: (by_role[role], prov) for role, (_, prov) in provs.items()})
            if "fused" in by_role:
                t, prov = provs["fused"]
                out.append(Artifact(f"{a.name}/fused", t, {"fused": by_role["fused"]}, prov))
            if "coarse" in by_role and "refine" in by_role:
                t, prov = provs["refine"]
                out.append(Artifact(f"{a.name}/coarse+refine", t, {"coarse": by_role["coarse"], "refine": by_role["refine"]}, prov))
        else:
            files.append(a)
    roles: dict[tuple[str, str], dict[str, tuple[Path, Provenance]]] = {}
    for f in files:
        t, prov = read_provenance(f)
        roles.setdefault((t, str(f.resolve().parent)), {})[prov.role] = (f, prov)
    for (t, _), by_file_role in roles.items():
        if "coarse" in by_file_role and "refine" in by_file_role:
            pair = {r: by_file_role.pop(r) for r in ("coarse", "refine")}
            same_export(str(pair["refine"][0].parent), pair)
            (c, _), (r, prov) = pair["coarse"], pair["refine"]
            out.append(Artifact(f"{r.parent.name}/coarse+refine", t, {"coarse": c, "refine": r}, prov))
        for role, (f, prov) in by_file_role.items():
            if role != "fused":
                raise InputError(f"{f}: a lone {role} model cannot run the pipeline; give its pair or the fused model")
            out.append(Artifact(f"{f.parent.name}/{f.name}", t, {"fused": f}, prov))
    return out


def _is_artifact(p: Path) -> bool:
    from ..runtimes import runtime_for

    try:
        runtime_for(p)
        return True
    except InputError:
        return False


def reference_for(artifact: Artifact, model: str | None = None):
    """The float pipeline the artifact came from: ``model`` (the user's --model), else the model its
    provenance names, which must be a registered name. An artifact is data from anywhere: a
    ``file.py:factory`` or ``module:factory`` written into it would run that code on opening it, so
    such a reference takes an explicit --model, which the user typed and so trusts."""
    from ..models import MODELS, MattingPipeline, load_model

    prov = artifact.provenance
    if model is None and prov.model not in MODELS:
        raise InputError(f"{artifact.label}: was exported from {prov.model!r}, which is not a registered model "
                         f"({', '.join(MODELS.names())}); mexport never imports code named inside an artifact: "
                         "pass --model (module:factory or file.py:factory) if you trust that model")
    ref = model or prov.model
    try:
        m = load_model(ref)
    except InputError as e:
        raise InputError(f"{artifact.label}: cannot build its float reference {ref!r} ({e}); pass --model") from None
    if m.weights_sha256 != prov.weights_sha256:
        raise InputError(f"{artifact.label}: was exported from {prov.model} with weights {prov.weights_sha256[:12]}..., "
                         f"but {ref} now has weights {m.weights_sha256[:12]}...; pass the right --model")
    if m.spec.to_dict() != prov.spec:
        raise InputError(f"{artifact.label}: its recorded pipeline spec differs from {ref}'s")
    return MattingPipeline(m)
