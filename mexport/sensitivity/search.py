"""`mexport sensitivity`: the lowest-latency int8 recipe that keeps the matte, found on the target
runtime.

The search, every step measured on the target runtime on *tuning* photos (never the calibration
photos; never the held-out photos the verdict is given on):

1. quick ranking in torch (:mod:`.layers`): seconds; it orders what follows and explains causes;
2. naive int8 (every layer int8), and naive int8 repaired (bias correction,
   :mod:`mexport.quantize.bias_correction`): the repair stays, for every later recipe, when it
   raises the score (``repairs=None``; or as asked); if the start meets the targets, it is the answer;
3. per-layer sensitivity: every unit (a weighted layer and the activation fused into it, or a
   module's own pools/resizes/adds) kept in float alone, the rest int8: the gain in the worst-photo
   score; and, for the most damaging units, that unit alone in int8 (the rest float);
4. greedy: units in float by decreasing gain until the median and the worst photo both meet the
   targets (a margin above them on the tuning photos);
5. prune: each float unit back to int8, the costliest first, wherever the targets still hold;
6. harden: the targets met on the tuning photos say little about the worst photo never seen (a
   recipe at 30.6 dB on its worst tuning photo gave 28.9 dB on a held-out one), so the latency the
   user allows above naive int8 (``max_latency``) is spent on robustness: the descent of step 4
   goes on, against the worst tuning photos, among the blocks whose float share of the MACs the
   allowance can pay for (estimated from naive int8's and fp32's measured latency);
7. latency of the candidates on the runtime (interleaved, 1 and 2 threads); of those meeting the
   targets within ``max_latency`` of naive int8, the one with the widest margin on its worst
   tuning photo is chosen (the fastest meeting them when none is within); then it is judged on
   the held-out photos.

NNCF's accuracy control and AIMET's AutoQuant do steps 3-5 with a mean metric on one validation
set; here the score is the worse of the median and the worst photo against their targets, so one
photo that int8 breaks cannot hide behind a good median.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ArtifactRunError
from ..quantize.recipe import REPAIRS, Calibration, Recipe
from .trials import TrialPool, TrialResult


# The per-layer trials run on the tuning photos the current mix hurts most: the worst photo decides,
# and six photos cost a third of nineteen.
FOCUS_PHOTOS = 6
RANKING_SHARE = 0.3  # of the budget, for the per-layer ranking against naive int8
TOP_ALONE = 6
SEARCH_SHARE = 0.88
MAX_TIMED = 12  # candidates timed on the runtime (all of them on a short search path)
OVER_BUDGET = "over its budget"  # the note (and report header) when the whole run took longer than --budget-min


@dataclass(frozen=True)
class Targets:
    """What a recipe must reach: median and every photo's alpha PSNR vs float (dB), on the
    held-out photos; the search asks ``margin_db`` more of the tuning photos."""

    median_db: float = 38.0
    photo_db: float = 30.0
    margin_db: float = 0.5
    max_latency: float = 1.15  # x naive int8's p50 at 1 thread: what the search may spend on robustness

    def __post_init__(self) -> None:
        for k in ("median_db", "photo_db"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not 0 < v < 200:
                raise ValueError(f"{k} must be between 0 and 200 dB, got {v!r}")
        if not 0 <= self.margin_db < 20:
            raise ValueError("margin_db must be in [0, 20)")
        if not isinstance(self.max_latency, (int, float)) or not 1 <= self.max_latency <= 10:
            raise ValueError(f"max_latency must be in [1, 10] (x naive int8's latency), got {self.max_latency!r}")
        if self.photo_db > self.median_db:
            raise ValueError("the per-photo target cannot exceed the median target")

    def score(self, r: TrialResult, margin: float = 0.0) -> float:
        """How far the worse of the two gates is above its target (negative: short of it)."""
        return min(r.median - self.median_db - margin, r.worst - self.photo_db - margin)

    def met(self, r: TrialResult, margin: float = 0.0) -> bool:
        return self.score(r, margin) >= 0

    def focus_score(self, r: TrialResult) -> float:
        """For trials on the few photos the current mix hurts most: their mean PSNR, each capped at
        the median target (a photo above it has nothing left to gain), so raising any failing photo
        counts, not only the single worst one."""
        cap = self.median_db + self.margin_db
        return float(np.mean([min(v, cap) for v in r.psnr.values()]))


@dataclass
class Unit:
    path: str
    macs: int
    ops: dict[str, int]
    joined: list[str] = field(default_factory=list)
    gain_db: float | None = None  # score with this unit float, the rest int8, minus naive's
    alone: TrialResult | None = None  # this unit alone int8, the rest float
    stats: Any = None  # LayerStats from the quick ranking, for weighted units


@dataclass
class Candidate:
    label: str
    floats: tuple[str, ...]
    recipe: Recipe
    tune: TrialResult
    holdout: TrialResult | None = None
    latency: dict[int, float] = field(default_factory=dict)  # threads -> p50 ms
    met: bool = False


@dataclass
class SearchResult:
    target: str
    targets: Targets
    units: list[Unit]
    candidates: list[Candidate]
    chosen: Candidate | None
    naive: Candidate
    fp32_latency: dict[int, float]
    photos: dict[str, list[str]]
    seconds: float
    trials: int
    notes: list[str] = field(default_factory=list)
    fastest: Candidate | None = None  # the fastest candidate meeting the targets, when not the chosen one
    repairs: tuple[str, ...] = ()  # applied to every recipe tried after naive int8 (which stays plain)

    @property
    def passed(self) -> bool:
        """The fidelity verdict on the held-out photos (the exit code); latency is reported beside it."""
        c = self.chosen
        return bool(c and c.holdout and self.targets.met(c.holdout))

    @property
    def latency_ratio(self) -> float:
        c = self.chosen
        return c.latency.get(1, math.nan) / self.naive.latency.get(1, math.nan) if c else math.nan

    @property
    def within_latency(self) -> bool:
        return self.latency_ratio <= self.targets.max_latency


def recipe_for(floats: set[str] | tuple[str, ...], units: list[Unit], calibration: Calibration, name: str, notes: str = "",
               repairs: tuple[str, ...] = ()) -> Recipe:
    """Recipe keys are module-path prefixes, so a float unit whose path has descendants (a module's
    own pools and adds, next to its convs) lists those descendants back as int8."""
    floats = set(floats)
    paths = {p for u in units for p in (u.path, *u.joined)}
    layers: dict[str, str] = {}
    for u in units:
        if u.path in floats:
            for p in (u.path, *u.joined):
                layers[p] = "float"
    for f in list(layers):
        for p in paths:
            if p.startswith(f + ".") and p not in layers:
                layers[p] = "int8"
    return Recipe(name=name, default="int8", calibration=calibration, layers=layers, notes=notes, repairs=repairs)


def _cost(u: Unit) -> int:
    return u.macs


def _group(path: str) -> str:
    """The block a layer belongs to: its first two module names ('coarse.stage2d', 'refine.lowres')."""
    return ".".join(path.split(".")[:2])


def _worst(r: TrialResult, n: int) -> tuple[str, ...]:
    return tuple(sorted(r.psnr, key=r.psnr.get)[:n])


def _only(r: TrialResult, names: tuple[str, ...]) -> TrialResult:
    return TrialResult(r.key, {k: r.psnr[k] for k in names}, r.seconds)


def _alone_recipe(u: Unit, units: list[Unit], calibration: Calibration, name: str, repairs: tuple[str, ...] = ()) -> Recipe:
    layers = {p: "int8" for p in (u.path, *u.joined)}
    for p in {q for v in units for q in (v.path, *v.joined)}:
        if p.startswith(u.path + ".") and p not in layers:
            layers[p] = "float"
    return Recipe(name=name, default="float", calibration=calibration, layers=layers, repairs=repairs)


def search(target: str, trials, pool: TrialPool, units: list[Unit], calibration: Calibration, targets: Targets,
           budget_s: float, progress: Callable[..., Any] | None = None, log: Callable[[str], Any] = lambda s: None,
           has_holdout: bool = True, latency_rounds: int = 10, repairs: tuple[str, ...] | None = None) -> SearchResult:
    """``repairs`` (Recipe.repairs) are applied to every recipe tried after naive int8, so the float
    fallback is searched on top of the repaired int8 layers; None: tried on naive int8 and kept when
    they raise its score on the tuning photos (``()``: none)."""
    t0 = time.monotonic()
    deadline = t0 + budget_s * SEARCH_SHARE  # the rest: timing the candidates, the held-out photos
    notes: list[str] = []
    by_path = {u.path: u for u in units}
    auto = repairs is None
    tried_repairs = REPAIRS if auto else tuple(repairs)
    repairs = ()  # until naive int8 with and without them is measured

    def tick(stage):
        return (lambda n, total, r: progress(stage, n, total, r.key)) if progress else None

    def job(key: str, floats, photo_set="tune", keep=None, alone=None, only=None, reps=None):
        reps = repairs if reps is None else reps
        if alone is not None:  # that unit int8, everything else float (its descendants included)
            r = _alone_recipe(alone, units, calibration, key, reps)
        else:
            r = recipe_for(floats, units, calibration, key, repairs=reps)
        # the held-out verdict is given on the model the export writes, not on a trial's shortcut
        return (key, r.to_dict(), photo_set, keep, only, photo_set == "holdout")

    def run(jobs, stage, until=None):
        return pool.map(jobs, tick(stage), deadline=until)

    def cand(label, floats, r, reps=None):
        reps = repairs if reps is None else reps
        return Candidate(label, tuple(floats), recipe_for(floats, units, calibration, f"{target}-sensitivity", repairs=reps), r)

    # 2. naive, and naive with the repairs: the repairs stay when they raise its score
    jobs = [job("naive", ())] + ([job("naive+repairs", (), reps=tried_repairs)] if tried_repairs else [])
    naive_r, *rep_r = run(jobs, "naive int8")
    naive = cand("naive int8", (), naive_r)
    log(f"naive int8 on the tuning photos: median {naive_r.median:.1f} dB, worst {naive_r.worst:.1f} dB ({naive_r.worst_photo})")
    candidates: list[Candidate] = []
    start = naive
    if rep_r:
        r = rep_r[0]
        said = (f"naive int8 with {', '.join(tried_repairs)}: median {r.median:.1f} dB, worst {r.worst:.1f} dB on the tuning "
                f"photos, against {naive_r.median:.1f} / {naive_r.worst:.1f} dB without")
        log(said)
        if not auto or targets.score(r) > targets.score(naive_r):
            repairs = tried_repairs
            start = cand(f"naive int8 + {', '.join(tried_repairs)}", (), r)
            candidates.append(start)
            notes.append(f"repairs: {said}; every recipe after it is repaired" + ("" if auto else " (asked for)"))
        else:
            notes.append(f"repairs: {said}; not kept")
    best = start
    if not targets.met(start.tune, targets.margin_db):
        # 3. per-layer sensitivity against the start (naive int8, repaired when that helped), on the
        # photos it hurts most, the most suspicious layers first (quick ranking), within a share of the budget
        focus = _worst(start.tune, FOCUS_PHOTOS)
        order = sorted(units, key=lambda u: (u.stats.sqnr_db if u.stats else math.inf))
        res = run([job(f"float:{u.path}", (u.path,), only=focus) for u in order], "sensitivity (one layer float)",
                  until=t0 + budget_s * RANKING_SHARE)
        base = targets.focus_score(_only(start.tune, focus))
        for u, r in zip(order, res):
            if r is not None:
                u.gain_db = targets.focus_score(r) - base
        untried = [u.path for u, r in zip(order, res) if r is None]
        if untried:
            notes.append(f"the ranking's share of the budget left {len(untried)} of {len(order)} layers unmeasured "
                         "(the least suspicious by the quick ranking)")
        ranked = sorted((u for u in units if u.gain_db is not None), key=lambda u: (-u.gain_db, _cost(u)))
        top = [u for u in ranked[:TOP_ALONE] if u.gain_db > 0.05]
        for u, r in zip(top, run([job(f"alone:{u.path}", (), alone=u, only=focus) for u in top], "sensitivity (one layer int8)")):
            u.alone = r
        # 4. descend (below) until the targets hold
        current = start
        if ranked and ranked[0].gain_db > 1.0:  # a clear culprit: start with it
            floats = [ranked[0].path]
            current = cand(f"{len(floats)} float", floats, run([job("step:1", floats)], "search")[0])
            candidates.append(current)
        groups: dict[str, list[str]] = {}
        for u in units:
            groups.setdefault(_group(u.path), []).append(u.path)

        def descend(current: Candidate, stage: str, fits=lambda floats: True, min_gain=0.05) -> Candidate | None:
            """One step: against ``current``, the group of layers (a stage, a block) whose float helps
            its worst tuning photos most, then that group's best single layer if it holds most of the
            group's gain, else the whole group (the error is spread over it). ``fits``: what a float set
            may cost. None when nothing helps (or nothing fits)."""
            floats = list(current.floats)
            focus = _worst(current.tune, FOCUS_PHOTOS)
            base = targets.focus_score(_only(current.tune, focus))
            open_groups = {}
            for g, ps in groups.items():
                # the group's layers that fit, the cheapest first
                members = []
                for p in sorted((p for p in ps if p not in floats), key=lambda p: _cost(by_path[p])):
                    if fits(floats + members + [p]):
                        members.append(p)
                if members:
                    open_groups[g] = members
            if not open_groups:
                notes.append(f"{stage}: with {len(floats)} layer(s) in float, no other layer fits")
                return None
            names = list(open_groups)
            res = run([job(f"{stage}-group:{g}", floats + open_groups[g], only=focus) for g in names], f"{stage} (groups)", until=deadline)
            scored = [(targets.focus_score(r) - base, g) for g, r in zip(names, res) if r is not None]
            if not scored:
                return None
            gain, g = max(scored)
            if gain <= min_gain:
                notes.append(f"{stage}: with {len(floats)} layer(s) in float, no group of layers kept in float helped the worst "
                             f"photos ({', '.join(focus)}) further")
                return None
            members = open_groups[g]
            add = members
            if len(members) > 1:
                rs = run([job(f"{stage}-layer:{p}", floats + [p], only=focus) for p in members], f"{stage} (layers)", until=deadline)
                one = [(targets.focus_score(r) - base, p) for p, r in zip(members, rs) if r is not None]
                if one and max(one)[0] >= 0.5 * gain:
                    add = [max(one)[1]]
            floats = floats + add
            step = run([job(f"{stage}:{len(floats)}", floats)], stage)[0]
            if step is None:
                return None
            log(f"{stage}: {len(floats)} layer(s) float (+{', '.join(add)}): median {step.median:.1f} dB, "
                f"worst {step.worst:.1f} dB ({step.worst_photo})")
            return cand(f"{len(floats)} float" + (" (hardened)" if stage == "harden" else ""), floats, step)

        while not targets.met(current.tune, targets.margin_db) and time.monotonic() < deadline:
            nxt = descend(current, "search")
            if nxt is None:
                break
            current = nxt
            candidates.append(current)
        if not targets.met(current.tune, targets.margin_db):
            best = max(candidates, key=lambda c: targets.score(c.tune), default=start)
            notes.append("no mix of float layers met the targets on the tuning photos"
                         + (" within the budget" if time.monotonic() >= deadline else "") + f"; the best reached "
                         f"median {best.tune.median:.1f} dB, worst {best.tune.worst:.1f} dB with {len(best.floats)} layer(s) float")
        else:
            # 5. prune: each float layer back to int8, the costliest first, where the targets still hold
            keep = list(current.floats)
            tried: set[str] = set()
            while time.monotonic() < deadline:
                left = sorted((p for p in keep if p not in tried), key=lambda p: -_cost(by_path[p]))[:pool.workers]
                if not left:
                    break
                tried.update(left)
                variants = [[q for q in keep if q != p] for p in left]
                rs = run([job(f"prune:{p}", v) for p, v in zip(left, variants)], "prune", until=deadline)
                for p, v, r in zip(left, variants, rs):
                    if r is not None and targets.met(r, targets.margin_db):
                        keep = v
                        current = cand(f"{len(v)} float (pruned)", v, r)
                        candidates.append(current)
                        break
            best = current
            # 6. harden, within what the latency allowance can pay for
            if targets.max_latency > 1 and time.monotonic() < deadline:
                fits = _allowance(trials, target, naive, units, targets.max_latency, latency_rounds, progress, notes)
                while time.monotonic() < deadline:
                    nxt = descend(current, "harden", fits, min_gain=0.1)
                    if nxt is None:
                        break
                    if targets.score(nxt.tune) < targets.score(current.tune):
                        notes.append(f"harden: {nxt.label} raised the worst tuning photos it was tried on but lowered the "
                                     f"margin over all of them ({targets.score(nxt.tune):+.1f} dB); stopped there")
                        break
                    current = nxt
                    candidates.append(current)
    for c in candidates + [naive]:
        c.met = targets.met(c.tune, targets.margin_db)

    # 6. latency on the runtime of the candidates that met the targets (and the path for the plot)
    timed = [naive] + (candidates if len(candidates) <= MAX_TIMED else
                       [c for c in candidates if c.met] + [c for c in candidates if not c.met][-(MAX_TIMED // 2):])
    timed = list({id(c): c for c in timed}.values())
    fp32_latency = _time(trials, target, timed, latency_rounds, progress)
    ok = [c for c in timed if c.met and c.latency]
    fastest = min(ok, key=lambda c: c.latency.get(1, math.inf)) if ok else None
    allowed = naive.latency.get(1, math.nan) * targets.max_latency
    within = [c for c in ok if c.latency.get(1, math.inf) <= allowed]
    if within:  # the widest margin on the tuning photos the latency allowance pays for
        chosen = max(within, key=lambda c: (round(targets.score(c.tune, targets.margin_db), 1), -c.latency[1]))
    else:
        chosen = fastest or (best if best is not naive else None)
        if ok:
            notes.append(f"no candidate meeting the targets is within {targets.max_latency:g}x naive int8's latency; "
                         "the fastest one is chosen")
    if chosen is None and start.met:
        chosen = start
    if fastest is chosen:
        fastest = None
    if chosen is not None and has_holdout:
        # the fastest candidate too, so the report shows what the latency allowance bought on photos
        # neither was chosen on
        extra = [fastest] if fastest is not None else []
        rs = pool.map([job("holdout:chosen", chosen.floats, "holdout", reps=chosen.recipe.repairs),
                       job("holdout:naive", (), "holdout", reps=())]
                      + [job("holdout:fastest", c.floats, "holdout", reps=c.recipe.repairs) for c in extra], tick("held-out photos"))
        chosen.holdout, naive.holdout = rs[:2]
        for c, r in zip(extra, rs[2:]):
            c.holdout = r
    if chosen is not None:
        chosen.recipe = _annotated(chosen, units, calibration, target, chosen.recipe.repairs)
    seconds = time.monotonic() - t0
    if seconds > budget_s:
        # The budget stops the search for new trials; what follows it (timing the candidates, the
        # held-out photos) runs to the end, and on a CPU where int8 is slow it can overrun.
        notes.append(f"{OVER_BUDGET} of {budget_s / 60:g} min: {seconds / 60:.1f} min in all. The budget ends the search "
                     f"for new trials ({SEARCH_SHARE:.0%} of it); timing the candidates and judging them on the held-out "
                     "photos come after it and ran over")
    return SearchResult(target, targets, units, candidates, chosen, naive, fp32_latency, {}, seconds,
                        pool.trials_run, notes, fastest, tuple(repairs))


def _allowance(trials, target: str, naive: Candidate, units: list[Unit], max_latency: float, rounds: int, progress,
               notes: list[str]) -> Callable[[list[str]], bool]:
    """What a float set may cost: its share of the model's MACs, against the share the latency
    allowance pays for at the measured fp32/naive-int8 ratio (a float MAC costs ``ratio`` int8 MACs).
    An estimate: float islands also cost conversions, so the candidates are timed before one is
    chosen."""
    fp32 = _time(trials, target, [naive], max(3, rounds // 3), progress)
    ratio = fp32.get(1, math.nan) / naive.latency.get(1, math.nan)
    total = sum(u.macs for u in units) or 1
    by = {u.path: u for u in units}
    share = min(1.0, (max_latency - 1) / (ratio - 1)) if ratio > 1 else 0.0
    notes.append(f"harden: fp32 is {ratio:.2f}x naive int8 here, so {max_latency:g}x allows about {100 * share:.1f} % of the "
                 "MACs in float")
    return lambda floats: sum(by[p].macs for p in floats) <= share * total


def _time(trials, target: str, cands: list[Candidate], rounds: int, progress) -> dict[int, float]:
    import tempfile

    from ..runtimes import get_runtime

    suffix = get_runtime(target).suffix
    # not in the staging directory: artifact discovery rightly refuses files inside one
    with tempfile.TemporaryDirectory(prefix="mexport-candidates-") as tmp:
        return _time_in(Path(tmp), trials, suffix, cands, rounds, progress)


def _time_in(files: Path, trials, suffix: str, cands: list[Candidate], rounds: int, progress) -> dict[int, float]:
    from ..bench.interleave import Subject, interleaved_latency

    subjects = [Subject("fp32", paths=(str(trials.build_float(files / f"fp32{suffix}")),))]
    for i, c in enumerate(cands):
        subjects.append(Subject(f"c{i}", paths=(str(trials.build(c.recipe, files / f"c{i}{suffix}")),)))
    lat = interleaved_latency(subjects, threads=(1, 2), rounds=rounds, progress=progress)
    errors = {k: v["error"] for k, v in lat.items() if "error" in v}
    if errors:
        raise ArtifactRunError("timing the candidates failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    for i, c in enumerate(cands):
        c.latency = {t: v["p50_ms"] for t, v in lat[f"c{i}"].get("threads", {}).items()}
    return {t: v["p50_ms"] for t, v in lat["fp32"].get("threads", {}).items()}


def _annotated(c: Candidate, units: list[Unit], calibration: Calibration, target: str, repairs: tuple[str, ...] = ()) -> Recipe:
    by = {u.path: u for u in units}
    why = []
    for p in c.floats:
        u = by[p]
        cause = u.stats.cause() if u.stats else "no weights: " + ", ".join(u.ops)
        gain = "" if u.gain_db is None else f"alone in float {u.gain_db:+.1f} dB on the worst tuning photos; "
        why.append(f"{p}: float ({gain}{cause})")
    return recipe_for(c.floats, units, calibration, f"{target}-sensitivity",
                      notes="found by `mexport sensitivity`; " + ("; ".join(why) if why else "every layer int8")
                      + (f"; repairs: {', '.join(repairs)}" if repairs else ""), repairs=repairs)
