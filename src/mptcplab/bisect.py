"""Bisect kernels: the first release, or the first commit of a kernel tree, where a scenario got worse.

One search over an ordered list of probes, from two sources: the Debian
releases between two kernels (:func:`releases_between`, each measured in a
QEMU guest), a directory of your builds (:func:`releases_from_dir`), or the
commits between two refs of a git kernel tree (:func:`commits_between`, each
built incrementally in the lab's own worktree by ``kernel build`` and run in
UML with deterministic time, :func:`commit_measure`).

The releases are the runnable Debian kernels between the two ends (the
archive's and the cache's), in upstream version order. Both ends are
measured, and must differ by the rule of `compare` (bad worse than good);
then the middle release is measured in a QEMU guest and judged against both
ends by the same rule: worse than good -> bad; not worse than good but bad
worse than it -> good; neither -> the end its median is nearer, flagged
"unclear" in the evidence. The search recurses on the half that holds the
step and reports the first bad release with every measurement taken.

Every measurement is a stored run tagged `bisect=<id>`, where the id is
derived from the scenario version, the two ends and the metric: running the
same bisect again (after Ctrl-C, SIGTERM or a crash) reads what the store
has and runs only the repetitions still missing.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .analysis.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison, Draw, compare_samples, sample_draws
from .analysis.stats import median_ci
from .errors import UsageError
from .metrics import metric as metric_def
from .scenario import Scenario


@dataclass(frozen=True)
class Release:
    """One probe the bisect may test: its kernel name in the cache (a release, or the name a commit's build gets),
    a short label (upstream version, or the commit's short hash), whether it is ready without fetching or
    building, and for a commit of a tree its full hash and subject."""

    release: str
    upstream: str
    cached: bool
    commit: str | None = None
    subject: str | None = None


@dataclass
class Step:
    """One tested kernel and its judgement against both ends."""

    release: str
    upstream: str
    role: str  # good end, bad end, or probe
    n: int
    median: float | None
    ci95: tuple[float, float] | None
    runs: list[str]
    reused: int  # repetitions found in the store
    measured: int  # repetitions run now
    vs_good: dict[str, Any] | None = None  # change, ci95, p_value, verdict of this kernel against the good end
    vs_bad: dict[str, Any] | None = None  # ... of the bad end against this kernel
    classified: str = ""  # good, bad, or unclear-good / unclear-bad
    #: the values themselves when too few for a 95% interval (analysis.stats.MIN_INTERVAL_N), else []
    values: list[float] = field(default_factory=list)
    commit: str | None = None  # a commit probe: its full hash and subject
    subject: str | None = None
    build_s: float | None = None  # a commit probe built now: the build's wall time (s); None when reused
    run_s: float | None = None  # wall time (s) of the repetitions measured now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BisectReport:
    bisect_id: str
    scenario: str
    metric: str
    good: str
    bad: str
    releases: list[str]  # every release in the range, good end to bad end
    steps: list[Step] = field(default_factory=list)
    first_bad: str | None = None
    last_good: str | None = None
    outcome: str = ""  # found, no-regression
    notes: list[str] = field(default_factory=list)
    source: str = "releases"  # releases, or commits (of `tree`)
    tree: str | None = None
    first_bad_commit: str | None = None
    first_bad_subject: str | None = None
    commits: list[str] | None = None  # commits: the full hashes, good end to bad end (releases holds their kernel names)

    def to_json(self) -> dict[str, Any]:
        doc = {"bisect": self.bisect_id, "scenario": self.scenario, "metric": self.metric, "good": self.good, "bad": self.bad,
               "releases": self.releases, "outcome": self.outcome, "first_bad": self.first_bad, "last_good": self.last_good,
               "notes": self.notes, "steps": [s.to_json() for s in self.steps], "source": self.source}
        if self.source == "commits":
            doc.update(tree=self.tree, commits=self.commits, first_bad_commit=self.first_bad_commit,
                       first_bad_subject=self.first_bad_subject)
        return doc


def bisect_id(scenario: Scenario, good: str, bad: str, metric: str) -> str:
    """The tag value of a bisect's runs: the same scenario version, ends and metric give the same id (resume)."""
    blob = "\0".join((scenario.name, scenario.content_hash, good, bad, metric)).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def releases_between(good: str, bad: str, cached_only: bool = False) -> list[Release]:
    """Every runnable kernel from `good` to `bad` inclusive, oldest upstream version first.

    `good` and `bad` are kernel names as `kernel fetch` takes them (release,
    package version, upstream prefix: newest match). Kernels come from the
    cache (not those `kernel build` made: they are bisected by commit, `--tree`) and, unless `cached_only`,
    from the Debian archive's candidates (those the catalog marks not runnable are left out). Raises UnknownKernel
    (exit 2) for a name nothing matches and UsageError when good is not older than bad or names a built kernel.
    """
    from .kernels.catalog import UnknownKernel, cached, matches, version_key

    pool: dict[str, Release] = {}
    built = set()
    for k in cached():
        if k.built:  # a `kernel build` kernel (6.12.117-uml) runs elsewhere and is named only by its name: never a
            built.add(k.release)  # probe of a release bisect, never matched by a version prefix
            continue
        pool[k.release] = Release(k.release, k.upstream, True)
    if not cached_only:
        from .kernels.fetch import PrivateApt

        apt = PrivateApt()
        apt.update()
        for c in apt.candidates():
            if getattr(c, "runnable", True) is False:
                continue
            pool.setdefault(c.release, Release(c.release, c.upstream, False))
    ordered = sorted(pool.values(), key=lambda r: (version_key(r.upstream), r.release))

    def find(name: str) -> int:
        if name in built:
            raise UsageError(f"{name} is a kernel built from source: a release bisect walks Debian's kernels",
                             "bisect built kernels by commit: mptcplab bisect SCENARIO --tree DIR --good REF --bad REF")
        for i, r in enumerate(ordered):
            if name == r.release:
                return i
        hits = [i for i, r in enumerate(ordered) if matches(name, r.upstream) or r.upstream == name]
        if hits:
            return hits[-1]
        where = "cached kernels" if cached_only else "cached or fetchable kernels"
        raise UnknownKernel(f"kernel {name!r} matches none of the {where} ({', '.join(r.upstream for r in ordered) or 'none'})",
                            "mptcplab kernel list shows them")

    lo, hi = find(good), find(bad)
    if lo >= hi:
        raise UsageError(f"--good {good} ({ordered[lo].release}) is not older than --bad {bad} ({ordered[hi].release})",
                         "the good kernel is the older one: bisect looks for the release that made it worse")
    return ordered[lo:hi + 1]


def _build(entry: Path) -> tuple[Path, Path | None, Path | None]:
    """(image, modules, config) of one entry of a --kernels-from directory: a bzImage, or a directory holding one."""
    if entry.is_file():
        return entry, None, None
    image = next((entry / p for p in ("arch/x86/boot/bzImage", "bzImage", "vmlinuz") if (entry / p).is_file()), None)
    if image is None:
        raise UsageError(f"--kernels-from: {entry} holds no bzImage (looked for arch/x86/boot/bzImage, bzImage, vmlinuz)",
                         "each entry is a bzImage or a directory with one (and lib/modules/RELEASE, .config)")
    modules = entry if (entry / "lib/modules").is_dir() else None
    config = next((entry / p for p in (".config", "config") if (entry / p).is_file()), None)
    return image, modules, config


def releases_from_dir(directory: Path, good: str, bad: str) -> list[Release]:
    """Your own builds in `directory`, in name order, registered in the cache as `kernel add` does; good..bad inclusive.

    Each entry (hidden ones skipped) is a bzImage or a directory holding one
    (`arch/x86/boot/bzImage`, `bzImage` or `vmlinuz`) with its modules under
    `lib/modules/RELEASE` and its `.config`/`config`. An entry already added from
    the same image is not copied again. `good`/`bad` name an entry or a release.
    Raises UsageError for an unusable directory or names it does not hold.
    """
    from .kernels.catalog import Kernel, kernels_dir
    from .kernels.custom import add, image_release

    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--kernels-from {directory}: not a directory", "give a directory of your kernel builds")
    entries = sorted(e for e in directory.iterdir() if not e.name.startswith("."))
    out: list[Release] = []
    for entry in entries:
        image, modules, config = _build(entry)
        release = image_release(image)
        meta = kernels_dir() / release / "kernel.json"
        known = Kernel.model_validate_json(meta.read_text()) if meta.exists() else None
        if known is None or known.origin != f"added from {image.resolve()}" or \
                Path(known.image).stat().st_size != image.stat().st_size:
            add(image, modules, config)
        out.append(Release(release, entry.name, True))
    if len({r.release for r in out}) < len(out):
        raise UsageError(f"--kernels-from {directory}: two entries are the same kernel release",
                         "build each with its own LOCALVERSION")

    def find(name: str) -> int:
        for i, r in enumerate(out):
            if name in (r.upstream, r.release):
                return i
        raise UsageError(f"--kernels-from {directory} holds no entry or release {name!r}",
                         f"entries: {', '.join(r.upstream for r in out) or 'none'}")

    lo, hi = find(good), find(bad)
    if lo >= hi:
        raise UsageError(f"--good {good} does not come before --bad {bad} in name order", "name your builds so they sort in history order")
    return out[lo:hi + 1]


class Bisector:
    """The search, with measuring and reading the store as callables (the CLI passes guests and the store).

    `measure(probe, n, bid, start)` runs `n` more repetitions of the scenario on `probe` (the store already holds
    `start` of them: a deterministic executor continues at seed base + start), stores them tagged bisect=`bid`,
    and may return a dict of what it cost (``build_s``: seconds spent building the probe).
    """

    def __init__(self, scenario: Scenario, releases: list[Release], *, metric: str = "goodput_mbps", repeat: int = 5,
                 store: Any, measure: Callable[..., Any], threshold: float = DEFAULT_THRESHOLD,
                 alpha: float = DEFAULT_ALPHA, bid: str | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.scenario, self.releases, self.metric, self.repeat = scenario, releases, metric, repeat
        self.store, self.measure, self.threshold, self.alpha = store, measure, threshold, alpha
        self.better = metric_def(metric).better
        self.bid = bid or bisect_id(scenario, releases[0].release, releases[-1].release, metric)
        self.progress = progress or (lambda text: None)
        self.steps: dict[str, Step] = {}
        self.draws: dict[str, list[Draw] | None] = {}  # release -> the draws of its stored values (paired when deterministic)

    def stored(self, release: str) -> tuple[list[float], int, list[str]]:
        """(values of the metric, repetitions stored, run ids) of this bisect's runs on `release`."""
        from .store import RunFilter

        found = self.store.list_runs(RunFilter(scenario=self.scenario.name, kernel=release, tags={"bisect": self.bid}))
        runs = [r.uid for r in sorted(found, key=lambda r: r.started_at)]  # repetition order (seed base + i) for pairing
        if not runs:
            return [], 0, []
        samples = list(self.store.samples(runs, self.metric, per_run=True).values())
        values = [v for s in samples for v in s.values]
        envs = self.store.run_environments(runs)
        per_run = [sample_draws(s, envs) for s in samples]
        self.draws[release] = None if any(d is None for d in per_run) else [d for ds in per_run if ds for d in ds]
        done = sum(len(s.values) for s in self.store.samples(runs, "pass_rate", per_run=True).values())  # every non-warm-up repetition
        return values, done, runs

    def point(self, rel: Release, role: str) -> Step:
        """Measure `rel` (only the repetitions the store does not have yet) and return its step."""
        if rel.release in self.steps:
            return self.steps[rel.release]
        import time

        values, done, runs = self.stored(rel.release)
        measured, cost, run_s = 0, None, None
        name = rel.release + (f" ({rel.upstream}: {rel.subject})" if rel.subject else "")
        if done < self.repeat:
            missing = self.repeat - done
            self.progress(f"bisect {self.bid}: {name} ({role}): {done} stored, running {missing} more")
            t0 = time.monotonic()
            cost = self.measure(rel, missing, self.bid, done)
            run_s = time.monotonic() - t0 - float((cost or {}).get("build_s") or 0.0)
            values, new_done, runs = self.stored(rel.release)
            measured, done = new_done - done, new_done
        else:
            self.progress(f"bisect {self.bid}: {name} ({role}): {done} repetitions stored, not run again")
        est = median_ci(values) if values else None
        step = Step(release=rel.release, upstream=rel.upstream, role=role, n=len(values), median=est.median if est else None,
                    ci95=est.ci95 if est else None, runs=runs, reused=done - measured, measured=measured,
                    values=est.values if est else [], commit=rel.commit, subject=rel.subject,
                    build_s=(cost or {}).get("build_s"), run_s=None if run_s is None else round(run_s, 1))
        self.steps[rel.release] = step
        return step

    def _cmp(self, base: list[float], cand: list[float], base_release: str = "", cand_release: str = "") -> Comparison:
        """compare's rule on two releases' values: paired when both ran deterministically with one seed base."""
        return compare_samples(base, cand, scenario=self.scenario.name, metric=self.metric, better=self.better,
                               threshold=self.threshold, alpha=self.alpha, baseline_draws=self.draws.get(base_release),
                               candidate_draws=self.draws.get(cand_release))

    def run(self) -> BisectReport:
        rels = self.releases
        report = BisectReport(bisect_id=self.bid, scenario=self.scenario.name, metric=self.metric, good=rels[0].release,
                              bad=rels[-1].release, releases=[r.release for r in rels])
        if rels[0].commit is not None:
            report.source, report.commits = "commits", [r.commit or "" for r in rels]
        good = self.point(rels[0], "good end")
        bad = self.point(rels[-1], "bad end")
        gv, bv = self._values(good), self._values(bad)
        if not gv:
            raise UsageError(f"the good end {good.release} has no completed repetition of {self.scenario.name}",
                             "a good end must run the scenario; pick another --good")
        good.classified = "good"
        if bv:
            ends = self._cmp(gv, bv, good.release, bad.release)
            bad.vs_good = _brief(ends)
            if ends.verdict != "regressed":
                bad.classified = "not worse"
                report.outcome = "no-regression"
                report.notes.append(f"{bad.release} is not worse than {good.release} by the compare rule "
                                    f"({ends.change * 100:+.1f}%, p {ends.p_value:.4f}): nothing to bisect")
                report.steps = self._ordered()
                return report
        else:
            report.notes.append(f"the bad end {bad.release} completed no repetition: 'bad' means the scenario fails there")
        bad.classified = "bad"
        lo, hi = 0, len(rels) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            step = self.point(rels[mid], "probe")
            mv = self._values(step)
            if not mv:
                step.classified = "bad"
                report.notes.append(f"{step.release} completed no repetition: counted as bad")
                hi = mid
                continue
            vs_good = self._cmp(gv, mv, good.release, step.release)
            step.vs_good = _brief(vs_good)
            if bv:
                vs_bad = self._cmp(mv, bv, step.release, bad.release)
                step.vs_bad = _brief(vs_bad)
            if vs_good.verdict == "regressed":
                step.classified = "bad"
            elif bv and step.vs_bad and step.vs_bad["verdict"] == "regressed":
                step.classified = "good"
            else:  # neither end's rule fires: the nearer median decides, and the evidence says so
                import math

                near_good = not bv or abs(math.log(step.median / good.median)) <= abs(math.log(step.median / bad.median))
                step.classified = "unclear-good" if near_good else "unclear-bad"
                report.notes.append(f"{step.release}: neither clearly like the good end nor like the bad end; "
                                    f"counted {'good' if near_good else 'bad'} (nearer median) — more --repeat would settle it")
            if step.classified.endswith("bad"):
                hi = mid
            else:
                lo = mid
        report.first_bad, report.last_good = rels[hi].release, rels[lo].release
        report.first_bad_commit, report.first_bad_subject = rels[hi].commit, rels[hi].subject
        report.outcome = "found"
        untested = [r.upstream if r.commit else r.release for r in rels[1:-1] if r.release not in self.steps]
        if untested:
            what = "commit(s)" if report.source == "commits" else "release(s)"
            report.notes.append(f"{len(untested)} {what} in the range were not needed: {', '.join(untested)}")
        report.steps = self._ordered()
        return report

    def _values(self, step: Step) -> list[float]:
        return self.stored(step.release)[0]

    def _ordered(self) -> list[Step]:
        order = {r.release: i for i, r in enumerate(self.releases)}
        return sorted(self.steps.values(), key=lambda s: order[s.release])


def _brief(c: Comparison) -> dict[str, Any]:
    return {"change": c.change, "ci95": c.ci95, "p_value": c.p_value, "verdict": c.verdict, "test": c.test}


def guest_measure(scenario: Scenario, options: Any, backend: str) -> Callable[[Release, int, str], None]:
    """A `measure` callable: fetch the release if needed and run `n` repetitions in one guest, stored via options.sinks."""

    def measure(rel: Release, n: int, bid: str, start: int = 0) -> None:
        from .kernels.fetch import fetch
        from .kernels.matrix import run_matrix

        if options.progress is not None and not rel.cached:
            options.progress.status(f"fetching {rel.release}")
        kernel, _ = fetch(rel.release)
        opts = replace(options, tags={**options.tags, "bisect": bid}, link_backend=backend)
        run_matrix([scenario], [kernel], n, opts, timeseries=False)

    return measure


# -- commits of a kernel tree ------------------------------------------------------

def _git(repo: Path, *args: str) -> tuple[int, str]:
    import subprocess

    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return proc.returncode, (proc.stdout if proc.returncode == 0 else proc.stderr).strip()


def _makefile_version(text: str) -> str:
    fields: dict[str, str] = {}
    for line in text.splitlines()[:12]:
        for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
            if line.startswith(f"{key} =") and key not in fields:
                fields[key] = line.split("=", 1)[1].strip()
    if not fields.get("VERSION"):
        return ""
    return f"{fields['VERSION']}.{fields.get('PATCHLEVEL', '0')}.{fields.get('SUBLEVEL', '0')}{fields.get('EXTRAVERSION', '')}"


def commit_kernel_name(version: str, commit: str, flavour: str) -> str:
    """The kernel-cache name of `commit`'s build: what ``kernel build TREE --ref COMMIT`` calls it by default."""
    return f"{version}-{commit[:12]}-{flavour}"


def commits_between(tree: Path, good: str, bad: str, flavour: str = "uml") -> list[Release]:
    """The probes of a commit bisect: `good`, then every commit of ``git rev-list --first-parent good..bad``
    oldest first (so `bad` last), each named as its build is in the kernel cache.

    `tree` is a git checkout of a kernel tree (it is only read: builds happen in the lab's worktree). A probe is
    `cached` when the kernel cache holds a build of that very commit and flavour. Raises UsageError (exit 2)
    for a directory that is no git kernel tree, a ref that names no commit, `good` not an ancestor of `bad`,
    or the same commit at both ends; EnvironmentProblem (exit 3) when git is not installed.
    """
    import json
    import shutil

    from .errors import EnvironmentProblem
    from .kernels.catalog import kernels_dir

    tree = Path(tree).expanduser()
    if shutil.which("git") is None:
        raise EnvironmentProblem("git is not installed: --tree walks a git repository's commits", "apt-get install git")
    if not tree.is_dir():
        what = "a file, not a directory" if tree.exists() else "no such directory"
        raise UsageError(f"--tree {tree}: {what}", "give a git checkout of a kernel tree")
    from .kernels.build import tree_problem

    problem = tree_problem(tree)
    if problem:
        raise UsageError(f"--tree {tree}: not a kernel tree ({problem})", "give the top of a Linux git checkout")
    rc, top = _git(tree, "rev-parse", "--show-toplevel")
    if rc != 0:
        raise UsageError(f"--tree {tree}: not a git repository", "git init and commit the tree, or give a git checkout")
    commits: dict[str, str] = {}
    for opt, ref in (("--good", good), ("--bad", bad)):
        rc, out = _git(tree, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if rc != 0 or not out:
            raise UsageError(f"{opt} {ref}: no such commit in {top}",
                             "--tree takes git refs (branch, tag, commit), not kernel releases")
        commits[opt] = out
    if commits["--good"] == commits["--bad"]:
        raise UsageError(f"--good {good} and --bad {bad} are the same commit ({commits['--good'][:12]})",
                         "the good end is an older commit than the bad end")
    rc, _ = _git(tree, "merge-base", "--is-ancestor", commits["--good"], commits["--bad"])
    if rc != 0:
        raise UsageError(f"--good {good} is not an ancestor of --bad {bad} in {top}",
                         "the good end is an older commit on the bad end's history (swap them?)")
    rc, out = _git(tree, "rev-list", "--first-parent", "--reverse", f"{commits['--good']}..{commits['--bad']}")
    if rc != 0:
        raise UsageError(f"git rev-list {good}..{bad} in {top}: {out.splitlines()[-1] if out else 'failed'}")
    hashes = [commits["--good"], *out.split()]
    if hashes[-1] != commits["--bad"]:
        raise UsageError(f"--bad {bad} is not on the first-parent history from --good {good}",
                         "bisect along one line of history: give a bad end whose first parents lead to the good end")
    rc, log = _git(tree, "log", "--no-walk=unsorted", "--format=%H%x00%s", *hashes)
    subjects = dict(line.split("\0", 1) for line in log.splitlines() if "\0" in line) if rc == 0 else {}
    out_list: list[Release] = []
    versions: dict[str, str] = {}
    for h in hashes:
        rc, makefile = _git(tree, "show", f"{h}:Makefile")
        version = versions.setdefault(makefile, _makefile_version(makefile)) if rc == 0 else ""
        name = commit_kernel_name(version or "linux", h, flavour)
        meta = kernels_dir() / name / "build.json"
        cached = False
        if meta.is_file():
            try:
                info = json.loads(meta.read_text())
                cached = info.get("commit") == h and info.get("flavour") == flavour
            except (OSError, ValueError):
                cached = False
        out_list.append(Release(name, h[:12], cached, h, subjects.get(h, "")))
    return out_list


def commit_measure(scenario: Scenario, tree: Path, flavour: str, options: Any, backend: str | None,
                   progress: Any = None) -> Callable[..., dict[str, Any]]:
    """A `measure` callable for commit probes: build the commit (``kernel build TREE --ref COMMIT``, incremental in
    the lab's one worktree and build directory of `tree`) unless the cache has that build, then run `n`
    repetitions in it (UML: seeds continue at base + `start`, so the stored repetitions stay paired by index).
    Returns {"build_s": the build's wall time, or None when the build was reused}."""

    def measure(rel: Release, n: int, bid: str, start: int = 0) -> dict[str, Any]:
        import json

        from .kernels.build import build
        from .kernels.catalog import Kernel, kernels_dir
        from .kernels.matrix import run_matrix

        build_s = None
        meta = kernels_dir() / rel.release / "kernel.json"
        info_path = kernels_dir() / rel.release / "build.json"
        kernel = None
        if meta.is_file() and info_path.is_file():
            info = json.loads(info_path.read_text())
            if info.get("commit") == rel.commit and info.get("flavour") == flavour:
                kernel = Kernel.model_validate_json(meta.read_text())
        if kernel is None:
            kernel = build(str(tree), flavour, name=rel.release, ref=rel.commit, progress=progress)
            build_s = json.loads(info_path.read_text()).get("wall_s")
        scn = scenario
        seed = scenario.run.seed
        if start and isinstance(seed, int):
            scn = scenario.model_copy(update={"run": scenario.run.model_copy(update={"seed": seed + start})})
        opts = replace(options, tags={**options.tags, "bisect": bid}, link_backend=backend)
        run_matrix([scn], [kernel], n, opts, timeseries=False)
        return {"build_s": build_s}

    return measure
